//! The control loop: slots are loaded, deployed and torn down ([`slots`]); evidence is
//! gathered and the gates run ([`validation`]); the rollout driver persists each rollout and
//! performs its effects ([`rollout`]).

pub mod checks;
pub mod rollout;
pub mod slots;
pub mod validation;
pub mod watch;
