//! Decoded columns of recently read data files, for point lookups.
//!
//! A lookup of a customer's newest transactions reads a few rows of every
//! column of the newest day-files; decompressing and decoding the pages
//! around those rows costs far more than the rows. This cache keeps whole
//! decoded columns of the files lookups touched — PostgreSQL keeps its
//! heap pages in `shared_buffers` the same way — so that the next lookup
//! into the same files only takes its rows. Data files never change once
//! committed, so an entry never goes stale; the least recently used go first
//! once the byte budget is reached.

use std::collections::HashMap;
use std::sync::Mutex;

use datafusion::arrow::array::{Array, ArrayRef};

/// Decoded columns keyed by (file, column), bounded by bytes.
#[derive(Debug)]
pub struct ColumnCache {
    budget: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    used: usize,
    clock: u64,
    slots: HashMap<String, Slot>,
}

#[derive(Debug)]
struct Slot {
    array: ArrayRef,
    bytes: usize,
    used_at: u64,
}

fn key(file: &str, column: &str) -> String {
    format!("{file}\0{column}")
}

impl ColumnCache {
    /// A cache holding at most `budget` bytes of arrays (0: nothing is kept).
    pub fn new(budget: usize) -> Self {
        ColumnCache {
            budget,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The byte budget.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.inner.lock().map(|i| i.used).unwrap_or(0)
    }

    /// Column `column` of `file`, if cached.
    pub fn get(&self, file: &str, column: &str) -> Option<ArrayRef> {
        let mut inner = self.inner.lock().ok()?;
        inner.clock += 1;
        let now = inner.clock;
        let slot = inner.slots.get_mut(&key(file, column))?;
        slot.used_at = now;
        Some(slot.array.clone())
    }

    /// Keeps column `column` of `file`, dropping the least recently used
    /// columns while over budget. An array larger than the budget is not kept.
    pub fn put(&self, file: &str, column: &str, array: ArrayRef) {
        let bytes = array.get_array_memory_size();
        if bytes > self.budget {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.clock += 1;
        let slot = Slot {
            array,
            bytes,
            used_at: inner.clock,
        };
        if let Some(old) = inner.slots.insert(key(file, column), slot) {
            inner.used -= old.bytes;
        }
        inner.used += bytes;
        while inner.used > self.budget {
            let Some(oldest) = inner
                .slots
                .iter()
                .min_by_key(|(_, s)| s.used_at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(gone) = inner.slots.remove(&oldest) {
                inner.used -= gone.bytes;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;

    use super::*;

    fn column(n: i64) -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(0..n))
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_budget_holds() {
        let one = column(1000).get_array_memory_size();
        let cache = ColumnCache::new(2 * one + one / 2);
        cache.put("a", "x", column(1000));
        cache.put("b", "x", column(1000));
        assert!(cache.get("a", "x").is_some()); // a is now newer than b
        cache.put("c", "x", column(1000));
        assert!(cache.get("b", "x").is_none());
        assert_eq!(cache.get("a", "x").map(|a| a.len()), Some(1000));
        assert_eq!(cache.get("c", "x").map(|a| a.len()), Some(1000));
        assert!(cache.used() <= cache.budget());
        // Too big to keep at all; nothing kept without a budget.
        cache.put("d", "x", column(10_000));
        assert!(cache.get("d", "x").is_none());
        let off = ColumnCache::new(0);
        off.put("a", "x", column(1));
        assert!(off.get("a", "x").is_none());
    }
}
