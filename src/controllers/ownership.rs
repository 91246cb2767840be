//! Upstream's `ClaimPods` for controllers that list pods live: keep the pods they control and
//! still select, adopt matching orphans, release controlled pods that no longer match.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::common;
use super::replicaset::{claim, Claim};

/// The owner side of a claim.
pub struct Claimer<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub meta: &'a ObjectMeta,
    pub selector: &'a LabelSelector,
}

/// The pods `owner` controls after claiming among `pods` (one namespace's pods); `member`
/// adds a kind's own condition for adoption (a StatefulSet adopts only its own names).
pub async fn claim_pods(
    api: &Api<Pod>,
    owner: &Claimer<'_>,
    pods: Vec<Pod>,
    member: impl Fn(&Pod) -> bool,
) -> Result<Vec<Pod>, kube::Error> {
    let uid = owner.meta.uid.clone().unwrap_or_default();
    let deleting = owner.meta.deletion_timestamp.is_some();
    let mut owned = Vec::new();
    for pod in pods {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let matches = !common::selector_is_empty(owner.selector)
            && common::selector_matches(owner.selector, &labels)
            && member(&pod);
        match claim(&pod.metadata, &uid, matches, deleting) {
            Claim::Keep => owned.push(pod),
            Claim::Ignore => {}
            Claim::Adopt => {
                let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
                refs.push(common::controller_reference(
                    owner.api_version,
                    owner.kind,
                    owner.meta,
                ));
                if set_owner_references(api, &pod.metadata, refs).await? {
                    owned.push(pod);
                }
            }
            Claim::Release => {
                let refs: Vec<OwnerReference> = pod
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .filter(|r| r.uid != uid)
                    .cloned()
                    .collect();
                set_owner_references(api, &pod.metadata, refs).await?;
            }
        }
    }
    Ok(owned)
}

/// Guarded by the pod's resourceVersion: false when it changed or went away meanwhile (the
/// next sync sees the new state).
async fn set_owner_references(
    api: &Api<Pod>,
    pod: &ObjectMeta,
    refs: Vec<OwnerReference>,
) -> Result<bool, kube::Error> {
    let name = pod.name.clone().unwrap_or_default();
    let body = json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": pod.resource_version,
    }});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
