//! Leases keep what a running pull has fetched safe from garbage collection; flights make
//! concurrent pulls of the same thing wait for one another instead of fetching it twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::digest::Digest;

/// Digests (blobs and chain ids) in use by pulls, counted. Clones share the table.
#[derive(Default, Clone)]
pub struct Leases {
    held: Arc<Mutex<HashMap<Digest, usize>>>,
}

impl Leases {
    /// A new, empty lease.
    pub fn lease(&self) -> Lease {
        Lease {
            held: self.held.clone(),
            mine: Vec::new(),
        }
    }

    /// Locks the lease table: garbage collection holds this while it decides and deletes,
    /// so no pull can lease (and then find) something being deleted.
    pub fn lock(&self) -> MutexGuard<'_, HashMap<Digest, usize>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The digests one pull holds; released on drop.
pub struct Lease {
    held: Arc<Mutex<HashMap<Digest, usize>>>,
    mine: Vec<Digest>,
}

impl Lease {
    pub fn add(&mut self, digests: impl IntoIterator<Item = Digest>) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for d in digests {
            *held.entry(d.clone()).or_default() += 1;
            self.mine.push(d);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for d in self.mine.drain(..) {
            if let Some(n) = held.get_mut(&d) {
                *n -= 1;
                if *n == 0 {
                    held.remove(&d);
                }
            }
        }
    }
}

/// One async mutex per key, created on demand and dropped when unused.
#[derive(Default)]
pub struct Flights {
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl Flights {
    /// Waits until no other holder of `key` is running, then holds it.
    pub async fn enter(&self, key: String) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.retain(|_, w| w.strong_count() > 0);
            match locks.get(&key).and_then(Weak::upgrade) {
                Some(l) => l,
                None => {
                    let l = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(key, Arc::downgrade(&l));
                    l
                }
            }
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_count_and_release() {
        let leases = Leases::default();
        let d = Digest::of(b"x");
        let mut a = leases.lease();
        a.add([d.clone()]);
        let mut b = leases.lease();
        b.add([d.clone()]);
        drop(a);
        assert!(leases.lock().contains_key(&d));
        drop(b);
        assert!(leases.lock().is_empty());
    }

    #[tokio::test]
    async fn flights_serialize_one_key() {
        let f = Arc::new(Flights::default());
        let g = f.enter("k".into()).await;
        let f2 = f.clone();
        let waiter = tokio::spawn(async move {
            f2.enter("k".into()).await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        let _other = f.enter("other".into()).await;
        drop(g);
        waiter.await.unwrap();
    }
}
