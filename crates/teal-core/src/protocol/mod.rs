//! The Open Inference Protocol (V2) REST wire format, as KServe, Triton and MLServer speak
//! it, including Triton's binary tensor extension that `tritonclient` uses by default, and
//! teal's simple JSON predict format.
//!
//! Decoding checks a request against the model's signature, so everything after it (the
//! backends) may assume names, datatypes, shapes and element counts are right. Every
//! failure here is the caller's: a [`ProtocolError`] is always answered with a 4xx.

mod binary;
mod datatype;
mod elements;
mod error;
#[cfg(test)]
mod fixtures;
mod request;
mod response;
mod signature;
mod simple;
mod tensor;
mod wire;

pub use datatype::Datatype;
pub use error::ProtocolError;
pub use request::{InferRequest, RequestedOutput};
pub use response::{EncodedResponse, decode_response, encode_response};
pub use signature::{ModelMetadata, Signature, TensorSpec};
pub use simple::predictions;
pub use tensor::{Tensor, TensorData};
