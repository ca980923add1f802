//! What every binary does around its own work: SIGTERM and SIGINT handling (a node is PID 1
//! in its container, so nobody else will turn a SIGTERM into an exit), logging, and a failure
//! printed as one line.

use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
pub async fn on_termination(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop this process with SIGKILL");
        return;
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}

/// A token that the first SIGTERM or SIGINT cancels. Call from inside the runtime.
pub fn shutdown_on_termination() -> CancellationToken {
    let shutdown = CancellationToken::new();
    tokio::spawn(on_termination(shutdown.clone()));
    shutdown
}

/// A binary's `main` after parsing its flags: logging filtered by `RUST_LOG` (else
/// `default_filter`), then `run`, and a failure printed as one line with exit code 1.
pub fn main<E>(default_filter: &str, run: impl FnOnce() -> Result<(), E>) -> std::process::ExitCode
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    crate::logging::init(default_filter);
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            let error: Box<dyn std::error::Error + Send + Sync> = error.into();
            eprintln!("error: {}", wire::one_line(error.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Lets a command-line program end quietly when the reader of its output goes away
/// (`cargo client status | head`): Rust ignores SIGPIPE, so a write to a closed pipe would
/// panic in `println!`; with the default action the process ends as `cat` or `ls` would.
/// For programs that print to a terminal or a pipe, never for servers (they write to sockets).
pub fn end_quietly_on_closed_stdout() {
    // SAFETY: called first thing in `main`, before any thread starts; it only sets the
    // signal's disposition back to the system default.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
