//! Labelled fraud scenarios the generator injects into the stream.
//!
//! The truth goes to `fraud_labels.csv` (`transaction_id,scenario`), never
//! into the transactions. Scenarios, at the default `fraud_rate` of 0.5 %:
//!
//! | scenario | what happens | share of rows |
//! |---|---|---|
//! | `compromised_card` | 5–8 purchases within ~6 minutes, from a far country, on the fraudster's device, 20–80 min after a genuine purchase | ~0.10 % |
//! | `card_testing` | 3–5 purchases under 5 USD, then 1–2 of 500–2 500 USD, online from the fraudster's device | ~0.10 % |
//! | `account_takeover` | a new device, then 1–3 purchases at 10–30× the customer's usual spend, at home | ~0.10 % |
//! | `impossible_travel` | a cloned card used in person in a far country 15–90 min after a genuine purchase | ~0.09 % |
//! | `handbook_high_amount` | Le Borgne et al.'s scenario 1: every transaction above 5 000 USD is fraud | ~0.04 % |
//! | `handbook_compromised_terminal` | scenario 2: one of a merchant's 4 terminals is compromised for 28 days (every 15 days a new one); all its transactions are fraud | ~0.04 % |
//! | `handbook_compromised_customer` | scenario 3: every other day a customer is compromised for 14 days; a third of their transactions are fraud, at 5× the amount | ~0.04 % |
//!
//! (Le Borgne, Siblini, Lebichot, Bontempi: *Reproducible Machine Learning for
//! Credit Card Fraud Detection — Practical Handbook*, 2022, chapter 3.)

use super::Rng;

/// Scenario names, as written in `fraud_labels.csv`.
pub const SCENARIOS: [&str; 7] = [
    COMPROMISED_CARD,
    CARD_TESTING,
    ACCOUNT_TAKEOVER,
    IMPOSSIBLE_TRAVEL,
    HANDBOOK_HIGH_AMOUNT,
    HANDBOOK_COMPROMISED_TERMINAL,
    HANDBOOK_COMPROMISED_CUSTOMER,
];
/// A burst from far away on the fraudster's device.
pub const COMPROMISED_CARD: &str = "compromised_card";
/// Small test charges, then large purchases.
pub const CARD_TESTING: &str = "card_testing";
/// New device and purchases far above the customer's norm.
pub const ACCOUNT_TAKEOVER: &str = "account_takeover";
/// A cloned card used far away soon after a genuine purchase.
pub const IMPOSSIBLE_TRAVEL: &str = "impossible_travel";
/// Handbook scenario 1: amount above a threshold.
pub const HANDBOOK_HIGH_AMOUNT: &str = "handbook_high_amount";
/// Handbook scenario 2: a compromised terminal.
pub const HANDBOOK_COMPROMISED_TERMINAL: &str = "handbook_compromised_terminal";
/// Handbook scenario 3: a compromised customer.
pub const HANDBOOK_COMPROMISED_CUSTOMER: &str = "handbook_compromised_customer";

/// The amount (USD) above which handbook scenario 1 labels a transaction.
pub const HIGH_AMOUNT_USD: f64 = 5_000.0;

const MINUTE: i64 = 60_000_000;
const DAY: i64 = 1_440 * MINUTE;

/// One transaction to write.
#[derive(Debug, Clone)]
pub(crate) struct Txn {
    pub ts: i64,
    pub customer: usize,
    pub merchant: usize,
    pub usd: f64,
    pub lat: f64,
    pub lon: f64,
    pub invalid_geo: bool,
    pub device: Option<u64>,
    pub foreign: bool,
    pub huge: bool,
    pub label: Option<&'static str>,
}

/// What a scenario needs to know about a customer and the world.
pub(crate) struct World<'a> {
    pub home_country: usize,
    pub home: (f64, f64),
    pub spend_mu: f64,
    pub countries: &'a [(f64, f64)],
    pub merchants_of: &'a dyn Fn(usize, &mut Rng) -> usize,
}

fn far_country(rng: &mut Rng, w: &World<'_>) -> usize {
    let mut best = (w.home_country + 1) % w.countries.len();
    for _ in 0..6 {
        let k = rng.below(w.countries.len() as u64) as usize;
        if k == w.home_country {
            continue;
        }
        best = k;
        let (a, b) = (w.countries[k], w.home);
        if (a.0 - b.0).abs() + (a.1 - b.1).abs() > 15.0 {
            break;
        }
    }
    best
}

/// Fraud transactions started after a genuine one of `customer` at `ts`.
pub(crate) struct Scheduler {
    /// Start probability per genuine transaction, per scenario.
    start: [f64; 4],
    /// Pending fraud transactions, by time.
    pending: Vec<Txn>,
    /// (customer, compromised until).
    compromised_customers: Vec<(usize, i64)>,
    /// (merchant, terminal, compromised until).
    compromised_terminals: Vec<(usize, u64, i64)>,
    /// Scenario 2 and 3 events per day relative to the defaults.
    scale: f64,
    day: Option<i64>,
}

impl Scheduler {
    pub fn new(fraud_rate: f64) -> Self {
        let scale = fraud_rate / 0.005;
        Self {
            start: [
                0.000_15 * scale,
                0.000_18 * scale,
                0.000_5 * scale,
                0.000_9 * scale,
            ],
            pending: Vec::new(),
            compromised_customers: Vec::new(),
            compromised_terminals: Vec::new(),
            scale,
            day: None,
        }
    }

    /// Whether any scenario is on (labels are written).
    pub fn enabled(&self) -> bool {
        self.scale > 0.0
    }

    /// The next pending fraud transaction due at or before `ts`.
    pub fn due(&mut self, ts: i64) -> Option<Txn> {
        if self.pending.first().is_some_and(|t| t.ts <= ts) {
            Some(self.pending.remove(0))
        } else {
            None
        }
    }

    fn schedule(&mut self, t: Txn) {
        let at = self.pending.partition_point(|p| p.ts <= t.ts);
        self.pending.insert(at, t);
    }

    /// Day boundaries: new compromised customers and terminals (handbook 2, 3).
    pub fn new_day(&mut self, rng: &mut Rng, ts: i64, customers: usize, merchants: usize) {
        let day = ts.div_euclid(DAY);
        let first = self.day.is_none();
        if self.day == Some(day) {
            return;
        }
        self.day = Some(day);
        if first || !self.enabled() {
            return;
        }
        let start = day * DAY;
        self.compromised_customers.retain(|c| c.1 > start);
        self.compromised_terminals.retain(|t| t.2 > start);
        // One victim every other day at the default rate.
        let mut victims = self.scale * 0.5;
        while victims > 0.0 {
            if victims >= 1.0 || rng.f64() < victims {
                let c = rng.below(customers as u64) as usize;
                self.compromised_customers.push((c, start + 14 * DAY));
            }
            victims -= 1.0;
        }
        if day % 15 == 1 && rng.f64() < self.scale {
            let m = rng.below(merchants as u64) as usize;
            let terminal = rng.below(4);
            self.compromised_terminals
                .push((m, terminal, start + 28 * DAY));
        }
    }

    /// Labels a genuine transaction hit by handbook scenarios 2 or 3 (and
    /// changes its amount for 3).
    pub fn touch_genuine(&self, rng: &mut Rng, t: &mut Txn) {
        let terminal = rng.below(4);
        let third = rng.below(3) == 0;
        if !self.enabled() {
            return;
        }
        if self
            .compromised_customers
            .iter()
            .any(|&(c, until)| c == t.customer && t.ts < until)
            && third
        {
            t.usd *= 5.0;
            t.label = Some(HANDBOOK_COMPROMISED_CUSTOMER);
        }
        if self
            .compromised_terminals
            .iter()
            .any(|&(m, k, until)| m == t.merchant && k == terminal && t.ts < until)
        {
            t.label = Some(HANDBOOK_COMPROMISED_TERMINAL);
        }
    }

    /// Maybe starts a scenario against the customer of a genuine transaction.
    pub fn maybe_start(&mut self, rng: &mut Rng, genuine: &Txn, w: &World<'_>) {
        let roll = rng.f64();
        if !self.enabled() {
            return;
        }
        let mut acc = 0.0;
        let mut which = None;
        for (i, p) in self.start.iter().enumerate() {
            acc += p;
            if roll < acc {
                which = Some(i);
                break;
            }
        }
        let Some(which) = which else { return };
        let base = Txn {
            ts: genuine.ts,
            customer: genuine.customer,
            merchant: 0,
            usd: 0.0,
            lat: 0.0,
            lon: 0.0,
            invalid_geo: false,
            device: Some(rng.next_u64()),
            foreign: false,
            huge: false,
            label: None,
        };
        let jitter =
            |rng: &mut Rng, p: (f64, f64), s: f64| (p.0 + rng.normal() * s, p.1 + rng.normal() * s);
        match which {
            0 => {
                let k = far_country(rng, w);
                let place = jitter(rng, w.countries[k], 1.0);
                let mut t = genuine.ts + 20 * MINUTE + rng.below(60 * MINUTE as u64) as i64;
                for _ in 0..5 + rng.below(4) {
                    let (lat, lon) = jitter(rng, place, 0.01);
                    self.schedule(Txn {
                        ts: t,
                        merchant: (w.merchants_of)(k, rng),
                        usd: (80f64.ln() + 0.6 * rng.normal()).exp(),
                        lat,
                        lon,
                        foreign: true,
                        label: Some(COMPROMISED_CARD),
                        ..base.clone()
                    });
                    t += 30_000_000 + rng.below(60_000_000) as i64;
                }
            }
            1 => {
                let k = rng.below(w.countries.len() as u64) as usize;
                let place = jitter(rng, w.countries[k], 1.0);
                let merchant = (w.merchants_of)(k, rng);
                let mut t = genuine.ts + 10 * MINUTE + rng.below(30 * MINUTE as u64) as i64;
                let tests = 3 + rng.below(3);
                let big = 1 + rng.below(2);
                for i in 0..tests + big {
                    let usd = if i < tests {
                        0.5 + rng.f64() * 4.4
                    } else {
                        500.0 + rng.f64() * 2_000.0
                    };
                    self.schedule(Txn {
                        ts: t,
                        merchant,
                        usd,
                        lat: place.0,
                        lon: place.1,
                        foreign: k != w.home_country,
                        label: Some(CARD_TESTING),
                        ..base.clone()
                    });
                    t += if i + 1 < tests {
                        40_000_000 + rng.below(140_000_000) as i64
                    } else {
                        2 * MINUTE + rng.below(6 * MINUTE as u64) as i64
                    };
                }
            }
            2 => {
                let mut t = genuine.ts + 30 * MINUTE + rng.below(150 * MINUTE as u64) as i64;
                for _ in 0..1 + rng.below(3) {
                    let (lat, lon) = jitter(rng, w.home, 0.03);
                    self.schedule(Txn {
                        ts: t,
                        merchant: (w.merchants_of)(w.home_country, rng),
                        usd: w.spend_mu.exp() * (10.0 + 20.0 * rng.f64()),
                        lat,
                        lon,
                        label: Some(ACCOUNT_TAKEOVER),
                        ..base.clone()
                    });
                    t += MINUTE + rng.below(7 * MINUTE as u64) as i64;
                }
            }
            _ => {
                let k = far_country(rng, w);
                let (lat, lon) = jitter(rng, w.countries[k], 0.5);
                self.schedule(Txn {
                    ts: genuine.ts + 15 * MINUTE + rng.below(75 * MINUTE as u64) as i64,
                    merchant: (w.merchants_of)(k, rng),
                    usd: (w.spend_mu + 0.5 * rng.normal()).exp(),
                    lat,
                    lon,
                    device: None,
                    foreign: true,
                    label: Some(IMPOSSIBLE_TRAVEL),
                    ..base.clone()
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_scheduler_starts_nothing() {
        let mut s = Scheduler::new(0.0);
        let mut rng = Rng::new(1);
        let countries = [(0.0, 0.0), (50.0, 50.0)];
        let pick = |_: usize, _: &mut Rng| 0usize;
        let w = World {
            home_country: 0,
            home: (0.0, 0.0),
            spend_mu: 3.0,
            countries: &countries,
            merchants_of: &pick,
        };
        let g = Txn {
            ts: 0,
            customer: 0,
            merchant: 0,
            usd: 1.0,
            lat: 0.0,
            lon: 0.0,
            invalid_geo: false,
            device: None,
            foreign: false,
            huge: false,
            label: None,
        };
        for _ in 0..100_000 {
            s.maybe_start(&mut rng, &g, &w);
        }
        assert!(s.due(i64::MAX).is_none());
    }
}
