//! A listener on loopback where one model's candidate alone answers, for the smoke tests a
//! rollout runs before its switch (`control::checks::CandidateDoor`). It serves the data
//! plane's endpoints for that model through a route table of its own, whose only slot is the
//! candidate's, so the live route table, and every other caller, never sees it; requests are
//! counted as the candidate's, as any other.

use std::sync::Arc;

use teal_core::routing::Color;

use super::{DataPlane, Gateway};
use crate::control::checks::{CandidateDoor, OpenDoor};
use crate::routing::{RouteSnapshot, Routes};

/// Opens candidate listeners beside a gateway, sharing its limits and metrics.
pub struct CandidateDoors {
    pub gateway: Arc<Gateway>,
}

impl CandidateDoor for CandidateDoors {
    fn open<'a>(
        &'a self,
        model: &'a str,
        color: Color,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<OpenDoor, String>> + Send + 'a>> {
        Box::pin(async move {
            let snapshot = self.gateway.routes.load();
            let routes = snapshot
                .models
                .get(model)
                .ok_or_else(|| format!("model '{model}' is not routed"))?;
            let slot = routes
                .slot(color)
                .cloned()
                .ok_or_else(|| format!("model '{model}' has no {color} slot"))?;
            let mut alone = (**routes).clone();
            alone.slots = [None, None];
            alone.slots[color.index()] = Some(slot);
            alone.table = teal_core::routing::RouteTable::all_on(color);
            alone.previous = None;
            alone.capture_rate = 0.0;
            let mut models = std::collections::BTreeMap::new();
            models.insert(model.to_string(), Arc::new(alone));
            let mut gateway = Gateway::new(
                Arc::new(Routes::new(RouteSnapshot { models })),
                self.gateway.max_body_bytes,
                self.gateway.shadows.clone(),
                self.gateway.captures.clone(),
                self.gateway.metrics.clone(),
            );
            gateway.body_timeout = self.gateway.body_timeout;
            let plane = DataPlane::new(Arc::new(gateway));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| format!("cannot listen on loopback: {e}"))?;
            let addr = listener
                .local_addr()
                .map_err(|e| format!("cannot listen on loopback: {e}"))?;
            let (close, mut closed) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(async move {
                // Connections end with the listener: the tests are over.
                let mut connections = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        _ = &mut closed => break,
                        accepted = listener.accept() => {
                            let Ok((io, _)) = accepted else { continue };
                            let plane = plane.clone();
                            connections.spawn(async move {
                                let io = hyper_util::rt::TokioIo::new(io);
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(io, plane)
                                    .await;
                            });
                        }
                        Some(_) = connections.join_next(), if !connections.is_empty() => {}
                    }
                }
            });
            Ok(OpenDoor {
                url: format!("http://{addr}"),
                close,
            })
        })
    }
}
