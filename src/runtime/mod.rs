//! See the crate-level layout.
pub mod images;
