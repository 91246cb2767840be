//! See the crate-level layout.
pub mod paging;
pub mod selectors;
