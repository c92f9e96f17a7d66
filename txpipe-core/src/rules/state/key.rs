//! One key's history: its rows in source order, their stored values and the
//! running totals of the calls kept as totals.
//!
//! A row's values are kept by type, not as one [`Val`] each: numbers and
//! timestamps as bare 64-bit words (their kind in two bits of the row's
//! [`Event`]), text as [`Val`]s. For the default rules that is 112 bytes a
//! row instead of 176: the history is most of the ingest's memory, and
//! every byte of it is new memory the first time the window fills.

use std::collections::VecDeque;

use super::aggregate::Total;
use super::value::{Val, ValKind};
use super::{Event, Input, PlannedCall, WindowPlan};

/// Where a row's stored value `i` lives in a key's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// Word `w` of the row's words (a number or a timestamp).
    Word(usize),
    /// Value `v` of the row's [`Val`]s (text, or numbers past [`MAX_WORDS`]).
    Val(usize),
}

/// Rows a new key has room for.
const FIRST_ROWS: usize = 8;

/// Most values a row keeps as words: two bits each in [`Event::tags`].
const MAX_WORDS: usize = 16;

/// How one key space lays out a row's stored values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Layout {
    pub(super) slots: Vec<Slot>,
    words: usize,
    vals: usize,
}

impl Layout {
    /// The layout of a space storing `inputs` (in order).
    pub(super) fn of(inputs: &[Input]) -> Self {
        let mut layout = Layout::default();
        for input in inputs {
            let text = matches!(input.kind, Some(ValKind::Text) | None);
            let slot = if !text && layout.words < MAX_WORDS {
                layout.words += 1;
                Slot::Word(layout.words - 1)
            } else {
                layout.vals += 1;
                Slot::Val(layout.vals - 1)
            };
            layout.slots.push(slot);
        }
        layout
    }
}

/// The two tag bits of a word: what [`Val`] it holds.
const NULL: u32 = 0;
const NUM: u32 = 1;
const FIXED: u32 = 2;
const TIME: u32 = 3;

/// A number or timestamp as a word and its tag.
fn encode(v: &Val) -> (u64, u32) {
    match v {
        Val::Num(x) => (x.to_bits(), NUM),
        Val::Fixed(x) => (*x as u64, FIXED),
        Val::Time(x) => (*x as u64, TIME),
        // (Text never gets a word slot: the layout follows the input's kind.)
        _ => {
            debug_assert!(matches!(v, Val::Null), "text in a word slot: {v:?}");
            (0, NULL)
        }
    }
}

fn decode(word: u64, tag: u32) -> Val {
    match tag {
        NUM => Val::Num(f64::from_bits(word)),
        FIXED => Val::Fixed(word as i64),
        TIME => Val::Time(word as i64),
        _ => Val::Null,
    }
}

/// One key's rows, in source order, and the running totals of its calls.
#[derive(Debug)]
pub(super) struct KeyState {
    pub(super) events: VecDeque<Event>,
    /// The rows' words, the layout's `words` per row, row after row in the
    /// order of `events`, from `words_at` on; `vals` likewise. Rows leave
    /// at the front by moving the offsets (their text is dropped at once)
    /// and the dead front is cut off once it is the larger half, so
    /// appending a row is one move of its values, with one allocation per
    /// key rather than per row.
    words: Vec<u64>,
    words_at: usize,
    vals: Vec<Val>,
    vals_at: usize,
    /// Whether a value in `vals` was ever text on the heap (most text, ids
    /// and short codes, is inline): only then does the size need to visit
    /// the values.
    heap_text: bool,
    pub(super) totals: Vec<Total>,
    /// Smallest `ts` held (checked per row without touching the rows).
    pub(super) oldest: i64,
}

impl Default for KeyState {
    fn default() -> Self {
        Self {
            events: VecDeque::new(),
            words: Vec::new(),
            words_at: 0,
            vals: Vec::new(),
            vals_at: 0,
            heap_text: false,
            totals: Vec::new(),
            oldest: i64::MAX,
        }
    }
}

impl KeyState {
    /// Calls `f` with stored value `i` of row `j` (whose event is `e`).
    #[inline]
    fn with_value<R>(
        &self,
        layout: &Layout,
        i: usize,
        j: usize,
        e: &Event,
        f: impl FnOnce(&Val) -> R,
    ) -> R {
        match layout.slots[i] {
            Slot::Word(w) => {
                let word = self.words[self.words_at + j * layout.words + w];
                f(&decode(word, (e.tags >> (2 * w)) & 3))
            }
            Slot::Val(v) => f(&self.vals[self.vals_at + j * layout.vals + v]),
        }
    }

    /// Calls `f` with the argument of call `pc` on row `j` (whose event is
    /// `e`): `None` for `count(*)`.
    #[inline]
    pub(super) fn with_arg<R>(
        &self,
        layout: &Layout,
        pc: &PlannedCall,
        j: usize,
        e: &Event,
        f: impl FnOnce(Option<&Val>) -> R,
    ) -> R {
        match pc.arg {
            None => f(None),
            Some(i) => self.with_value(layout, i, j, e, |v| f(Some(v))),
        }
    }

    /// Appends a row and its stored values (taken out of `vals`, which is
    /// left empty).
    pub(super) fn push(
        &mut self,
        plan: &WindowPlan,
        space: usize,
        mut e: Event,
        vals: &mut Vec<Val>,
    ) {
        if self.totals.is_empty() && !plan.totals[space].is_empty() {
            self.totals = plan.totals[space]
                .iter()
                .map(|&c| Total::new(&plan.calls[c]))
                .collect();
        }
        for (t, &c) in self.totals.iter_mut().zip(&plan.totals[space]) {
            let pc = &plan.calls[c];
            if pc.passes(&e) {
                t.apply(pc.arg(vals), 1);
            }
        }
        let layout = &plan.layouts[space];
        if self.events.capacity() == 0 {
            // A new key: room for a few rows at once rather than growing
            // through 1, 2 and 4 (most keys that appear keep appearing).
            self.events.reserve(FIRST_ROWS);
            self.words.reserve(FIRST_ROWS * layout.words);
            self.vals.reserve(FIRST_ROWS * layout.vals);
        }
        let mut tags = 0;
        for (slot, v) in layout.slots.iter().zip(vals.iter_mut()) {
            match *slot {
                Slot::Word(w) => {
                    let (word, tag) = encode(v);
                    self.words.push(word);
                    tags |= tag << (2 * w);
                }
                Slot::Val(_) => {
                    self.heap_text |= matches!(v, Val::Text(_));
                    self.vals.push(std::mem::take(v));
                }
            }
        }
        vals.clear();
        e.tags = tags;
        for older in self.events.iter_mut().rev() {
            if older.suffix_min <= e.ts {
                break;
            }
            older.suffix_min = e.ts;
        }
        self.oldest = self.oldest.min(e.ts);
        self.events.push_back(e);
    }

    /// Asks the CPU to start loading the memory a row of this key touches
    /// first (the newest row, its values, the running totals): each lives in
    /// an allocation of its own, and a key's history is rarely in cache, so
    /// the loads then overlap instead of waiting one after the other. Only a
    /// hint: nothing is read.
    #[inline]
    pub(super) fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let lines = [
                self.events
                    .back()
                    .map(|e| std::ptr::from_ref(e).cast::<i8>()),
                self.words
                    .last()
                    .map(|w| std::ptr::from_ref(w).cast::<i8>()),
                self.vals.last().map(|v| std::ptr::from_ref(v).cast::<i8>()),
                self.totals
                    .first()
                    .map(|t| std::ptr::from_ref(t).cast::<i8>()),
            ];
            for line in lines.into_iter().flatten() {
                // SAFETY: a prefetch is a hint that never faults; the pointer
                // is to a live element anyway.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(line) };
            }
        }
    }

    pub(super) fn pop_expired(&mut self, plan: &WindowPlan, space: usize, floor: i64) {
        if self.oldest > floor {
            return;
        }
        let layout = &plan.layouts[space];
        while self.events.front().is_some_and(|e| e.ts <= floor) {
            let Some(e) = self.events.pop_front() else {
                break;
            };
            // (The popped row is still the first of the values.)
            let mut totals = std::mem::take(&mut self.totals);
            for (t, &c) in totals.iter_mut().zip(&plan.totals[space]) {
                let pc = &plan.calls[c];
                if pc.passes(&e) {
                    self.with_arg(layout, pc, 0, &e, |v| t.apply(v, -1));
                }
            }
            self.totals = totals;
            for v in &mut self.vals[self.vals_at..self.vals_at + layout.vals] {
                *v = Val::Null;
            }
            self.vals_at += layout.vals;
            self.words_at += layout.words;
        }
        if self.words_at * 2 > self.words.len() {
            self.words.drain(..self.words_at);
            self.words_at = 0;
        }
        if self.vals_at * 2 > self.vals.len() {
            self.vals.drain(..self.vals_at);
            self.vals_at = 0;
        }
        self.oldest = self.events.front().map_or(i64::MAX, |e| e.suffix_min);
    }

    /// Drops every row at or below `floor` (wherever it is) and rebuilds the
    /// totals and scan bounds; false when nothing is left.
    pub(super) fn retain_after(&mut self, plan: &WindowPlan, space: usize, floor: i64) -> bool {
        self.pop_expired(plan, space, floor);
        if self.events.iter().any(|e| e.ts <= floor) {
            let layout = &plan.layouts[space];
            let old = std::mem::take(self);
            let mut row = Vec::with_capacity(layout.slots.len());
            for (j, e) in old.events.iter().enumerate() {
                if e.ts <= floor {
                    continue;
                }
                row.clear();
                row.extend(
                    (0..layout.slots.len()).map(|i| old.with_value(layout, i, j, e, Val::clone)),
                );
                let mut e = *e;
                e.prefix_max = self.events.back().map_or(e.ts, |b| b.prefix_max.max(e.ts));
                e.suffix_min = e.ts;
                self.push(plan, space, e, &mut row);
            }
        }
        if self.events.capacity() > 4 * self.events.len().max(4) {
            self.events.shrink_to_fit();
            self.words.shrink_to_fit();
            self.vals.shrink_to_fit();
        }
        !self.events.is_empty()
    }

    /// Heap bytes held (text that is not inline counted once per sharer).
    pub(super) fn heap_bytes(&self) -> u64 {
        let mut bytes = self.events.capacity() * std::mem::size_of::<Event>()
            + self.words.capacity() * std::mem::size_of::<u64>()
            + self.vals.capacity() * std::mem::size_of::<Val>()
            + self.totals.len() * std::mem::size_of::<Total>();
        if self.heap_text {
            for v in &self.vals[self.vals_at..] {
                if let Val::Text(t) = v {
                    bytes += (t.len() + 16) / std::sync::Arc::strong_count(t);
                }
            }
        }
        bytes as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn val() -> impl Strategy<Value = Val> {
        prop_oneof![
            Just(Val::Null),
            any::<f64>().prop_map(Val::Num),
            any::<i64>().prop_map(Val::Fixed),
            any::<i64>().prop_map(Val::Time),
        ]
    }

    fn input(kind: ValKind) -> Input {
        Input {
            sql: String::new(),
            expr: datafusion::physical_expr::expressions::lit(true),
            kind: Some(kind),
        }
    }

    #[test]
    fn numbers_take_words_and_text_takes_values() {
        let kinds = [
            ValKind::Fixed(2),
            ValKind::Text,
            ValKind::Num,
            ValKind::Time,
        ];
        let layout = Layout::of(&kinds.map(input));
        assert_eq!(
            layout.slots,
            [Slot::Word(0), Slot::Val(0), Slot::Word(1), Slot::Word(2)]
        );
        // Past the words' room, numbers are kept as values.
        let many: Vec<Input> = (0..MAX_WORDS + 2).map(|_| input(ValKind::Num)).collect();
        let layout = Layout::of(&many);
        assert_eq!(layout.slots[MAX_WORDS - 1], Slot::Word(MAX_WORDS - 1));
        assert_eq!(layout.slots[MAX_WORDS], Slot::Val(0));
        assert_eq!(layout.slots[MAX_WORDS + 1], Slot::Val(1));
    }

    proptest! {
        /// A number or timestamp comes back from its word exactly (floats
        /// to the bit, NaN payloads included), and NULL stays NULL.
        #[test]
        fn words_round_trip(v in val()) {
            let (word, tag) = encode(&v);
            let back = decode(word, tag);
            match (&v, &back) {
                (Val::Num(a), Val::Num(b)) => prop_assert_eq!(a.to_bits(), b.to_bits()),
                _ => prop_assert_eq!(&v, &back),
            }
        }
    }
}
