//! Per-workspace entries that go once idle. A worker that serves many
//! workspaces over its life keeps memory for those it serves now, not for
//! every workspace it has ever seen (with ids of up to 1,024 characters).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Sweeps start once the map holds this many entries.
const MIN_SWEEP: usize = 1024;
/// Entries kept at most (beyond those in use) after a sweep; the least
/// recently used go first.
const MAX_KEPT: usize = 10_000;

/// A map of shared, lockable per-key values that drops the idle ones.
pub(crate) struct IdleMap<T> {
    entries: HashMap<String, Entry<T>>,
    sweep_at: usize,
}

struct Entry<T> {
    value: Arc<tokio::sync::Mutex<T>>,
    used: Instant,
}

impl<T> Entry<T> {
    /// In use: a caller holds it, or it is locked.
    fn busy(&self) -> bool {
        Arc::strong_count(&self.value) > 1 || self.value.try_lock().is_err()
    }
}

impl<T: Default> IdleMap<T> {
    pub(crate) fn new() -> Self {
        Self {
            entries: HashMap::new(),
            sweep_at: MIN_SWEEP,
        }
    }

    /// The value of `key`, created if missing. When the map has doubled since
    /// the last sweep (amortised O(1)), drops the entries nobody uses whose
    /// value `keep` rejects, then, beyond [`MAX_KEPT`], the least recently
    /// used of those nobody uses.
    pub(crate) fn get(
        &mut self,
        key: &str,
        keep: impl Fn(&T) -> bool,
    ) -> Arc<tokio::sync::Mutex<T>> {
        let now = Instant::now();
        if let Some(entry) = self.entries.get_mut(key) {
            entry.used = now;
            return entry.value.clone();
        }
        if self.entries.len() >= self.sweep_at {
            self.sweep(keep);
        }
        let value = Arc::new(tokio::sync::Mutex::new(T::default()));
        let entry = Entry {
            value: value.clone(),
            used: now,
        };
        self.entries.insert(key.to_owned(), entry);
        value
    }

    fn sweep(&mut self, keep: impl Fn(&T) -> bool) {
        self.entries
            .retain(|_, e| e.busy() || e.value.try_lock().is_ok_and(|value| keep(&value)));
        let idle = self.entries.values().filter(|e| !e.busy()).count();
        if idle > MAX_KEPT {
            let mut by_age: Vec<(Instant, String)> = self
                .entries
                .iter()
                .filter(|(_, e)| !e.busy())
                .map(|(k, e)| (e.used, k.clone()))
                .collect();
            by_age.sort_unstable();
            for (_, key) in &by_age[..idle - MAX_KEPT] {
                self.entries.remove(key);
            }
        }
        self.entries.shrink_to_fit();
        self.sweep_at = (2 * self.entries.len()).max(MIN_SWEEP);
    }

    /// Entries held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_entries_go_and_held_ones_stay() {
        let mut map: IdleMap<u32> = IdleMap::new();
        let held = map.get("held", |_| false);
        for i in 0..100_000 {
            map.get(&format!("w{i}"), |_| false);
        }
        assert!(map.len() <= 2 * MIN_SWEEP, "{}", map.len());
        assert!(Arc::ptr_eq(&held, &map.get("held", |_| false)));
    }

    #[test]
    fn kept_entries_are_capped_least_recently_used_first() {
        let mut map: IdleMap<u32> = IdleMap::new();
        for i in 0..100_000 {
            map.get(&format!("w{i}"), |_| true);
            map.get("hot", |_| true);
        }
        assert!(map.len() <= 2 * MAX_KEPT + 1, "{}", map.len());
        assert!(map.entries.contains_key("hot"));
        assert!(map.entries.contains_key("w99999"));
        assert!(!map.entries.contains_key("w0"));
    }
}
