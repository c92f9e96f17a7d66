//! Embedding txpipe-core: decode raw JSON messages and run the fraud rules on them.
//!
//! Shows the two building blocks other Rust apps use on their own streams: the
//! push decoder (bytes → typed Arrow batch + quarantine) and a rule set compiled
//! from SQL, evaluated vectorized over the batch.
//!
//! Run: `cargo run -p txpipe-core --example rules_over_batch`

use std::sync::Arc;

use txpipe_core::arrow::util::pretty::pretty_format_batches;
use txpipe_core::decode::TransactionDecoder;
use txpipe_core::fx::FxTable;
use txpipe_core::rules::{Rule, RuleSet, RulesConfig};

fn main() -> Result<(), txpipe_core::Error> {
    let messages: [&[u8]; 4] = [
        br#"{"transaction_id":"67e55044-10b1-426f-9247-bb680e5fe0c8","transaction_ts":"2026-11-20T13:45:12.123Z","customer_id":"9f1c7a52-1b7e-4c53-8a53-2c1e7f0c9a10","merchant_id":"0b9a3c1e-5d2f-4e8a-9c7b-1a2b3c4d5e6f","amount":8900000,"currency":"KRW","latitude":37.56,"longitude":126.97,"device_id":"dev-1","payment_method":"credit_card","is_foreign":false}"#,
        br#"{"transaction_id":"5a1d2a0e-3b7c-4f4e-9d62-0c8b7f5e4a31","transaction_ts":1795182312123,"customer_id":"9f1c7a52-1b7e-4c53-8a53-2c1e7f0c9a10","merchant_id":"0b9a3c1e-5d2f-4e8a-9c7b-1a2b3c4d5e6f","amount":12.5,"currency":"EUR","latitude":200,"longitude":2.35,"payment_method":"mobile_wallet","is_foreign":true}"#,
        br#"{"transaction_id":"not-a-uuid","transaction_ts":"2026-11-20T13:45:12Z"}"#,
        b"garbage",
    ];

    let mut decoder = TransactionDecoder::new(Arc::new(FxTable::defaults()), "example");
    for (offset, m) in messages.iter().enumerate() {
        decoder.push(m, 0, offset as i64);
    }
    let decoded = decoder.finish(0)?;

    // The shipped rules plus one of our own, compiled once.
    let mut config = RulesConfig::defaults()?;
    config.rule.push(Rule::new(
        "wallet_abroad",
        "is_foreign AND payment_method = 'mobile_wallet'",
    ));
    let rules = RuleSet::from_config(config)?;
    let (fact, hits) = rules.apply(&decoded.transactions)?;

    let view = fact.project(&[0, 4, 5, 11, 12, 13])?;
    println!("{}", pretty_format_batches(&[view])?);
    println!(
        "{}",
        pretty_format_batches(&[decoded.quarantine.project(&[1, 4])?])?
    );
    for (name, n) in rules.names().iter().zip(hits.counts()) {
        println!("{name}: {n}");
    }
    Ok(())
}
