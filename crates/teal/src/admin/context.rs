//! What every admin handler shares: the `Admin` state and the few helpers that turn results
//! into the API's JSON answers, so each status code is chosen in one place.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Response, StatusCode, Uri, header};

use crate::control::rollout::{RolloutError, Rollouts, record_change};
use crate::control::slots::{NotStarted, Record as SlotRecord, SlotManager};
use crate::control::validation::Validator;
use crate::routing::{ChangeError, ModelStatus, RolloutView, RouteError, Routes};
use crate::state::store::{Store, StoreError};

use super::ADMIN_MAX_CONCURRENT;

/// Shared state of the admin API: the handles it changes the running server through. The
/// server builds one and hands it to [`super::router`]; the handlers hold it behind an `Arc`.
pub struct Admin {
    pub routes: Arc<Routes>,
    pub slots: Arc<SlotManager>,
    pub validator: Arc<Validator>,
    pub store: Arc<Store>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub rollouts: Arc<Rollouts>,
    /// The bearer token every protected route checks; never shown in an answer.
    pub(super) token: String,
    /// Where to find the token, named in the 401 so the caller knows what to send.
    pub(super) token_hint: String,
    /// Admin requests in progress; past the limit a request is refused rather than queued.
    pub(super) in_flight: tokio::sync::Semaphore,
    /// What the state file remembered that teal did not start again, and why (a slot or a
    /// rollout's candidate that runs a command, while commands are not allowed).
    pub not_started: Vec<NotStarted>,
}

impl Admin {
    /// The route table comes from the slot manager, so the API reads the same table that
    /// deploys and switches change.
    pub fn new(
        slots: Arc<SlotManager>,
        validator: Arc<Validator>,
        store: Arc<Store>,
        metrics: Arc<crate::metrics::Metrics>,
        rollouts: Arc<Rollouts>,
        token: String,
        token_hint: String,
    ) -> Admin {
        Admin {
            routes: slots.routes.clone(),
            rollouts,
            slots,
            validator,
            store,
            metrics,
            token,
            token_hint,
            in_flight: tokio::sync::Semaphore::new(ADMIN_MAX_CONCURRENT),
            not_started: Vec::new(),
        }
    }
}

/// A JSON answer: every admin route answers in JSON, with this content type.
pub(super) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let mut response = Response::new(Body::from(serde_json::to_vec(value).unwrap_or_default()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A JSON error, `{"error": ...}`: the one shape every admin error takes, so clients and
/// the dashboard read failures the same way.
pub(super) fn error(status: StatusCode, message: String) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

/// Reads a JSON request body; a body that does not fit is a 400 saying what it should be.
pub(super) fn parse_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    usage: &str,
) -> Result<T, Response<Body>> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("{usage}: {e}")))
}

/// The status for a routing refusal: an unknown model is a 404, a change the slots cannot
/// take a 409.
pub(super) fn route_error(e: RouteError) -> Response<Body> {
    let status = match e {
        RouteError::UnknownModel(_) => StatusCode::NOT_FOUND,
        RouteError::EmptySlot { .. }
        | RouteError::NothingToRollBack { .. }
        | RouteError::NotReady { .. }
        | RouteError::SlotIsLive { .. } => StatusCode::CONFLICT,
    };
    error(status, e.to_string())
}

/// Who asked: the `x-teal-actor` header the CLI sends (user@host), else "admin-api".
pub(super) fn actor(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("x-teal-actor")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .unwrap_or("admin-api")
        .to_string()
}

impl Admin {
    pub(super) fn status_of(&self, routes: &crate::routing::ModelRoutes) -> ModelStatus {
        ModelStatus {
            rollout: self.rollouts.active(&routes.name).map(RolloutView::of),
            ..ModelStatus::of(routes)
        }
    }

    /// What a hand-made switch or rollback leaves behind besides its record: a log line and
    /// the switch counter.
    pub(super) fn live_changed(&self, outcome: &crate::routing::SwitchOutcome, kind: &str) {
        let model = &outcome.model;
        tracing::info!(model = %model, from = %outcome.from, to = %outcome.to, version = %outcome.to_version, generation = outcome.generation, kind);
        self.metrics
            .switches
            .get_or_create(&crate::metrics::ModelLabels {
                model: model.clone(),
            })
            .inc();
    }

    /// Refuses a change that must be recorded (507) while the state file cannot be written,
    /// as a full disk or `state_max_bytes` makes it: the change would be lost from the audit
    /// log, or, for a rollout, stall at its first step.
    pub(super) fn writable(&self) -> Result<(), Response<Body>> {
        match self.store.write_error() {
            None => Ok(()),
            Some((reason, since_ms)) => Err(error(
                StatusCode::INSUFFICIENT_STORAGE,
                format!(
                    "the state file cannot be written since {} ({reason}): free space on the state folder's disk (or raise server.state_max_bytes), then retry",
                    crate::state::store::format_time(since_ms)
                ),
            )),
        }
    }

    /// Makes a hand-made routing change all or nothing: refused with 507 while the state
    /// file cannot be written; otherwise `change` runs off the async runtime with the store,
    /// and a `Routes::*_recorded` writer publishes the new route only once the state file
    /// holds it with its audit event. A failed record leaves routing as it was.
    pub(super) async fn change<T: Send + 'static>(
        &self,
        change: impl FnOnce(&Routes, &Store) -> Result<T, ChangeError<StoreError>> + Send + 'static,
    ) -> Result<T, Response<Body>> {
        self.writable()?;
        let (routes, store) = (self.routes.clone(), self.store.clone());
        match tokio::task::spawn_blocking(move || change(&routes, &store)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(ChangeError::Route(e))) => Err(route_error(e)),
            Ok(Err(ChangeError::Record(e))) => Err(store_error(e)),
            Err(e) => Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the state file task failed: {e}"),
            )),
        }
    }

    /// Refuses a hand-made routing or slot change while a rollout drives the model.
    pub(super) fn not_during_rollout(&self, model: &str, what: &str) -> Result<(), Response<Body>> {
        match self.rollouts.active(model) {
            Some(r) => Err(error(
                StatusCode::CONFLICT,
                format!(
                    "model '{model}' has rollout {} in progress ({}): {what} would fight it; use teal promote, abort or rollback",
                    r.id,
                    r.phase.name()
                ),
            )),
            None => Ok(()),
        }
    }

    /// The record of a hand-made deploy or teardown (`kind`, by `actor`): the model's slots
    /// and route as they will be published, with the audit event, in one transaction,
    /// written before the slot change is published.
    pub(super) fn slot_record(&self, kind: &'static str, actor: String) -> SlotRecord {
        let store = self.store.clone();
        Box::new(move |next, detail| {
            record_change(&store, kind, actor, |d: &serde_json::Value| d.clone())(next, &detail)
        })
    }
}

/// Runs a store call on the blocking pool; a failure is a 500 with the reason.
pub(super) async fn with_store<T: Send + 'static>(
    admin: &Admin,
    call: impl FnOnce(&Store) -> Result<T, crate::state::store::StoreError> + Send + 'static,
) -> Result<T, Response<Body>> {
    let store = admin.store.clone();
    match tokio::task::spawn_blocking(move || call(&store)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(store_error(e)),
        Err(e) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the state file task failed: {e}"),
        )),
    }
}

/// The status for a state-file failure: 507 when it cannot take writes (the caller frees
/// space, then retries), else 500.
pub(super) fn store_error(e: StoreError) -> Response<Body> {
    if e.unwritable() {
        error(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "{e}: free space on the state folder's disk (or raise server.state_max_bytes), then retry"
            ),
        )
    } else {
        error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

/// The status for a rollout refusal; a state file that cannot be written is a 507 so the
/// caller knows to free space rather than retry at once.
pub(super) fn rollout_error(e: RolloutError) -> Response<Body> {
    let status = match e {
        RolloutError::UnknownModel(_) => StatusCode::NOT_FOUND,
        RolloutError::InProgress { .. } | RolloutError::NoRollout(_) | RolloutError::Refused(_) => {
            StatusCode::CONFLICT
        }
        RolloutError::Invalid(_) => StatusCode::BAD_REQUEST,
        RolloutError::Forbidden(_) => StatusCode::FORBIDDEN,
        RolloutError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        RolloutError::Unwritable(_) => StatusCode::INSUFFICIENT_STORAGE,
    };
    error(status, e.to_string())
}

/// A query string read into `T` by axum's `Query`, with `+` kept as a plus sign.
///
/// Form encoding reads `+` as a space, but callers of the admin API write values as they are:
/// the CLI sends `?at=2026-11-22T01:02:03+01:00`, and a request id may hold a `+`. Here only
/// `%20` is a space, so those queries mean what they always meant. A query that does not fit
/// `T` (a parameter given twice) is a 400 in the API's own error shape, naming the parameter.
pub(super) struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response<Body>;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default().replace('+', "%2B");
        let refused = |reason: String| {
            error(
                StatusCode::BAD_REQUEST,
                format!("{reason} in the query string: see /api/v1/openapi.json"),
            )
        };
        // A query that was part of a valid URI still is with `+` written as `%2B`.
        let uri = Uri::builder()
            .path_and_query(format!("/?{query}"))
            .build()
            .map_err(|e| refused(e.to_string()))?;
        match axum::extract::Query::<T>::try_from_uri(&uri) {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => {
                let text = rejection.body_text();
                let reason = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                Err(refused(reason.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Params {
        at: Option<String>,
        request: Option<String>,
    }

    async fn read(query: &str) -> Result<Params, (StatusCode, serde_json::Value)> {
        let request = axum::http::Request::get(format!("/api/v1/models/m/audit{query}"))
            .body(())
            .expect("a valid request");
        let (mut parts, ()) = request.into_parts();
        match Query::<Params>::from_request_parts(&mut parts, &()).await {
            Ok(Query(params)) => Ok(params),
            Err(response) => {
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), 4096)
                    .await
                    .expect("a small body");
                Err((status, serde_json::from_slice(&body).expect("a JSON body")))
            }
        }
    }

    #[tokio::test]
    async fn a_plus_in_a_query_value_stays_a_plus() {
        let params = read("?at=2026-11-22T01:02:03+01:00&request=a+b")
            .await
            .unwrap();
        assert_eq!(params.at.as_deref(), Some("2026-11-22T01:02:03+01:00"));
        assert_eq!(params.request.as_deref(), Some("a+b"));
    }

    #[tokio::test]
    async fn percent_escapes_are_decoded_and_bad_ones_kept() {
        let params = read("?at=2026-11-22%2001:02:03%2B01:00&request=%FFx%2")
            .await
            .unwrap();
        assert_eq!(params.at.as_deref(), Some("2026-11-22 01:02:03+01:00"));
        assert_eq!(params.request.as_deref(), Some("\u{FFFD}x%2"));
    }

    #[tokio::test]
    async fn absent_and_unknown_parameters_are_ignored() {
        let params = read("").await.unwrap();
        assert!(params.at.is_none() && params.request.is_none());
        let params = read("?zzz=1&at=0").await.unwrap();
        assert_eq!(params.at.as_deref(), Some("0"));
    }

    #[tokio::test]
    async fn a_parameter_given_twice_is_a_json_400_naming_it() {
        let (status, body) = read("?at=1&at=2").await.unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let message = body["error"].as_str().unwrap();
        assert!(message.contains("duplicate field `at`"), "{message}");
    }
}
