//! `teal serve --kubernetes`: a gateway replica that follows `ModelDeployment` resources in
//! `gateway` switch mode.
//!
//! It watches the resources (for `status.route`: the live colour, the candidate's share,
//! the mirrored share) and the EndpointSlices of each colour's Service (for the ready pods),
//! and publishes each model's routing as one atomic route table, the same the single-machine
//! server uses: every replica flips when the status changes, and a kept-alive client's next
//! request goes to the new colour. The request path never waits on the Kubernetes API: a
//! change is applied between requests.
//!
//! Model names are namespace-qualified when the gateway follows every namespace: the
//! resource `digits` in namespace `shop` serving `spec.model: digits` is the model
//! `shop.digits` (a namespace name has no dot, so the name splits one way), and two namespaces
//! can never claim one name. A gateway told one namespace (`--namespace`) routes plain names;
//! within a namespace, the older of two resources naming one model keeps it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use teal_core::config::{BackendConfig, CacheConfig, RemoteConfig, SlotConfig};
use teal_core::routing::{Color, RouteTable, WHOLE};

use super::crd::{Colour, ModelDeployment, SwitchMode};
use super::operator::colour_service;
use crate::backends::admission::Admission;
use crate::backends::{Backend, UpstreamModel};
use crate::routing::{ModelRoutes, Routes, Slot};

/// What the watches have seen.
#[derive(Default)]
pub struct Follower {
    resources: BTreeMap<(String, String), ModelDeployment>,
    /// EndpointSlices by (namespace, slice name): the Service they belong to and their ready
    /// addresses as URLs.
    slices: BTreeMap<(String, String), (String, Vec<String>)>,
    /// The model each resource publishes, to forget it when the resource goes.
    published: HashMap<(String, String), String>,
    /// How long a new colour's pods get to answer ready before the slot is left empty.
    pub connect_wait: Duration,
    /// Route each model as `namespace.model` (when following every namespace).
    pub qualify: bool,
}

enum Change {
    Resource(Box<watcher::Event<ModelDeployment>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
}

/// Follows the resources in `namespace` (or all namespaces) until the watches end.
pub async fn follow(client: Client, namespace: Option<String>, routes: Arc<Routes>) {
    let (resources, slices): (Api<ModelDeployment>, Api<EndpointSlice>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let resources = watcher(resources, watcher::Config::default())
        .default_backoff()
        .map_ok(|event| Change::Resource(Box::new(event)));
    let slices = watcher(slices, watcher::Config::default().labels("teal.dev/colour"))
        .default_backoff()
        .map_ok(|event| Change::Slice(Box::new(event)));
    let mut changes = std::pin::pin!(futures::stream::select(resources, slices));
    let mut follower = Follower {
        connect_wait: Duration::from_secs(2),
        qualify: namespace.is_none(),
        ..Follower::default()
    };
    // A colour whose pods did not answer ready in time is tried again on the next change,
    // and at the latest after this long.
    let mut resync = tokio::time::interval(Duration::from_secs(10));
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            change = changes.next() => match change {
                Some(Ok(change)) => follower.apply(change, &routes).await,
                Some(Err(e)) => tracing::warn!(error = %e, "watching the Kubernetes API; retrying"),
                None => return,
            },
            _ = resync.tick() => {
                let keys: Vec<(String, String)> = follower.resources.keys().cloned().collect();
                for k in keys {
                    follower.sync(&k, &routes).await;
                }
            }
        }
    }
}

fn key(namespace: Option<String>, name: String) -> (String, String) {
    (namespace.unwrap_or_default(), name)
}

impl Follower {
    async fn apply(&mut self, change: Change, routes: &Routes) {
        let touched: Vec<(String, String)> = match change {
            Change::Resource(event) => match *event {
                watcher::Event::Apply(md) | watcher::Event::InitApply(md) => {
                    let k = key(md.namespace(), md.name_any());
                    self.resources.insert(k.clone(), md);
                    vec![k]
                }
                watcher::Event::Delete(md) => {
                    let k = key(md.namespace(), md.name_any());
                    self.resources.remove(&k);
                    vec![k]
                }
                watcher::Event::Init | watcher::Event::InitDone => Vec::new(),
            },
            Change::Slice(event) => match *event {
                watcher::Event::Apply(slice) | watcher::Event::InitApply(slice) => {
                    let namespace = slice.namespace().unwrap_or_default();
                    let entry = ready_urls(&slice);
                    let owner = entry.0.clone();
                    self.slices
                        .insert((namespace.clone(), slice.name_any()), entry);
                    self.owners_of(&namespace, &owner)
                }
                watcher::Event::Delete(slice) => {
                    let namespace = slice.namespace().unwrap_or_default();
                    let removed = self.slices.remove(&(namespace.clone(), slice.name_any()));
                    removed.map_or_else(Vec::new, |(service, _)| {
                        self.owners_of(&namespace, &service)
                    })
                }
                watcher::Event::Init | watcher::Event::InitDone => Vec::new(),
            },
        };
        for k in touched {
            self.sync(&k, routes).await;
        }
    }

    /// The resources whose colour Service is `service`.
    fn owners_of(&self, namespace: &str, service: &str) -> Vec<(String, String)> {
        self.resources
            .iter()
            .filter(|((ns, _), md)| {
                ns == namespace
                    && [Colour::Blue, Colour::Green]
                        .iter()
                        .any(|c| colour_service(md, *c) == service)
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn urls(&self, namespace: &str, service: &str) -> Vec<String> {
        let mut urls: Vec<String> = self
            .slices
            .iter()
            .filter(|((ns, _), (owner, _))| ns == namespace && owner == service)
            .flat_map(|(_, (_, urls))| urls.iter().cloned())
            .collect();
        urls.sort();
        urls.dedup();
        urls
    }

    /// The name the gateway routes a resource's model under: `namespace.model` when it
    /// follows every namespace, else the model's own name.
    pub fn routed_name(&self, namespace: &str, md: &ModelDeployment) -> String {
        if self.qualify {
            format!("{namespace}.{}", md.spec.model)
        } else {
            md.spec.model.clone()
        }
    }

    /// Publishes the routing of one resource's model, or stops routing it.
    async fn sync(&mut self, k: &(String, String), routes: &Routes) {
        let Some(md) = self.resources.get(k).cloned() else {
            if let Some(model) = self.published.remove(k) {
                routes.forget(&model);
                tracing::info!(model, "no longer routed: its resource is gone");
            }
            return;
        };
        let status = md.status.clone().unwrap_or_default();
        let model = self.routed_name(&k.0, &md);
        if let Some(old) = self.published.get(k).filter(|old| **old != model).cloned() {
            // Renamed: the old name is no longer this resource's to route.
            routes.forget(&old);
            self.published.remove(k);
        }
        let gateway_mode = md.spec.switch_mode == SwitchMode::Gateway;
        let Some(route) = status.route.clone().filter(|_| gateway_mode) else {
            // Switched by Service selector (or not deployed yet): not routed here.
            if let Some(model) = self.published.remove(k) {
                routes.forget(&model);
            }
            return;
        };
        if let Some(other) = self
            .published
            .iter()
            .find(|(other, m)| **m == model && *other != k)
            .map(|(other, _)| other.clone())
        {
            // Only within one namespace (names are qualified across namespaces). The oldest
            // resource keeps the name, in every replica alike, whichever it saw first.
            let older = |key: &(String, String)| {
                let created = self
                    .resources
                    .get(key)
                    .and_then(|md| md.metadata.creation_timestamp.clone())
                    .map(|t| t.0);
                (created.is_none(), created, key.1.clone())
            };
            if older(&other) <= older(k) {
                tracing::warn!(model, resource = %k.1, kept_by = %other.1, "two resources in one namespace name the same model; the older keeps it, this one is not routed");
                return;
            }
            tracing::warn!(model, resource = %k.1, was = %other.1, "two resources in one namespace name the same model; the older takes it");
            self.published.remove(&other);
        }
        let current = routes.load().models.get(&model).cloned();
        let mut slots: [Option<Arc<Slot>>; 2] = [None, None];
        for colour in [Colour::Blue, Colour::Green] {
            let version = if Some(colour) == status.active_colour {
                status.active_version.clone()
            } else if Some(colour) == status.candidate_colour {
                status.candidate_version.clone()
            } else {
                None
            };
            let urls = self.urls(&k.0, &colour_service(&md, colour));
            let (Some(version), false) = (version, urls.is_empty()) else {
                continue;
            };
            let color: Color = colour.into();
            let same = current
                .as_ref()
                .and_then(|c| c.slot(color))
                .filter(|s| s.version == version && slot_urls(s) == urls);
            slots[color.index()] = match same {
                Some(slot) => Some(slot.clone()),
                None => {
                    self.connect(&model, &md.spec.model, color, &version, &urls)
                        .await
                }
            };
        }
        let active: Color = route.active.into();
        if slots[active.index()].is_none() {
            tracing::warn!(model, colour = %active, "the live colour has no ready pods this gateway can reach; routing unchanged");
            return;
        }
        let basis = |percent: f64| {
            ((percent / 100.0) * f64::from(WHOLE))
                .round()
                .clamp(0.0, f64::from(WHOLE)) as u32
        };
        let candidate_ready = slots[active.other().index()].is_some();
        let table = RouteTable {
            active,
            candidate_weight: if candidate_ready {
                basis(route.candidate_percent)
            } else {
                0
            },
            shadow: if candidate_ready {
                basis(route.shadow_percent)
            } else {
                0
            },
            header_override: true,
            generation: current.as_ref().map_or(1, |c| c.table.generation + 1),
            // Pods of the two versions are behind their own Services; failing over between
            // them and pairing for the rules is the operator's single-machine work, not this
            // gateway's.
            fallback: None,
            baseline: 0,
        };
        let previous = current
            .as_ref()
            .and_then(|c| (c.table.active != active).then_some(c.table.active));
        if let Some(c) = &current
            && c.table.active == table.active
            && c.table.candidate_weight == table.candidate_weight
            && c.table.shadow == table.shadow
            && same_slots(&c.slots, &slots)
        {
            return;
        }
        routes.put(ModelRoutes {
            name: model.clone(),
            table,
            slots,
            previous: previous.or(current.as_ref().and_then(|c| c.previous)),
            prediction_output: None,
            cache: CacheConfig::default(),
            batching: None,
            gates: teal_core::gates::GateConfig::default(),
            capture_rate: 0.0,
            capture_limit: 0,
            sticky_header: None,
            sticky_cookie: None,
            admission: current.as_ref().map_or_else(
                || Arc::new(Admission::new(&Default::default())),
                |c| c.admission.clone(),
            ),
        });
        self.published.insert(k.clone(), model.clone());
        tracing::info!(model, active = %active, candidate_percent = route.candidate_percent, shadow_percent = route.shadow_percent, "route published from the cluster");
    }

    /// A slot for `model` (as routed here) on pods that know it as `server_model`.
    async fn connect(
        &self,
        model: &str,
        server_model: &str,
        color: Color,
        version: &str,
        urls: &[String],
    ) -> Option<Arc<Slot>> {
        let remote: RemoteConfig =
            serde_json::from_value(json!({ "urls": urls, "model": server_model }))
                .map_err(|e| tracing::error!(error = %e, "building an upstream slot"))
                .ok()?;
        match UpstreamModel::connect(model, urls, &remote, self.connect_wait).await {
            Ok(upstream) => {
                let config = SlotConfig {
                    version: version.to_string(),
                    backend: BackendConfig::Upstream(remote),
                    card: BTreeMap::new(),
                };
                Some(Arc::new(Slot::new(
                    color,
                    config,
                    Backend::Upstream(upstream),
                    None,
                )))
            }
            Err(e) => {
                tracing::warn!(model, colour = %color, version, error = %e, "the colour's pods do not answer ready yet");
                None
            }
        }
    }
}

fn slot_urls(slot: &Slot) -> Vec<String> {
    match &slot.config.backend {
        BackendConfig::Upstream(remote) => remote.urls.clone(),
        _ => Vec::new(),
    }
}

fn same_slots(a: &[Option<Arc<Slot>>; 2], b: &[Option<Arc<Slot>>; 2]) -> bool {
    a.iter().zip(b).all(|(x, y)| match (x, y) {
        (Some(x), Some(y)) => Arc::ptr_eq(x, y),
        (None, None) => true,
        _ => false,
    })
}

/// The Service an EndpointSlice belongs to, and its ready endpoints as base URLs.
fn ready_urls(slice: &EndpointSlice) -> (String, Vec<String>) {
    let service = slice
        .labels()
        .get("kubernetes.io/service-name")
        .cloned()
        .unwrap_or_default();
    let port = slice
        .ports
        .iter()
        .flatten()
        .find_map(|p| p.port)
        .unwrap_or(80);
    let mut urls = Vec::new();
    for endpoint in &slice.endpoints {
        // Ready unless said otherwise, as the API defines it.
        let ready = endpoint
            .conditions
            .as_ref()
            .and_then(|c| c.ready)
            .unwrap_or(true);
        if !ready {
            continue;
        }
        for address in &endpoint.addresses {
            let host = if address.contains(':') {
                format!("[{address}]")
            } else {
                address.clone()
            };
            urls.push(format!("http://{host}:{port}"));
        }
    }
    (service, urls)
}
