//! The request log: which version and slot served each request. The data plane puts records
//! on a bounded queue without waiting; a writer thread stores them in batches, and drops and
//! counts when it falls behind.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

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

/// Requests waiting to be written, at most; past that, records are dropped and counted.
const LOG_QUEUE: usize = 65_536;
const LOG_BATCH: usize = 4096;
const LOG_GATHER: Duration = Duration::from_millis(50);

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
    ) -> RequestLog {
        let (queue, records) = crossbeam_channel::bounded::<RequestRecord>(LOG_QUEUE);
        let lost = dropped.clone();
        let spawned = std::thread::Builder::new()
            .name("teal-request-log".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(LOG_BATCH);
                // Ends when the log (every sender) is dropped.
                while let Ok(first) = records.recv() {
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
