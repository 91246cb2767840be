//! ControllerRevisions, the template history of StatefulSets and DaemonSets: each distinct pod
//! template is stored once as a strategic-merge patch (`{"spec":{"template":{..., "$patch":
//! "replace"}}}`, what `kubectl rollout undo` applies back), named `<owner>-<hash>` and
//! numbered by a rising `revision`.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use super::common;

/// The label that ties pods (and the revision itself) to a revision's hash.
pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// Upstream's default `revisionHistoryLimit` for both kinds.
pub const DEFAULT_HISTORY_LIMIT: i32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot serialise the pod template: {0}")]
    Json(#[from] serde_json::Error),
    /// Another template already holds the name this one hashes to: the owner's
    /// `collisionCount` must go up and the next sync retries with a new hash.
    #[error("controller revision {0} exists with another template")]
    HashCollision(String),
}

/// The revision's data: a patch that puts `template` back into its owner's spec.
pub fn template_patch(template: &PodTemplateSpec) -> Result<Value, serde_json::Error> {
    let mut template = serde_json::to_value(template)?;
    if let Some(object) = template.as_object_mut() {
        object.insert("$patch".into(), json!("replace"));
    }
    Ok(json!({"spec": {"template": template}}))
}

/// The template a revision stores, if it holds one.
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(object) = template.as_object_mut() {
        object.remove("$patch");
    }
    serde_json::from_value(template).ok()
}

/// Upstream's `HashControllerRevision`: FNV-32 (not 32a) over the revision's data and the
/// collision count in decimal, through `SafeEncodeString`. The data is hashed as JSON with
/// sorted keys, so equal templates hash equally whatever order their fields came in.
pub fn revision_hash(data: &Value, collision_count: Option<i32>) -> String {
    let mut bytes = Vec::new();
    common::write_canonical_json(data, &mut bytes);
    if let Some(count) = collision_count {
        bytes.extend_from_slice(count.to_string().as_bytes());
    }
    super::deployment::safe_encode(&fnv32(&bytes).to_string())
}

fn fnv32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash = hash.wrapping_mul(0x0100_0193);
        hash ^= u32::from(*b);
    }
    hash
}

/// Upstream's `ControllerRevisionName`: the owner's name cut to 223 characters, a dash, the
/// hash, so the whole stays a valid 253-character name.
pub fn revision_name(owner: &str, hash: &str) -> String {
    let prefix: String = owner.chars().take(223).collect();
    format!("{prefix}-{hash}")
}

/// The number the next new revision gets: one more than the highest.
pub fn next_revision_number(revisions: &[ControllerRevision]) -> i64 {
    revisions.iter().map(|r| r.revision).max().unwrap_or(0) + 1
}

/// The revisions to delete to keep at most `limit` that nothing uses, oldest first; `live`
/// names those still used by pods or the owner's status.
pub fn history_to_delete<'a>(
    revisions: &'a [ControllerRevision],
    live: &BTreeSet<String>,
    limit: i32,
) -> Vec<&'a ControllerRevision> {
    let mut unused: Vec<&ControllerRevision> = revisions
        .iter()
        .filter(|r| !live.contains(r.metadata.name.as_deref().unwrap_or_default()))
        .collect();
    let keep = usize::try_from(limit.max(0)).unwrap_or(0);
    if unused.len() <= keep {
        return Vec::new();
    }
    unused.sort_by_key(|r| r.revision);
    let excess = unused.len() - keep;
    unused.truncate(excess);
    unused
}

/// The owner of a set of revisions, as the two controllers see it.
pub struct Owner<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub meta: &'a ObjectMeta,
    pub selector: &'a LabelSelector,
    pub template: &'a PodTemplateSpec,
    pub collision_count: Option<i32>,
}

/// The owner's revisions, sorted by number, and the one for its current template (created,
/// or renumbered to the newest when an older revision is rolled back to, as upstream does).
pub async fn sync_revisions(
    client: &kube::Client,
    owner: &Owner<'_>,
) -> Result<(Vec<ControllerRevision>, ControllerRevision), Error> {
    let namespace = owner.meta.namespace.clone().unwrap_or_default();
    let uid = owner.meta.uid.clone().unwrap_or_default();
    let name = owner.meta.name.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &namespace);
    let mut revisions: Vec<ControllerRevision> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| common::is_controlled_by(&r.metadata, &uid))
        .collect();
    revisions.sort_by_key(|r| r.revision);

    let data = template_patch(owner.template)?;
    let hash = revision_hash(&data, owner.collision_count);
    let next = next_revision_number(&revisions);
    let equal = revisions
        .iter()
        .rposition(|r| r.data.as_ref().is_some_and(|d| d.0 == data));
    if let Some(i) = equal {
        if revisions[i].revision == next - 1 {
            return Ok((revisions.clone(), revisions[i].clone()));
        }
        let cr_name = revisions[i].metadata.name.clone().unwrap_or_default();
        let body = json!({"revision": next});
        let updated = api
            .patch(&cr_name, &PatchParams::default(), &Patch::Merge(&body))
            .await?;
        revisions[i] = updated.clone();
        revisions.sort_by_key(|r| r.revision);
        return Ok((revisions, updated));
    }

    let mut labels = owner
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.extend(owner.selector.match_labels.clone().unwrap_or_default());
    labels.insert(REVISION_HASH_LABEL.into(), hash.clone());
    let revision = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(&name, &hash)),
            namespace: Some(namespace),
            labels: Some(labels),
            owner_references: Some(vec![common::controller_reference(
                owner.api_version,
                owner.kind,
                owner.meta,
            )]),
            ..Default::default()
        },
        data: Some(RawExtension(data.clone())),
        revision: next,
    };
    match api.create(&PostParams::default(), &revision).await {
        Ok(created) => {
            revisions.push(created.clone());
            Ok((revisions, created))
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api.get(&revision_name(&name, &hash)).await?;
            let ours = common::is_controlled_by(&existing.metadata, &uid);
            if ours && existing.data.as_ref().is_some_and(|d| d.0 == data) {
                revisions.push(existing.clone());
                Ok((revisions, existing))
            } else {
                Err(Error::HashCollision(revision_name(&name, &hash)))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Deletes the revisions beyond the history limit that nothing uses any more.
pub async fn truncate_history(
    client: &kube::Client,
    namespace: &str,
    revisions: &[ControllerRevision],
    live: &BTreeSet<String>,
    limit: i32,
) -> Result<(), Error> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), namespace);
    for revision in history_to_delete(revisions, live, limit) {
        let name = revision.metadata.name.clone().unwrap_or_default();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn revision(name: &str, number: i64) -> ControllerRevision {
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: None,
            revision: number,
        }
    }

    #[test]
    fn fnv32_matches_the_reference_vectors() {
        assert_eq!(fnv32(b""), 0x811c_9dc5);
        assert_eq!(fnv32(b"a"), 0x050c_5d7e);
        assert_eq!(fnv32(b"foobar"), 0x31f0_b262);
    }

    #[test]
    fn the_revision_hash_is_stable_and_changes_with_the_template_or_collisions() {
        let a = template_patch(&template("busybox:1")).unwrap();
        let b = template_patch(&template("busybox:2")).unwrap();
        let hash = revision_hash(&a, None);
        assert_eq!(hash, revision_hash(&a.clone(), None));
        assert_ne!(hash, revision_hash(&b, None));
        assert_ne!(hash, revision_hash(&a, Some(1)));
        assert!(hash
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }

    #[test]
    fn the_hash_ignores_the_order_of_fields() {
        let a = json!({"spec": {"template": {"a": 1, "b": [{"x": 1, "y": 2}]}}});
        let b = json!({"spec": {"template": {"b": [{"y": 2, "x": 1}], "a": 1}}});
        assert_eq!(revision_hash(&a, None), revision_hash(&b, None));
    }

    #[test]
    fn a_revision_gives_back_the_template_it_was_made_from() {
        let data = template_patch(&template("busybox:1")).unwrap();
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        let mut cr = revision("web-abc", 1);
        cr.data = Some(RawExtension(data));
        assert_eq!(template_of(&cr), Some(template("busybox:1")));
    }

    #[test]
    fn revision_names_stay_within_the_name_limit() {
        let long = "x".repeat(300);
        let name = revision_name(&long, "abcde");
        assert_eq!(name.len(), 223 + 1 + 5);
        assert_eq!(revision_name("web", "abc"), "web-abc");
    }

    #[test]
    fn history_keeps_the_limit_of_unused_revisions_and_all_live_ones() {
        let revisions: Vec<_> = (1..=5).map(|n| revision(&format!("r{n}"), n)).collect();
        let live: BTreeSet<String> = ["r1".to_string(), "r5".to_string()].into();
        let doomed: Vec<_> = history_to_delete(&revisions, &live, 1)
            .into_iter()
            .map(|r| r.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(doomed, vec!["r2", "r3"]);
        assert!(history_to_delete(&revisions, &live, 10).is_empty());
        assert_eq!(next_revision_number(&revisions), 6);
        assert_eq!(next_revision_number(&[]), 1);
    }
}
