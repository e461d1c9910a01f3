//! The file watcher on a thread of its own. Registering and dropping inotify watches are
//! blocking calls into `notify`'s event-loop thread, which can be slow to answer when it is busy;
//! so the async side never makes them: [`Watching::set`] only posts the wanted set of folders
//! (never blocks; a newer set replaces one not yet applied), and this thread applies it. The
//! thread owns the watcher and drops it when the [`Watching`] is dropped, so a stopping reload
//! task never waits for it either.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, RwLock};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

/// The async side's handle on the watcher thread.
#[derive(Debug)]
pub(super) struct Watching {
    wanted: std_mpsc::Sender<(u64, BTreeSet<PathBuf>)>,
    applied: watch::Receiver<u64>,
    asked: u64,
}

impl Watching {
    /// Starts the thread; `None` (logged) if it cannot be started.
    pub(super) fn spawn(
        events: mpsc::Sender<()>,
        names: Arc<RwLock<BTreeSet<OsString>>>,
    ) -> Option<Watching> {
        let (wanted, requests) = std_mpsc::channel();
        let (done, applied) = watch::channel(0);
        let started = std::thread::Builder::new()
            .name("config-watcher".into())
            .spawn(move || run(&requests, &done, &events, &names));
        match started {
            Ok(_) => Some(Watching {
                wanted,
                applied,
                asked: 0,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the file watcher thread; config reloads only on SIGHUP or the interval");
                None
            }
        }
    }

    /// Asks for exactly `dirs` to be watched. Never blocks.
    pub(super) fn set(&mut self, dirs: BTreeSet<PathBuf>) {
        self.asked += 1;
        let _ = self.wanted.send((self.asked, dirs));
    }

    /// Resolves once the last [`Watching::set`] is in effect (or the thread is gone).
    pub(super) async fn applied(&mut self) {
        let asked = self.asked;
        let _ = self.applied.wait_for(|done| *done >= asked).await;
    }
}

fn run(
    requests: &std_mpsc::Receiver<(u64, BTreeSet<PathBuf>)>,
    done: &watch::Sender<u64>,
    events: &mpsc::Sender<()>,
    names: &Arc<RwLock<BTreeSet<OsString>>>,
) {
    let mut watcher: Option<RecommendedWatcher> = None;
    let mut dirs = BTreeSet::new();
    while let Ok(mut latest) = requests.recv() {
        while let Ok(newer) = requests.try_recv() {
            latest = newer;
        }
        let (generation, wanted) = latest;
        if watcher.is_none() && !wanted.is_empty() {
            watcher = super::new_watcher(events.clone(), names.clone());
        }
        match watcher.as_mut() {
            Some(w) => dirs = apply(w, &dirs, wanted),
            None => dirs.clear(),
        }
        done.send_replace(generation);
    }
    // The triggers were dropped: the watcher goes with this thread.
}

/// Unwatches the folders no longer wanted and (re-)watches the others, which also picks up a
/// folder that was missing or re-created since; returns those now watched.
fn apply(
    watcher: &mut RecommendedWatcher,
    dirs: &BTreeSet<PathBuf>,
    wanted: BTreeSet<PathBuf>,
) -> BTreeSet<PathBuf> {
    for gone in dirs.difference(&wanted) {
        match watcher.unwatch(gone) {
            Ok(()) => tracing::debug!(dir = %gone.display(), "stopped watching"),
            // E.g. the directory was deleted, which already ended its watch.
            Err(e) => tracing::debug!(dir = %gone.display(), error = %e, "unwatch"),
        }
    }
    let mut watched = BTreeSet::new();
    for dir in wanted {
        match watcher.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                tracing::debug!(dir = %dir.display(), "watching for config changes");
                watched.insert(dir);
            }
            Err(e) => tracing::warn!(
                dir = %dir.display(),
                error = %e,
                "cannot watch directory; changes there are picked up only by SIGHUP or \
                 the reload interval"
            ),
        }
    }
    watched
}
