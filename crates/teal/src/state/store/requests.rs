//! The request log: which version and slot served each request. The data plane puts records
//! on a bounded queue without waiting; a writer thread stores them in batches, and drops and
//! counts when it falls behind. The same thread prunes the log, and the feedback labels given
//! against it, to their retention (rows and age), a bounded chunk per transaction, so the
//! state file does not grow with traffic.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Store, StoreError, now_ms};

/// One served request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RequestRecord {
    pub request_id: String,
    /// When the request arrived (ms since the epoch): the moment its route was chosen, to
    /// compare with a switch's time. Its answer left `latency_us` later.
    pub at_ms: i64,
    pub model: String,
    pub version: Option<String>,
    pub slot: Option<String>,
    pub status: u16,
    pub latency_us: u64,
    /// The predicted label, when the model names its prediction output (for feedback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<String>,
}

impl Store {
    /// Writes a batch of request records in one transaction, many rows per statement.
    pub fn record_requests(&self, batch: &[RequestRecord]) -> Result<(), StoreError> {
        const ROWS: usize = 256;
        self.write(|tx| {
            for chunk in batch.chunks(ROWS) {
                let placeholders = vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
                let sql = format!(
                    "INSERT INTO requests (request_id, at_ms, model, version, slot, status, latency_us, prediction) VALUES {placeholders}"
                );
                let mut insert = tx.prepare_cached(&sql)?;
                let latencies: Vec<i64> = chunk.iter().map(|r| r.latency_us as i64).collect();
                let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() * 8);
                for (r, latency) in chunk.iter().zip(&latencies) {
                    values.extend_from_slice(&[
                        &r.request_id,
                        &r.at_ms,
                        &r.model,
                        &r.version,
                        &r.slot,
                        &r.status,
                        latency,
                        &r.prediction,
                    ]);
                }
                insert.execute(values.as_slice())?;
            }
            Ok(())
        })
    }

    /// Deletes the oldest request-log rows past `max_rows`, or older than `before_ms`, at most
    /// `chunk` of them in one short transaction; returns how many went. Rows are walked from
    /// the oldest id, so a prune reads little more than it deletes however large the log is.
    pub fn prune_requests(
        &self,
        max_rows: u64,
        before_ms: i64,
        chunk: u64,
    ) -> Result<u64, StoreError> {
        self.write(|tx| prune_oldest(tx, "requests", "id", max_rows, before_ms, chunk))
    }

    /// The same for feedback labels, which come from the data plane too (one per logged
    /// request at most, but kept after the request's row is pruned). `before_ms` is compared
    /// with when the label arrived.
    pub fn prune_feedback(
        &self,
        max_rows: u64,
        before_ms: i64,
        chunk: u64,
    ) -> Result<u64, StoreError> {
        self.write(|tx| prune_oldest(tx, "feedback", "rowid", max_rows, before_ms, chunk))
    }

    /// How many request-log rows the state file holds.
    pub fn request_rows(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            Ok(conn.query_row("SELECT count(*) FROM requests", [], |r| r.get::<_, i64>(0))? as u64)
        })
    }

    /// The records of a request id (a caller may reuse an id, so there can be several).
    pub fn request(&self, request_id: &str) -> Result<Vec<RequestRecord>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare("SELECT request_id, at_ms, model, version, slot, status, latency_us, prediction FROM requests WHERE request_id = ?1 ORDER BY id")?;
            let rows = statement.query_map([request_id], |r| {
                Ok(RequestRecord {
                    request_id: r.get(0)?,
                    at_ms: r.get(1)?,
                    model: r.get(2)?,
                    version: r.get(3)?,
                    slot: r.get(4)?,
                    status: r.get(5)?,
                    latency_us: r.get::<_, i64>(6)? as u64,
                    prediction: r.get(7)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

/// Prunes the log to `retention`, a bounded number of chunks; a failure is tracked by the
/// store like any write, and the next round tries again.
fn prune(store: &Store, retention: Retention) {
    let before_ms =
        now_ms().saturating_sub(retention.max_age.as_millis().min(i64::MAX as u128) as i64);
    for _ in 0..PRUNE_ROUNDS {
        match store.prune_requests(retention.max_rows, before_ms, PRUNE_CHUNK) {
            Ok(n) if n == PRUNE_CHUNK => continue,
            _ => break,
        }
    }
    for _ in 0..PRUNE_ROUNDS {
        match store.prune_feedback(retention.max_rows, before_ms, PRUNE_CHUNK) {
            Ok(n) if n == PRUNE_CHUNK => continue,
            _ => break,
        }
    }
}

/// Deletes from `table` (whose `id` column only grows, and which has `at_ms`) the oldest rows
/// past `max_rows` or older than `before_ms`, at most `chunk`.
fn prune_oldest(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    id: &str,
    max_rows: u64,
    before_ms: i64,
    chunk: u64,
) -> Result<u64, StoreError> {
    let (oldest, newest): (Option<i64>, Option<i64>) = tx.query_row(
        &format!("SELECT min({id}), max({id}) FROM {table}"),
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (Some(oldest), Some(newest)) = (oldest, newest) else {
        return Ok(0);
    };
    let chunk = chunk.clamp(1, i64::MAX as u64) as i64;
    // Ids only grow, so the rows past the bound are those below `newest - max_rows` (fewer
    // when ids have gaps, never more).
    let past_rows = newest.saturating_sub(max_rows.min(i64::MAX as u64) as i64);
    // Arrival times follow ids closely: the oldest chunk's rows that are too old.
    let too_old: Option<i64> = tx.query_row(
        &format!(
            "SELECT max(i) FROM (SELECT {id} AS i, at_ms FROM {table} ORDER BY {id} LIMIT ?1) WHERE at_ms < ?2"
        ),
        rusqlite::params![chunk, before_ms],
        |r| r.get(0),
    )?;
    let upto = past_rows
        .max(too_old.unwrap_or(i64::MIN))
        .min(oldest.saturating_add(chunk - 1));
    if upto < oldest {
        return Ok(0);
    }
    Ok(tx.execute(&format!("DELETE FROM {table} WHERE {id} <= ?1"), [upto])? as u64)
}

/// Requests waiting to be written, at most; past that, records are dropped and counted.
const LOG_QUEUE: usize = 65_536;
const LOG_BATCH: usize = 4096;
const LOG_GATHER: Duration = Duration::from_millis(50);
/// How often the writer prunes the log to its retention, traffic or not.
const PRUNE_EVERY: Duration = Duration::from_secs(1);
/// Rows deleted per prune transaction: a few milliseconds of the store's lock.
const PRUNE_CHUNK: u64 = 5_000;
/// Prune transactions per round at most, so a large backlog (an older state file) is worked
/// off over several rounds while new records keep being written between them.
const PRUNE_ROUNDS: usize = 8;

/// How much of the request log is kept.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// The most rows kept.
    pub max_rows: u64,
    /// Rows older than this are pruned.
    pub max_age: Duration,
}

/// The request log's front: a bounded queue the data plane puts records on without waiting.
pub struct RequestLog {
    queue: crossbeam_channel::Sender<RequestRecord>,
    pub dropped: prometheus_client::metrics::counter::Counter,
}

impl RequestLog {
    /// Starts the writer thread, which writes batches to `store` until the log is dropped.
    /// It is a plain thread, not an async task: it spends its life in SQLite, and a
    /// lock-free queue keeps the request side to one cheap `try_send`.
    pub fn start(
        store: std::sync::Arc<Store>,
        dropped: prometheus_client::metrics::counter::Counter,
        retention: Retention,
    ) -> RequestLog {
        let (queue, records) = crossbeam_channel::bounded::<RequestRecord>(LOG_QUEUE);
        let lost = dropped.clone();
        let spawned = std::thread::Builder::new()
            .name("teal-request-log".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(LOG_BATCH);
                let mut pruned = std::time::Instant::now();
                loop {
                    if pruned.elapsed() >= PRUNE_EVERY {
                        prune(&store, retention);
                        pruned = std::time::Instant::now();
                    }
                    // Ends when the log (every sender) is dropped.
                    let first = match records.recv_timeout(PRUNE_EVERY) {
                        Ok(record) => record,
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                    };
                    batch.push(first);
                    // Let a batch gather: one transaction per few hundred records costs far
                    // less than one per record, and the first record waits at most this long.
                    std::thread::sleep(LOG_GATHER);
                    while batch.len() < LOG_BATCH {
                        match records.try_recv() {
                            Ok(record) => batch.push(record),
                            Err(_) => break,
                        }
                    }
                    // A failed write is logged by the store (once per run of failures);
                    // its records are lost, and counted as dropped.
                    if store.record_requests(&batch).is_err() {
                        lost.inc_by(batch.len() as u64);
                    }
                    batch.clear();
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the request log writer; records will be dropped and counted");
        }
        RequestLog { queue, dropped }
    }

    /// Queues a record; never waits. A full queue drops it and counts the drop.
    pub fn log(&self, record: RequestRecord) {
        if self.queue.try_send(record).is_err() {
            let dropped = self.dropped.inc() + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "request log is behind; records are being dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::temp_store;
    use super::*;

    fn record(i: i64, at_ms: i64) -> RequestRecord {
        RequestRecord {
            request_id: format!("r{i}"),
            at_ms,
            model: "m".into(),
            version: Some("v1".into()),
            slot: Some("blue".into()),
            status: 200,
            latency_us: 10,
            prediction: None,
        }
    }

    #[test]
    fn pruning_keeps_the_newest_rows_a_chunk_at_a_time() {
        let (store, _) = temp_store();
        let now = now_ms();
        let batch: Vec<_> = (0..1000).map(|i| record(i, now)).collect();
        store.record_requests(&batch).unwrap();
        assert_eq!(store.prune_requests(100, 0, 300).unwrap(), 300);
        assert_eq!(store.request_rows().unwrap(), 700);
        while store.prune_requests(100, 0, 300).unwrap() > 0 {}
        assert_eq!(store.request_rows().unwrap(), 100);
        assert_eq!(store.request("r999").unwrap().len(), 1);
        assert!(store.request("r899").unwrap().is_empty());
    }

    #[test]
    fn pruning_drops_rows_older_than_the_age_and_keeps_the_rest() {
        let (store, _) = temp_store();
        let now = now_ms();
        let old: Vec<_> = (0..50).map(|i| record(i, now - 10_000)).collect();
        let new: Vec<_> = (50..80).map(|i| record(i, now)).collect();
        store.record_requests(&old).unwrap();
        store.record_requests(&new).unwrap();
        assert_eq!(store.prune_requests(1_000, now - 5_000, 1_000).unwrap(), 50);
        assert_eq!(store.request_rows().unwrap(), 30);
        assert_eq!(store.prune_requests(1_000, now - 5_000, 1_000).unwrap(), 0);
        assert_eq!(store.prune_requests(u64::MAX, i64::MIN, 1_000).unwrap(), 0);
    }

    #[test]
    fn feedback_is_pruned_to_the_same_bound() {
        let (store, _) = temp_store();
        let batch: Vec<_> = (0..50).map(|i| record(i, now_ms())).collect();
        store.record_requests(&batch).unwrap();
        for i in 0..50 {
            assert!(matches!(
                store.record_feedback("m", &format!("r{i}"), "1").unwrap(),
                super::super::FeedbackOutcome::Recorded(_)
            ));
        }
        while store.prune_feedback(20, 0, 7).unwrap() > 0 {}
        assert_eq!(store.prune_feedback(20, now_ms() + 1, 100).unwrap(), 20);
        assert_eq!(store.prune_feedback(20, now_ms() + 1, 100).unwrap(), 0);
    }
}
