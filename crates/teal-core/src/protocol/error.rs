//! Why a request was refused.

use super::{Datatype, SERVED_DATATYPES};

/// Why a request was refused. Always the caller's fault; always a 4xx.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("request body is not valid JSON for this endpoint: {0}")]
    Malformed(String),
    #[error("{0}")]
    Binary(String),
    #[error("unknown input '{name}': the model takes {expected}")]
    UnknownInput { name: String, expected: String },
    #[error("input '{0}' appears more than once: send each input once")]
    DuplicateInput(String),
    #[error("missing input '{name}': the model takes {expected}")]
    MissingInput { name: String, expected: String },
    #[error("input '{name}' has datatype {got} but the model expects {want}")]
    Datatype {
        name: String,
        got: String,
        want: Datatype,
    },
    #[error("input '{name}' has shape {got} but the model expects {want} (-1 is any size)")]
    Shape {
        name: String,
        got: String,
        want: String,
    },
    #[error(
        "input '{name}' has shape {shape}, which holds {expected} elements, but {got} were sent"
    )]
    ElementCount {
        name: String,
        shape: String,
        expected: String,
        got: usize,
    },
    #[error("input '{name}': element {index} is {value}, which is not a valid {datatype}")]
    Value {
        name: String,
        index: usize,
        value: String,
        datatype: Datatype,
    },
    #[error(
        "input '{0}' has no data: send \"data\" or, with the binary extension, binary_data_size"
    )]
    MissingData(String),
    #[error("unknown output '{name}': the model gives {expected}")]
    UnknownOutput { name: String, expected: String },
    #[error("{0}")]
    Unsupported(String),
}

impl ProtocolError {
    /// A datatype the wire allows but teal's backends cannot carry.
    pub(super) fn unsupported_datatype(name: &str, datatype: Datatype) -> ProtocolError {
        let served: Vec<&str> = SERVED_DATATYPES.iter().map(|d| d.as_str()).collect();
        ProtocolError::Unsupported(format!(
            "input '{name}' has datatype {datatype}, which teal does not serve yet (served: {})",
            served.join(", ")
        ))
    }
}
