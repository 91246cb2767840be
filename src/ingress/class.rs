//! The IngressClass berth serves, created at start as the cluster's default class.

use std::time::Duration;

use k8s_openapi::api::networking::v1::IngressClass;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

use crate::registry::default_ingress_class::DEFAULT_CLASS_ANNOTATION;

/// The class name Ingresses use to pick berth's controller.
pub const CLASS_NAME: &str = "berth";
/// The controller name in the class's `spec.controller`.
pub const CONTROLLER_NAME: &str = "berth.dev/ingress";

pub fn ingress_class() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {
            "name": CLASS_NAME,
            "annotations": {DEFAULT_CLASS_ANNOTATION: "true"},
        },
        "spec": {"controller": CONTROLLER_NAME},
    })
}

/// Creates the class unless it exists (a user may have changed it, say to make another class
/// the default: kept). Retries until the API answers.
pub async fn ensure(client: &kube::Client) {
    let classes: Api<IngressClass> = Api::all(client.clone());
    loop {
        let created = match serde_json::from_value::<IngressClass>(ingress_class()) {
            Ok(class) => classes.create(&PostParams::default(), &class).await,
            Err(e) => Err(kube::Error::SerdeError(e)),
        };
        match created {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 409 => return,
            Err(error) => {
                tracing::warn!(%error, "cannot create the berth IngressClass; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}
