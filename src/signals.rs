//! Process signals: SIGTERM and SIGINT (stop, then a second one exits at once) and SIGHUP
//! (reload). [`Signals::install`] installs all three handlers in one go, before the process binds
//! a port or logs that it is ready, so a signal sent at any moment after that is acted on: a stop
//! signal that arrives while the process is still starting is kept and starts the drain as soon
//! as the server runs (it is never lost, and never kills the process with the default action).
//! Once installed, a handler stays for the life of the process.

#[cfg(unix)]
use tokio::signal::unix::{Signal, SignalKind, signal};

/// The exit code after a second stop signal (128 + SIGINT, as a shell reports Ctrl-C).
pub const EXIT_FORCED: i32 = 130;

/// SIGHUP's receiver, handed to the reload triggers.
#[cfg(unix)]
pub type Hangup = Signal;
#[cfg(not(unix))]
pub type Hangup = ();

/// The installed handlers.
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    term: Signal,
    #[cfg(unix)]
    int: Signal,
    hangup: Option<Hangup>,
}

impl Signals {
    /// Installs the SIGTERM, SIGINT and SIGHUP handlers. Call it inside a Tokio runtime, first
    /// thing.
    pub fn install() -> std::io::Result<Signals> {
        tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        #[cfg(unix)]
        {
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
                hangup: Some(signal(SignalKind::hangup())?),
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals { hangup: Some(()) })
        }
    }

    /// Takes SIGHUP's receiver (for the reload triggers); `None` the second time. Without a
    /// taker, SIGHUP is received and ignored.
    pub fn take_hangup(&mut self) -> Option<Hangup> {
        self.hangup.take()
    }

    /// Resolves on the first SIGTERM or SIGINT (one that came before this is polled counts).
    /// From then on a second one runs `on_forced_exit` (e.g. removing a temporary folder) and
    /// exits the process at once with [`EXIT_FORCED`].
    pub async fn shutdown(mut self, on_forced_exit: impl FnOnce() + Send + 'static) {
        let first = self.next_stop().await;
        tracing::info!(signal = first, "shutting down");
        tokio::spawn(async move {
            let second = self.next_stop().await;
            tracing::warn!(signal = second, "second signal: exiting now");
            on_forced_exit();
            crate::logging::flush();
            std::process::exit(EXIT_FORCED);
        });
    }

    #[cfg(unix)]
    async fn next_stop(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }

    #[cfg(not(unix))]
    async fn next_stop(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "ctrl-c"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_outside_a_runtime_is_an_error() {
        assert!(Signals::install().is_err());
    }
}
