//! `metadata.managedFields`: which field manager owns which fields, kept on every write.
//!
//! An Update (create, replace, patch) gives its manager the fields it changed and takes them
//! from everyone else; an Apply (see `apply.rs`) gives its manager exactly the fields of its
//! configuration. Entries are identified as upstream does: manager name, operation, subresource
//! and, for Updates only, the API version.

use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::sync::OnceLock;

use super::fieldset::{self, Comparison, FieldSet};
use crate::api::conversion;
use crate::api::resources::Resource;
use crate::api::{meta, patch_meta, ApiError, ApiResult, Cause};
use crate::registry::{kinds, Normalized, Part};

/// Upstream's limit on a field manager's name.
const MAX_MANAGER_LENGTH: usize = 128;

/// Who is writing, as recorded in managedFields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manager {
    pub name: String,
    /// `status` for writes to the status subresource, else empty.
    pub subresource: String,
}

impl Manager {
    /// The `fieldManager` parameter, else the product part of the User-Agent
    /// (`kubectl/v1.35.0 (linux/amd64)` → `kubectl`), as upstream derives it.
    pub fn of_request(
        field_manager: Option<&str>,
        user_agent: &str,
        part: Part,
    ) -> ApiResult<Manager> {
        let name = match field_manager {
            Some(name) => {
                if name.len() > MAX_MANAGER_LENGTH {
                    return Err(invalid_options(Cause {
                        reason: "FieldValueTooLong".into(),
                        message: format!(
                            "Too long: may not be more than {MAX_MANAGER_LENGTH} bytes"
                        ),
                        field: "fieldManager".into(),
                    }));
                }
                if name.chars().any(char::is_control) {
                    return Err(invalid_options(Cause::invalid(
                        "fieldManager",
                        name,
                        "invalid characters",
                    )));
                }
                name.to_string()
            }
            None => prefix_of_user_agent(user_agent),
        };
        let subresource = match part {
            Part::Main => "",
            Part::Status => "status",
            Part::Finalize => "finalize",
            Part::Approval => "approval",
            Part::EphemeralContainers => "ephemeralcontainers",
        };
        Ok(Manager {
            name,
            subresource: subresource.to_string(),
        })
    }
}

fn prefix_of_user_agent(user_agent: &str) -> String {
    let product = user_agent.split('/').next().unwrap_or("");
    let mut out = String::new();
    for c in product.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_MANAGER_LENGTH {
            break;
        }
        out.push(c);
    }
    out
}

/// A 422 about PatchOptions/CreateOptions, as upstream reports bad options.
pub fn invalid_options(cause: Cause) -> ApiError {
    ApiError::invalid("meta.k8s.io", "PatchOptions", "", vec![cause])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: String,
    pub fields: FieldSet,
}

impl Entry {
    /// Is this the entry `manager` writes with `operation`? Appliers keep one entry whatever
    /// the API version they use.
    fn belongs_to(&self, manager: &Manager, operation: Operation, api_version: &str) -> bool {
        self.manager == manager.name
            && self.operation == operation
            && self.subresource == manager.subresource
            && (operation == Operation::Apply || self.api_version == api_version)
    }

    /// How conflict messages name the entry: `"kubectl-client-side-apply" using apps/v1`.
    pub fn describe(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            out.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == Operation::Update {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }

    fn decode(value: &Value) -> Option<Entry> {
        let text = |field: &str| {
            value
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let operation = match value.get("operation").and_then(Value::as_str) {
            Some("Apply") => Operation::Apply,
            Some("Update") => Operation::Update,
            // An entry without an operation (`[{}]`, the documented way to clear
            // managedFields) owns nothing.
            None | Some("") => Operation::Update,
            Some(_) => return None,
        };
        match value.get("fieldsType").and_then(Value::as_str) {
            None | Some("") | Some("FieldsV1") => {}
            Some(_) => return None,
        }
        let fields = match value.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::default(),
            Some(v) => FieldSet::from_fields_v1(v).ok()?,
        };
        Some(Entry {
            manager: text("manager"),
            operation,
            api_version: text("apiVersion"),
            time: value
                .get("time")
                .and_then(Value::as_str)
                .map(str::to_string),
            subresource: text("subresource"),
            fields,
        })
    }

    fn encode(&self) -> Value {
        let mut out = Map::new();
        out.insert("manager".into(), json!(self.manager));
        out.insert("operation".into(), json!(self.operation.as_str()));
        out.insert("apiVersion".into(), json!(self.api_version));
        if let Some(time) = &self.time {
            out.insert("time".into(), json!(time));
        }
        out.insert("fieldsType".into(), json!("FieldsV1"));
        out.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if !self.subresource.is_empty() {
            out.insert("subresource".into(), json!(self.subresource));
        }
        Value::Object(out)
    }
}

/// The managedFields of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagedFields {
    pub entries: Vec<Entry>,
}

impl ManagedFields {
    /// Decodes `metadata.managedFields`; None when they are malformed (then upstream falls back
    /// to what is stored).
    pub fn decode(obj: &Value) -> Option<ManagedFields> {
        let entries = match obj.pointer("/metadata/managedFields") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.iter().map(Entry::decode).collect::<Option<_>>()?,
            Some(_) => return None,
        };
        Some(ManagedFields { entries })
    }

    /// The fields of `obj` as stored: empty when absent or malformed.
    pub fn of(obj: &Value) -> ManagedFields {
        ManagedFields::decode(obj).unwrap_or_default()
    }

    /// Writes the entries into `obj`, sorted as upstream sorts them; no entries, no field.
    pub fn encode_into(mut self, obj: &mut Value) {
        self.entries.retain(|e| !e.fields.is_empty());
        self.entries.sort_by(|p, q| {
            (
                p.operation,
                &p.time,
                &p.manager,
                &p.api_version,
                &p.subresource,
            )
                .cmp(&(
                    q.operation,
                    &q.time,
                    &q.manager,
                    &q.api_version,
                    &q.subresource,
                ))
        });
        let meta = meta::metadata_mut(obj);
        if self.entries.is_empty() {
            meta.remove("managedFields");
        } else {
            let list = self.entries.iter().map(Entry::encode).collect();
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }

    /// Removes and returns the entry of `manager` for `operation`.
    pub fn take(
        &mut self,
        manager: &Manager,
        operation: Operation,
        api_version: &str,
    ) -> Option<Entry> {
        let i = self
            .entries
            .iter()
            .position(|e| e.belongs_to(manager, operation, api_version))?;
        Some(self.entries.remove(i))
    }

    /// Every field some manager owns.
    pub fn owned(&self) -> FieldSet {
        self.entries
            .iter()
            .fold(FieldSet::default(), |all, e| all.union(&e.fields))
    }

    /// The writer changed `comparison`: the fields it set or removed are no one else's now.
    pub fn forget(&mut self, comparison: &Comparison) {
        let taken = comparison.changed().union(&comparison.removed);
        for entry in &mut self.entries {
            entry.fields = entry.fields.difference(&taken);
        }
    }
}

/// The fields no manager owns: identity and server-set metadata (upstream's stripMeta). Built
/// once: every write subtracts it from three sets.
fn server_fields() -> &'static FieldSet {
    static SET: OnceLock<FieldSet> = OnceLock::new();
    SET.get_or_init(|| {
        let mut set = FieldSet::default();
        for path in [
            &["f:apiVersion"][..],
            &["f:kind"],
            &["f:metadata"],
            &["f:metadata", "f:name"],
            &["f:metadata", "f:namespace"],
            &["f:metadata", "f:creationTimestamp"],
            &["f:metadata", "f:selfLink"],
            &["f:metadata", "f:uid"],
            &["f:metadata", "f:clusterName"],
            &["f:metadata", "f:generation"],
            &["f:metadata", "f:managedFields"],
            &["f:metadata", "f:resourceVersion"],
        ] {
            let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
            set.insert(&path);
        }
        set
    })
}

/// Removes the fields no manager owns from `set`.
pub fn ownable(set: &FieldSet) -> FieldSet {
    set.difference(server_fields())
}

/// The upstream type name of objects of `r`, for the kinds with a known schema.
pub fn type_of(r: &Resource) -> Option<&'static str> {
    patch_meta::kind_type(&r.api_version(), r.kind)
}

/// The part of `obj` a write to `part` may own: the main resource of a kind with a status
/// subresource does not own status, the status subresource owns only status (upstream's reset
/// fields). managedFields themselves are never compared. Borrowed when that is all of `obj`
/// (most writes to the main resource), since every write computes two views.
pub fn view<'a>(r: &Resource, part: Part, obj: &'a Value) -> Cow<'a, Value> {
    let keep_only = |field: &str| {
        let mut out = Map::new();
        if let Some(v) = obj.get(field) {
            out.insert(field.to_string(), v.clone());
        }
        Cow::Owned(Value::Object(out))
    };
    match part {
        Part::Status | Part::Approval => keep_only("status"),
        Part::Finalize | Part::EphemeralContainers => keep_only("spec"),
        Part::Main => {
            let has_status = r.has_status && obj.get("status").is_some();
            let has_managed = obj
                .get("metadata")
                .and_then(|m| m.get("managedFields"))
                .is_some();
            if !has_status && !has_managed {
                return Cow::Borrowed(obj);
            }
            let mut out = obj.clone();
            if let Some(o) = out.as_object_mut() {
                if r.has_status {
                    o.remove("status");
                }
            }
            if let Some(m) = out.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("managedFields");
            }
            Cow::Owned(out)
        }
    }
}

/// The object as the registry would store it, so comparisons see what will be written.
pub fn normalized(r: &Resource, mut obj: Value) -> ApiResult<Value> {
    kinds::check_type_meta(r, &mut obj)?;
    let mut obj = kinds::normalize(r, obj)?;
    kinds::prepare_write(r, &mut obj);
    Ok(obj)
}

/// Records an Update of `live` (None: a create) into `new` by `manager`: it owns what it
/// changed, others lose it. managedFields the client sent replace the stored ones (that is how
/// clients edit them); none, an empty list or malformed ones keep the stored ones.
#[cfg(test)]
pub fn record_update(
    r: &Resource,
    part: Part,
    live: Option<&Value>,
    new: &mut Value,
    manager: &Manager,
) -> ApiResult<()> {
    let proposed = normalized(r, new.clone())?;
    let managed = updated_managed_fields(r, r, part, live, new, &proposed, manager);
    managed.encode_into(new);
    Ok(())
}

/// `record_update` for an object already normalized, so it needs no decode of its own. A body
/// written through a view of `r` (`Normalized::served`) is recorded in the view's version.
pub fn record_normalized_update(
    r: &Resource,
    part: Part,
    live: Option<&Value>,
    new: &mut Normalized,
    manager: &Manager,
) {
    let served = new.served();
    let managed = updated_managed_fields(r, served, part, live, new.value(), new.value(), manager);
    // managedFields come out of `encode_into` in the decoder's own shape: still normalized.
    managed.encode_into(new.value_mut());
}

/// The managedFields after `manager` writes `proposed` (the normalized form of `new`) over
/// `live`, both stored as `r`, through `served` (`r` or a view of it).
fn updated_managed_fields(
    r: &Resource,
    served: &Resource,
    part: Part,
    live: Option<&Value>,
    new: &Value,
    proposed: &Value,
    manager: &Manager,
) -> ManagedFields {
    let sent = match part {
        Part::Main => ManagedFields::decode(new).filter(|m| !m.entries.is_empty()),
        _ => None,
    };
    let mut managed = sent.unwrap_or_else(|| live.map(ManagedFields::of).unwrap_or_default());
    let comparison = match live {
        Some(live) => changes(r, part, live, proposed),
        None => created_fields(r, part, proposed),
    };
    if comparison.is_same() {
        return managed;
    }
    // As upstream, the writer owns the fields under the names of the version it wrote in, and
    // the entries of that version lose them so named; entries of other versions lose what
    // changed in the stored version (as `converted_apply` compares them).
    let api_version = served.api_version();
    let in_served = (served != r).then(|| {
        let view_of = |obj: &Value| conversion::to_served(served, obj.clone());
        let empty = json!({});
        let live = live.unwrap_or(&empty);
        changes(served, part, &view_of(live), &view_of(proposed))
    });
    let own = in_served.as_ref().unwrap_or(&comparison);
    let previous = managed.take(manager, Operation::Update, &api_version);
    let taken_in_stored = comparison.changed().union(&comparison.removed);
    let taken_in_served = own.changed().union(&own.removed);
    for entry in &mut managed.entries {
        let taken = match entry.api_version == api_version {
            true => &taken_in_served,
            false => &taken_in_stored,
        };
        entry.fields = entry.fields.difference(taken);
    }
    let fields = previous
        .map(|e| e.fields.difference(&own.removed))
        .unwrap_or_default()
        .union(&own.changed());
    managed.entries.push(Entry {
        manager: manager.name.clone(),
        operation: Operation::Update,
        api_version,
        time: Some(meta::now_rfc3339()),
        subresource: manager.subresource.clone(),
        fields,
    });
    cap_update_managers(&mut managed);
    managed
}

/// What a write of `part` from `live` to `proposed` (both in `r`'s version) changes in fields
/// a manager can own.
fn changes(r: &Resource, part: Part, live: &Value, proposed: &Value) -> Comparison {
    owned_changes(fieldset::compare(
        &view(r, part, live),
        &view(r, part, proposed),
        type_of(r),
    ))
}

/// `changes` from nothing to `created`: every ownable field of it is added. Built straight from
/// the object, since a create has nothing to compare against.
fn created_fields(r: &Resource, part: Part, created: &Value) -> Comparison {
    Comparison {
        added: ownable(&FieldSet::from_object(&view(r, part, created), type_of(r))),
        ..Comparison::default()
    }
}

/// Upstream keeps at most this many Update entries; older ones merge into `ancient-changes`.
const MAX_UPDATE_MANAGERS: usize = 10;
const ANCIENT_CHANGES: &str = "ancient-changes";

/// Merges the oldest Update entries, one bucket per API version, until at most
/// [`MAX_UPDATE_MANAGERS`] are left, as upstream's capmanagers does: an object written by many
/// controllers over its life would otherwise carry an entry for each forever. The oldest entry
/// of a version is kept as it is until a second one of that version is merged: then it becomes
/// the bucket, which takes the time of the newest entry merged into it.
fn cap_update_managers(managed: &mut ManagedFields) {
    type Key = (String, String, String);
    let key = |e: &Entry| {
        (
            e.manager.clone(),
            e.api_version.clone(),
            e.subresource.clone(),
        )
    };
    let mut updaters: Vec<(i64, Key)> = managed
        .entries
        .iter()
        .filter(|e| e.operation == Operation::Update)
        .map(|e| (unix_seconds(e.time.as_deref()), key(e)))
        .collect();
    if updaters.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    updaters.sort();
    let position = |entries: &[Entry], k: &Key| {
        entries
            .iter()
            .position(|e| e.operation == Operation::Update && key(e) == *k)
    };
    let mut first_of_version: std::collections::HashMap<String, Key> = Default::default();
    let mut length = updaters.len();
    for (_, k) in updaters {
        if length <= MAX_UPDATE_MANAGERS {
            break;
        }
        let version = k.1.clone();
        let bucket: Key = (ANCIENT_CHANGES.into(), version.clone(), String::new());
        let Some(first) = first_of_version.get(&version).cloned() else {
            first_of_version.insert(version, k);
            continue;
        };
        if k == bucket {
            continue;
        }
        if position(&managed.entries, &bucket).is_none() {
            if let Some(i) = position(&managed.entries, &first) {
                managed.entries[i].manager = ANCIENT_CHANGES.into();
                managed.entries[i].subresource = String::new();
            }
        }
        let Some(i) = position(&managed.entries, &k) else {
            continue;
        };
        let merged = managed.entries.remove(i);
        if let Some(b) = position(&managed.entries, &bucket) {
            let target = &mut managed.entries[b];
            target.fields = target.fields.union(&merged.fields);
            target.time = merged.time;
        }
        length -= 1;
    }
}

/// Seconds since the epoch of an RFC 3339 time; 0 for none, which sorts oldest as upstream.
fn unix_seconds(time: Option<&str>) -> i64 {
    time.and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map_or(0, |t| t.as_second())
}

/// A comparison without the fields no one owns.
pub fn owned_changes(c: Comparison) -> Comparison {
    Comparison {
        added: ownable(&c.added),
        modified: ownable(&c.modified),
        removed: ownable(&c.removed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::find;

    fn deployments() -> &'static Resource {
        find("apps", "v1", "deployments").unwrap()
    }

    fn kubectl(name: &str) -> Manager {
        Manager {
            name: name.into(),
            subresource: String::new(),
        }
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    fn entries(obj: &Value) -> Vec<Entry> {
        ManagedFields::decode(obj).unwrap().entries
    }

    #[test]
    fn recording_on_a_normalized_object_matches_recording_on_the_raw_body_and_stays_normalized() {
        let r = deployments();
        let live = normalized(r, deployment(1, "a")).unwrap();
        let mut live_recorded = live.clone();
        record_update(r, Part::Main, None, &mut live_recorded, &kubectl("kubectl")).unwrap();
        let mut raw = deployment(2, "b");
        record_update(
            r,
            Part::Main,
            Some(&live_recorded),
            &mut raw,
            &kubectl("other"),
        )
        .unwrap();
        let mut once = Normalized::new(r, deployment(2, "b")).unwrap();
        record_normalized_update(
            r,
            Part::Main,
            Some(&live_recorded),
            &mut once,
            &kubectl("other"),
        );
        // The entries carry a time of day: compare everything but it.
        let untimed = |mut v: Value| {
            for e in v["metadata"]["managedFields"].as_array_mut().unwrap() {
                e.as_object_mut().unwrap().remove("time");
            }
            v
        };
        assert_eq!(
            untimed(normalized(r, raw).unwrap()),
            untimed(once.value().clone())
        );
        assert_eq!(entries(once.value()).len(), 2);
        let again = Normalized::new(r, once.value().clone()).unwrap();
        assert_eq!(
            again, once,
            "managedFields written after the decode keep the object normalized"
        );
    }

    #[test]
    fn a_create_owns_what_a_comparison_with_an_empty_object_finds() {
        let configmaps = find("", "v1", "configmaps").unwrap();
        let pods = find("", "v1", "pods").unwrap();
        let configmap = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "default", "labels": {"a": "b"},
                "finalizers": ["x", "y"], "managedFields": [{"manager": "m"}]},
            "data": {"k": "v"}, "binaryData": {}});
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                "ports": [{"containerPort": 80, "protocol": "TCP"}]}]},
            "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]}});
        let bare = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let cases = [
            (configmaps, &configmap),
            (configmaps, &bare),
            (pods, &pod),
            (deployments(), &deployment(2, "busybox")),
        ];
        for (r, obj) in cases {
            for part in [Part::Main, Part::Status, Part::Finalize] {
                assert_eq!(
                    created_fields(r, part, obj),
                    changes(r, part, &json!({}), obj),
                    "{} {part:?}",
                    r.kind
                );
            }
        }
        assert!(created_fields(configmaps, Part::Main, &bare).is_same());
        assert!(!created_fields(pods, Part::Status, &pod).is_same());
    }

    #[test]
    fn the_manager_comes_from_the_user_agent_when_no_field_manager_is_given() {
        let m = Manager::of_request(
            None,
            "kubectl/v1.35.0 (linux/amd64) kubernetes/abc",
            Part::Main,
        )
        .unwrap();
        assert_eq!(m.name, "kubectl");
        let m = Manager::of_request(Some("helm"), "Helm/4.0", Part::Status).unwrap();
        assert_eq!(
            (m.name.as_str(), m.subresource.as_str()),
            ("helm", "status")
        );
        let long = "x".repeat(200);
        assert_eq!(
            Manager::of_request(Some(&long), "", Part::Main)
                .unwrap_err()
                .code,
            422
        );
    }

    #[test]
    fn a_create_gives_its_manager_every_field_but_server_set_metadata() {
        let mut obj = deployment(2, "busybox");
        record_update(
            deployments(),
            Part::Main,
            None,
            &mut obj,
            &kubectl("kubectl-create"),
        )
        .unwrap();
        let e = &entries(&obj)[0];
        assert_eq!(e.manager, "kubectl-create");
        assert_eq!(e.operation, Operation::Update);
        assert_eq!(e.api_version, "apps/v1");
        let paths = e.fields.paths();
        assert!(paths.contains(&".spec.replicas".to_string()), "{paths:?}");
        assert!(!paths
            .iter()
            .any(|p| p == ".metadata.name" || p == ".metadata.uid"));
        assert!(!paths.iter().any(|p| p.starts_with(".kind")));
    }

    #[test]
    fn an_update_takes_the_fields_it_changes_from_their_owner() {
        let mut live = deployment(2, "busybox");
        record_update(
            deployments(),
            Part::Main,
            None,
            &mut live,
            &kubectl("creator"),
        )
        .unwrap();
        let mut new = live.clone();
        new["spec"]["replicas"] = json!(5);
        record_update(
            deployments(),
            Part::Main,
            Some(&live),
            &mut new,
            &kubectl("scaler"),
        )
        .unwrap();
        let all = entries(&new);
        let creator = all.iter().find(|e| e.manager == "creator").unwrap();
        let scaler = all.iter().find(|e| e.manager == "scaler").unwrap();
        assert_eq!(scaler.fields.paths(), [".spec.replicas"]);
        assert!(!creator
            .fields
            .paths()
            .contains(&".spec.replicas".to_string()));
        assert!(creator
            .fields
            .paths()
            .contains(&".metadata.labels.app".to_string()));
    }

    #[test]
    fn an_update_that_changes_nothing_records_nothing() {
        let mut live = deployment(2, "busybox");
        record_update(
            deployments(),
            Part::Main,
            None,
            &mut live,
            &kubectl("creator"),
        )
        .unwrap();
        let mut same = live.clone();
        if let Some(m) = same["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
        record_update(
            deployments(),
            Part::Main,
            Some(&live),
            &mut same,
            &kubectl("other"),
        )
        .unwrap();
        assert_eq!(same, live);
    }

    #[test]
    fn status_writes_own_only_status_under_the_status_subresource() {
        let mut live = deployment(2, "busybox");
        record_update(
            deployments(),
            Part::Main,
            None,
            &mut live,
            &kubectl("creator"),
        )
        .unwrap();
        let mut new = live.clone();
        new["status"] = json!({"replicas": 2});
        new["spec"]["replicas"] = json!(9);
        let controller =
            Manager::of_request(None, "kube-controller-manager/v1.35", Part::Status).unwrap();
        record_update(
            deployments(),
            Part::Status,
            Some(&live),
            &mut new,
            &controller,
        )
        .unwrap();
        let status = entries(&new)
            .into_iter()
            .find(|e| e.subresource == "status")
            .unwrap();
        assert_eq!(status.fields.paths(), [".status.replicas"]);
        assert_eq!(status.manager, "kube-controller-manager");
    }

    #[test]
    fn client_sent_managed_fields_replace_the_stored_ones_but_an_empty_list_does_not() {
        let mut live = deployment(2, "busybox");
        record_update(
            deployments(),
            Part::Main,
            None,
            &mut live,
            &kubectl("creator"),
        )
        .unwrap();
        let mut cleared = live.clone();
        cleared["metadata"]["managedFields"] = json!([]);
        record_update(
            deployments(),
            Part::Main,
            Some(&live),
            &mut cleared,
            &kubectl("x"),
        )
        .unwrap();
        assert_eq!(entries(&cleared), entries(&live));
        let mut reset = live.clone();
        reset["metadata"]["managedFields"] = json!([{}]);
        record_update(
            deployments(),
            Part::Main,
            Some(&live),
            &mut reset,
            &kubectl("x"),
        )
        .unwrap();
        assert!(reset["metadata"].get("managedFields").is_none());
    }

    fn update_entry(manager: &str, api_version: &str, second: u32, field: &str) -> Entry {
        let mut fields = FieldSet::default();
        fields.insert(&["f:data".to_string(), format!("f:{field}")]);
        Entry {
            manager: manager.into(),
            operation: Operation::Update,
            api_version: api_version.into(),
            time: Some(format!("2026-01-01T00:00:{second:02}Z")),
            subresource: String::new(),
            fields,
        }
    }

    #[test]
    fn ten_update_managers_are_kept_as_they_are() {
        let entries: Vec<Entry> = (0..10)
            .map(|i| update_entry(&format!("m{i}"), "v1", i, &format!("k{i}")))
            .collect();
        let mut managed = ManagedFields {
            entries: entries.clone(),
        };
        cap_update_managers(&mut managed);
        assert_eq!(managed.entries, entries);
    }

    #[test]
    fn the_oldest_update_managers_merge_into_ancient_changes_per_version() {
        // Twelve updaters: the two oldest v1 ones (m0 at :00, m2 at :02) merge with the third
        // oldest v1 one (m3) into one bucket; the lone old v1beta1 one (m1) stays.
        let mut entries = vec![update_entry("m1", "v1beta1", 1, "k1")];
        entries.extend(
            (0..12)
                .filter(|i| *i != 1)
                .map(|i| update_entry(&format!("m{i}"), "v1", i, &format!("k{i}"))),
        );
        let mut applier = update_entry("applier", "v1", 0, "a");
        applier.operation = Operation::Apply;
        entries.push(applier);
        let mut managed = ManagedFields { entries };
        cap_update_managers(&mut managed);
        let updates: Vec<&Entry> = managed
            .entries
            .iter()
            .filter(|e| e.operation == Operation::Update)
            .collect();
        assert_eq!(updates.len(), MAX_UPDATE_MANAGERS);
        let names: Vec<&str> = updates.iter().map(|e| e.manager.as_str()).collect();
        assert!(!names.contains(&"m0") && !names.contains(&"m2") && !names.contains(&"m3"));
        assert!(names.contains(&"m1") && names.contains(&"m4"));
        let bucket = updates
            .iter()
            .find(|e| e.manager == ANCIENT_CHANGES)
            .expect("a bucket");
        assert_eq!(bucket.api_version, "v1");
        assert_eq!(bucket.time.as_deref(), Some("2026-01-01T00:00:03Z"));
        for key in ["k0", "k2", "k3"] {
            let owned = bucket
                .fields
                .get("f:data")
                .and_then(|d| d.get(&format!("f:{key}")));
            assert!(owned.is_some(), "the bucket owns {key}");
        }
        assert!(managed
            .entries
            .iter()
            .any(|e| e.operation == Operation::Apply));
    }

    #[test]
    fn managed_fields_encode_sorted_applies_first() {
        let mut obj = deployment(1, "a");
        let set = FieldSet::from_object(&json!({"spec": {"replicas": 1}}), type_of(deployments()));
        let entry = |manager: &str, operation| Entry {
            manager: manager.into(),
            operation,
            api_version: "apps/v1".into(),
            time: Some("2026-01-01T00:00:00Z".into()),
            subresource: String::new(),
            fields: set.clone(),
        };
        ManagedFields {
            entries: vec![
                entry("b", Operation::Update),
                entry("a", Operation::Apply),
                entry("gone", Operation::Update),
            ],
        }
        .encode_into(&mut obj);
        let list = obj["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(list[0]["operation"], "Apply");
        assert_eq!(list[0]["fieldsType"], "FieldsV1");
        assert_eq!(list[0]["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
        assert_eq!(list.len(), 3);
    }
}
