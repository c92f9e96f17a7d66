//! A batch's rows grouped by key, so that each key's history is looked up
//! once per batch.

use datafusion::arrow::array::{Array, StringArray};
use datafusion::common::HashMap;

/// A batch's rows grouped by (partition, key), each group in source order.
#[derive(Debug)]
pub(super) struct KeyGroups {
    /// Row indices of the rows with a key, group after group.
    pub(super) order: Vec<u32>,
    /// Where each group starts in `order` (one more entry than groups).
    starts: Vec<usize>,
}

impl KeyGroups {
    /// Groups the rows of non-null `keys` by (partition, key).
    pub(super) fn of(keys: &StringArray, part_of: &[i32]) -> Self {
        let n = keys.len();
        let mut ids: HashMap<(i32, &str), u32> = HashMap::with_capacity(n / 4);
        let mut group_of: Vec<u32> = Vec::with_capacity(n);
        let mut sizes: Vec<usize> = Vec::new();
        for row in 0..n {
            if keys.is_null(row) {
                group_of.push(u32::MAX);
                continue;
            }
            let next = sizes.len() as u32;
            let g = *ids.entry((part_of[row], keys.value(row))).or_insert(next);
            if g == next {
                sizes.push(0);
            }
            sizes[g as usize] += 1;
            group_of.push(g);
        }
        let mut starts = Vec::with_capacity(sizes.len() + 1);
        let mut total = 0;
        for size in &sizes {
            starts.push(total);
            total += size;
        }
        starts.push(total);
        let mut fill = starts.clone();
        let mut order = vec![0u32; total];
        for (row, &g) in group_of.iter().enumerate() {
            if g != u32::MAX {
                let at = &mut fill[g as usize];
                order[*at] = row as u32;
                *at += 1;
            }
        }
        Self { order, starts }
    }

    /// Each group's first row and its rows in source order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &[u32])> {
        self.starts.windows(2).map(|w| {
            let rows = &self.order[w[0]..w[1]];
            (rows[0] as usize, rows)
        })
    }
}
