//! The data plane's taps: live requests mirrored to the candidate while a shadow validation
//! runs, a share of requests sent as pairs to both versions while a rollout watches the
//! candidate (its concurrent baseline), and a sample of answered requests kept for replay.
//! None delays nor changes the live answer; a mirrored copy runs in its own task, after the
//! answer exists.

use std::sync::Arc;

use teal_core::protocol::{InferRequest, Tensor};
use teal_core::routing::WHOLE;

use crate::control::validation::taps::{Captured, MirrorPair, ShadowHub};
use crate::routing::{ModelRoutes, Slot};

use super::request::{Deadline, run_on_slot};
use super::{Gateway, GatewayError};

/// Where a mirrored pair goes, and which two slots it goes to.
pub(super) struct Tap<'a> {
    hub: &'a ShadowHub,
    pair: MirrorPair,
}

impl Gateway {
    /// The pair to send a copy of this request to, if any: the candidate and the live slot
    /// when the model's shadow share picks the request and a shadow session listens; else
    /// both slots when a rollout watching the candidate asks for a concurrent baseline and
    /// its share picks the request (`routed`: the route table chose the slot, rather than
    /// the caller).
    pub(super) fn mirror_target(
        &self,
        routes: &ModelRoutes,
        slot: &Slot,
        routed: bool,
    ) -> Option<Tap<'_>> {
        let table = &routes.table;
        let (hub, share) = if table.shadow > 0 && slot.color == table.active {
            (&*self.shadows, table.shadow)
        } else if table.baseline > 0 && routed {
            (&*self.baselines, table.baseline)
        } else {
            return None;
        };
        // The share picks; with light traffic the rollout's floor of pairs per check picks
        // the rest, so its rules still compare at the same time.
        if fastrand::u32(..WHOLE) >= share && !hub.below_floor(&routes.name) {
            return None;
        }
        let candidate = routes.slot(table.candidate())?.clone();
        let live = routes.slot(table.active)?.clone();
        if !hub.is_open(&routes.name) {
            return None;
        }
        // Mirroring yields to live traffic: with more requests in flight on the model than
        // the machine has cores, a copy would compete with live requests for the CPU.
        let in_flight = self.in_flight_gauge(&routes.name).map_or(0, |g| g.get());
        if in_flight > self.shadow_headroom {
            hub.dropped.inc();
            return None;
        }
        Some(Tap {
            hub,
            pair: MirrorPair { live, candidate },
        })
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
    routes: &ModelRoutes,
    slot: &Slot,
    mirror: Option<Tap<'_>>,
    request: &mut InferRequest,
    deadline: Deadline,
) -> Result<Arc<Vec<Tensor>>, GatewayError> {
    let copy = mirror.as_ref().map(|_| request.clone());
    let outputs = run_on_slot(slot, &routes.name, request, deadline).await?;
    if let (Some(tap), Some(copy)) = (mirror, copy) {
        let output = routes.prediction_output.clone();
        tap.hub.mirror(&routes.name, tap.pair, copy, output);
    }
    Ok(outputs)
}
