//! A tiny SMTP client for the `email` action: EHLO, MAIL FROM, RCPT TO, DATA, QUIT over plain
//! TCP, or over TLS from the first byte (`security smtps`) verified against the lab CA.
//! `starttls` and authentication are not modelled.
//!
//! Why not a crate (issue 18.5, session 6, measured 2026-12-02 on a loaded machine, load ~15):
//! `lettre` 0.11.23 (`smtp-transport`, `tokio1-rustls`, `ring`, `builder`) refuses to build with
//! rustls unless a public root store is enabled too (`webpki-roots`, native certs or the platform
//! verifier), though the lab trusts only its own CA; with `webpki-roots` it adds 7 crates to the
//! workspace (lettre, email-encoding, email_address, nom 8, quoted_printable, async-trait,
//! webpki-roots; the rest it shares with reqwest), 33 s of CPU to a clean build (dev profile).
//! It builds its own rustls configuration from PEM roots, so the lab's TLS policy
//! (`fortilab_core::tls`) would be set up a second time, and it connects by host name where the
//! lab connects to a lab address's real socket and verifies the lab name. `mail-send` 0.5.2 would
//! add 5 crates (7 s of CPU) and also ships `webpki-roots`. For the ~60 lines of dialogue below,
//! tested against a recording server, that was not worth it yet; the switch stays open (lettre's
//! `send_raw` with our message text would keep the wire as it is).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One message.
#[derive(Debug, Clone)]
pub struct Mail {
    pub helo: String,
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
    /// RFC 5322 date header value.
    pub date: String,
}

/// Sends `mail` to the server at `addr` (`host` names it for TLS), within `timeout`.
/// Returns the server's reply to the end of DATA.
pub async fn send(
    addr: SocketAddr,
    host: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    mail: &Mail,
    timeout: Duration,
) -> Result<String, String> {
    tokio::time::timeout(timeout, async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to the SMTP server {host} ({addr}): {e}"))?;
        match tls {
            Some(cfg) => {
                let name = fortilab_core::tls::server_name(host).map_err(|e| e.to_string())?;
                let s = tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with the SMTP server {host}: {e}"))?;
                dialogue(s, mail).await
            }
            None => dialogue(tcp, mail).await,
        }
    })
    .await
    .map_err(|_| format!("the SMTP server {host} did not answer within {timeout:?}"))?
}

async fn reply<R: AsyncRead + Unpin>(r: &mut BufReader<R>, want: u16) -> Result<String, String> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        let n = r
            .read_line(&mut line)
            .await
            .map_err(|e| format!("SMTP read: {e}"))?;
        if n == 0 {
            return Err("the SMTP server closed the connection".into());
        }
        text.push_str(line.trim_end());
        // `250-...` continues, `250 ...` ends.
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            break;
        }
        text.push('\n');
    }
    let code: u16 = text.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
    if code / 100 == want / 100 {
        Ok(text)
    } else {
        Err(format!("SMTP server answered: {text}"))
    }
}

async fn write<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> Result<(), String> {
    w.write_all(bytes)
        .await
        .map_err(|e| format!("SMTP write: {e}"))
}

async fn dialogue<S: AsyncRead + AsyncWrite + Unpin>(s: S, mail: &Mail) -> Result<String, String> {
    let (r, mut w) = tokio::io::split(s);
    let mut r = BufReader::new(r);
    reply(&mut r, 220).await?;
    write(&mut w, format!("EHLO {}\r\n", mail.helo).as_bytes()).await?;
    reply(&mut r, 250).await?;
    write(&mut w, format!("MAIL FROM:<{}>\r\n", mail.from).as_bytes()).await?;
    reply(&mut r, 250).await?;
    for to in &mail.to {
        write(&mut w, format!("RCPT TO:<{to}>\r\n").as_bytes()).await?;
        reply(&mut r, 250).await?;
    }
    write(&mut w, b"DATA\r\n").await?;
    reply(&mut r, 354).await?;
    let mut data = format!(
        "From: {}\r\nTo: {}\r\nSubject: {}\r\nDate: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
        mail.from,
        mail.to.join(", "),
        mail.subject,
        mail.date
    );
    for line in mail.body.lines() {
        // Dot-stuffing.
        if line.starts_with('.') {
            data.push('.');
        }
        data.push_str(line);
        data.push_str("\r\n");
    }
    data.push_str(".\r\n");
    write(&mut w, data.as_bytes()).await?;
    let done = reply(&mut r, 250).await?;
    write(&mut w, b"QUIT\r\n").await?;
    let _ = reply(&mut r, 221).await;
    let _ = w.shutdown().await;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A minimal SMTP server: records the dialogue.
    async fn server(l: tokio::net::TcpListener) -> String {
        let (s, _) = l.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let mut log = String::new();
        w.write_all(b"220 mail.lab ESMTP\r\n").await.unwrap();
        let mut in_data = false;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap() == 0 {
                break;
            }
            log.push_str(&line);
            if in_data {
                if line == ".\r\n" {
                    in_data = false;
                    w.write_all(b"250 2.0.0 queued as 42\r\n").await.unwrap();
                }
                continue;
            }
            let up = line.to_ascii_uppercase();
            if up.starts_with("EHLO") {
                w.write_all(b"250-mail.lab\r\n250 8BITMIME\r\n")
                    .await
                    .unwrap();
            } else if up.starts_with("DATA") {
                in_data = true;
                w.write_all(b"354 go ahead\r\n").await.unwrap();
            } else if up.starts_with("QUIT") {
                w.write_all(b"221 bye\r\n").await.unwrap();
                let mut rest = Vec::new();
                let _ = r.read_to_end(&mut rest).await;
                break;
            } else {
                w.write_all(b"250 ok\r\n").await.unwrap();
            }
        }
        log
    }

    #[tokio::test]
    async fn sends_a_message() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let srv = tokio::spawn(server(l));
        let mail = Mail {
            helo: "FGT-LAB".into(),
            from: "fgt@lab".into(),
            to: vec!["soc@lab".into(), "admin@lab".into()],
            subject: "IOC on 10.115.2.52".into(),
            body: "line one\n.dot line".into(),
            date: "Thu, 04 Mar 2021 10:11:22 +0000".into(),
        };
        let r = send(addr, "10.115.1.60", None, &mail, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(r.starts_with("250"), "{r}");
        let log = srv.await.unwrap();
        assert!(log.contains("EHLO FGT-LAB\r\n"));
        assert!(log.contains("MAIL FROM:<fgt@lab>\r\n"));
        assert!(log.contains("RCPT TO:<soc@lab>\r\nRCPT TO:<admin@lab>\r\n"));
        assert!(log.contains("Subject: IOC on 10.115.2.52\r\n"));
        assert!(log.contains("\r\n..dot line\r\n.\r\n"));
        assert!(log.ends_with("QUIT\r\n"));
    }

    #[tokio::test]
    async fn a_refusal_is_an_error() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"554 no service\r\n").await.unwrap();
        });
        let mail = Mail {
            helo: "x".into(),
            from: "a@b".into(),
            to: vec!["c@d".into()],
            subject: String::new(),
            body: String::new(),
            date: String::new(),
        };
        let e = send(addr, "x", None, &mail, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.contains("554"), "{e}");
    }
}
