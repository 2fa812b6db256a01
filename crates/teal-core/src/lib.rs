//! teal's pure logic, kept free of I/O so the compiler guards the boundary: no tokio,
//! no sockets, no files. The gateway, the admin API and the CLI in the `teal` crate
//! build on these types.
//!
//! - [`routing`]: the route table and the choice of slot for one request.
//! - [`protocol`]: the Open Inference Protocol (V2) wire types, decoding and validation;
//!   [`envelope`]: the check that a passed-on answer is a V2 response.
//! - [`http1`]: the framing of an HTTP/1.1 answer, as teal's upstream client reads one.
//! - [`config`]: the configuration file, parsed and validated as plain data.
//! - [`gates`] and [`stats`]: the checks a candidate must pass, and the statistics they use.
//! - [`rollout`]: the rollout state machine, a pure `step(state, event) -> (state, effects)`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod envelope;
pub mod gates;
pub mod http1;
pub mod protocol;
pub mod rollout;
pub mod routing;
pub mod source;
pub mod stats;
