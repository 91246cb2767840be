//! kube-rs, the Rust client, against a real `berth server`: typed CRUD, the `watcher` stream,
//! server-side apply, and a CustomResourceDefinition with its objects. Needs root (network
//! namespaces); CI runs as root.
//!
//! The custom resource is a typed struct implementing kube's `Resource` by hand: the same trait
//! `#[derive(CustomResource)]` generates (kube's `derive` feature is not built here).

mod common;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};
use serde_json::json;

use common::inside::{block_on_in_netns, kube_client};
use common::netns::Netns;
use common::server::BerthServer;

const GROUP: &str = "kubers.example.com";

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
struct GadgetSpec {
    size: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    color: Option<String>,
}

/// A `Gadget` of `kubers.example.com/v1`, as `#[derive(CustomResource)]` would declare it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Gadget {
    metadata: ObjectMeta,
    spec: GadgetSpec,
}

impl kube::Resource for Gadget {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Gadget".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "gadgets".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

fn gadget(name: &str, size: i64) -> Gadget {
    Gadget {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: GadgetSpec { size, color: None },
    }
}

fn deployment(name: &str, replicas: i32, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}]}
            }
        }
    }))
    .expect("a valid deployment")
}

#[test]
fn typed_deployment_crud_watch_and_server_side_apply() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let kubeconfig = server.kubeconfig_path();
    block_on_in_netns(&ns.name.clone(), move || async move {
        let client = kube_client(&kubeconfig).await;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");

        // The watcher runs from before the create and must see the whole life of the object.
        let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let stream = watcher(
            deployments.clone(),
            watcher::Config::default().fields("metadata.name=kube-rs"),
        );
        tokio::spawn(async move {
            let mut stream = Box::pin(stream);
            while let Some(event) = stream.next().await {
                let seen = match event {
                    Ok(watcher::Event::InitDone) => ("listed", None),
                    Ok(watcher::Event::Apply(d)) => ("apply", Some(d)),
                    Ok(watcher::Event::Delete(d)) => ("delete", Some(d)),
                    Ok(_) => continue,
                    Err(e) => panic!("watch error: {e}"),
                };
                if tx.send(seen).is_err() {
                    return;
                }
            }
        });
        let listed = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
        assert!(
            matches!(listed, Ok(Some(("listed", None)))),
            "the watcher lists first"
        );

        let created = deployments
            .create(&PostParams::default(), &deployment("kube-rs", 1, "busybox"))
            .await
            .expect("create");
        assert_eq!(created.spec.as_ref().and_then(|s| s.replicas), Some(1));
        let fetched = deployments.get("kube-rs").await.expect("get");
        assert_eq!(fetched.metadata.uid, created.metadata.uid);
        let listed = deployments
            .list(&ListParams::default())
            .await
            .expect("list");
        assert!(listed
            .items
            .iter()
            .any(|d| d.metadata.name.as_deref() == Some("kube-rs")));

        // The deployment controller writes status concurrently, so a replace may meet a 409
        // Conflict on a stale resourceVersion: re-read and try again, as clients must.
        let mut replaced = None;
        for _ in 0..20 {
            let mut changed = deployments
                .get("kube-rs")
                .await
                .expect("get before replace");
            if let Some(spec) = changed.spec.as_mut() {
                spec.replicas = Some(3);
            }
            match deployments
                .replace("kube-rs", &PostParams::default(), &changed)
                .await
            {
                Ok(d) => {
                    replaced = Some(d);
                    break;
                }
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => panic!("replace: {e}"),
            }
        }
        let replaced = replaced.expect("replace kept conflicting");
        assert_eq!(replaced.spec.as_ref().and_then(|s| s.replicas), Some(3));
        let patched = deployments
            .patch(
                "kube-rs",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"app": "kube-rs"}}})),
            )
            .await
            .expect("merge patch");
        assert_eq!(
            patched
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app"))
                .map(String::as_str),
            Some("kube-rs")
        );
        deployments
            .delete("kube-rs", &DeleteParams::default())
            .await
            .expect("delete");

        let mut seen_replicas = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let next = tokio::time::timeout_at(deadline, events.recv())
                .await
                .expect("the watcher saw the delete in time")
                .expect("the watcher goes on");
            match next {
                ("apply", Some(d)) => seen_replicas.push(d.spec.and_then(|s| s.replicas)),
                ("delete", _) => break,
                _ => {}
            }
        }
        assert!(seen_replicas.contains(&Some(3)), "saw {seen_replicas:?}");

        // Server-side apply: the first creates, an identical second changes nothing.
        let params = PatchParams::apply("kube-rs-test").force();
        let mut applied = deployment("applied", 2, "busybox");
        applied.metadata.labels = Some(BTreeMap::from([("tier".into(), "web".into())]));
        let first = deployments
            .patch("applied", &params, &Patch::Apply(&applied))
            .await
            .expect("first apply");
        let second = deployments
            .patch("applied", &params, &Patch::Apply(&applied))
            .await
            .expect("second apply");
        // The controllers write the status meanwhile, so compare what apply owns: the spec's
        // generation and the applier's managedFields entry (its time moves only on a change).
        assert_eq!(first.metadata.generation, second.metadata.generation);
        let applier_entry = |d: &Deployment| {
            d.metadata
                .managed_fields
                .iter()
                .flatten()
                .find(|m| m.manager.as_deref() == Some("kube-rs-test"))
                .map(|m| (m.operation.clone(), m.time.clone()))
        };
        let entry = applier_entry(&second);
        assert_eq!(entry.as_ref().and_then(|e| e.0.as_deref()), Some("Apply"));
        assert_eq!(
            entry,
            applier_entry(&first),
            "a no-op apply changes nothing"
        );
    });
}

#[test]
fn a_custom_resource_definition_is_established_and_its_objects_round_trip() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let kubeconfig = server.kubeconfig_path();
    block_on_in_netns(&ns.name.clone(), move || async move {
        let client = kube_client(&kubeconfig).await;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("gadgets.{GROUP}")},
            "spec": {
                "group": GROUP, "scope": "Namespaced",
                "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "required": ["size"], "properties": {
                            "size": {"type": "integer", "minimum": 1},
                            "color": {"type": "string", "default": "blue"}}}}}}}]
            }
        }))
        .expect("a valid CRD");
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("create the CRD");
        let crd_name = format!("gadgets.{GROUP}");
        let established = kube::runtime::wait::await_condition(
            crds.clone(),
            &crd_name,
            kube::runtime::conditions::is_crd_established(),
        );
        tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .expect("established in time")
            .expect("no watch error");

        let gadgets: Api<Gadget> = Api::namespaced(client, "default");
        let created = gadgets
            .create(&PostParams::default(), &gadget("g1", 2))
            .await
            .expect("create a gadget");
        assert_eq!(
            created.spec.color.as_deref(),
            Some("blue"),
            "the schema default applies"
        );
        let invalid = gadgets
            .create(&PostParams::default(), &gadget("g0", 0))
            .await
            .expect_err("size 0 breaks the schema minimum");
        match invalid {
            kube::Error::Api(status) => assert_eq!(status.code, 422),
            other => panic!("expected a 422, got {other}"),
        }
        let patched = gadgets
            .patch(
                "g1",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"size": 5}})),
            )
            .await
            .expect("patch");
        assert_eq!(patched.spec.size, 5);
        let listed = gadgets.list(&ListParams::default()).await.expect("list");
        assert_eq!(listed.items.len(), 1);
        assert_eq!(listed.items[0].spec.size, 5);
        gadgets
            .delete("g1", &DeleteParams::default())
            .await
            .expect("delete");
        assert!(gadgets.get_opt("g1").await.expect("get").is_none());
    });
}
