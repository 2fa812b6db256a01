//! The state folder: the SQLite state file and the admin token file beside it.

pub mod store;
pub mod token;
