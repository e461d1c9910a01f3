//! The log writer: access-log lines are buffered in memory and written in batches (as NGINX's
//! `access_log ... buffer= flush=`), everything else is written at once.
//!
//! An access line (target `access`) is appended to a buffer; the buffer goes out in one
//! `write(2)` when it reaches [`BUFFER_BYTES`], when any other event is written (so lines stay
//! in order and a warning is never held back), every [`FLUSH_INTERVAL`] from a small flusher
//! thread, and on [`flush`] — which `main` calls on every way out of the process that it
//! controls (the end of `main`, and the second-signal exit). A panic that unwinds through
//! `main` flushes too (the guard's `Drop`).

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use tracing::Metadata;
use tracing_subscriber::fmt::MakeWriter;

/// Flush the buffer when it holds this much (about 200 access lines).
pub const BUFFER_BYTES: usize = 64 * 1024;
/// Flush the buffer at least this often.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// The target of the access-log event (see `access_log.rs`).
const ACCESS_TARGET: &str = "access";

/// Where every installed writer can be flushed from (there is one per process).
static INSTALLED: OnceLock<Weak<dyn Flush>> = OnceLock::new();

/// The same writer once its subscriber is the global one and writes JSON: access lines built
/// without `tracing` ([`append_access`]) go into its buffer.
static DIRECT: OnceLock<Weak<dyn Flush>> = OnceLock::new();

trait Flush: Send + Sync {
    fn flush_buffer(&self);
    /// Appends one access line, as an access event's write does.
    fn append_access(&self, line: &[u8]);
}

/// A [`MakeWriter`] that buffers access lines in front of `W`.
pub struct Buffered<W> {
    shared: Arc<Shared<W>>,
}

struct Shared<W> {
    out: W,
    buf: Mutex<Vec<u8>>,
}

impl<W> Shared<W>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.buf.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `bytes`; writes the buffer out unless they are a buffered access line and it
    /// is not yet full.
    fn append(&self, bytes: &[u8], buffered: bool) {
        let mut buf = self.lock();
        buf.extend_from_slice(bytes);
        if !buffered || buf.len() >= BUFFER_BYTES {
            self.drain(&mut buf);
        }
    }

    /// Writes out what `buf` holds (the lock is held, so lines keep their order).
    fn drain(&self, buf: &mut Vec<u8>) {
        if !buf.is_empty() {
            // A log line that cannot be written has nowhere to be reported.
            let _ = self.out.make_writer().write_all(buf);
            buf.clear();
        }
    }
}

impl<W> Flush for Shared<W>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fn flush_buffer(&self) {
        let mut buf = self.lock();
        self.drain(&mut buf);
    }

    fn append_access(&self, line: &[u8]) {
        self.append(line, true);
    }
}

impl<W> Buffered<W>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    /// Wraps `out`, and starts the flusher thread (it ends when the writer is dropped).
    pub fn new(out: W) -> Self {
        let shared = Arc::new(Shared {
            out,
            buf: Mutex::new(Vec::with_capacity(BUFFER_BYTES)),
        });
        let weak = Arc::downgrade(&shared);
        let as_flush: Weak<dyn Flush> = weak.clone();
        let _ = INSTALLED.set(as_flush);
        let spawned = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(FLUSH_INTERVAL);
                    match weak.upgrade() {
                        Some(s) => s.flush_buffer(),
                        None => break,
                    }
                }
            });
        if let Err(e) = spawned {
            // Without the thread the buffer still goes out when full, on other events and on
            // exit; only the interval is lost.
            eprintln!("log flusher thread not started: {e}");
        }
        Self { shared }
    }

    /// Writes out the buffer now.
    #[cfg(test)]
    fn flush(&self) {
        self.shared.flush_buffer();
    }
}

/// Lets [`append_access`] write into the installed writer's buffer (`logging::init_with` calls
/// it once the JSON subscriber is the global one).
pub fn enable_direct() {
    if let Some(w) = INSTALLED.get() {
        let _ = DIRECT.set(w.clone());
    }
}

/// Whether [`enable_direct`] was called.
pub fn direct() -> bool {
    DIRECT.get().is_some()
}

/// Appends one access line to the installed writer's buffer; false when direct writes are not
/// enabled (or the writer is gone).
pub fn append_access(line: &[u8]) -> bool {
    match DIRECT.get().and_then(Weak::upgrade) {
        Some(s) => {
            s.append_access(line);
            true
        }
        None => false,
    }
}

/// Writes out the installed writer's buffer (a no-op when none is installed).
pub fn flush() {
    if let Some(s) = INSTALLED.get().and_then(Weak::upgrade) {
        s.flush_buffer();
    }
}

/// Flushes the log buffer when dropped: `main` holds one for the life of the process.
#[derive(Debug)]
#[must_use = "the buffer is flushed when the guard is dropped"]
pub struct FlushGuard(());

impl FlushGuard {
    pub fn new() -> Self {
        Self(())
    }
}

impl Default for FlushGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        flush();
    }
}

/// The writer for one event.
pub struct EventWriter<'a, W> {
    shared: &'a Shared<W>,
    buffered: bool,
}

impl<W> Write for EventWriter<'_, W>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.shared.append(bytes, self.buffered);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a, W> MakeWriter<'a> for Buffered<W>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    type Writer = EventWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            shared: &self.shared,
            buffered: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        EventWriter {
            shared: &self.shared,
            buffered: meta.target() == ACCESS_TARGET && *meta.level() >= tracing::Level::INFO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects what reaches the "file", one entry per `write(2)`-like call.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Sink {
        fn writes(&self) -> Vec<String> {
            let w = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            w.iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect()
        }
    }

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let mut w = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            w.push(bytes.to_vec());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Sink {
        type Writer = Sink;
        fn make_writer(&'a self) -> Sink {
            self.clone()
        }
    }

    fn event(w: &Buffered<Sink>, target_access: bool, line: &str) {
        // Metadata for an access event and for another event, as the subscriber passes them.
        let meta = if target_access {
            tracing::metadata::Metadata::new(
                "request",
                ACCESS_TARGET,
                tracing::Level::INFO,
                None,
                None,
                None,
                tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CALLSITE)),
                tracing::metadata::Kind::EVENT,
            )
        } else {
            tracing::metadata::Metadata::new(
                "warning",
                "etelecom_gateway::proxy",
                tracing::Level::WARN,
                None,
                None,
                None,
                tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CALLSITE)),
                tracing::metadata::Kind::EVENT,
            )
        };
        w.make_writer_for(&meta)
            .write_all(line.as_bytes())
            .expect("write");
    }

    struct Callsite;
    static CALLSITE: Callsite = Callsite;
    impl tracing::callsite::Callsite for Callsite {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            unreachable!("not registered")
        }
    }

    #[test]
    fn access_lines_wait_for_a_flush_and_go_out_together_in_order() {
        let sink = Sink::default();
        let w = Buffered::new(sink.clone());
        event(&w, true, "a1\n");
        event(&w, true, "a2\n");
        assert!(sink.writes().is_empty(), "{:?}", sink.writes());
        w.flush();
        assert_eq!(sink.writes(), ["a1\na2\n"]);
    }

    #[test]
    fn direct_access_lines_share_the_buffer_and_its_order() {
        let sink = Sink::default();
        let w = Buffered::new(sink.clone());
        event(&w, true, "a1\n");
        w.shared.append_access(b"d1\n");
        assert!(sink.writes().is_empty(), "{:?}", sink.writes());
        event(&w, false, "warn\n");
        assert_eq!(sink.writes(), ["a1\nd1\nwarn\n"]);
    }

    #[test]
    fn other_events_go_out_at_once_after_the_buffered_lines() {
        let sink = Sink::default();
        let w = Buffered::new(sink.clone());
        event(&w, true, "a1\n");
        event(&w, false, "warn\n");
        assert_eq!(sink.writes(), ["a1\nwarn\n"]);
    }

    #[test]
    fn a_full_buffer_is_written_without_waiting() {
        let sink = Sink::default();
        let w = Buffered::new(sink.clone());
        let line = format!("{}\n", "x".repeat(1023));
        for _ in 0..BUFFER_BYTES / 1024 {
            event(&w, true, &line);
        }
        let writes = sink.writes();
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].len(), BUFFER_BYTES);
    }

    #[test]
    fn the_flusher_thread_writes_within_the_interval() {
        let sink = Sink::default();
        let w = Buffered::new(sink.clone());
        event(&w, true, "late\n");
        let deadline = std::time::Instant::now() + FLUSH_INTERVAL * 20;
        while sink.writes().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never flushed");
            std::thread::yield_now();
        }
        assert_eq!(sink.writes(), ["late\n"]);
    }
}
