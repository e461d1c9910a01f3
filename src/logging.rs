//! Log set-up: JSON lines (default, [`json`]) or human text, to stderr, filtered by `RUST_LOG`
//! (EnvFilter syntax, default `info`). Standard output stays free for command output (`check`,
//! `demo`). Access lines are written in batches ([`writer`]); [`flush`] writes out what is
//! pending.

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

/// Installs the global subscriber. Fails only if one is already installed.
pub fn init(format: LogFormat) -> Result<(), String> {
    init_with(format, std::io::stderr, std::io::stderr().is_terminal())
}

/// Installs the global subscriber writing to `writer` (access lines buffered, see [`writer`]).
pub fn init_with<W>(format: LogFormat, writer: W, ansi: bool) -> Result<(), String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer::Buffered::new(writer));
    let result = match format {
        LogFormat::Json => builder.event_format(json::JsonLines).try_init(),
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
    };
    result.map_err(|e| e.to_string())
}
