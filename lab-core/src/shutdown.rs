//! Graceful shutdown: SIGINT/SIGTERM cancel a token that every task of a device watches.

use tokio_util::sync::CancellationToken;

/// Environment variable the orchestrator sets on the devices it starts: the device then also
/// shuts down when its standard input reaches end of file, which happens when the orchestrator
/// exits for any reason, SIGKILL included. No device outlives its lab.
pub const EXIT_WITH_STDIN_ENV: &str = "FORTILAB_EXIT_WITH_STDIN";

/// A token cancelled on the first SIGINT or SIGTERM (and on stdin EOF when
/// [`EXIT_WITH_STDIN_ENV`] is `1`).
pub fn signal_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested, draining");
        t.cancel();
    });
    if std::env::var(EXIT_WITH_STDIN_ENV).as_deref() == Ok("1") {
        let t = token.clone();
        // A plain thread: tokio's stdin is also a blocking thread, and this one must not keep
        // the runtime from shutting down.
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
            tracing::info!("orchestrator gone (stdin closed), draining");
            t.cancel();
        });
    }
    token
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
