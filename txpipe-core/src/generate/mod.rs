//! Deterministic synthetic transactions and matching dimension CSVs.
//!
//! The data is shaped like a card network's: customers mostly buy from
//! merchants in their home country (in its currency, near its coordinates), a
//! share of purchases are foreign, amounts are log-normal with rare huge ones,
//! a few rows have impossible coordinates, and `bad_rate` of the lines are
//! malformed in the ways real producers get them wrong. The same seed gives the
//! same bytes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

mod line;
pub mod scenarios;

use scenarios::{Scheduler, Txn, World};

use crate::decode::timestamp::{format_date, MICROS_PER_DAY};
use crate::error::{Error, Result};
use crate::fx::{FxTable, DEFAULT_FX_CSV};

/// Options of [`generate`].
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Transactions to write (bad lines included).
    pub count: u64,
    /// Random seed; the same seed gives the same output.
    pub seed: u64,
    /// Number of customers.
    pub customers: usize,
    /// Number of merchants.
    pub merchants: usize,
    /// Days the transactions span.
    pub days: u32,
    /// First day (days since 1970-01-01).
    pub start_day: i64,
    /// Share of malformed lines, 0.0..=1.0.
    pub bad_rate: f64,
    /// Approximate share of transactions in labelled fraud scenarios
    /// (0 turns them off); see [`scenarios`].
    pub fraud_rate: f64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            count: 100_000,
            seed: 42,
            customers: 10_000,
            merchants: 1_000,
            days: 30,
            start_day: crate::decode::timestamp::days_from_civil(2026, 11, 1),
            bad_rate: 0.0,
            fraud_rate: DEFAULT_FRAUD_RATE,
        }
    }
}

/// Default [`GenerateOptions::fraud_rate`]: about 0.5 % of transactions.
pub const DEFAULT_FRAUD_RATE: f64 = 0.005;

/// What [`generate`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenerateSummary {
    /// Lines written.
    pub lines: u64,
    /// Well-formed transactions among them.
    pub valid: u64,
    /// Malformed lines, by kind.
    pub bad: BTreeMap<&'static str, u64>,
    /// Well-formed rows that are foreign.
    pub foreign: u64,
    /// Well-formed rows with an amount multiplied into the huge range.
    pub huge: u64,
    /// Well-formed rows with missing or impossible coordinates.
    pub invalid_geo: u64,
    /// Bytes of `transactions.jsonl`.
    pub bytes: u64,
    /// Labelled fraud transactions, by scenario (see `fraud_labels.csv`).
    pub fraud: BTreeMap<&'static str, u64>,
}

impl GenerateSummary {
    /// Total malformed lines.
    pub fn bad_total(&self) -> u64 {
        self.bad.values().sum()
    }

    /// Total labelled fraud transactions.
    pub fn fraud_total(&self) -> u64 {
        self.fraud.values().sum()
    }
}

/// SplitMix64: tiny, fast, and stable forever (unlike library RNGs).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5851_f42d_4c95_7f2d)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.f64().max(1e-12);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    /// A random version-4 UUID's 16 bytes.
    pub fn uuid(&mut self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        b[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        b
    }
}

/// A country: code, currency, centre coordinates and weight.
struct Country {
    code: &'static str,
    currency: &'static str,
    lat: f64,
    lon: f64,
    weight: u32,
}

const COUNTRIES: [Country; 10] = [
    Country {
        code: "US",
        currency: "USD",
        lat: 39.8,
        lon: -98.6,
        weight: 30,
    },
    Country {
        code: "KR",
        currency: "KRW",
        lat: 36.5,
        lon: 127.9,
        weight: 15,
    },
    Country {
        code: "JP",
        currency: "JPY",
        lat: 36.2,
        lon: 138.3,
        weight: 10,
    },
    Country {
        code: "GB",
        currency: "GBP",
        lat: 54.0,
        lon: -2.0,
        weight: 10,
    },
    Country {
        code: "DE",
        currency: "EUR",
        lat: 51.2,
        lon: 10.4,
        weight: 8,
    },
    Country {
        code: "FR",
        currency: "EUR",
        lat: 46.6,
        lon: 2.2,
        weight: 7,
    },
    Country {
        code: "CN",
        currency: "CNY",
        lat: 35.9,
        lon: 104.2,
        weight: 8,
    },
    Country {
        code: "SG",
        currency: "SGD",
        lat: 1.35,
        lon: 103.8,
        weight: 4,
    },
    Country {
        code: "AU",
        currency: "AUD",
        lat: -25.3,
        lon: 133.8,
        weight: 4,
    },
    Country {
        code: "CA",
        currency: "CAD",
        lat: 56.1,
        lon: -106.3,
        weight: 4,
    },
];

const CATEGORIES: [&str; 10] = [
    "grocery",
    "electronics",
    "travel",
    "restaurants",
    "fashion",
    "fuel",
    "entertainment",
    "health",
    "home",
    "digital_services",
];
const FIRST: [&str; 16] = [
    "Min-jun", "Olivia", "Hiroshi", "Emma", "Liam", "Seo-yeon", "Noah", "Yuki", "Sophie", "Wei",
    "Lucas", "Mia", "Arjun", "Chloe", "Ethan", "Hana",
];
const LAST: [&str; 16] = [
    "Kim", "Smith", "Tanaka", "Brown", "Lee", "Park", "Muller", "Wang", "Martin", "Chen", "Taylor",
    "Sato", "Dubois", "Wilson", "Choi", "Nguyen",
];
const ADJ: [&str; 8] = [
    "Blue", "Golden", "Urban", "Happy", "Prime", "Silver", "Green", "Royal",
];
const NOUN: [&str; 8] = [
    "Harbor", "Lantern", "Maple", "Summit", "River", "Orchid", "Falcon", "Bridge",
];
const PAYMENT: [(&str, u32); 4] = [
    ("credit_card", 45),
    ("debit_card", 30),
    ("mobile_wallet", 18),
    ("bank_transfer", 7),
];
const BAD_KINDS: [&str; 9] = [
    "not_json",
    "not_object",
    "missing_field",
    "null_required",
    "wrong_type",
    "bad_timestamp",
    "bad_uuid",
    "unknown_currency",
    "empty",
];

fn pick_country(rng: &mut Rng) -> usize {
    let total: u32 = COUNTRIES.iter().map(|c| c.weight).sum();
    let mut x = rng.below(u64::from(total)) as u32;
    for (i, c) in COUNTRIES.iter().enumerate() {
        if x < c.weight {
            return i;
        }
        x -= c.weight;
    }
    0
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

fn push_uuid(out: &mut Vec<u8>, b: &[u8; 16]) {
    push_hex(out, &b[0..4]);
    out.push(b'-');
    push_hex(out, &b[4..6]);
    out.push(b'-');
    push_hex(out, &b[6..8]);
    out.push(b'-');
    push_hex(out, &b[8..10]);
    out.push(b'-');
    push_hex(out, &b[10..16]);
}

fn uuid_string(b: &[u8; 16]) -> String {
    let mut v = Vec::with_capacity(36);
    push_uuid(&mut v, b);
    String::from_utf8_lossy(&v).into_owned()
}

fn push_int(out: &mut Vec<u8>, mut v: u64, min_digits: usize) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 && buf.len() - i >= min_digits {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Pushes a fixed-point number `units / 10^decimals`.
fn push_fixed(out: &mut Vec<u8>, units: i64, decimals: u32) {
    if units < 0 {
        out.push(b'-');
    }
    let u = units.unsigned_abs();
    let p = 10u64.pow(decimals);
    push_int(out, u / p, 1);
    if decimals > 0 {
        out.push(b'.');
        push_int(out, u % p, decimals as usize);
    }
}

fn push_ts(out: &mut Vec<u8>, us: i64) {
    let days = us.div_euclid(MICROS_PER_DAY);
    let (y, mo, d) = crate::decode::timestamp::civil_from_days(days);
    let ms = (us - days * MICROS_PER_DAY) / 1000;
    push_int(out, y as u64, 4);
    out.push(b'-');
    push_int(out, u64::from(mo), 2);
    out.push(b'-');
    push_int(out, u64::from(d), 2);
    out.push(b'T');
    push_int(out, (ms / 3_600_000) as u64, 2);
    out.push(b':');
    push_int(out, (ms / 60_000 % 60) as u64, 2);
    out.push(b':');
    push_int(out, (ms / 1000 % 60) as u64, 2);
    out.push(b'.');
    push_int(out, (ms % 1000) as u64, 3);
    out.push(b'Z');
}

struct Customer {
    id: [u8; 16],
    country: usize,
    device_seed: u64,
    /// Where the customer is (cards are used near home; foreign merchants online).
    home: (f64, f64),
    /// Log of the customer's typical amount (USD).
    spend_mu: f64,
}

struct Merchant {
    id: [u8; 16],
    country: usize,
}

/// Kind of a generated line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// A well-formed transaction.
    Valid {
        /// Merchant abroad.
        foreign: bool,
        /// Amount pushed into the huge range.
        huge: bool,
        /// Missing or impossible coordinates.
        invalid_geo: bool,
        /// The fraud scenario it belongs to (the truth, never in the line).
        fraud: Option<&'static str>,
    },
    /// A malformed line of the named kind.
    Bad(&'static str),
}

/// Streams generated transaction lines; the dims it draws from are fixed by the seed.
pub struct TransactionGenerator {
    opts: GenerateOptions,
    rng: Rng,
    customers: Vec<Customer>,
    merchants: Vec<Merchant>,
    by_country: Vec<Vec<usize>>,
    fx: FxTable,
    next: u64,
    scratch: Vec<u8>,
    scheduler: Scheduler,
    last_id: [u8; 16],
}

impl std::fmt::Debug for TransactionGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionGenerator")
            .field("next", &self.next)
            .finish()
    }
}

impl TransactionGenerator {
    /// A generator for `opts`.
    ///
    /// # Errors
    /// Zero customers, merchants or days, or a `bad_rate` outside `[0, 1]`.
    pub fn try_new(opts: GenerateOptions) -> Result<Self> {
        if opts.customers == 0 || opts.merchants == 0 || opts.days == 0 {
            return Err(Error::Config(
                "customers, merchants and days must be at least 1".into(),
            ));
        }
        if !(0.0..=0.2).contains(&opts.fraud_rate) {
            return Err(Error::Config(format!(
                "fraud rate must be within 0..=0.2, got {}",
                opts.fraud_rate
            )));
        }
        if !(0.0..=1.0).contains(&opts.bad_rate) {
            return Err(Error::Config(format!(
                "bad rate must be within 0..=1, got {}",
                opts.bad_rate
            )));
        }
        let mut rng = Rng::new(opts.seed);
        let customers: Vec<Customer> = (0..opts.customers)
            .map(|_| {
                let id = rng.uuid();
                let country = pick_country(&mut rng);
                let c = &COUNTRIES[country];
                Customer {
                    id,
                    country,
                    device_seed: rng.next_u64(),
                    home: (c.lat + rng.normal() * 1.5, c.lon + rng.normal() * 1.5),
                    spend_mu: 35f64.ln() + 0.7 * rng.normal(),
                }
            })
            .collect();
        let merchants: Vec<Merchant> = (0..opts.merchants)
            .map(|i| {
                let country = if i < COUNTRIES.len() {
                    i
                } else {
                    pick_country(&mut rng)
                };
                Merchant {
                    id: rng.uuid(),
                    country,
                }
            })
            .collect();
        let mut by_country = vec![Vec::new(); COUNTRIES.len()];
        for (i, m) in merchants.iter().enumerate() {
            by_country[m.country].push(i);
        }
        Ok(Self {
            rng,
            customers,
            merchants,
            by_country,
            fx: FxTable::defaults(),
            next: 0,
            scheduler: Scheduler::new(opts.fraud_rate),
            opts,
            scratch: Vec::with_capacity(512),
            last_id: [0; 16],
        })
    }

    /// True when `count` lines were generated.
    pub fn is_done(&self) -> bool {
        self.next >= self.opts.count
    }

    /// Appends the next line (without newline) to `out`, or `None` when done.
    pub fn next_line(&mut self, out: &mut Vec<u8>) -> Option<LineKind> {
        if self.is_done() {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let span = i64::from(self.opts.days) * MICROS_PER_DAY;
        let base = self.opts.start_day * MICROS_PER_DAY
            + ((i128::from(i) * i128::from(span)) / i128::from(self.opts.count.max(1))) as i64;
        let jitter = self.rng.below(60_000_000) as i64;
        let ts = (base + jitter).min(self.opts.start_day * MICROS_PER_DAY + span - 1);
        if let Some(t) = self.scheduler.due(ts) {
            return Some(self.write(out, &t, None));
        }
        self.scheduler.new_day(
            &mut self.rng,
            ts,
            self.customers.len(),
            self.merchants.len(),
        );
        let bad = self.opts.bad_rate > 0.0 && self.rng.f64() < self.opts.bad_rate;
        if !bad {
            let t = self.genuine(ts);
            let kind = self.write(out, &t, None);
            self.start_scenarios(&t);
            return Some(kind);
        }
        let kind = BAD_KINDS[self.rng.below(BAD_KINDS.len() as u64) as usize];
        match kind {
            "not_json" => {
                self.scratch.clear();
                let mut s = std::mem::take(&mut self.scratch);
                let t = self.genuine(ts);
                self.write(&mut s, &t, None);
                out.extend_from_slice(&s[..s.len() / 2]);
                self.scratch = s;
            }
            "not_object" => out.extend_from_slice(b"[\"transaction\", 1, 2]"),
            "empty" => {}
            other => {
                let t = self.genuine(ts);
                self.write(out, &t, Some(other));
            }
        }
        Some(LineKind::Bad(kind))
    }

    /// The id of the transaction last written by [`next_line`](Self::next_line).
    pub fn last_transaction_id(&self) -> String {
        uuid_string(&self.last_id)
    }

    /// A genuine transaction at `ts` (possibly hit by a handbook scenario).
    fn genuine(&mut self, ts: i64) -> Txn {
        let rng = &mut self.rng;
        let n = self.customers.len() as f64;
        let ci = ((rng.f64().powf(1.6)) * n) as usize % self.customers.len();
        let c = &self.customers[ci];
        let foreign = rng.f64() < 0.07;
        let country = if foreign {
            let mut k = rng.below(COUNTRIES.len() as u64 - 1) as usize;
            if k >= c.country {
                k += 1;
            }
            k
        } else {
            c.country
        };
        let pool = if self.by_country[country].is_empty() {
            &self.by_country[0]
        } else {
            &self.by_country[country]
        };
        let merchant = pool[rng.below(pool.len() as u64) as usize];
        let mut usd = (c.spend_mu + 0.5 * rng.normal()).exp();
        let huge = rng.f64() < 0.000_4;
        if huge {
            usd *= 200.0 + rng.f64() * 1800.0;
        }
        let invalid_geo = rng.f64() < 0.002;
        // Purchases happen where the customer is (foreign merchants online).
        let lat = c.home.0 + rng.normal() * 0.03;
        let lon = c.home.1 + rng.normal() * 0.03;
        let device = c.device_seed.wrapping_add(u64::from(rng.below(5) == 0));
        let mut t = Txn {
            ts,
            customer: ci,
            merchant,
            usd,
            lat,
            lon,
            invalid_geo,
            device: Some(device),
            foreign,
            huge,
            label: None,
        };
        self.scheduler.touch_genuine(&mut self.rng, &mut t);
        t
    }

    fn start_scenarios(&mut self, genuine: &Txn) {
        let c = &self.customers[genuine.customer];
        let countries: Vec<(f64, f64)> = COUNTRIES.iter().map(|k| (k.lat, k.lon)).collect();
        let by_country = &self.by_country;
        let pick = |k: usize, rng: &mut Rng| -> usize {
            let pool = if by_country[k].is_empty() {
                &by_country[0]
            } else {
                &by_country[k]
            };
            pool[rng.below(pool.len() as u64) as usize]
        };
        let world = World {
            home_country: c.country,
            home: c.home,
            spend_mu: c.spend_mu,
            countries: &countries,
            merchants_of: &pick,
        };
        self.scheduler.maybe_start(&mut self.rng, genuine, &world);
    }

    /// `dim_customer.csv` text: `customer_id,name,home_country,signup_date`.
    pub fn customers_csv(&self) -> String {
        let mut rng = Rng::new(self.opts.seed ^ 0xc0ffee);
        let mut s = String::from("customer_id,name,home_country,signup_date\n");
        for c in &self.customers {
            let name = format!(
                "{} {}",
                FIRST[rng.below(16) as usize],
                LAST[rng.below(16) as usize]
            );
            let signup = format_date(self.opts.start_day - 1 - rng.below(1095) as i64);
            s.push_str(&format!(
                "{},{name},{},{signup}\n",
                uuid_string(&c.id),
                COUNTRIES[c.country].code
            ));
        }
        s
    }

    /// `dim_merchant.csv` text: `merchant_id,name,category,country`.
    pub fn merchants_csv(&self) -> String {
        let mut rng = Rng::new(self.opts.seed ^ 0xbeef);
        let mut s = String::from("merchant_id,name,category,country\n");
        for m in &self.merchants {
            let cat = CATEGORIES[rng.below(CATEGORIES.len() as u64) as usize];
            let name = format!(
                "{} {} {}",
                ADJ[rng.below(8) as usize],
                NOUN[rng.below(8) as usize],
                cat.replace('_', " ")
            );
            s.push_str(&format!(
                "{},{name},{cat},{}\n",
                uuid_string(&m.id),
                COUNTRIES[m.country].code
            ));
        }
        s
    }
}

/// The truth of the injected fraud scenarios, written beside the transactions.
pub const LABELS_FILE: &str = "fraud_labels.csv";

/// Writes `transactions.jsonl`, `dim_customer.csv`, `dim_merchant.csv`,
/// `fx_rates.csv` and the fraud scenarios' truth, `fraud_labels.csv`
/// (`transaction_id,scenario`), into `dir`.
///
/// # Errors
/// Bad options or a file that cannot be written.
pub fn generate(
    dir: &Path,
    opts: &GenerateOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<GenerateSummary> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let mut generator = TransactionGenerator::try_new(opts.clone())?;
    let write = |name: &str, text: &str| -> Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| Error::io("writing", p, e))
    };
    write("dim_customer.csv", &generator.customers_csv())?;
    write("dim_merchant.csv", &generator.merchants_csv())?;
    write("fx_rates.csv", DEFAULT_FX_CSV)?;
    let path = dir.join("transactions.jsonl");
    let file = File::create(&path).map_err(|e| Error::io("creating", &path, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut summary = GenerateSummary::default();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let labels_path = dir.join(LABELS_FILE);
    let labels_file =
        File::create(&labels_path).map_err(|e| Error::io("creating", &labels_path, e))?;
    let mut labels = BufWriter::new(labels_file);
    labels
        .write_all(b"transaction_id,scenario\n")
        .map_err(|e| Error::io("writing", &labels_path, e))?;
    while let Some(kind) = generator.next_line(&mut buf) {
        buf.push(b'\n');
        summary.lines += 1;
        match kind {
            LineKind::Valid {
                foreign,
                huge,
                invalid_geo,
                fraud,
            } => {
                if let Some(scenario) = fraud {
                    *summary.fraud.entry(scenario).or_default() += 1;
                    writeln!(labels, "{},{scenario}", generator.last_transaction_id())
                        .map_err(|e| Error::io("writing", &labels_path, e))?;
                }
                summary.valid += 1;
                summary.foreign += u64::from(foreign);
                summary.huge += u64::from(huge);
                summary.invalid_geo += u64::from(invalid_geo);
            }
            LineKind::Bad(k) => *summary.bad.entry(k).or_default() += 1,
        }
        if buf.len() >= (1 << 20) - 1024 {
            w.write_all(&buf)
                .map_err(|e| Error::io("writing", &path, e))?;
            summary.bytes += buf.len() as u64;
            buf.clear();
            progress(summary.lines);
        }
    }
    w.write_all(&buf)
        .map_err(|e| Error::io("writing", &path, e))?;
    summary.bytes += buf.len() as u64;
    w.flush().map_err(|e| Error::io("writing", &path, e))?;
    labels
        .flush()
        .map_err(|e| Error::io("writing", &labels_path, e))?;
    progress(summary.lines);
    Ok(summary)
}
