//! A value reused while it is young, computed by one caller at a time: requests that find it
//! stale while another computes it wait for that computation instead of starting their own
//! (single flight). A flood of scrapes then costs one scrape per `max_age`, not one per request.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A value younger than `max_age` is reused; see the module's documentation.
pub struct Fresh<T> {
    max_age: Duration,
    slot: Mutex<Slot<T>>,
    done: Condvar,
}

struct Slot<T> {
    /// The value and when its computation ended.
    value: Option<(Instant, Arc<T>)>,
    computing: bool,
}

impl<T> Fresh<T> {
    pub fn new(max_age: Duration) -> Fresh<T> {
        Fresh {
            max_age,
            slot: Mutex::new(Slot {
                value: None,
                computing: false,
            }),
            done: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        self.slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The value, computed by `compute` when there is none younger than `max_age` and nobody
    /// is computing it already; otherwise the one being computed, once it is ready. Blocking:
    /// call it from a handler.
    pub fn get(&self, compute: impl FnOnce() -> T) -> Arc<T> {
        let mut slot = self.lock();
        loop {
            if let Some((at, value)) = &slot.value
                && at.elapsed() < self.max_age
            {
                return Arc::clone(value);
            }
            if !slot.computing {
                break;
            }
            slot = self
                .done
                .wait(slot)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        slot.computing = true;
        drop(slot);
        // Should `compute` unwind (tests), the others are released to compute it themselves.
        let guard = Computing(self);
        let value = Arc::new(compute());
        std::mem::forget(guard);
        let mut slot = self.lock();
        slot.value = Some((Instant::now(), Arc::clone(&value)));
        slot.computing = false;
        drop(slot);
        self.done.notify_all();
        value
    }
}

struct Computing<'a, T>(&'a Fresh<T>);

impl<T> Drop for Computing<'_, T> {
    fn drop(&mut self) {
        self.0.lock().computing = false;
        self.0.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn concurrent_callers_share_one_computation() {
        let fresh = Arc::new(Fresh::new(Duration::from_secs(60)));
        let runs = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..32)
            .map(|_| {
                let (fresh, runs) = (Arc::clone(&fresh), Arc::clone(&runs));
                std::thread::spawn(move || {
                    *fresh.get(|| {
                        runs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(100));
                        7
                    })
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 7);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_stale_value_is_computed_again() {
        let fresh = Fresh::new(Duration::from_millis(50));
        assert_eq!(*fresh.get(|| 1), 1);
        assert_eq!(*fresh.get(|| 2), 1);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(*fresh.get(|| 3), 3);
    }
}
