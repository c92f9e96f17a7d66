//! What an incremental model must recompute: the `event_date`s that the fact
//! table's commits since the model's last build touched, read from the Delta
//! log (no watermark guessing: late rows touch their own, older, date).
//!
//! Each incremental model keeps `LAKE/_txpipe/incremental/<model>.json`: the
//! fact table version it was built at and the fingerprint of its SQL. A model
//! that was never built, whose SQL changed (its file, or the rules its
//! `rule_hits` columns expand to), or whose commits are no longer in the log
//! (cleaned up) is rebuilt in full.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::lake::Lake;
use crate::schema::{EVENT_DATE, FACT_TABLE};

/// Folder of the incremental models' state.
pub const STATE_DIR: &str = "_txpipe/incremental";

/// What an incremental model was last built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelState {
    /// The fact table version the build read (at least).
    pub fact_version: u64,
    /// The fingerprint of the model's SQL then ([`super::Model::fingerprint`]).
    pub fingerprint: String,
}

impl ModelState {
    fn path(model: &str) -> String {
        format!("{STATE_DIR}/{model}.json")
    }

    /// The state of `model`, if it was built incrementally before.
    ///
    /// # Errors
    /// The store failed (an unreadable state file counts as none).
    pub async fn read(lake: &Lake, model: &str) -> Result<Option<Self>> {
        Ok(lake
            .get(&Self::path(model))
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Records the state of `model` (after its mart was published).
    ///
    /// # Errors
    /// The store failed.
    pub async fn write(&self, lake: &Lake, model: &str) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        lake.put(&Self::path(model), Bytes::from(json)).await
    }

    /// Forgets `model`'s state (it was rebuilt as a table).
    ///
    /// # Errors
    /// The store failed.
    pub async fn forget(lake: &Lake, model: &str) -> Result<()> {
        if lake.exists(&Self::path(model)).await? {
            lake.delete(&Self::path(model)).await?;
        }
        Ok(())
    }
}

/// The dates the fact table's data commits after a version touched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Touched {
    /// `event_date`s (YYYY-MM-DD) of the files those commits added or removed.
    pub dates: BTreeSet<String>,
    /// The commits that changed data (compactions, which do not, are left out).
    pub commits: Vec<u64>,
}

/// The newest version of the fact table's log (`None`: no table).
///
/// # Errors
/// The store failed.
pub async fn fact_version(lake: &Lake) -> Result<Option<u64>> {
    let log = format!("{FACT_TABLE}/_delta_log");
    Ok(lake
        .list(&log)
        .await?
        .iter()
        .filter_map(|o| {
            let name = o.location.filename()?;
            let stem = name.strip_suffix(".json")?;
            (stem.len() == 20).then(|| stem.parse::<u64>().ok())?
        })
        .max())
}

/// The dates touched by the fact table's commits `after < v <= upto`, or
/// `None` when one of them is no longer in the log (the caller rebuilds).
///
/// # Errors
/// The store failed.
pub async fn touched_since(lake: &Lake, after: u64, upto: u64) -> Result<Option<Touched>> {
    let mut t = Touched::default();
    for v in after + 1..=upto {
        let path = format!("{FACT_TABLE}/_delta_log/{v:020}.json");
        let Some(commit) = lake.get(&path).await? else {
            return Ok(None);
        };
        let dates = data_dates(&commit);
        if !dates.is_empty() {
            t.commits.push(v);
            t.dates.extend(dates);
        }
    }
    Ok(Some(t))
}

/// The `event_date` partition values of a commit's `add`/`remove` actions
/// that change data (`dataChange` true).
fn data_dates(commit: &[u8]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in commit.split(|b| *b == b'\n') {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        for action in ["add", "remove"] {
            let Some(a) = v.get(action) else { continue };
            if a.get("dataChange").and_then(|d| d.as_bool()) == Some(false) {
                continue;
            }
            if let Some(d) = a
                .pointer(&format!("/partitionValues/{EVENT_DATE}"))
                .and_then(|d| d.as_str())
            {
                out.insert(d.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_data_changes_touch_dates() {
        let commit = br#"{"commitInfo":{"operation":"WRITE"}}
{"add":{"path":"event_date=2026-11-01/a.parquet","partitionValues":{"event_date":"2026-11-01"},"dataChange":true}}
{"add":{"path":"event_date=2026-10-03/b.parquet","partitionValues":{"event_date":"2026-10-03"},"dataChange":true}}
{"txn":{"appId":"s","version":3}}"#;
        assert_eq!(
            data_dates(commit).into_iter().collect::<Vec<_>>(),
            vec!["2026-10-03", "2026-11-01"]
        );
        let optimize = br#"{"add":{"path":"x","partitionValues":{"event_date":"2026-11-01"},"dataChange":false}}
{"remove":{"path":"y","partitionValues":{"event_date":"2026-11-01"},"dataChange":false}}"#;
        assert!(
            data_dates(optimize).is_empty(),
            "a compaction changes no data"
        );
    }

    #[tokio::test]
    async fn a_missing_commit_means_a_full_rebuild() {
        let lake = Lake::in_memory();
        let add = |d: &str| {
            Bytes::from(format!(
                r#"{{"add":{{"path":"p","partitionValues":{{"event_date":"{d}"}},"dataChange":true}}}}"#
            ))
        };
        for (v, d) in [(1u64, "2026-11-01"), (2, "2026-11-02"), (3, "2026-10-30")] {
            lake.put(&format!("{FACT_TABLE}/_delta_log/{v:020}.json"), add(d))
                .await
                .unwrap();
        }
        assert_eq!(fact_version(&lake).await.unwrap(), Some(3));
        let t = touched_since(&lake, 1, 3).await.unwrap().unwrap();
        assert_eq!(t.commits, vec![2, 3]);
        assert_eq!(
            t.dates.into_iter().collect::<Vec<_>>(),
            vec!["2026-10-30", "2026-11-02"]
        );
        lake.delete(&format!("{FACT_TABLE}/_delta_log/{:020}.json", 2))
            .await
            .unwrap();
        assert_eq!(touched_since(&lake, 1, 3).await.unwrap(), None);
    }
}
