//! What the gateway counts about each model request: the model's in-flight gauge while it
//! runs, then the answering slot's request, latency and error series, its statistics (which
//! the rollback rules read), and the request log. Requests for models teal does not serve add
//! no labels, so a caller cannot grow the metric label sets.

use std::time::Instant;

use std::sync::Arc;

use crate::metrics::{ErrorLabels, ModelLabels, RequestLabels, SlotLabels, VersionLabels};
use crate::routing::Slot;
use crate::state::store::RequestRecord;

use super::Gateway;
use super::answer::Answer;
use super::request::Endpoint;

/// A model's in-flight gauge; each served model's is kept by name in [`Gateway`].
pub(super) type Gauge = prometheus_client::metrics::gauge::Gauge;

/// Decrements the in-flight gauge when the request is done.
pub(super) struct ActiveGuard(Gauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Gateway {
    /// Counts a request that `slot` failed and the old version answered instead: a failure
    /// of `slot` for the rollback rules and in its series, and one failover.
    pub(super) fn failed_over(
        &self,
        model: &str,
        slot: &Arc<Slot>,
        endpoint: Endpoint,
        started: Instant,
    ) {
        let elapsed = started.elapsed();
        slot.stats.observe(started, elapsed, true);
        let handles = slot.handles(&self.metrics, model);
        handles.requests[endpoint as usize].inc();
        handles.latency.observe(elapsed.as_secs_f64());
        handles.backend_errors.inc();
        self.metrics
            .failovers
            .get_or_create(&VersionLabels {
                model: model.to_string(),
                version: slot.version.clone(),
            })
            .inc();
        tracing::debug!(model, version = %slot.version, "request failed on the candidate; the old version answers it");
    }

    /// Counts a request in flight on a served model until the guard drops.
    pub(super) fn active(&self, model: &str) -> Option<ActiveGuard> {
        let gauge = self.in_flight_gauge(model)?;
        gauge.inc();
        Some(ActiveGuard(gauge))
    }

    /// The in-flight gauge of a model teal serves (or served); none for other names, so a
    /// caller cannot grow the label set.
    pub(super) fn in_flight_gauge(&self, model: &str) -> Option<Gauge> {
        let known = self.in_flight.read().unwrap_or_else(|p| p.into_inner());
        if let Some(gauge) = known.get(model) {
            return Some(gauge.clone());
        }
        drop(known);
        if !self.routes.load().models.contains_key(model) {
            return None;
        }
        let gauge = self.metrics.active.get_or_create_owned(&ModelLabels {
            model: model.to_string(),
        });
        let mut known = self.in_flight.write().unwrap_or_else(|p| p.into_inner());
        known.insert(model.to_string(), gauge.clone());
        Some(gauge)
    }

    /// Records which version and slot answered a request: metrics, and the request log (off
    /// the request path). Requests for models teal does not serve add no metric labels and no
    /// request-log rows, so a caller cannot grow the label set or the state file.
    pub(super) fn record(
        &self,
        model: &str,
        endpoint: Endpoint,
        started: Instant,
        answer: &mut Answer,
    ) {
        let status = answer.status.as_u16();
        let elapsed = started.elapsed();
        let snapshot = self.routes.load();
        let routes = snapshot.models.get(model);
        let answered = answer.served.as_ref().map(|s| &s.slot);
        // The slot's own series, while it is still the one in the table.
        let served = match (routes, answered) {
            (Some(routes), Some(slot)) => routes
                .slot(slot.color)
                .filter(|s| s.version == slot.version),
            _ => None,
        };
        if let Some(served) = served {
            // The common case: the slot's series, resolved on its first answer.
            served.stats.observe(started, elapsed, status >= 500);
            if let Some(label) = answer.predicted.as_ref().and_then(|p| p.0.parse().ok()) {
                served.stats.observe_class(label);
            }
            if let Some(value) = answer.value {
                served.stats.observe_value(value);
            }
            let handles = served.handles(&self.metrics, model);
            handles.requests[endpoint as usize].inc();
            handles.latency.observe(elapsed.as_secs_f64());
            match status {
                500.. => handles.backend_errors.inc(),
                400..500 => handles.client_errors.inc(),
                _ => 0,
            };
        } else if answered.is_some() || routes.is_some() {
            // Refused before a slot answered (or by a slot no longer in the table).
            let version = answered.map_or("", |s| s.version.as_str());
            let slot = answered.map_or("", |s| s.color.as_str());
            self.metrics
                .requests
                .get_or_create(&RequestLabels {
                    model: model.to_string(),
                    version: version.to_string(),
                    slot: slot.to_string(),
                    endpoint: endpoint.label().to_string(),
                })
                .inc();
            self.metrics
                .latency
                .get_or_create(&SlotLabels {
                    model: model.to_string(),
                    version: version.to_string(),
                    slot: slot.to_string(),
                })
                .observe(elapsed.as_secs_f64());
            if status >= 400 {
                // A 503 no slot answered is load teal shed (or refused while stopping), not a
                // backend's failure: the backend error alerts must not fire on it.
                let error_type = match status {
                    503 if answered.is_none() => "overloaded",
                    500.. => "backend",
                    _ => "client",
                };
                self.metrics
                    .errors
                    .get_or_create(&ErrorLabels {
                        model: model.to_string(),
                        version: version.to_string(),
                        slot: slot.to_string(),
                        error_type: error_type.to_string(),
                    })
                    .inc();
            }
        }
        // Only requests for a model teal serves are logged: a caller sending unknown names
        // must not grow the state file.
        let known = routes.is_some() || answered.is_some();
        let Some(log) = self.request_log.as_ref().filter(|_| known) else {
            return;
        };
        log.log(RequestRecord {
            request_id: answer.request_id.clone(),
            at_ms: crate::state::store::now_ms() - elapsed.as_millis() as i64,
            model: model.to_string(),
            version: answered.map(|s| s.version.clone()),
            slot: answered.map(|s| s.color.to_string()),
            status,
            latency_us: elapsed.as_micros() as u64,
            prediction: answer.predicted.take().map(|p| p.0),
        });
    }
}
