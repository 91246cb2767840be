//! ServiceAccount admission, as upstream's plugin of the same name: a new pod runs as the
//! `default` ServiceAccount unless it names one, the account must exist, the account's
//! imagePullSecrets are the pod's when it has none, and unless the pod or its account opts out
//! (`automountServiceAccountToken: false`) every container and init container gets the
//! `kube-api-access-xxxxx` projected volume (a bound token, the cluster CA, the namespace) at the
//! path client libraries look in. The agent writes and rotates the token (`agent::tokens`).

use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use serde_json::{json, Value};

use super::resource_quota::forbidden;
use super::{Attributes, Operation, Plugin};
use crate::api::resources;
use crate::api::ApiResult;
use crate::controllers::serviceaccount::ROOT_CA_CONFIGMAP;
use crate::registry::generic::Registry;

pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Where in-cluster clients (client-go, kube-rs, the Python client) look for their credentials.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
pub const VOLUME_PREFIX: &str = "kube-api-access-";
/// Upstream's `WarnOnlyBoundTokenExpirationSeconds`: an hour and 7 s, so the server can tell
/// these tokens from ones a user asked for.
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The serviceaccount controller creates `default` just after its namespace; a pod created at
/// once waits for it a little, as upstream does (upstream tries 10 times; a small board under
/// load gets a few more).
const DEFAULT_ACCOUNT_ATTEMPTS: u32 = 25;

pub struct ServiceAccount {
    registry: Registry,
}

impl ServiceAccount {
    pub fn new(registry: Registry) -> ServiceAccount {
        ServiceAccount { registry }
    }

    async fn find_account(&self, namespace: &str, name: &str) -> ApiResult<Value> {
        let Some(r) = resources::find("", "v1", "serviceaccounts") else {
            return Err(crate::api::ApiError::internal(
                "serviceaccounts are not served",
            ));
        };
        let attempts = match name {
            DEFAULT_SERVICE_ACCOUNT => DEFAULT_ACCOUNT_ATTEMPTS,
            _ => 1,
        };
        let mut attempt = 1;
        loop {
            match self.registry.get_value(r, namespace, name) {
                Err(e) if e.code == 404 && attempt < attempts => {
                    attempt += 1;
                    let jitter = rand::rng().random_range(0..100);
                    tokio::time::sleep(Duration::from_millis(100 + jitter)).await;
                }
                other => return other,
            }
        }
    }
}

#[async_trait]
impl Plugin for ServiceAccount {
    fn name(&self) -> &'static str {
        "ServiceAccount"
    }

    async fn mutate(&self, a: &Attributes<'_>, pod: &mut Value) -> ApiResult<()> {
        let is_pod = a.resource.group.is_empty() && a.resource.plural == "pods";
        if !is_pod || a.operation != Operation::Create || a.subresource.is_some() {
            return Ok(());
        }
        if pod
            .pointer("/metadata/annotations")
            .and_then(|n| n.get(MIRROR_ANNOTATION))
            .is_some()
        {
            return check_mirror_pod(pod).map_err(|why| forbidden(a, why));
        }
        let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
            return Ok(());
        };
        // `serviceAccount` is the deprecated spelling: honoured when alone, and kept equal to
        // the real field as upstream's v1 conversion does.
        let field = |key: &str| {
            spec.get(key)
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(String::from)
        };
        let named = field("serviceAccountName")
            .or_else(|| field("serviceAccount"))
            .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_string());
        spec.insert("serviceAccountName".into(), json!(named));
        spec.insert("serviceAccount".into(), json!(named));
        let account = self.find_account(a.namespace, &named).await.map_err(|e| {
            // Upstream reports a missing account by the singular resource name.
            let cause = match e.code {
                404 => format!("serviceaccount \"{named}\" not found"),
                _ => e.message,
            };
            let why = format!(
                "error looking up service account {}/{named}: {cause}",
                a.namespace
            );
            forbidden(a, &why)
        })?;
        if should_automount(&account, pod) {
            mount_token(pod, &random_suffix());
        }
        copy_image_pull_secrets(&account, pod);
        Ok(())
    }
}

/// Mirror pods come from a node's static manifests and must not be changed, nor use an
/// account or secrets (upstream's rule).
fn check_mirror_pod(pod: &Value) -> Result<(), &'static str> {
    let spec = &pod["spec"];
    if spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty())
    {
        return Err("a mirror pod may not reference service accounts");
    }
    let uses_secret_volume = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|v| v.get("secret").is_some());
    match uses_secret_volume {
        true => Err("a mirror pod may not reference secrets"),
        false => Ok(()),
    }
}

/// The pod's own choice wins over its account's; both unset means mount.
pub fn should_automount(account: &Value, pod: &Value) -> bool {
    let choice = |v: &Value| {
        v.get("automountServiceAccountToken")
            .and_then(Value::as_bool)
    };
    choice(&pod["spec"])
        .or_else(|| choice(account))
        .unwrap_or(true)
}

/// Five characters from upstream's name generator alphabet (no vowels, no look-alikes).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The projected volume upstream mounts: a bound token, the cluster CA, the namespace.
pub fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "defaultMode": 0o644,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]
        }
    })
}

/// Mounts the token volume read-only in every container and init container that has nothing
/// at the token path yet (a user's own mount there wins); ephemeral containers are left alone
/// as upstream does. An existing `kube-api-access-` volume is reused rather than doubled.
pub fn mount_token(pod: &mut Value, suffix: &str) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .find(|n| n.starts_with(VOLUME_PREFIX))
        .map(String::from);
    let volume_name = existing
        .clone()
        .unwrap_or_else(|| format!("{VOLUME_PREFIX}{suffix}"));
    let mount = json!({"name": volume_name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut mounted = false;
    for list in ["initContainers", "containers"] {
        let containers = spec.get_mut(list).and_then(Value::as_array_mut);
        for container in containers.into_iter().flatten() {
            let Some(container) = container.as_object_mut() else {
                continue;
            };
            let mounts = container.entry("volumeMounts").or_insert_with(|| json!([]));
            if !mounts.is_array() {
                *mounts = json!([]);
            }
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            let taken = mounts
                .iter()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH));
            if !taken {
                mounts.push(mount.clone());
                mounted = true;
            }
        }
    }
    if mounted && existing.is_none() {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if !volumes.is_array() {
            *volumes = json!([]);
        }
        if let Some(volumes) = volumes.as_array_mut() {
            volumes.push(token_volume(&volume_name));
        }
    }
}

fn copy_image_pull_secrets(account: &Value, pod: &mut Value) {
    let Some(secrets) = account
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .filter(|s| !s.is_empty())
    else {
        return;
    };
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let has_own = spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    if !has_own {
        spec.insert("imagePullSecrets".into(), json!(secrets));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec})
    }

    #[test]
    fn every_container_and_init_container_mounts_one_token_volume_read_only() {
        let mut p = pod(json!({
            "initContainers": [{"name": "init", "image": "i"}],
            "containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "i",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "ephemeralContainers": [{"name": "debug", "image": "i"}],
            "volumes": [{"name": "data", "emptyDir": {}}]
        }));
        mount_token(&mut p, "x7k2q");
        let spec = &p["spec"];
        let volumes = spec["volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), 2);
        assert_eq!(volumes[1], token_volume("kube-api-access-x7k2q"));
        let sources = &volumes[1]["projected"]["sources"];
        assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(
            sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        let expected = json!({"name": "kube-api-access-x7k2q", "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
        assert_eq!(spec["initContainers"][0]["volumeMounts"][0], expected);
        assert_eq!(spec["containers"][0]["volumeMounts"][0], expected);
        assert_eq!(spec["containers"][1]["volumeMounts"][1], expected);
        assert!(spec["ephemeralContainers"][0].get("volumeMounts").is_none());
    }

    #[test]
    fn a_container_with_its_own_mount_at_the_token_path_keeps_it() {
        let own = json!({"name": "mine", "mountPath": TOKEN_MOUNT_PATH});
        let mut p = pod(json!({
            "containers": [{"name": "a", "image": "i", "volumeMounts": [own.clone()]}],
            "volumes": [{"name": "mine", "emptyDir": {}}]
        }));
        mount_token(&mut p, "abcde");
        assert_eq!(p["spec"]["containers"][0]["volumeMounts"], json!([own]));
        assert_eq!(
            p["spec"]["volumes"].as_array().unwrap().len(),
            1,
            "no container needs the token volume"
        );
    }

    #[test]
    fn an_existing_token_volume_is_reused_not_doubled() {
        let mut p = pod(json!({
            "containers": [{"name": "a", "image": "i"}],
            "volumes": [token_volume("kube-api-access-old12")]
        }));
        mount_token(&mut p, "new34");
        assert_eq!(p["spec"]["volumes"].as_array().unwrap().len(), 1);
        assert_eq!(
            p["spec"]["containers"][0]["volumeMounts"][0]["name"],
            "kube-api-access-old12"
        );
    }

    #[test]
    fn the_pods_automount_choice_wins_over_its_accounts() {
        let off = json!({"automountServiceAccountToken": false});
        let on = json!({"automountServiceAccountToken": true});
        let silent = json!({});
        assert!(should_automount(&silent, &pod(json!({}))));
        assert!(!should_automount(&off, &pod(json!({}))));
        assert!(should_automount(&off, &pod(on.clone())));
        assert!(!should_automount(&on, &pod(off.clone())));
    }

    #[test]
    fn the_accounts_pull_secrets_apply_only_to_pods_without_their_own() {
        let account = json!({"imagePullSecrets": [{"name": "regcred"}]});
        let mut bare = pod(json!({"containers": []}));
        copy_image_pull_secrets(&account, &mut bare);
        assert_eq!(
            bare["spec"]["imagePullSecrets"],
            json!([{"name": "regcred"}])
        );
        let mut own = pod(json!({"imagePullSecrets": [{"name": "mine"}]}));
        copy_image_pull_secrets(&account, &mut own);
        assert_eq!(own["spec"]["imagePullSecrets"], json!([{"name": "mine"}]));
    }

    #[test]
    fn suffixes_use_the_name_generators_alphabet() {
        let suffix = random_suffix();
        assert_eq!(suffix.len(), 5);
        assert!(suffix
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }

    #[test]
    fn mirror_pods_may_not_use_accounts_or_secrets() {
        assert!(check_mirror_pod(&pod(json!({"containers": []}))).is_ok());
        assert!(check_mirror_pod(&pod(json!({"serviceAccountName": "x"}))).is_err());
        assert!(check_mirror_pod(&pod(json!({"volumes": [{"name": "s", "secret": {}}]}))).is_err());
    }
}
