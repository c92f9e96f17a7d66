//! One key's history: its rows in source order, their stored values and the
//! running totals of the calls kept as totals.

use std::collections::VecDeque;

use super::aggregate::Total;
use super::value::Val;
use super::{Event, PlannedCall, WindowPlan};

/// One key's rows, in source order, and the running totals of its calls.
#[derive(Debug)]
pub(super) struct KeyState {
    pub(super) events: VecDeque<Event>,
    /// The rows' stored values, the space's `vals.len()` per row, row after
    /// row in the order of `events`, from `head` on: one allocation per key,
    /// not per row. Rows leave at the front by moving `head` (their values
    /// are dropped at once) and the dead front is cut off once it is the
    /// larger half, so appending a row is one move of its values.
    pub(super) vals: Vec<Val>,
    head: usize,
    pub(super) totals: Vec<Total>,
    /// Smallest `ts` held (checked per row without touching the rows).
    pub(super) oldest: i64,
}

impl Default for KeyState {
    fn default() -> Self {
        Self {
            events: VecDeque::new(),
            vals: Vec::new(),
            head: 0,
            totals: Vec::new(),
            oldest: i64::MAX,
        }
    }
}

impl KeyState {
    /// The argument of call `pc` on row `j`.
    pub(super) fn arg(&self, pc: &PlannedCall, j: usize, stride: usize) -> Option<&Val> {
        pc.arg.map(|i| &self.vals[self.head + j * stride + i])
    }

    /// Appends a row and its stored values (taken out of `vals`).
    pub(super) fn push(&mut self, plan: &WindowPlan, space: usize, e: Event, vals: &mut Vec<Val>) {
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
        for older in self.events.iter_mut().rev() {
            if older.suffix_min <= e.ts {
                break;
            }
            older.suffix_min = e.ts;
        }
        self.oldest = self.oldest.min(e.ts);
        self.events.push_back(e);
        self.vals.append(vals);
    }

    pub(super) fn pop_expired(&mut self, plan: &WindowPlan, space: usize, floor: i64) {
        if self.oldest > floor {
            return;
        }
        let stride = plan.spaces[space].vals.len();
        while self.events.front().is_some_and(|e| e.ts <= floor) {
            if let Some(e) = self.events.pop_front() {
                let front = self.head;
                for (t, &c) in self.totals.iter_mut().zip(&plan.totals[space]) {
                    let pc = &plan.calls[c];
                    if pc.passes(&e) {
                        t.apply(pc.arg.map(|i| &self.vals[front + i]), -1);
                    }
                }
                for v in &mut self.vals[front..front + stride] {
                    *v = Val::Null;
                }
                self.head += stride;
            }
        }
        if self.head * 2 > self.vals.len() {
            self.vals.drain(..self.head);
            self.head = 0;
        }
        self.oldest = self.events.front().map_or(i64::MAX, |e| e.suffix_min);
    }

    /// Drops every row at or below `floor` (wherever it is) and rebuilds the
    /// totals and scan bounds; false when nothing is left.
    pub(super) fn retain_after(&mut self, plan: &WindowPlan, space: usize, floor: i64) -> bool {
        self.pop_expired(plan, space, floor);
        if self.events.iter().any(|e| e.ts <= floor) {
            let stride = plan.spaces[space].vals.len();
            let events = std::mem::take(&mut self.events);
            let mut vals = std::mem::take(&mut self.vals).into_iter().skip(self.head);
            self.head = 0;
            self.totals.clear();
            self.oldest = i64::MAX;
            let mut row = Vec::with_capacity(stride);
            for mut e in events {
                row.clear();
                row.extend(vals.by_ref().take(stride));
                if e.ts <= floor {
                    continue;
                }
                e.prefix_max = self.events.back().map_or(e.ts, |b| b.prefix_max.max(e.ts));
                e.suffix_min = e.ts;
                self.push(plan, space, e, &mut row);
            }
        }
        if self.events.capacity() > 4 * self.events.len().max(4) {
            self.events.shrink_to_fit();
            self.vals.shrink_to_fit();
        }
        !self.events.is_empty()
    }
}
