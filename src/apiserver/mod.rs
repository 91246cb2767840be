//! See the crate-level layout.

pub mod authn;
pub mod serve;
