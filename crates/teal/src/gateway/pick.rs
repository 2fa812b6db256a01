//! Which slot answers a request: the version it names, else the route table's choice, with
//! the slot header's override and the sticky session (a header or a cookie) that keeps a
//! caller on one side of a canary. It reads one route snapshot and does no I/O.

use std::sync::Arc;

use axum::http::header;
use teal_core::routing::{Color, WHOLE, session_bucket};

use crate::routing::{ModelRoutes, RouteSnapshot, Slot};

use super::{Gateway, GatewayError, RequestHeaders, header_text, names};

/// The names of the served models, for the error that names an unknown one.
fn served(snapshot: &RouteSnapshot) -> String {
    let names: Vec<&str> = snapshot.models.keys().map(String::as_str).collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// A served model's routes, from the current snapshot.
pub(super) fn find_model(gateway: &Gateway, name: &str) -> Result<Arc<ModelRoutes>, GatewayError> {
    let snapshot = gateway.routes.load();
    snapshot
        .models
        .get(name)
        .cloned()
        .ok_or_else(|| GatewayError::UnknownModel {
            name: name.to_string(),
            served: served(&snapshot),
        })
}

/// The slot holding a loaded version, for requests (and metadata) that name one.
pub(super) fn find_version(routes: &ModelRoutes, version: &str) -> Result<Arc<Slot>, GatewayError> {
    routes
        .by_version(version)
        .cloned()
        .ok_or_else(|| GatewayError::UnknownVersion {
            model: routes.name.clone(),
            version: version.to_string(),
            loaded: routes.versions().join(", "),
        })
}

/// Picks the slot for a request: the named version, or the route table's choice.
///
/// A request that names a version other than the live one reaches it only when the model's
/// `header_override` is on, as the slot header does: otherwise callers could send a
/// candidate the errors or the load that its gates and rollback rules judge it by.
pub(super) fn pick(
    routes: &ModelRoutes,
    version: Option<&str>,
    headers: &impl RequestHeaders,
) -> Result<Arc<Slot>, GatewayError> {
    if let Some(version) = version {
        let slot = find_version(routes, version)?;
        if slot.color != routes.table.active && !routes.table.header_override {
            return Err(GatewayError::VersionNotLive {
                model: routes.name.clone(),
                version: version.to_string(),
            });
        }
        return Ok(slot);
    }
    let requested = match headers.get(&names::SLOT) {
        None => None,
        Some(value) => {
            let text = header_text(value).unwrap_or("");
            Some(
                text.parse::<Color>()
                    .map_err(|_| GatewayError::BadSlotHeader(text.to_string()))?,
            )
        }
    };
    let bucket = if routes.table.candidate_weight > 0 {
        session_key(routes, headers).map_or_else(|| fastrand::u32(..WHOLE), session_bucket)
    } else {
        0
    };
    let color = routes.table.choose(requested, bucket);
    routes.slot(color).cloned().ok_or(GatewayError::EmptySlot {
        model: routes.name.clone(),
        slot: color.as_str(),
    })
}

/// The session key of a request for sticky canaries: the configured header, else the
/// configured cookie.
fn session_key<'a>(routes: &ModelRoutes, headers: &'a impl RequestHeaders) -> Option<&'a [u8]> {
    if let Some(name) = &routes.sticky_header
        && let Some(value) = headers.get_named(name)
    {
        return Some(value);
    }
    let name = routes.sticky_cookie.as_deref()?;
    headers
        .get_all(&header::COOKIE)
        .filter_map(header_text)
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value.as_bytes())
        })
}
