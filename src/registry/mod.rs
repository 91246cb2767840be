//! Per-kind policy and the generic CRUD on the store.

pub mod bootstrap;
pub mod certificates;
mod cronjob_time_zone;
pub mod default_ingress_class;
pub mod defaults;
mod endpoints;
pub mod ephemeral;
mod events;
pub mod generic;
pub mod kinds;
mod legacy_events;
mod network_policy;
pub mod normalized;
pub mod propagation;
mod seccomp_profile;
pub mod selection;
mod service_spec;
pub mod services;
mod stored;
pub mod validation;
mod watched;

pub use generic::{DeleteOptions, Deleted, ListOptions, ListPage, Part, Registry};
pub use normalized::Normalized;
