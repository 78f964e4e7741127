//! The in-process origin the proxy benches send their requests to (`proxy`, `upstream_hop`):
//! reads the PROXY v2 header the FortiGate sends, then answers every request head on the
//! connection with [`BODY`] (keep-alive, pipelining allowed).

use std::time::Duration;

use fortilab_core::proxy::read_header;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The body of every answer.
pub const BODY: &[u8] = b"hello from the lab origin\n";

/// Serves `l` until its accept fails, one task per connection.
pub async fn origin(l: TcpListener) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let _ = s.set_nodelay(true);
            let _ = read_header(&mut s, Duration::from_secs(2)).await;
            let mut buf = Vec::with_capacity(4096);
            let mut tmp = [0u8; 4096];
            let mut resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                BODY.len()
            )
            .into_bytes();
            resp.extend_from_slice(BODY);
            loop {
                while let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    buf.drain(..p + 4);
                    if s.write_all(&resp).await.is_err() {
                        return;
                    }
                }
                match s.read(&mut tmp).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
        });
    }
}
