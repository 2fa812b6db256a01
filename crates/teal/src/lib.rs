//! teal: serve machine-learning models and replace them safely.
//!
//! The modules are layers, and each uses only the layers below it (`tests/layers.rs`
//! checks every `crate::` path against this order, lowest first):
//!
//! 1. [`headers`], [`metrics`] and [`log_throttle`]: leaves. The request headers as the data
//!    plane reads them; the Prometheus registry and its typed label sets; at most one log
//!    line per interval for a repeated failure.
//! 2. [`trace`]: W3C trace context, read from the request headers.
//! 3. [`state`]: the state folder: the SQLite store (audit log, request log, rollouts, routes)
//!    and the admin token file.
//! 4. [`backends`]: what runs a version (in-process ONNX, upstream replicas, a supervised
//!    process) and the versioned prediction cache.
//! 5. [`routing`]: the live route snapshot and the atomic switch.
//! 6. [`control`]: the control loop: loading and tearing down slots, gathering evidence and
//!    running the gates, and the rollout driver.
//! 7. [`gateway`] (the data plane), [`admin`] (the admin API, `/metrics` and the dashboard)
//!    and `kubernetes` (the resource, its operator, and the gateway's cluster mode; built
//!    with the `kubernetes` feature, on by default): three front doors side by side, none
//!    using another.
//! 8. [`server`]: loading slots, binding listeners, graceful shutdown.
//! 9. [`cli`]: the command line, the demo, and the small HTTP client they share.
//!
//! The pure logic (route choice, the protocol's wire types, configuration, the gates, the
//! rollout state machine) lives in the `teal-core` crate, which has no I/O.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backends;
pub mod cli;
pub mod control;
pub mod gateway;
pub mod headers;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod log_throttle;
pub mod metrics;
pub mod routing;
pub mod server;
pub mod state;
pub mod trace;

pub use teal_core as core;
