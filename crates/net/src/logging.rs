//! Logging set-up shared by the binaries.

/// Logs to stderr, filtered by `RUST_LOG` (else `default_filter`), in colour only on a
/// terminal so container logs and log files stay plain text.
pub fn init(default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
