//! Per-kind policy and the generic CRUD on the store.

pub mod bootstrap;
pub mod certificates;
pub mod defaults;
pub mod generic;
pub mod kinds;
pub mod propagation;
pub mod services;
pub mod validation;

pub use generic::{DeleteOptions, Deleted, ListOptions, ListPage, Part, Registry};
