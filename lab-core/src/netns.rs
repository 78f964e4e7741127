//! Sockets in another network namespace. In namespaces mode every endpoint has a namespace of
//! its own, while one `sim-endpoint` process serves a whole `[[endpoints]]` block: it opens
//! each endpoint's sockets in that endpoint's namespace, so their source address, route and
//! link faults are the endpoint's own. The calling thread enters the namespace for the
//! `socket(2)` call only (a socket stays in the namespace it was created in; connecting,
//! reading and writing happen anywhere). Needs CAP_SYS_ADMIN (root), as namespaces mode does.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::Path;

use nix::sched::{setns, CloneFlags};
use tokio::net::{TcpSocket, TcpStream};

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    file: File,
}

impl NetNs {
    /// Opens a named namespace (`/run/netns/NAME`, as `ip netns add` creates it).
    pub fn open(name: &str) -> io::Result<NetNs> {
        let file = File::open(Path::new("/run/netns").join(name))
            .map_err(|e| io::Error::new(e.kind(), format!("network namespace {name}: {e}")))?;
        Ok(NetNs {
            name: name.to_string(),
            file,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` with the calling thread in this namespace, then returns the thread to its own.
    fn within<T>(&self, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let home = File::open("/proc/thread-self/ns/net")?;
        setns(&self.file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        let r = f();
        if let Err(e) = setns(&home, CloneFlags::CLONE_NEWNET) {
            // A thread left behind would open every later socket in the wrong network.
            tracing::error!(error = %e, ns = %self.name, "cannot return to the thread's network namespace");
            std::process::abort();
        }
        r
    }

    /// A TCP socket in this namespace.
    pub fn tcp_socket(&self, v4: bool) -> io::Result<TcpSocket> {
        self.within(|| {
            if v4 {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
        })
    }
}

/// Connects to `addr` from `ns` (or from the process's own namespace).
pub async fn connect(ns: Option<&NetNs>, addr: SocketAddr) -> io::Result<TcpStream> {
    match ns {
        None => TcpStream::connect(addr).await,
        Some(n) => n.tcp_socket(addr.is_ipv4())?.connect(addr).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_namespace_is_an_error_naming_it() {
        let e = NetNs::open("fortilab-no-such-namespace").unwrap_err();
        assert!(e.to_string().contains("fortilab-no-such-namespace"), "{e}");
    }

    #[tokio::test]
    async fn without_a_namespace_connect_is_a_plain_connect() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        let c = connect(None, a).await.unwrap();
        assert_eq!(c.peer_addr().unwrap(), a);
    }
}
