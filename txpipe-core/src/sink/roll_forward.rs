//! Completing a batch whose quarantine commit a crash cut off.
//!
//! A micro-batch is two commits: the fact table's (the atomic commit point,
//! whose `commitInfo` lists all the batch's files) and then the quarantine's.
//! A writer killed between the two leaves the quarantine behind the fact
//! table; another group member may even commit the partition's next batch
//! first. Before each quarantine commit, and on start, the writer finds the
//! fact commits the quarantine is missing and commits their quarantine files
//! with their positions, oldest first. A roll forward never moves a
//! quarantine position back, and racing writers cannot both add the files
//! (the quarantine's `txn` check refuses the second).

use std::collections::{BTreeMap, BTreeSet};

use super::append_log::AppendLog;
use super::commit::{CommitEntry, FileAction};
use super::lake_writer::{app_id, commit_entry_of, LakeWriter};
use crate::error::{Error, Result};
use crate::schema::QUARANTINE_TABLE;

/// The partitions of `target` whose quarantine position is behind it:
/// (quarantine position, target) per partition.
fn lagging(
    q: &AppendLog,
    stream: &str,
    target: &BTreeMap<i32, i64>,
) -> BTreeMap<i32, (Option<i64>, i64)> {
    target
        .iter()
        .map(|(p, t)| (*p, (q.txn(&app_id(stream, *p)), *t)))
        .filter(|(_, (q, t))| q.is_none_or(|q| q < *t))
        .collect()
}

impl LakeWriter {
    /// Commits the quarantine parts of the stream's fact commits that the
    /// quarantine table is missing, up to `target` (per partition, the fact
    /// position to reach).
    pub(super) async fn roll_forward_quarantine_to(
        &mut self,
        target: &BTreeMap<i32, i64>,
    ) -> Result<()> {
        if target.is_empty() {
            return Ok(());
        }
        self.tables(true).await?;
        let stream = self.stream.clone();
        let apps: Vec<String> = target.keys().map(|p| app_id(&stream, *p)).collect();
        let q = self.quarantine_log()?;
        q.refresh().await?;
        q.load(&apps).await?;
        let behind = lagging(q, &stream, target);
        if behind.is_empty() {
            return Ok(());
        }
        let entries = self.missing_quarantine_commits(&behind).await?;
        for e in entries {
            let files: Vec<FileAction> = e
                .files
                .iter()
                .filter(|f| f.table == QUARANTINE_TABLE)
                .cloned()
                .collect();
            self.commit_quarantine(&files, &e.positions).await?;
        }
        // Never go on with a quarantine behind the fact table: its rows
        // would be lost without a word.
        let still: Vec<String> = lagging(self.quarantine_log()?, &stream, target)
            .iter()
            .map(|(p, (q, t))| format!("partition {p}: quarantine at {q:?}, fact at {t}"))
            .collect();
        if !still.is_empty() {
            return Err(Error::CommitLog(format!(
                "stream {stream}: the quarantine table is behind the fact table and the fact \
                 commits that would complete it are no longer in the log ({}); the quarantine \
                 rows of that range are lost — re-ingest it into a new lake",
                still.join("; ")
            )));
        }
        Ok(())
    }

    /// Walks the fact log back from its newest version, collecting (oldest
    /// first) this stream's commits whose end lies in (quarantine position,
    /// target] for a lagging partition, until every lagging partition
    /// reaches a commit the quarantine has (or the log's oldest commit). A
    /// gap is normally one batch back, so this reads a few commit files.
    async fn missing_quarantine_commits(
        &mut self,
        behind: &BTreeMap<i32, (Option<i64>, i64)>,
    ) -> Result<Vec<CommitEntry>> {
        let stream = self.stream.clone();
        let fact = self.fact_log()?;
        let store = fact.log_store().clone();
        let latest = fact.version();
        let mut open: BTreeSet<i32> = behind.keys().copied().collect();
        let mut entries: Vec<CommitEntry> = Vec::new();
        let mut v = latest;
        while !open.is_empty() {
            let Some(bytes) = store
                .read_commit_entry(v)
                .await
                .map_err(|e| super::delta::delta_error(crate::schema::FACT_TABLE, e))?
            else {
                // Older commits were cleaned up after a checkpoint.
                break;
            };
            if let Some(e) = commit_entry_of(&bytes, v) {
                if e.stream == stream {
                    let mut missing = false;
                    for (p, (q, t)) in behind {
                        let Some(end) = e.positions.get(p).map(|x| x.next_offset) else {
                            continue;
                        };
                        if q.is_some_and(|q| end <= q) {
                            open.remove(p);
                        } else if end <= *t {
                            missing = true;
                        }
                    }
                    if missing {
                        entries.push(e);
                    }
                }
            }
            if v == 0 {
                break;
            }
            v -= 1;
        }
        entries.reverse();
        Ok(entries)
    }
}
