//! Log set-up: JSON lines (default, [`json`]) or human text, to stderr, filtered by `RUST_LOG`
//! (EnvFilter syntax, default `info`). Standard output stays free for command output (`check`,
//! `demo`). Access lines are written in batches ([`writer`]); [`flush`] writes out what is
//! pending.
//!
//! The dependencies that log per event, per frame or per wake-up ([`NOISY`]: the file watcher,
//! the I/O reactor, HTTP/2, TLS) are capped at `info` unless `RUST_LOG` names them itself
//! (`RUST_LOG=trace,notify=trace`). Otherwise `RUST_LOG=trace` with the log written into a
//! watched folder would feed itself: each line an inotify event that the watcher logs, which
//! writes the file again.

mod json;
mod writer;

pub use writer::{FlushGuard, flush};

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

/// Targets capped at `info` unless named in `RUST_LOG`.
const NOISY: &[&str] = &[
    "notify",
    "inotify",
    "mio",
    "polling",
    "hyper",
    "hyper_util",
    "h2",
    "rustls",
    "tokio_rustls",
    "hyper_rustls",
    "tower",
    "want",
];

/// `spec` (default `info`) with `,<target>=info` for every [`NOISY`] target it does not name.
fn directives(spec: &str) -> String {
    let spec = if spec.trim().is_empty() { "info" } else { spec };
    let named = |target: &str| {
        spec.split(',').any(|d| {
            let name = d.split(['=', '[']).next().unwrap_or("").trim();
            name == target || name.starts_with(&format!("{target}::"))
        })
    };
    let mut out = spec.to_owned();
    for target in NOISY.iter().filter(|t| !named(t)) {
        out.push(',');
        out.push_str(target);
        out.push_str("=info");
    }
    out
}

/// Installs the global subscriber. Fails only if one is already installed.
pub fn init(format: LogFormat) -> Result<(), String> {
    init_with(format, std::io::stderr, std::io::stderr().is_terminal())
}

/// Installs the global subscriber writing to `writer` (access lines buffered, see [`writer`]).
pub fn init_with<W>(format: LogFormat, writer: W, ansi: bool) -> Result<(), String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let spec = std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_default();
    let filter = EnvFilter::try_new(directives(&spec))
        .unwrap_or_else(|_| EnvFilter::new(directives("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer::Buffered::new(writer));
    let result = match format {
        LogFormat::Json => builder.event_format(json::JsonLines).try_init(),
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
    };
    result.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noisy_dependencies_are_capped_unless_named() {
        let d = directives("trace");
        assert!(d.starts_with("trace,"), "{d}");
        for t in NOISY {
            assert!(d.contains(&format!(",{t}=info")), "{t}: {d}");
        }
        let d = directives("debug,notify=trace,h2::codec=debug");
        assert!(!d.contains(",notify=info"), "{d}");
        assert!(!d.contains(",h2=info"), "{d}");
        assert!(d.contains("mio=info"), "{d}");
        // `hyper` does not name `hyper_util`.
        let d = directives("hyper=trace");
        assert!(
            d.contains("hyper_util=info") && !d.contains(",hyper=info"),
            "{d}"
        );
        assert!(directives("").starts_with("info,"));
        assert!(EnvFilter::try_new(directives("trace")).is_ok());
    }
}
