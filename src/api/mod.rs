//! Shared API types: the resource table, `metav1.Status` errors, selectors, request body
//! formats (JSON, YAML, Kubernetes protobuf, CBOR). No I/O.

pub mod body;
pub mod cbor;
pub mod conversion;
pub mod endpoints;
pub mod go_ip;
pub mod go_syntax;
pub mod meta;
pub mod paging;
pub mod patch_meta;
pub mod protobuf;
pub mod resources;
pub mod schemas;
pub mod selectors;
pub mod status;

#[cfg(test)]
mod hostile_input;

pub use status::{ApiError, ApiResult, Cause};
