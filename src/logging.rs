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

pub use json::Line as JsonLine;
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
    match format {
        LogFormat::Json => {
            builder
                .event_format(json::JsonLines)
                .try_init()
                .map_err(|e| e.to_string())?;
            writer::enable_direct();
            // The filter is fixed from here on: whether access lines are on is asked once.
            let _ = ACCESS_ON.set(tracing::enabled!(target: "access", tracing::Level::INFO));
            Ok(())
        }
        LogFormat::Text => builder
            .with_ansi(ansi)
            .try_init()
            .map_err(|e| e.to_string()),
    }
}

/// Whether the installed JSON subscriber takes access lines (`None` before it is installed).
static ACCESS_ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Whether INFO events of target `access` are enabled: asked of the JSON subscriber once when
/// it is installed (its filter never changes), otherwise of `tracing` at each call (the text
/// format, tests with a scoped subscriber). `tracing::enabled!` walks the filter's directives
/// each time (~200 instructions per request).
pub fn access_enabled() -> bool {
    match ACCESS_ON.get() {
        Some(&on) => on,
        None => tracing::enabled!(target: "access", tracing::Level::INFO),
    }
}

/// Writes one INFO line with `message` and target `target` straight into the log buffer, its
/// fields written by `fill`, when the installed format is JSON (what [`json::JsonLines`] would
/// write for the same event, without `tracing`'s dispatch and per-field dynamic calls). Returns
/// false otherwise: the caller then emits the event through `tracing`. The caller checks that
/// the target is enabled ([`access_enabled`]). `message` and `target` are written as they are
/// (names from source code, which JSON never escapes).
pub fn write_direct(
    message: &'static str,
    target: &'static str,
    fill: impl FnOnce(&mut JsonLine<'_>),
) -> bool {
    if !writer::direct() {
        return false;
    }
    thread_local! {
        static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    let write = |out: &mut String| {
        let mut line = JsonLine::start(out, tracing::Level::INFO, message);
        fill(&mut line);
        line.finish(target);
        writer::append_access(out.as_bytes())
    };
    LINE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut out) => write(&mut out),
        Err(_) => write(&mut String::new()),
    })
}

/// What the JSON formatter writes for the events `f` emits (for tests that compare a
/// [`write_direct`] line with its `tracing` event).
#[cfg(test)]
pub(crate) fn json_events(f: impl FnOnce()) -> String {
    use std::sync::{Arc, Mutex, PoisonError};
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut out = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            out.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .event_format(json::JsonLines)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let out = capture.0.lock().unwrap_or_else(PoisonError::into_inner);
    String::from_utf8_lossy(&out).into_owned()
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
