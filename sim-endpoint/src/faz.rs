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
}

impl Uplink {
    /// Starts (or re-points) the uplink to `server` (lab `IP:PORT`).
    pub fn ensure(&self, env: &UplinkEnv, id: &Identity, server: &str) -> Result<(), String> {
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
            },
            queue_dir: env.data_dir.join("logqueue").join(&id.name),
            mem_limit: 10_000,
            upload: UploadOption::Realtime,
            clock: env.clock,
            reconnect_delay: Duration::from_millis(500),
        };
        let (sender, mut notes) =
            LogSender::start(cfg, env.shutdown.clone()).map_err(|e| e.to_string())?;
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
