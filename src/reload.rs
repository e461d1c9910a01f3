//! When to re-read the config: this module owns the reload *triggers*, never the config itself.
//!
//! [`ReloadTriggers`] turns four sources into one stream of coalesced [`Trigger`]s:
//! 1. SIGHUP (unix);
//! 2. a change in the directory holding the config file;
//! 3. a change in a directory holding a secret file. Directories, not files, are watched
//!    (non-recursively) because a Kubernetes Secret or ConfigMap volume never edits a file in
//!    place: it writes a new timestamped directory, points a `..data_tmp` symlink at it and
//!    renames that over `..data`, while the visible `api_key -> ..data/api_key` link stays put.
//!    So any create, remove, rename or modify event in a watched directory counts, whatever the
//!    name; reads (open/close events, which the reload itself causes) do not;
//! 4. every `interval`, as a fallback for file systems where watching misses events.
//!
//! One Secret update produces several events, so after the first trigger [`ReloadTriggers::next`]
//! waits a short debounce window, absorbing whatever else arrives, and then yields one trigger.
//! The caller re-reads and re-validates everything on each trigger, then hands the (possibly new)
//! list of files to [`ReloadTriggers::watch`].
//!
//! File watching is best effort: a directory that does not exist, or a watcher that cannot be
//! created (e.g. the inotify instance limit), is logged at warn and skipped; SIGHUP and the
//! interval still work, and the next [`ReloadTriggers::watch`] call tries again.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use notify::event::EventKind;
use notify::{Event, RecommendedWatcher};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// Why a reload was triggered (for the log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP arrived.
    Signal,
    /// Something changed in a directory holding the config file or a secret file.
    FileChange,
    /// The fallback interval elapsed.
    Interval,
}

impl Trigger {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signal => "SIGHUP",
            Self::FileChange => "file change",
            Self::Interval => "interval",
        }
    }

    /// The reason reported when several triggers are coalesced into one: the most explicit wins
    /// (an operator's signal over a file change over the timer).
    fn merge(self, other: Self) -> Self {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }

    fn rank(self) -> u8 {
        match self {
            Self::Interval => 0,
            Self::FileChange => 1,
            Self::Signal => 2,
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

use crate::signals::Hangup;
use watcher::Watching;

mod watcher;

/// A trigger seen but not yet yielded: kept in the struct so a cancelled [`ReloadTriggers::next`]
/// loses nothing.
#[derive(Debug, Clone, Copy)]
struct Pending {
    trigger: Trigger,
    deadline: Instant,
    /// Raw triggers absorbed so far, the first included (for the debug log).
    absorbed: u32,
}

/// The reload trigger sources, merged and debounced. Create it inside a Tokio runtime.
#[derive(Debug)]
pub struct ReloadTriggers {
    /// The watcher's own thread ([`watcher`]); dropping this ends it and its inotify watches.
    /// `None` if the thread could not be started.
    watching: Option<Watching>,
    /// File names that matter in those directories (shared with the watcher's callback).
    names: Arc<RwLock<BTreeSet<OsString>>>,
    events: mpsc::Receiver<()>,
    hangup: Hangup,
    interval: Option<Interval>,
    debounce: Duration,
    pending: Option<Pending>,
}

impl ReloadTriggers {
    /// Starts watching `paths` (their parent directories; duplicates collapsed; a path whose
    /// directory doesn't exist is logged at warn and skipped, not fatal), SIGHUP (unix), and the
    /// interval (the first tick comes one `interval` from now; [`Duration::ZERO`] disables it).
    /// `debounce` coalesces bursts.
    ///
    /// Errors: called outside a Tokio runtime, or the SIGHUP handler cannot be installed. Once
    /// installed, Tokio's SIGHUP handler stays for the life of the process, so a SIGHUP no longer
    /// terminates it.
    pub fn start(
        paths: &[PathBuf],
        interval: Duration,
        debounce: Duration,
    ) -> std::io::Result<ReloadTriggers> {
        // Signal and timer set-up panic outside a runtime; make that an error instead.
        tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        Ok(Self::with_hangup(
            paths,
            interval,
            debounce,
            install_hangup()?,
        ))
    }

    /// [`ReloadTriggers::start`] with a SIGHUP receiver installed earlier (see
    /// [`crate::signals::Signals`]), so a SIGHUP sent before this call is not lost. Call it
    /// inside a Tokio runtime.
    pub fn with_hangup(
        paths: &[PathBuf],
        interval: Duration,
        debounce: Duration,
        hangup: Hangup,
    ) -> ReloadTriggers {
        let interval = (!interval.is_zero()).then(|| {
            let mut timer = tokio::time::interval_at(Instant::now() + interval, interval);
            timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
            timer
        });
        // One slot is enough: a full channel means a trigger is already pending.
        let (events_tx, events) = mpsc::channel(1);
        let names = Arc::default();
        let mut triggers = ReloadTriggers {
            watching: Watching::spawn(events_tx, Arc::clone(&names)),
            names,
            events,
            hangup,
            interval,
            debounce,
            pending: None,
        };
        triggers.watch(paths);
        triggers
    }

    /// Waits for the next (coalesced) trigger. Cancel-safe (usable in `tokio::select!`): a
    /// trigger already seen is kept and its debounce window goes on at the next call.
    pub async fn next(&mut self) -> Trigger {
        loop {
            let Some(mut pending) = self.pending else {
                let trigger = self.raw().await;
                self.pending = Some(Pending {
                    trigger,
                    deadline: Instant::now() + self.debounce,
                    absorbed: 1,
                });
                continue;
            };
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(pending.deadline) => break,
                more = self.raw() => {
                    pending.trigger = pending.trigger.merge(more);
                    pending.absorbed = pending.absorbed.saturating_add(1);
                    self.pending = Some(pending);
                }
            }
        }
        let Some(mut pending) = self.pending.take() else {
            // Unreachable: the loop only breaks with a pending trigger.
            return Trigger::FileChange;
        };
        // Events that arrived up to now are covered by the reload the caller is about to do.
        while self.events.try_recv().is_ok() {
            pending.trigger = pending.trigger.merge(Trigger::FileChange);
            pending.absorbed = pending.absorbed.saturating_add(1);
        }
        // The fallback counts from the last reload, whatever caused it.
        if let Some(timer) = self.interval.as_mut() {
            timer.reset();
        }
        tracing::debug!(
            trigger = pending.trigger.as_str(),
            coalesced = pending.absorbed,
            "config reload triggered"
        );
        pending.trigger
    }

    /// Replaces the watched set (after a reload the config may name other secret files).
    /// Directories no longer needed are unwatched; the others are (re-)watched, which also picks
    /// up a directory that was missing or re-created since the last call. Never blocks: the
    /// watcher's own thread does it (see [`ReloadTriggers::watching`]).
    pub fn watch(&mut self, paths: &[PathBuf]) {
        let names = paths
            .iter()
            .filter_map(|p| p.file_name().map(OsString::from))
            .collect();
        *self.names.write().unwrap_or_else(PoisonError::into_inner) = names;
        if let Some(w) = self.watching.as_mut() {
            w.set(watch_dirs(paths));
        }
    }

    /// Resolves once the last [`ReloadTriggers::watch`] (or [`ReloadTriggers::start`]) is in
    /// effect: changes made from then on are seen.
    pub async fn watching(&mut self) {
        if let Some(w) = self.watching.as_mut() {
            w.applied().await;
        }
    }

    /// The next raw (not yet debounced) trigger. Cancel-safe: each source's receive is.
    async fn raw(&mut self) -> Trigger {
        tokio::select! {
            () = recv_event(&mut self.events) => Trigger::FileChange,
            () = recv_hangup(&mut self.hangup) => Trigger::Signal,
            () = tick(self.interval.as_mut()) => Trigger::Interval,
        }
    }
}

/// The directories to watch for `paths`: each one's parent (a bare file name means the current
/// directory), made absolute without resolving symlinks, duplicates collapsed.
fn watch_dirs(paths: &[PathBuf]) -> BTreeSet<PathBuf> {
    paths
        .iter()
        .map(|path| {
            let dir = match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
        })
        .collect()
}

/// Whether a file event should cause a reload. Reads are not changes (and the reload itself
/// reads every watched file); a lost-events notice is.
fn is_change(event: &Event) -> bool {
    event.need_rescan()
        || matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Remove(_) | EventKind::Modify(_) | EventKind::Any
        )
}

/// Whether an event concerns a watched file: one of `names`, or a Kubernetes Secret-volume entry
/// (`..data`, `..data_tmp`, `..2026_...`). Anything else in the same folder (a log file written
/// next to the config, an editor's swap file) is ignored, so it cannot cause reload loops.
fn concerns(event: &Event, names: &RwLock<BTreeSet<OsString>>) -> bool {
    if event.need_rescan() || event.paths.is_empty() {
        return true;
    }
    let names = names.read().unwrap_or_else(PoisonError::into_inner);
    event.paths.iter().any(|p| {
        p.file_name()
            .is_some_and(|n| names.contains(n) || n.as_encoded_bytes().starts_with(b".."))
    })
}

/// A watcher whose callback (on notify's own thread) forwards changes without ever blocking.
fn new_watcher(
    tx: mpsc::Sender<()>,
    names: Arc<RwLock<BTreeSet<OsString>>>,
) -> Option<RecommendedWatcher> {
    let handler = move |res: notify::Result<Event>| match res {
        Ok(event) if is_change(&event) && concerns(&event, &names) => {
            tracing::debug!(kind = ?event.kind, paths = ?event.paths, "watched directory changed");
            // Full: a trigger is already pending. Closed: the triggers were dropped.
            let _ = tx.try_send(());
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "file watcher error"),
    };
    match notify::recommended_watcher(handler) {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "cannot start the file watcher; config reloads only on SIGHUP or the interval"
            );
            None
        }
    }
}

#[cfg(unix)]
fn install_hangup() -> std::io::Result<Hangup> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}

#[cfg(not(unix))]
fn install_hangup() -> std::io::Result<Hangup> {
    Ok(())
}

/// Resolves on the next file event; never if the channel is closed (it can't be while `self`
/// holds a sender, but a closed channel must not spin).
async fn recv_event(events: &mut mpsc::Receiver<()>) {
    if events.recv().await.is_none() {
        std::future::pending::<()>().await;
    }
}

#[cfg(unix)]
async fn recv_hangup(hangup: &mut Hangup) {
    if hangup.recv().await.is_none() {
        std::future::pending::<()>().await;
    }
}

#[cfg(not(unix))]
async fn recv_hangup(_: &mut Hangup) {
    std::future::pending::<()>().await;
}

async fn tick(interval: Option<&mut Interval>) {
    match interval {
        Some(timer) => {
            timer.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use tokio::time::timeout;

    use super::*;

    /// Bound for a trigger that should come.
    const COME: Duration = Duration::from_secs(5);
    /// How long to wait for a trigger that should not come.
    const QUIET: Duration = Duration::from_millis(300);
    /// Long enough never to fire during a test.
    const NEVER: Duration = Duration::from_secs(3600);

    async fn start(paths: &[PathBuf], debounce: Duration) -> ReloadTriggers {
        let mut triggers = ReloadTriggers::start(paths, NEVER, debounce).expect("start");
        timeout(COME, triggers.watching())
            .await
            .expect("watching within the bound");
        triggers
    }

    async fn expect_trigger(triggers: &mut ReloadTriggers) -> Trigger {
        timeout(COME, triggers.next())
            .await
            .expect("a trigger within the bound")
    }

    async fn expect_quiet(triggers: &mut ReloadTriggers) {
        if let Ok(t) = timeout(QUIET, triggers.next()).await {
            panic!("unexpected trigger: {t:?}");
        }
    }

    #[cfg(unix)]
    fn symlink(target: &str, link: &Path) {
        std::os::unix::fs::symlink(target, link).expect("symlink");
    }

    #[test]
    fn watch_dirs_collapse_duplicates_and_use_parents() {
        let cwd = std::env::current_dir().expect("cwd");
        let dirs = watch_dirs(&[
            PathBuf::from("/etc/gw/config.toml"),
            PathBuf::from("/etc/gw/tenant-a.key"),
            PathBuf::from("/var/run/secrets/gw/api_key"),
            PathBuf::from("config.toml"),
            PathBuf::from("conf/config.toml"),
        ]);
        let want: BTreeSet<PathBuf> = [
            PathBuf::from("/etc/gw"),
            PathBuf::from("/var/run/secrets/gw"),
            std::path::absolute(".").expect("absolute"),
            cwd.join("conf"),
        ]
        .into_iter()
        .collect();
        assert_eq!(dirs, want);
    }

    #[test]
    fn coalesced_reason_is_the_most_explicit() {
        use Trigger::*;
        assert_eq!(Interval.merge(FileChange), FileChange);
        assert_eq!(FileChange.merge(Interval), FileChange);
        assert_eq!(FileChange.merge(Signal), Signal);
        assert_eq!(Signal.merge(Interval), Signal);
        assert_eq!(Signal.to_string(), "SIGHUP");
    }

    #[test]
    fn reads_are_not_changes() {
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
        let change = |kind| is_change(&Event::new(kind));
        assert!(!change(EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!change(EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!change(EventKind::Other));
        assert!(change(EventKind::Create(CreateKind::File)));
        assert!(change(EventKind::Modify(ModifyKind::Name(RenameMode::To))));
        assert!(is_change(
            &Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan)
        ));
    }

    #[test]
    fn start_outside_a_runtime_is_an_error() {
        assert!(ReloadTriggers::start(&[], NEVER, Duration::ZERO).is_err());
    }

    #[tokio::test]
    async fn writing_the_config_file_triggers_file_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "a = 1\n").expect("write");
        let mut triggers = start(std::slice::from_ref(&config), Duration::from_millis(50)).await;
        std::fs::write(&config, "a = 2\n").expect("write");
        assert_eq!(expect_trigger(&mut triggers).await, Trigger::FileChange);
    }

    #[tokio::test]
    async fn other_files_in_a_watched_directory_do_not_trigger() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("gw.toml");
        std::fs::write(&config, "a = 1\n").expect("write");
        let mut triggers = start(std::slice::from_ref(&config), Duration::from_millis(50)).await;
        // A log file written next to the config must not cause reloads.
        std::fs::write(dir.path().join("gw.log"), "line\n").expect("write");
        expect_quiet(&mut triggers).await;
        std::fs::write(&config, "a = 2\n").expect("write");
        assert_eq!(expect_trigger(&mut triggers).await, Trigger::FileChange);
    }

    #[tokio::test]
    async fn reading_a_watched_file_does_not_trigger() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "a = 1\n").expect("write");
        let mut triggers = start(std::slice::from_ref(&config), Duration::from_millis(50)).await;
        let _ = std::fs::read_to_string(&config).expect("read");
        expect_quiet(&mut triggers).await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn kubernetes_secret_swap_triggers_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vol = dir.path();
        std::fs::create_dir(vol.join("..2026_a")).expect("mkdir");
        std::fs::write(vol.join("..2026_a/api_key"), "old\n").expect("write");
        symlink("..2026_a", &vol.join("..data"));
        symlink("..data/api_key", &vol.join("api_key"));
        let key = vol.join("api_key");
        let mut triggers = start(&[key], Duration::from_millis(200)).await;

        // What the kubelet's atomic writer does, while next() waits.
        let root = vol.to_path_buf();
        let kubelet = std::thread::spawn(move || {
            std::fs::create_dir(root.join("..2026_b")).expect("mkdir");
            std::fs::write(root.join("..2026_b/api_key"), "new\n").expect("write");
            symlink("..2026_b", &root.join("..data_tmp"));
            std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("rename");
        });

        assert_eq!(expect_trigger(&mut triggers).await, Trigger::FileChange);
        expect_quiet(&mut triggers).await;
        kubelet.join().expect("kubelet");
        let key = std::fs::read_to_string(vol.join("api_key")).expect("read");
        assert_eq!(key, "new\n");
    }

    #[tokio::test]
    async fn a_burst_spread_over_time_is_one_trigger() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "a = 0\n").expect("write");
        let mut triggers = start(std::slice::from_ref(&config), Duration::from_millis(400)).await;
        // The writer runs while next() waits. Its pauses spread the events out (so the watcher
        // delivers them one by one); they are not synchronisation: the bound is the timeout.
        let writer = std::thread::spawn(move || {
            for i in 1..=3 {
                std::fs::write(&config, format!("a = {i}\n")).expect("write");
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        assert_eq!(expect_trigger(&mut triggers).await, Trigger::FileChange);
        expect_quiet(&mut triggers).await;
        writer.join().expect("writer");
    }

    #[tokio::test]
    async fn next_is_cancel_safe_during_the_debounce() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "a = 1\n").expect("write");
        let mut triggers = start(std::slice::from_ref(&config), Duration::from_millis(200)).await;
        std::fs::write(&config, "a = 2\n").expect("write");
        let give_up = Instant::now() + COME;
        // Cancelled again and again, well inside the debounce window.
        let trigger = loop {
            assert!(Instant::now() < give_up, "no trigger within the bound");
            if let Ok(t) = timeout(Duration::from_millis(20), triggers.next()).await {
                break t;
            }
        };
        assert_eq!(trigger, Trigger::FileChange);
        expect_quiet(&mut triggers).await;
    }

    #[tokio::test]
    async fn interval_fallback_fires() {
        let began = Instant::now();
        let interval = Duration::from_millis(200);
        let mut triggers =
            ReloadTriggers::start(&[], interval, Duration::from_millis(10)).expect("start");
        assert_eq!(expect_trigger(&mut triggers).await, Trigger::Interval);
        let first = Instant::now();
        assert!(
            first - began >= interval,
            "the first tick is one interval away"
        );
        assert_eq!(expect_trigger(&mut triggers).await, Trigger::Interval);
        assert!(Instant::now() - first >= interval);
    }

    #[tokio::test]
    async fn watch_replaces_the_set() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let in_a = a.path().join("config.toml");
        let in_b = b.path().join("secret.key");
        std::fs::write(&in_a, "x").expect("write");
        std::fs::write(&in_b, "x").expect("write");
        let mut triggers = start(std::slice::from_ref(&in_a), Duration::from_millis(50)).await;

        triggers.watch(std::slice::from_ref(&in_b));
        timeout(COME, triggers.watching()).await.expect("watching");
        std::fs::write(&in_a, "y").expect("write");
        expect_quiet(&mut triggers).await;
        std::fs::write(&in_b, "y").expect("write");
        assert_eq!(expect_trigger(&mut triggers).await, Trigger::FileChange);
    }

    #[tokio::test]
    async fn missing_directory_is_skipped_then_picked_up_by_watch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let later = dir.path().join("later");
        let key = later.join("api_key");
        let mut triggers = start(std::slice::from_ref(&key), Duration::from_millis(50)).await;

        std::fs::create_dir(&later).expect("mkdir");
        triggers.watch(std::slice::from_ref(&key));
        timeout(COME, triggers.watching()).await.expect("watching");
        std::fs::write(&key, "k").expect("write");
        assert_eq!(expect_trigger(&mut triggers).await, Trigger::FileChange);
    }

    /// Set in the child process that [`sighup_triggers_signal`] starts.
    const SIGHUP_CHILD: &str = "ETELECOM_GATEWAY_RELOAD_SIGHUP_CHILD";

    /// A SIGHUP reaches every handler in the process, so it is sent in a child process running
    /// only [`sighup_child`]; in this one it would be a spurious trigger for the other tests.
    #[cfg(unix)]
    #[test]
    fn sighup_triggers_signal() {
        let module = module_path!()
            .split_once("::")
            .map_or(module_path!(), |(_, rest)| rest);
        let name = format!("{module}::sighup_child");
        let out = Command::new(std::env::current_exe().expect("current_exe"))
            .args([name.as_str(), "--exact", "--ignored", "--test-threads=1"])
            .env(SIGHUP_CHILD, "1")
            .output()
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child {name}: {}\n{stdout}\n{stderr}",
            out.status
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    #[ignore = "run in its own process by sighup_triggers_signal"]
    async fn sighup_child() {
        if std::env::var_os(SIGHUP_CHILD).is_none() {
            return;
        }
        // The handler is installed by start(), before the signal is sent.
        let mut triggers = start(&[], Duration::from_millis(10)).await;
        let status = Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        assert_eq!(expect_trigger(&mut triggers).await, Trigger::Signal);
    }
}
