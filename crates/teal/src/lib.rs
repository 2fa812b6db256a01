//! teal: serve machine-learning models and replace them safely.
//!
//! - [`gateway`]: the data plane (V2 REST, simple JSON), on its own listener.
//! - [`routing`]: the live route snapshot and the atomic switch.
//! - [`backends`]: what runs a version (in-process ONNX, upstream replicas, a supervised process).
//! - [`slots`]: loading, deploying and tearing down slots.
//! - [`cache`]: the versioned prediction cache.
//! - [`rollout`]: the rollout driver: persists each rollout and performs its effects.
//! - [`validation`]: gathering evidence (holdout, shadow, replay) and running the gates.
//! - [`metrics`]: the Prometheus registry, served at `/metrics` on the admin listener.
//! - [`trace`]: W3C trace context, kept per request and forwarded to model servers.
//! - [`store`]: the state file: the hash-chained audit log and the request log.
//! - [`api`]: the admin API, on its own listener, behind a bearer token.
//! - [`kubernetes`]: the ModelDeployment resource, its operator, and the gateway's cluster mode.
//! - [`server`]: loading slots, binding listeners, graceful shutdown.
//! - [`cli`] and [`demo`]: the command line.
//!
//! The pure logic (route choice, the protocol's wire types, configuration) lives in the
//! `teal-core` crate, which has no I/O.
#![forbid(unsafe_code)]

pub mod api;
pub mod backends;
pub mod cache;
pub mod cli;
pub mod client;
pub mod demo;
pub mod gateway;
pub mod kubernetes;
pub mod metrics;
pub mod rollout;
pub mod routing;
pub mod server;
pub mod slots;
pub mod store;
pub mod trace;
pub mod validation;

pub use teal_core as core;
