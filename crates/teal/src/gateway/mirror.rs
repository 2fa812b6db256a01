//! The data plane's taps for validation: live requests mirrored to the candidate while a
//! shadow validation runs, and a sample of answered requests kept for replay. Neither delays
//! nor changes the live answer; a mirrored copy runs in its own task, after the answer exists.

use std::sync::Arc;

use teal_core::protocol::{InferRequest, Tensor};
use teal_core::routing::WHOLE;

use crate::control::validation::taps::{Captured, MirrorPair};
use crate::routing::{ModelRoutes, Slot};

use super::request::{Deadline, run_on_slot};
use super::{Gateway, GatewayError};

impl Gateway {
    /// The candidate to mirror this request to, when the model's shadow share picks it and a
    /// shadow session is listening. Only requests the live slot answers are mirrored.
    pub(super) fn mirror_target(&self, routes: &ModelRoutes, slot: &Slot) -> Option<MirrorPair> {
        let table = &routes.table;
        if table.shadow == 0 || slot.color != table.active || fastrand::u32(..WHOLE) >= table.shadow
        {
            return None;
        }
        let candidate = routes.slot(table.candidate())?.clone();
        let live = routes.slot(table.active)?.clone();
        if !self.shadows.is_open(&routes.name) {
            return None;
        }
        // Mirroring yields to live traffic: with more requests in flight on the model than
        // the machine has cores, a copy would compete with live requests for the CPU.
        let in_flight = self.in_flight_gauge(&routes.name).map_or(0, |g| g.get());
        if in_flight > self.shadow_headroom {
            self.shadows.dropped.inc();
            return None;
        }
        Some(MirrorPair { live, candidate })
    }

    /// Keeps a sample of answered requests for replay.
    pub(super) fn capture(
        &self,
        routes: &ModelRoutes,
        body: &bytes::Bytes,
        json_len: Option<usize>,
    ) {
        if routes.capture_rate > 0.0 && fastrand::f64() < routes.capture_rate {
            self.captures.keep(
                &routes.name,
                routes.capture_limit,
                Captured {
                    body: body.clone(),
                    json_len,
                },
            );
        }
    }
}

/// Runs a request on its slot and, when `mirror` names a pair, sends a copy to both slots of
/// the pair after the live answer exists (the copy never delays or changes it).
pub(super) async fn run_and_mirror(
    gateway: &Gateway,
    routes: &ModelRoutes,
    slot: &Slot,
    mirror: Option<MirrorPair>,
    request: &mut InferRequest,
    deadline: Deadline,
) -> Result<Arc<Vec<Tensor>>, GatewayError> {
    let copy = mirror.as_ref().map(|_| request.clone());
    let outputs = run_on_slot(slot, &routes.name, request, deadline).await?;
    if let (Some(pair), Some(copy)) = (mirror, copy) {
        let output = routes.prediction_output.clone();
        gateway.shadows.mirror(&routes.name, pair, copy, output);
    }
    Ok(outputs)
}
