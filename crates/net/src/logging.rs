//! Logging set-up shared by the binaries.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Logs to stderr, filtered by `RUST_LOG` (else `default_filter`), in colour only on a
/// terminal so container logs and log files stay plain text.
///
/// A filter is a list of levels by target (`info`, `warn,net=debug`): tracing's
/// `Targets`, which needs no regex engine, unlike `EnvFilter` (a third of a megabyte of every
/// image). A `RUST_LOG` that does not parse is said once and the default used.
pub fn init(default_filter: &str) {
    let fallback = || default_filter.parse::<Targets>().unwrap_or_default();
    let (filter, refused) = match std::env::var("RUST_LOG") {
        Ok(text) => match text.parse::<Targets>() {
            Ok(filter) => (filter, None),
            Err(error) => (fallback(), Some((text, error))),
        },
        Err(_) => (fallback(), None),
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();
    if let Some((text, error)) = refused {
        tracing::warn!("RUST_LOG={text} is not a filter such as `info` or `warn,net=debug` ({error}); using `{default_filter}`");
    }
}
