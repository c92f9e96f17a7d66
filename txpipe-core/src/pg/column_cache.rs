//! Decoded blocks of recently read data files, for point lookups.
//!
//! A lookup of a customer's newest transactions reads a few rows of every
//! column of the newest day-files; decompressing and decoding the pages
//! around those rows costs far more than the rows. This cache keeps the
//! decoded blocks of rows lookups touched (one column of one aligned run of
//! [`BLOCK_ROWS`](super::data_file::BLOCK_ROWS) rows of one file per entry) —
//! PostgreSQL keeps its heap pages in `shared_buffers` the same way — so that
//! the next lookup into the same blocks only takes its rows. Blocks, not whole
//! columns: a lookup that misses decodes only what it reads anyway, so
//! lookups spread over more data than the budget cost what they cost without
//! a cache instead of decoding whole files each time. Data files never change
//! once committed, so an entry never goes stale; the least recently used go
//! first once the byte budget is reached.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use datafusion::arrow::array::{Array, ArrayRef};

/// Decoded arrays keyed by (file, block, column), bounded by bytes; files
/// and columns by number ([`DataFile::id`](super::data_file::DataFile::id),
/// the column's place in the file).
#[derive(Debug)]
pub struct ColumnCache {
    budget: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    used: usize,
    clock: u64,
    slots: HashMap<Key, Slot>,
    /// Last use → key, oldest first.
    by_use: BTreeMap<u64, Key>,
}

#[derive(Debug)]
struct Slot {
    array: ArrayRef,
    bytes: usize,
    used_at: u64,
}

/// (file, block, column).
type Key = (u64, usize, usize);

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

    /// Column `column` of block `block` of `file`, if cached.
    pub fn get(&self, file: u64, block: usize, column: usize) -> Option<ArrayRef> {
        let mut inner = self.inner.lock().ok()?;
        inner.clock += 1;
        let now = inner.clock;
        let key = (file, block, column);
        let slot = inner.slots.get_mut(&key)?;
        let before = std::mem::replace(&mut slot.used_at, now);
        let array = slot.array.clone();
        inner.by_use.remove(&before);
        inner.by_use.insert(now, key);
        Some(array)
    }

    /// Keeps column `column` of block `block` of `file`, dropping the least
    /// recently used entries while over budget. An array larger than the
    /// budget is not kept.
    pub fn put(&self, file: u64, block: usize, column: usize, array: ArrayRef) {
        let bytes = array.get_array_memory_size();
        if bytes > self.budget {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.clock += 1;
        let now = inner.clock;
        let key = (file, block, column);
        let slot = Slot {
            array,
            bytes,
            used_at: now,
        };
        if let Some(old) = inner.slots.insert(key, slot) {
            inner.used -= old.bytes;
            inner.by_use.remove(&old.used_at);
        }
        inner.by_use.insert(now, key);
        inner.used += bytes;
        while inner.used > self.budget {
            let Some((_, oldest)) = inner.by_use.pop_first() else {
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
        cache.put(1, 0, 0, column(1000));
        cache.put(2, 0, 0, column(1000));
        assert!(cache.get(1, 0, 0).is_some()); // a is now newer than b
        cache.put(3, 0, 0, column(1000));
        assert!(cache.get(2, 0, 0).is_none());
        assert_eq!(cache.get(1, 0, 0).map(|a| a.len()), Some(1000));
        assert_eq!(cache.get(3, 0, 0).map(|a| a.len()), Some(1000));
        assert!(cache.used() <= cache.budget());
        // Another block of the same file and column is another entry.
        assert!(cache.get(1, 1, 0).is_none());
        // Too big to keep at all; nothing kept without a budget.
        cache.put(4, 0, 0, column(10_000));
        assert!(cache.get(4, 0, 0).is_none());
        let off = ColumnCache::new(0);
        off.put(1, 0, 0, column(1));
        assert!(off.get(1, 0, 0).is_none());
    }
}
