//! FortiClient log upload to FortiAnalyzer over the lab log channel
//! (`fortilab_core::logchan::LogSender`). Everything touching the log channel is in this module.
//!
//! An uplink starts when the EMS profile enables log upload with a server; it uses a lab-CA
//! certificate with CN = the endpoint's FCTUID (the hello's serial) and a queue directory under
//! the data directory. Lines produced before the profile arrives are dropped (FortiClient only
//! uploads once it knows where to).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fortilab_core::logchan::{Hello, LogSender, SenderConfig, UploadOption};
use fortilab_core::{LabCa, LabClock, LabMap};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::identity::Identity;

/// One endpoint's uplink.
#[derive(Default)]
pub struct Uplink {
    inner: Mutex<Option<(String, LogSender)>>,
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink").finish_non_exhaustive()
    }
}

/// What the uplinks share.
#[derive(Clone)]
pub struct UplinkEnv {
    pub ca: Arc<LabCa>,
    pub lab_map: Arc<LabMap>,
    pub clock: LabClock,
    pub data_dir: PathBuf,
    pub shutdown: CancellationToken,
    /// Lab time between uploads (FortiClient `log_upload_freq_minutes`).
    pub upload_every: Duration,
}

impl Uplink {
    /// Starts (or re-points) the uplink to `server` (lab `IP:PORT`).
    pub fn ensure(
        &self,
        env: &UplinkEnv,
        id: &Identity,
        netns: Option<Arc<fortilab_core::netns::NetNs>>,
        server: &str,
    ) -> Result<(), String> {
        let lab: SocketAddr = server
            .parse()
            .map_err(|_| format!("bad FortiAnalyzer address {server:?}"))?;
        let real = env.lab_map.resolve(lab);
        let server_name = lab.ip().to_string();
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cur, sender)) = g.as_ref() {
            if cur != server {
                sender.set_server(real, server_name);
                let s = sender.clone();
                *g = Some((server.to_string(), s));
            }
            return Ok(());
        }
        let cert = env.ca.issue(&id.fctuid, &[]).map_err(|e| e.to_string())?;
        let tls =
            fortilab_core::tls::client_config(&env.ca, Some(&cert)).map_err(|e| e.to_string())?;
        let cfg = SenderConfig {
            server: real,
            server_name,
            tls,
            hello: Hello {
                serial: id.fctuid.clone(),
                hostname: id.hostname.clone(),
                platform: "FortiClient".into(),
                version: id.fct_version.clone(),
                device_type: "forticlient".into(),
                vdom: "root".into(),
                ip: Some(id.ip.to_string()),
            },
            queue_dir: env.data_dir.join("logqueue").join(&id.name),
            mem_limit: 10_000,
            upload: UploadOption::Interval(env.upload_every),
            clock: env.clock,
            reconnect_delay: Duration::from_millis(500),
        };
        let (ntx, mut notes) = tokio::sync::mpsc::channel(fortilab_core::logchan::NOTIFY_QUEUE);
        let sender = LogSender::start_in(cfg, netns, ntx, env.shutdown.clone())
            .map_err(|e| e.to_string())?;
        // FortiClient has no use for FortiAnalyzer notifications; drain them.
        tokio::spawn(async move { while notes.recv().await.is_some() {} });
        *g = Some((server.to_string(), sender));
        Ok(())
    }

    /// Queues a line if the uplink runs; returns whether it was queued.
    pub fn send(&self, line: String) -> bool {
        match self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            Some((_, s)) => {
                s.send(line);
                true
            }
            None => false,
        }
    }

    /// Writes the running uplink's queue (unacknowledged lines and numbering) into the new
    /// directory `dst` (a lab snapshot); `None` when the uplink does not run.
    pub fn snapshot_to(&self, dst: &std::path::Path) -> Option<std::io::Result<()>> {
        let sender = self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, s)| s.clone());
        sender.map(|s| s.snapshot_to(dst))
    }

    /// Whether the uplink runs and has a live connection to its FortiAnalyzer.
    pub fn connected(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|(_, s)| s.stats().connected)
    }

    /// Figures for `/_lab/status`.
    pub fn status(&self) -> Value {
        match self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            Some((server, s)) => {
                let st = s.stats();
                json!({"server": server, "connected": st.connected, "registration": st.registration,
                       "queued": st.queued, "acked_seq": st.acked_seq, "next_seq": st.next_seq,
                       "last_error": st.last_error})
            }
            None => Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fortilab_core::logchan::{LogReceiver, LogSink, MemorySink};

    #[tokio::test]
    async fn uplink_delivers_forticlient_lines_to_a_log_receiver() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(LabCa::generate("t").unwrap());
        let faz_cert = ca.issue("FAZ-VM0000000001", &[]).unwrap();
        let tls = fortilab_core::tls::server_config(
            &ca,
            &faz_cert,
            fortilab_core::tls::ClientAuth::Required,
            &[],
        )
        .unwrap();
        let sink = Arc::new(MemorySink::new(true));
        let faz_hello = Hello::fortianalyzer("FAZ-VM0000000001", "FAZ", "6.4.5");
        let dyn_sink: Arc<dyn LogSink> = sink.clone();
        let rx = LogReceiver::new(dyn_sink, faz_hello, LabClock::real());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let s2 = stop.clone();
        tokio::spawn(async move { rx.serve(listener, tls, s2).await });

        let id =
            crate::identity::identities(1, "PC-{n}", "alice", "10.115.2.52".parse().unwrap(), 1)
                .unwrap()
                .remove(0);
        let env = UplinkEnv {
            ca,
            lab_map: Arc::new(LabMap::default()),
            clock: LabClock::real(),
            data_dir: dir.path().to_path_buf(),
            shutdown: stop.clone(),
            upload_every: Duration::from_millis(50),
        };
        let up = Uplink::default();
        assert!(!up.send("dropped before the profile".into()));
        up.ensure(&env, &id, None, &addr.to_string()).unwrap();
        let line = crate::logs::event_log(&env.clock, &id, "FCTEMS0000000001", "hello");
        assert!(up.send(line.clone()));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while sink.count(&id.fctuid) < 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "no line stored: {}",
                up.status()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(sink.lines(&id.fctuid)[0].line, line);
        assert_eq!(
            sink.hello_of(&id.fctuid).unwrap().device_type,
            "forticlient"
        );
        stop.cancel();
    }
}
