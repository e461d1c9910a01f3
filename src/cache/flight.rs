//! Single flight: concurrent fills of one key share one fetch. The first caller (the leader)
//! runs it; the others wait for its outcome, success or failure alike, so a failing upstream
//! sees one call, not one per waiting request. A leader dropped before it finishes (its caller
//! went away) hands over: one of the waiters runs the fetch instead.
//!
//! Only misses come here; a hit never takes this module's lock. The lock is held for a map
//! operation at a time, never across an `.await`.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

/// A failure as the waiters share it (one leader's `E`).
type Failure = Arc<dyn Any + Send + Sync>;
/// What a fill's waiters see: `None` until the leader lands.
type Outcome<V> = Option<Result<V, Failure>>;

/// The fills under way, by key. Keyed with SipHash: keys hold callers' bodies.
pub struct Flights<K, V> {
    running: Mutex<HashMap<K, watch::Sender<Outcome<V>>>>,
}

impl<K: Hash + Eq + Clone, V: Clone + Send + Sync + 'static> Flights<K, V> {
    pub fn new() -> Self {
        Self {
            running: Mutex::new(HashMap::new()),
        }
    }

    fn running(&self) -> MutexGuard<'_, HashMap<K, watch::Sender<Outcome<V>>>> {
        // A panic elsewhere leaves the map consistent (each operation is one call).
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value for `key`: what `present` finds, else the outcome of the one `fetch` under
    /// way for `key`, else the outcome of this `fetch`, which `store` keeps before anyone else
    /// can start another.
    pub async fn run<F, E>(
        &self,
        key: &K,
        present: impl Fn() -> Option<V>,
        fetch: F,
        store: impl FnOnce(&V),
    ) -> Result<V, Arc<E>>
    where
        F: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        loop {
            let joined = {
                let mut running = self.running();
                match running.get(key) {
                    Some(tx) => Ok(tx.subscribe()),
                    // Checked under the lock: a leader stores before it leaves the map, so a
                    // value it landed is seen here.
                    None => match present() {
                        Some(v) => return Ok(v),
                        None => {
                            let (tx, _) = watch::channel(None);
                            running.insert(key.clone(), tx.clone());
                            Err(tx)
                        }
                    },
                }
            };
            let mut waiting = match joined {
                Ok(rx) => rx,
                Err(tx) => {
                    // The leader.
                    let landing = Landing {
                        flights: self,
                        key,
                        tx,
                    };
                    let result = match fetch.await {
                        Ok(v) => {
                            store(&v);
                            Ok(v)
                        }
                        Err(e) => Err(Arc::new(e)),
                    };
                    let shared = match &result {
                        Ok(v) => Ok(v.clone()),
                        Err(e) => Err(e.clone() as Failure),
                    };
                    // Sent before the flight leaves the map: whoever finds it there reads this
                    // outcome.
                    landing.tx.send_replace(Some(shared));
                    drop(landing);
                    return result;
                }
            };
            if let Ok(outcome) = waiting.wait_for(Option::is_some).await {
                match outcome.as_ref() {
                    Some(Ok(v)) => return Ok(v.clone()),
                    Some(Err(e)) => {
                        if let Ok(e) = e.clone().downcast::<E>() {
                            return Err(e);
                        }
                    }
                    None => {}
                }
            }
            // The leader went away without an outcome (or one of another type): go again.
        }
    }
}

/// The leader's hold on its flight: leaves the map when dropped, landed or not. With the map's
/// sender gone, dropping this one closes the channel, which wakes the waiters of a flight that
/// never landed, and they go again.
struct Landing<'a, K: Hash + Eq + Clone, V: Clone + Send + Sync + 'static> {
    flights: &'a Flights<K, V>,
    key: &'a K,
    tx: watch::Sender<Outcome<V>>,
}

impl<K: Hash + Eq + Clone, V: Clone + Send + Sync + 'static> Drop for Landing<'_, K, V> {
    fn drop(&mut self) {
        self.flights.running().remove(self.key);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Spawns a fill of key 7 whose fetch counts itself in `fetches`, then runs `rest`.
    fn spawn_fill(
        flights: &Arc<Flights<u32, u32>>,
        fetches: &Arc<AtomicUsize>,
        rest: impl Future<Output = Result<u32, ()>> + Send + 'static,
    ) -> tokio::task::JoinHandle<Result<u32, Arc<()>>> {
        let (flights, fetches) = (flights.clone(), fetches.clone());
        tokio::spawn(async move {
            let fetch = async {
                fetches.fetch_add(1, Ordering::SeqCst);
                rest.await
            };
            flights.run(&7, || None, fetch, |_| {}).await
        })
    }

    #[tokio::test]
    async fn a_leader_that_goes_away_hands_the_fetch_to_a_waiter() {
        let flights = Arc::new(Flights::<u32, u32>::new());
        let fetches = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(tokio::sync::Notify::new());
        let leader = spawn_fill(&flights, &fetches, {
            let started = started.clone();
            async move {
                started.notify_one();
                std::future::pending().await
            }
        });
        started.notified().await;
        let waiter = spawn_fill(&flights, &fetches, async { Ok(42) });
        // The waiter is parked on the leader's flight (subscribed to it) before the leader goes.
        while flights
            .running()
            .get(&7)
            .is_none_or(|tx| tx.receiver_count() == 0)
        {
            tokio::task::yield_now().await;
        }
        leader.abort();
        assert_eq!(waiter.await.expect("waiter"), Ok(42));
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        assert!(flights.running().is_empty(), "no flight is left behind");
    }

    #[tokio::test]
    async fn a_value_stored_by_the_leader_is_found_by_later_callers() {
        let flights = Flights::<u32, u32>::new();
        let stored = std::sync::Mutex::new(None);
        let fill = |v: u32| {
            flights.run(
                &1,
                || *stored.lock().unwrap(),
                async move { Ok::<u32, ()>(v) },
                |v| *stored.lock().unwrap() = Some(*v),
            )
        };
        let first = fill(5).await;
        let second = fill(6).await;
        assert_eq!((first, second), (Ok(5), Ok(5)));
        assert!(flights.running().is_empty());
    }
}
