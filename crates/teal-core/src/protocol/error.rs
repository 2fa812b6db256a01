//! Why a request was refused.

use super::Datatype;

/// Why a request was refused. Always the caller's fault; always a 4xx. Each message names
/// the tensor at fault and what the model expects, so the caller can fix the request without
/// reading teal's logs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// The body is not JSON of the endpoint's form; the parser's own words follow.
    #[error("request body is not valid JSON for this endpoint: {0}")]
    Malformed(String),
    /// The binary tensor extension's lengths do not add up; the message says which.
    #[error("{0}")]
    Binary(String),
    /// An input the model does not declare.
    #[error("unknown input '{name}': the model takes {expected}")]
    UnknownInput {
        /// The input as the request named it.
        name: String,
        /// The model's inputs, listed for the caller.
        expected: String,
    },
    /// An input sent twice: which one the model should see would be a guess.
    #[error("input '{0}' appears more than once: send each input once")]
    DuplicateInput(String),
    /// An input the model declares that the request left out.
    #[error("missing input '{name}': the model takes {expected}")]
    MissingInput {
        /// The input that is missing.
        name: String,
        /// The model's inputs, listed for the caller.
        expected: String,
    },
    /// An input of another datatype than the model declares.
    #[error("input '{name}' has datatype {got} but the model expects {want}")]
    Datatype {
        /// The input at fault.
        name: String,
        /// The datatype as the request wrote it.
        got: String,
        /// The datatype the model declares.
        want: Datatype,
    },
    /// An input whose shape the model's declared shape does not accept.
    #[error("input '{name}' has shape {got} but the model expects {want} (-1 is any size)")]
    Shape {
        /// The input at fault.
        name: String,
        /// The shape as the request sent it.
        got: String,
        /// The shape the model declares.
        want: String,
    },
    /// An input whose element count does not fill its shape.
    #[error(
        "input '{name}' has shape {shape}, which holds {expected} elements, but {got} were sent"
    )]
    ElementCount {
        /// The input at fault.
        name: String,
        /// The shape as the request sent it.
        shape: String,
        /// How many elements the shape holds (or "too many" when the count overflows).
        expected: String,
        /// How many elements were sent.
        got: usize,
    },
    /// An element that does not fit the input's datatype, like `3.5` for `INT64`.
    #[error("input '{name}': element {index} is {value}, which is not a valid {datatype}")]
    Value {
        /// The input at fault.
        name: String,
        /// The element's position, row-major.
        index: usize,
        /// The element as it was sent.
        value: String,
        /// The datatype it had to fit.
        datatype: Datatype,
    },
    /// An input with neither JSON `data` nor a binary part.
    #[error(
        "input '{0}' has no data: send \"data\" or, with the binary extension, binary_data_size"
    )]
    MissingData(String),
    /// An output the model does not declare.
    #[error("unknown output '{name}': the model gives {expected}")]
    UnknownOutput {
        /// The output as the request named it.
        name: String,
        /// The model's outputs, listed for the caller.
        expected: String,
    },
    /// A well-formed request teal cannot serve (a datatype, a model form, a value JSON
    /// cannot carry); the message says what to use instead.
    #[error("{0}")]
    Unsupported(String),
}
