//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`), as upstream's apiextensions-apiserver
//! serves them.
//!
//! # Layout
//! - `definition`: what a stored CRD says, read once into [`Definition`], and the set of served ones.
//! - `validation`: the rules a CRD must pass (names, group, versions, structural schema).
//! - `schema`: custom objects against their structural schema: validate, prune, default.
//! - `rules`: the CEL rules of a schema (`x-kubernetes-validations`), transition rules included.
//! - `columns`: `additionalPrinterColumns` and the JSONPath subset they use.
//! - `openapi`: OpenAPI v3 documents built from the served schemas.
//! - `controller`: serves established CRDs, writes their status, deletes their objects on delete.
//! - `hooks`: the few calls the generic registry and REST layer make for custom resources.

pub mod columns;
pub mod controller;
mod definition;
pub mod hooks;
pub mod openapi;
pub mod rules;
pub mod schema;
pub mod validation;

pub use definition::{all_served, definition_of, load, serve, stop_serving, Definition};

/// The finalizer that keeps a deleted CRD until its objects are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";
