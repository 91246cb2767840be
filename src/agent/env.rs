//! A container's environment from its `env` and `envFrom`: literal values, ConfigMap and Secret
//! keys, and pod fields. Pure: the ConfigMaps and Secrets are fetched beforehand.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Pod};

use super::spec::expand;

/// ConfigMap and Secret data the pod refers to, by object name (secrets already decoded).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub config_maps: HashMap<String, BTreeMap<String, String>>,
    pub secrets: HashMap<String, BTreeMap<String, Vec<u8>>>,
    /// Host directories of the pod's bound PersistentVolumeClaims, by claim name.
    pub claims: HashMap<String, std::path::PathBuf>,
    /// Projected service account tokens, by `tokens::token_key(volume, path)`.
    pub tokens: HashMap<String, String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    KeyNotFound {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("unsupported fieldPath {0:?}")]
    UnsupportedField(String),
}

/// The node- and network-given facts `fieldRef`s may ask for.
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    pub pod_ip: Option<String>,
    pub host_ip: Option<String>,
}

/// Names of the ConfigMaps and Secrets the containers' env and envFrom refer to.
pub fn referenced_objects<'a>(
    containers: impl Iterator<Item = &'a Container>,
) -> (Vec<String>, Vec<String>) {
    let (mut cms, mut secrets) = (Vec::new(), Vec::new());
    for c in containers {
        for e in c.env.iter().flatten() {
            if let Some(from) = &e.value_from {
                if let Some(r) = &from.config_map_key_ref {
                    cms.push(r.name.clone());
                }
                if let Some(r) = &from.secret_key_ref {
                    secrets.push(r.name.clone());
                }
            }
        }
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                cms.push(r.name.clone());
            }
            if let Some(r) = &f.secret_ref {
                secrets.push(r.name.clone());
            }
        }
    }
    cms.sort();
    cms.dedup();
    secrets.sort();
    secrets.dedup();
    (cms, secrets)
}

/// The value of a downward-API `fieldPath`.
pub fn field_value(pod: &Pod, path: &str, facts: &PodFacts) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let in_map = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default()
    };
    let render_map = |map: &Option<BTreeMap<String, String>>| {
        map.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => render_map(&meta.labels),
        "metadata.annotations" => render_map(&meta.annotations),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone().unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone().unwrap_or_default(),
        other => {
            let key = |prefix: &str| {
                other
                    .strip_prefix(prefix)
                    .and_then(|rest| rest.strip_suffix("']"))
                    .map(str::to_string)
            };
            if let Some(k) = key("metadata.labels['") {
                in_map(&meta.labels, &k)
            } else if let Some(k) = key("metadata.annotations['") {
                in_map(&meta.annotations, &k)
            } else {
                return Err(EnvError::UnsupportedField(other.to_string()));
            }
        }
    };
    Ok(value)
}

/// The container's environment in order, `$(VAR)` references expanded against the variables
/// defined before them.
pub fn resolve(
    pod: &Pod,
    container: &Container,
    sources: &Sources,
    facts: &PodFacts,
) -> Result<Vec<(String, String)>, EnvError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| match out
        .iter_mut()
        .find(|(name, _)| *name == k)
    {
        Some(slot) => slot.1 = v,
        None => out.push((k, v)),
    };
    // envFrom first: explicit env entries win over it.
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match sources.config_maps.get(&r.name) {
                Some(data) => {
                    for (k, v) in data {
                        set(&mut out, format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(EnvError::ConfigMapNotFound(r.name.clone())),
            }
        }
        if let Some(r) = &from.secret_ref {
            match sources.secrets.get(&r.name) {
                Some(data) => {
                    for (k, v) in data {
                        set(&mut out, format!("{prefix}{k}"), lossy(v));
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(EnvError::SecretNotFound(r.name.clone())),
            }
        }
    }
    for e in container.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (_, Some(from)) => {
                if let Some(r) = &from.config_map_key_ref {
                    let optional = r.optional == Some(true);
                    match sources.config_maps.get(&r.name).map(|d| d.get(&r.key)) {
                        Some(Some(v)) => v.clone(),
                        _ if optional => continue,
                        None => return Err(EnvError::ConfigMapNotFound(r.name.clone())),
                        Some(None) => {
                            return Err(EnvError::KeyNotFound {
                                kind: "configmap",
                                namespace,
                                name: r.name.clone(),
                                key: r.key.clone(),
                            })
                        }
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let optional = r.optional == Some(true);
                    match sources.secrets.get(&r.name).map(|d| d.get(&r.key)) {
                        Some(Some(v)) => lossy(v),
                        _ if optional => continue,
                        None => return Err(EnvError::SecretNotFound(r.name.clone())),
                        Some(None) => {
                            return Err(EnvError::KeyNotFound {
                                kind: "secret",
                                namespace,
                                name: r.name.clone(),
                                key: r.key.clone(),
                            })
                        }
                    }
                } else if let Some(f) = &from.field_ref {
                    field_value(pod, &f.field_path, facts)?
                } else {
                    // resourceFieldRef and fileKeyRef are not supported yet: an empty value.
                    String::new()
                }
            }
            (Some(v), None) => {
                let defined: HashMap<String, String> = out.iter().cloned().collect();
                expand(v, &defined)
            }
            (None, None) => String::new(),
        };
        set(&mut out, e.name.clone(), value);
    }
    Ok(out)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1",
                         "labels": {"app": "web"}, "annotations": {"note": "x"}},
            "spec": {"nodeName": "node1", "serviceAccountName": "sa", "containers": [{
                "name": "c",
                "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
                "env": [
                    {"name": "PLAIN", "value": "v"},
                    {"name": "EXPANDED", "value": "$(PLAIN)-$(CM_a)-$(LATER)"},
                    {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "a"}}},
                    {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
                    {"name": "OPTIONAL", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": true}}},
                    {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "LATER", "value": "late"}
                ]}]}
        }))
        .unwrap()
    }

    fn sources() -> Sources {
        let mut s = Sources::default();
        s.config_maps
            .insert("cm".into(), BTreeMap::from([("a".into(), "1".into())]));
        s.secrets.insert(
            "s".into(),
            BTreeMap::from([("pw".into(), b"hunter2".to_vec())]),
        );
        s
    }

    #[test]
    fn env_resolves_values_refs_fields_and_expansions_in_order() {
        let p = pod();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let facts = PodFacts {
            pod_ip: Some("10.42.0.7".into()),
            host_ip: Some("192.168.1.2".into()),
        };
        let env: HashMap<_, _> = resolve(&p, c, &sources(), &facts)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(env["CM_a"], "1");
        assert_eq!(env["PLAIN"], "v");
        assert_eq!(env["EXPANDED"], "v-1-$(LATER)");
        assert_eq!(env["FROM_CM"], "1");
        assert_eq!(env["FROM_SECRET"], "hunter2");
        assert!(!env.contains_key("OPTIONAL"));
        assert_eq!(env["NAME"], "p");
        assert_eq!(env["IP"], "10.42.0.7");
        assert_eq!(env["APP"], "web");
        assert_eq!(env["NODE"], "node1");
    }

    #[test]
    fn a_missing_configmap_is_an_error_naming_it() {
        let p = pod();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let err = resolve(&p, c, &Sources::default(), &PodFacts::default()).unwrap_err();
        assert_eq!(err, EnvError::ConfigMapNotFound("cm".into()));
    }

    #[test]
    fn referenced_objects_lists_each_name_once() {
        let p = pod();
        let (cms, secrets) = referenced_objects(p.spec.as_ref().unwrap().containers.iter());
        assert_eq!(cms, vec!["cm"]);
        assert_eq!(secrets, vec!["gone", "s"]);
    }
}
