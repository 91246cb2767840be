//! The generic CRUD every kind shares, on top of the store: create, guaranteed update, delete with
//! finalizers and graceful pod deletion, list with selectors and paging.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use super::normalized::Normalized;
use super::propagation;
use super::selection::stored_matches_selectors;
use super::services::{self, ServiceNetwork};
use super::stored::RevisionTemplate;
use super::watched::{Lookup, WatchedPrefix};
use super::{certificates, defaults, kinds, validation};
use crate::admission::{self, Operation};
use crate::api::meta;
use crate::api::paging::ContinueToken;
use crate::api::resources::{self, Resource};
use crate::api::selectors::{FieldSelector, LabelSelector};
use crate::api::{ApiError, ApiResult, Cause};
use crate::store::{KeyValue, Store, StoreError};

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The object itself: status is kept from the stored object where the kind has a status.
    Main,
    /// The `/status` subresource: only status changes.
    Status,
    /// The namespace `/finalize` subresource: only `spec.finalizers` changes.
    Finalize,
    /// The certificate signing request `/approval` subresource: only its conditions change.
    Approval,
    /// The pod `/ephemeralcontainers` subresource: only `spec.ephemeralContainers` changes.
    EphemeralContainers,
}

#[derive(Debug, Default, Clone)]
pub struct ListOptions {
    pub label_selector: Option<LabelSelector>,
    pub field_selector: Option<FieldSelector>,
    /// 0 = everything.
    pub limit: usize,
    pub continue_token: Option<String>,
}

pub struct ListPage {
    /// Raw JSON of each item, resourceVersion included.
    pub items: Vec<Bytes>,
    pub revision: u64,
    pub continue_token: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    pub propagation_policy: Option<String>,
    pub dry_run: bool,
}

/// What a create made: the object, and what the store holds of it.
pub struct Created {
    /// Without its resourceVersion, which the store gave it.
    object: Value,
    /// The object's JSON as stored, resourceVersion included; None for a dry run.
    stored: Option<KeyValue>,
}

impl Created {
    /// The object as created, resourceVersion included.
    pub fn into_object(self) -> Value {
        match self.stored {
            Some(kv) => encode_value_at(self.object, kv.mod_revision),
            None => self.object,
        }
    }

    /// The object's JSON: the bytes stored, so answering a create serialises nothing again.
    pub fn into_json(self) -> Bytes {
        match self.stored {
            Some(kv) => kv.value,
            None => Bytes::from(self.object.to_string()),
        }
    }
}

/// What a delete did.
pub enum Deleted {
    /// Removed now; the last state of the object.
    Now(Value),
    /// Marked for deletion (finalizers or a grace period pending); the marked object.
    Marked(Value),
}

#[derive(Clone)]
pub struct Registry {
    store: Store,
    services: ServiceNetwork,
    admission: admission::Chain,
    /// Every namespaced create checks its namespace, and most check its quotas: both answered
    /// from copies kept current by the store's watch instead of a store read each.
    namespaces: Arc<WatchedPrefix<NamespacePhase>>,
    quotas: Arc<WatchedPrefix<()>>,
}

/// What a namespaced create needs to know of its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NamespacePhase {
    Open,
    Terminating,
    /// The stored bytes are not JSON: the store read reports it.
    Unreadable,
}

impl NamespacePhase {
    fn of(raw: &[u8]) -> NamespacePhase {
        NamespacePhase::read(raw).unwrap_or(NamespacePhase::Unreadable)
    }

    fn read(raw: &[u8]) -> ApiResult<NamespacePhase> {
        match meta::is_deleting(&decode(raw)?) {
            true => Ok(NamespacePhase::Terminating),
            false => Ok(NamespacePhase::Open),
        }
    }
}

/// How many times a write is retried when another writer raced it (for unconditional writes).
const MAX_RETRIES: usize = 16;

impl Registry {
    pub fn new(store: Store, services: ServiceNetwork) -> Registry {
        let namespaces = namespaces_resource().key_prefix();
        let quotas = resource_quotas_resource().key_prefix();
        Registry {
            namespaces: Arc::new(WatchedPrefix::new(
                store.clone(),
                namespaces,
                NamespacePhase::of,
            )),
            quotas: Arc::new(WatchedPrefix::new(store.clone(), quotas, |_| ())),
            store,
            services,
            admission: admission::Chain::default(),
        }
    }

    /// The admission plugins every write passes through.
    pub fn admission(&self) -> &admission::Chain {
        &self.admission
    }

    pub fn service_network(&self) -> &ServiceNetwork {
        &self.services
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Raw JSON of one object.
    pub fn get(&self, r: &Resource, namespace: &str, name: &str) -> ApiResult<Bytes> {
        match self
            .store
            .get(&r.key(namespace, name))
            .map_err(store_error)?
        {
            Some(kv) => Ok(crate::crd::hooks::convert_raw(r, kv.value)),
            None => Err(ApiError::not_found(r.group, r.plural, name)),
        }
    }

    pub fn get_value(&self, r: &Resource, namespace: &str, name: &str) -> ApiResult<Value> {
        decode(&self.get(r, namespace, name)?)
    }

    pub fn list(
        &self,
        r: &Resource,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> ApiResult<ListPage> {
        let prefix = r.list_prefix(namespace);
        let token = match &opts.continue_token {
            Some(t) => {
                Some(ContinueToken::decode(t).map_err(|e| ApiError::bad_request(e.to_string()))?)
            }
            None => None,
        };
        if let Some(t) = &token {
            if t.revision < self.store.compacted_revision() {
                return Err(ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ));
            }
            if !t.start_after.starts_with(&prefix) {
                return Err(ApiError::bad_request(
                    "the continue token does not belong to this list",
                ));
            }
        }
        let filtering = opts.label_selector.as_ref().is_some_and(|s| !s.is_empty())
            || opts.field_selector.as_ref().is_some_and(|s| !s.is_empty());
        let mut start_after = token.as_ref().map(|t| t.start_after.clone());
        let mut items = Vec::new();
        let mut revision = None;
        loop {
            let want = if opts.limit == 0 {
                0
            } else {
                opts.limit - items.len()
            };
            let page = self
                .store
                .list(&prefix, start_after.as_deref(), want)
                .map_err(store_error)?;
            let first_revision = *revision.get_or_insert(page.revision);
            let mut last_key = None;
            for kv in page.kvs {
                last_key = Some(kv.key.clone());
                if !filtering || self.matches(r, &kv.value, opts)? {
                    items.push(crate::crd::hooks::convert_raw(r, kv.value));
                }
                if opts.limit != 0 && items.len() == opts.limit {
                    break;
                }
            }
            let full = opts.limit != 0 && items.len() == opts.limit;
            let more_in_store = match &last_key {
                Some(k) => {
                    self.store
                        .list(&prefix, Some(k), 1)
                        .map_err(store_error)?
                        .kvs
                        .len()
                        == 1
                }
                None => false,
            };
            if full || !more_in_store {
                let continue_token = (full && more_in_store).then(|| {
                    let start_after = last_key.clone().unwrap_or_default();
                    ContinueToken {
                        revision: token.as_ref().map_or(first_revision, |t| t.revision),
                        start_after,
                    }
                    .encode()
                });
                return Ok(ListPage {
                    items,
                    revision: first_revision,
                    continue_token,
                });
            }
            start_after = last_key;
        }
    }

    fn matches(&self, r: &Resource, raw: &[u8], opts: &ListOptions) -> ApiResult<bool> {
        stored_matches_selectors(
            r,
            raw,
            opts.label_selector.as_ref(),
            opts.field_selector.as_ref(),
        )
    }

    pub async fn create(
        &self,
        r: &'static Resource,
        namespace: &str,
        body: Value,
        dry_run: bool,
    ) -> ApiResult<Value> {
        self.create_normalized(r, namespace, Normalized::new(r, body)?, dry_run)
            .await
            .map(Created::into_object)
    }

    /// Creates an object from a body already put through `Normalized::new`.
    pub async fn create_normalized(
        &self,
        r: &'static Resource,
        namespace: &str,
        body: Normalized,
        dry_run: bool,
    ) -> ApiResult<Created> {
        let requested = body.served();
        let mut obj = body.into_value();
        let meta = meta::metadata_mut(&mut obj);
        if r.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                None | Some("") => {
                    meta.insert("namespace".into(), json!(namespace));
                }
                Some(ns) if ns == namespace => {}
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
            }
        } else {
            meta.remove("namespace");
        }
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let generate_name = meta
            .get("generateName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let explicit_name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if explicit_name.is_empty() && generate_name.is_empty() {
            let causes = vec![Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value: name or generateName is required".into(),
                field: "metadata.name".into(),
            }];
            return Err(ApiError::invalid(r.group, r.kind, "", causes));
        }
        meta.insert("uid".into(), json!(meta::new_uid().to_string()));
        meta.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        if kinds::tracks_generation(r) {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        defaults::apply(r, &mut obj);
        kinds::prepare_create(r, &mut obj);
        super::default_ingress_class::admit(self, r, &mut obj)?;
        if r.namespaced {
            self.check_namespace_open(namespace)?;
        }
        for _ in 0..MAX_RETRIES {
            let name = if explicit_name.is_empty() {
                generated_name(&generate_name)
            } else {
                explicit_name.clone()
            };
            meta::metadata_mut(&mut obj).insert("name".into(), json!(name));
            // After the name: a job's generated labels carry it (generateName included).
            defaults::on_create(r, &mut obj);
            let attributes = self.admission_attributes(
                Operation::Create,
                r,
                None,
                namespace,
                &name,
                None,
                dry_run,
            );
            if let Some(a) = &attributes {
                self.admission.mutate(a, &mut obj).await?;
            }
            let mut causes = Vec::new();
            kinds::validate_name(r, &name, &mut causes);
            meta::validate_labels_and_annotations(&obj, &mut causes);
            causes.extend(validation::validate(r, &obj));
            causes.extend(validation::validate_create(r, requested, &obj));
            crate::crd::hooks::validate(r, &obj, None, &mut causes);
            if !causes.is_empty() {
                return Err(ApiError::invalid(r.group, r.kind, &name, causes));
            }
            // Until the create returns: plugins may hold something for it (quota charges).
            let _settling = self.admission.settling(meta::meta_str(&obj, "uid"));
            if let Some(a) = &attributes {
                self.admission.validate(a, Some(&obj)).await?;
            }
            let is_service = r.group.is_empty() && r.kind == "Service";
            if is_service {
                services::default_and_validate(&mut obj, &name)?;
            }
            if dry_run {
                return Ok(Created {
                    object: obj,
                    stored: None,
                });
            }
            let key = r.key(namespace, &name);
            let owner = format!("{namespace}/{name}");
            // An existing service must read as AlreadyExists, not as "IP already allocated".
            if is_service && self.store.get(&key).map_err(store_error)?.is_some() {
                return Err(ApiError::already_exists(r.group, r.plural, &name));
            }
            let allocations = match is_service {
                true => services::allocate(&self.store, &self.services, &mut obj, &owner).await?,
                false => Vec::new(),
            };
            let template = RevisionTemplate::new(&mut obj);
            let storing = std::time::Instant::now();
            let created = self
                .store
                .create(&key, move |rev| template.render(rev))
                .await;
            tracing::debug!(target: "berth::apiserver::timing",
                store_us = storing.elapsed().as_micros(), "create stored");
            if created.is_err() {
                services::release_keys(&self.store, &allocations).await;
            }
            match created {
                Ok(kv) => {
                    return Ok(Created {
                        object: obj,
                        stored: Some(kv),
                    })
                }
                Err(StoreError::AlreadyExists) if explicit_name.is_empty() => continue,
                Err(StoreError::AlreadyExists) => {
                    return Err(ApiError::already_exists(r.group, r.plural, &name))
                }
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(ApiError::new(
            500,
            "AlreadyExists",
            "could not find a free generated name, try again",
        ))
    }

    fn check_namespace_open(&self, namespace: &str) -> ApiResult<()> {
        let key = format!("{}{namespace}", self.namespaces.prefix());
        let phase = match self.namespaces.get(&key).map_err(store_error)? {
            Lookup::Present(NamespacePhase::Unreadable) | Lookup::NotKept => {
                match self.store.get(&key).map_err(store_error)? {
                    Some(kv) => NamespacePhase::read(&kv.value)?,
                    None => return Err(ApiError::not_found("", "namespaces", namespace)),
                }
            }
            Lookup::Present(phase) => phase,
            Lookup::Absent => return Err(ApiError::not_found("", "namespaces", namespace)),
        };
        match phase {
            NamespacePhase::Terminating => Err(ApiError::forbidden(format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            ))),
            _ => Ok(()),
        }
    }

    /// Whether `namespace` holds a ResourceQuota (most hold none, and then quota admission has
    /// nothing to read).
    pub fn has_resource_quotas(&self, namespace: &str) -> ApiResult<bool> {
        let prefix = format!("{}{namespace}/", self.quotas.prefix());
        match self.quotas.any_under(&prefix).map_err(store_error)? {
            Lookup::Present(()) => Ok(true),
            Lookup::Absent => Ok(false),
            Lookup::NotKept => Ok(!self
                .store
                .list(&prefix, None, 1)
                .map_err(store_error)?
                .kvs
                .is_empty()),
        }
    }

    /// Replaces an object (PUT).
    pub async fn update(
        &self,
        r: &'static Resource,
        namespace: &str,
        name: &str,
        body: Value,
        part: Part,
        dry_run: bool,
    ) -> ApiResult<Value> {
        let body = Normalized::new(r, body)?;
        self.update_recorded(r, namespace, name, body, part, dry_run, |_, _| Ok(()))
            .await
    }

    /// Replaces an object (PUT); `record` sees the stored object and the replacement before it
    /// is written (managedFields bookkeeping).
    #[allow(clippy::too_many_arguments)]
    pub async fn update_recorded(
        &self,
        r: &'static Resource,
        namespace: &str,
        name: &str,
        body: Normalized,
        part: Part,
        dry_run: bool,
        mut record: impl FnMut(&Value, &mut Normalized) -> ApiResult<()>,
    ) -> ApiResult<Value> {
        let body_name = meta::name(body.value());
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = meta::namespace(body.value());
        if r.namespaced && !body_ns.is_empty() && body_ns != namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        self.update_with_normalized(r, namespace, name, part, dry_run, |old| {
            let mut new = body.clone();
            record(old, &mut new)?;
            Ok(new)
        })
        .await
    }

    /// The guaranteed update: reads the object, asks `mutate` for the new one, writes it with a
    /// compare-and-swap, and retries on a race unless the caller pinned a resourceVersion.
    pub async fn update_with(
        &self,
        r: &'static Resource,
        namespace: &str,
        name: &str,
        part: Part,
        dry_run: bool,
        mut mutate: impl FnMut(&Value) -> ApiResult<Value>,
    ) -> ApiResult<Value> {
        self.update_with_normalized(r, namespace, name, part, dry_run, |old| {
            Normalized::new(r, mutate(old)?)
        })
        .await
    }

    /// `update_with` for a `mutate` that returns the new object already normalized.
    pub async fn update_with_normalized(
        &self,
        r: &'static Resource,
        namespace: &str,
        name: &str,
        part: Part,
        dry_run: bool,
        mut mutate: impl FnMut(&Value) -> ApiResult<Normalized>,
    ) -> ApiResult<Value> {
        let key = r.key(namespace, name);
        for _ in 0..MAX_RETRIES {
            let Some(current) = self.store.get(&key).map_err(store_error)? else {
                return Err(ApiError::not_found(r.group, r.plural, name));
            };
            let mut old = decode(&current.value)?;
            crate::crd::hooks::convert(r, &mut old);
            let proposed = mutate(&old)?;
            let requested = proposed.served();
            let mut proposed = proposed.into_value();
            defaults::apply(r, &mut proposed);
            let pinned = meta::resource_version(&proposed).to_string();
            if !pinned.is_empty() && pinned != current.mod_revision.to_string() {
                return Err(ApiError::stale(r.group, r.plural, name));
            }
            let proposed_uid = meta::meta_str(&proposed, "uid");
            if !proposed_uid.is_empty() && proposed_uid != meta::meta_str(&old, "uid") {
                return Err(ApiError::conflict(
                    r.group,
                    r.plural,
                    name,
                    &format!("Precondition failed: UID in precondition: {proposed_uid}, UID in object meta: {}", meta::meta_str(&old, "uid")),
                ));
            }
            let mut new = merge_update(r, &old, proposed, part)?;
            let attributes = self.admission_attributes(
                Operation::Update,
                r,
                part.subresource(),
                namespace,
                name,
                Some(&old),
                dry_run,
            );
            if let Some(a) = &attributes {
                self.admission.mutate(a, &mut new).await?;
            }
            let mut causes = Vec::new();
            meta::validate_labels_and_annotations(&new, &mut causes);
            check_finalizer_rules(&old, &new, &mut causes);
            if part == Part::Main {
                causes.extend(validation::validate(r, &new));
                causes.extend(validation::validate_update(r, requested, &old, &new));
            }
            if part == Part::EphemeralContainers {
                causes.extend(super::ephemeral::validate_update(&old, &new));
            }
            crate::crd::hooks::validate(r, &new, Some(&old), &mut causes);
            if !causes.is_empty() {
                return Err(ApiError::invalid(r.group, r.kind, name, causes));
            }
            if let Some(a) = &attributes {
                self.admission.validate(a, Some(&new)).await?;
            }
            // A Service whose type changed holds other allocations; those it claims now are
            // released again unless the update is stored.
            let is_service = r.group.is_empty() && r.kind == "Service";
            let claimed = match is_service && part == Part::Main {
                true => {
                    let owner = format!("{namespace}/{name}");
                    services::reallocate(&self.store, &self.services, &old, &mut new, &owner)
                        .await?
                }
                false => Vec::new(),
            };
            let unchanged = without_resource_version(&new) == without_resource_version(&old);
            if unchanged || dry_run || finalized_during_update(&old, &new) {
                services::release_keys(&self.store, &claimed).await;
            }
            if unchanged {
                // Upstream writes nothing for a no-op update and keeps the resourceVersion.
                return Ok(old);
            }
            if dry_run {
                return Ok(new);
            }
            if finalized_during_update(&old, &new) {
                match self.store.delete(&key, Some(current.mod_revision)).await {
                    Ok((_, revision)) => {
                        self.after_delete(r, &new).await;
                        return Ok(encode_value_at(new, revision));
                    }
                    // Someone wrote in between: read again. A caller's own resourceVersion
                    // is checked against the fresh object at the top of the loop.
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(store_error(e)),
                }
            }
            let template = RevisionTemplate::new(&mut new);
            let updated = self
                .store
                .update(&key, current.mod_revision, move |rev| template.render(rev))
                .await;
            if is_service {
                let held = services::keys_of(&new);
                let freed: Vec<String> = match &updated {
                    Ok(_) => services::keys_of(&old)
                        .into_iter()
                        .filter(|k| !held.contains(k))
                        .collect(),
                    Err(_) => claimed,
                };
                services::release_keys(&self.store, &freed).await;
            }
            match updated {
                Ok(kv) => return Ok(encode_value_at(new, kv.mod_revision)),
                // As above: a patch re-applies to the fresh object, while an update that
                // named the old resourceVersion fails the check at the top of the loop.
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound) => {
                    return Err(ApiError::not_found(r.group, r.plural, name))
                }
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(ApiError::conflict(
            r.group,
            r.plural,
            name,
            "too many concurrent writers, try again",
        ))
    }

    /// Frees what an object held outside itself once it is gone.
    async fn after_delete(&self, r: &Resource, obj: &Value) {
        if r.group.is_empty() && r.kind == "Service" {
            services::release_keys(&self.store, &services::keys_of(obj)).await;
        }
    }

    pub async fn delete(
        &self,
        r: &'static Resource,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Deleted> {
        if let Some(policy) = &opts.propagation_policy {
            if !matches!(policy.as_str(), "Orphan" | "Background" | "Foreground") {
                return Err(ApiError::invalid(
                    "",
                    "DeleteOptions",
                    "",
                    vec![Cause { reason: "FieldValueNotSupported".into(), message: format!("Unsupported value: \"{policy}\": supported values: \"Foreground\", \"Background\", \"Orphan\""), field: "propagationPolicy".into() }],
                ));
            }
        }
        if opts.grace_period_seconds.is_some_and(|g| g < 0) {
            return Err(ApiError::bad_request(
                "gracePeriodSeconds must not be negative",
            ));
        }
        let key = r.key(namespace, name);
        for _ in 0..MAX_RETRIES {
            let Some(current) = self.store.get(&key).map_err(store_error)? else {
                return Err(ApiError::not_found(r.group, r.plural, name));
            };
            let old = decode(&current.value)?;
            check_delete_preconditions(r, name, &old, &current, opts)?;
            let attributes = self.admission_attributes(
                Operation::Delete,
                r,
                None,
                namespace,
                name,
                Some(&old),
                opts.dry_run,
            );
            if let Some(a) = &attributes {
                self.admission.validate(a, None).await?;
            }
            let with_gc =
                propagation::with_gc_finalizer(r, &old, opts.propagation_policy.as_deref());
            let marked = match mark_for_deletion(r, &with_gc, opts) {
                Some(marked) => marked,
                None => {
                    if opts.dry_run {
                        return Ok(Deleted::Now(old));
                    }
                    match self.store.delete(&key, Some(current.mod_revision)).await {
                        Ok((_, revision)) => {
                            self.after_delete(r, &old).await;
                            return Ok(Deleted::Now(encode_value_at(old, revision)));
                        }
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(StoreError::NotFound) => {
                            return Err(ApiError::not_found(r.group, r.plural, name))
                        }
                        Err(e) => return Err(store_error(e)),
                    }
                }
            };
            if marked == old || opts.dry_run {
                return Ok(Deleted::Marked(marked));
            }
            let mut marked = marked;
            let template = RevisionTemplate::new(&mut marked);
            match self
                .store
                .update(&key, current.mod_revision, move |rev| template.render(rev))
                .await
            {
                Ok(kv) => return Ok(Deleted::Marked(encode_value_at(marked, kv.mod_revision))),
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound) => {
                    return Err(ApiError::not_found(r.group, r.plural, name))
                }
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(ApiError::conflict(
            r.group,
            r.plural,
            name,
            "too many concurrent writers, try again",
        ))
    }
}

impl Part {
    /// The subresource a write of this part goes through, as admission names it.
    pub fn subresource(self) -> Option<&'static str> {
        match self {
            Part::Main => None,
            Part::Status => Some("status"),
            Part::Finalize => Some("finalize"),
            Part::Approval => Some("approval"),
            Part::EphemeralContainers => Some("ephemeralcontainers"),
        }
    }
}

impl Registry {
    /// What admission plugins see of a write, or `None` when no plugin is registered.
    #[allow(clippy::too_many_arguments)]
    fn admission_attributes<'a>(
        &self,
        operation: Operation,
        resource: &'static Resource,
        subresource: Option<&'static str>,
        namespace: &'a str,
        name: &'a str,
        old: Option<&'a Value>,
        dry_run: bool,
    ) -> Option<admission::Attributes<'a>> {
        if self.admission.is_empty() {
            return None;
        }
        Some(admission::Attributes {
            operation,
            resource,
            subresource,
            namespace,
            name,
            old,
            dry_run,
            user: admission::current_user(),
        })
    }
}

/// Checks the field selector only uses fields the kind supports, before any work is done.
pub fn check_field_selector(r: &Resource, sel: &FieldSelector) -> ApiResult<()> {
    sel.validate_for(r.kind)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

fn check_delete_preconditions(
    r: &Resource,
    name: &str,
    old: &Value,
    current: &KeyValue,
    opts: &DeleteOptions,
) -> ApiResult<()> {
    if let Some(uid) = &opts.precondition_uid {
        let actual = meta::meta_str(old, "uid");
        if uid != actual {
            return Err(ApiError::conflict(
                r.group,
                r.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                ),
            ));
        }
    }
    if let Some(rv) = &opts.precondition_resource_version {
        if *rv != current.mod_revision.to_string() {
            return Err(ApiError::conflict(r.group, r.plural, name, &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", current.mod_revision)));
        }
    }
    Ok(())
}

/// The object marked for deletion, or None when it can go at once.
fn mark_for_deletion(r: &Resource, old: &Value, opts: &DeleteOptions) -> Option<Value> {
    let mut marked = old.clone();
    if r.group.is_empty() && r.kind == "Pod" {
        if let Some(grace) = pod_grace_period(old, opts) {
            if grace_period(old).is_some_and(|g| g <= grace) {
                return Some(marked);
            }
            let deadline = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
            let deadline = jiff::Timestamp::from_second(deadline.as_second()).unwrap_or(deadline);
            let meta = meta::metadata_mut(&mut marked);
            meta.insert("deletionTimestamp".into(), json!(deadline.to_string()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            return Some(marked);
        }
    }
    if !has_pending_finalizers(old) {
        return None;
    }
    if meta::is_deleting(old) {
        // A delete without a grace period ends a graceful one that finalizers still hold:
        // the object then goes as soon as its last finalizer does (upstream's BeforeDelete
        // only ever shortens the grace period).
        if grace_period(old).is_some_and(|g| g > 0) {
            let meta = meta::metadata_mut(&mut marked);
            meta.insert("deletionTimestamp".into(), json!(meta::now_rfc3339()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
        }
        return Some(marked);
    }
    let meta = meta::metadata_mut(&mut marked);
    meta.insert("deletionTimestamp".into(), json!(meta::now_rfc3339()));
    meta.insert("deletionGracePeriodSeconds".into(), json!(0));
    if r.group.is_empty() && r.kind == "Namespace" {
        marked["status"]["phase"] = json!("Terminating");
    }
    Some(marked)
}

/// The grace period of an object being deleted (`deletionGracePeriodSeconds`).
fn grace_period(obj: &Value) -> Option<i64> {
    obj.pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
}

/// Does this update remove the last finalizer of an object whose deletion only waited for
/// them? An object still in its grace period (a pod its kubelet is stopping) stays until
/// the grace period's owner deletes it, as upstream's `shouldDeleteDuringUpdate`.
fn finalized_during_update(old: &Value, new: &Value) -> bool {
    meta::is_deleting(old)
        && !has_pending_finalizers(new)
        && grace_period(old).is_none_or(|g| g == 0)
}

/// A running pod on a node is stopped by its kubelet first: it gets a grace period. Pods never
/// scheduled, already finished, or deleted with grace 0 go at once.
fn pod_grace_period(pod: &Value, opts: &DeleteOptions) -> Option<i64> {
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty() || phase == "Succeeded" || phase == "Failed" {
        return None;
    }
    let default = pod
        .pointer("/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(30);
    let grace = opts.grace_period_seconds.unwrap_or(default);
    (grace > 0).then_some(grace)
}

/// Finalizers in metadata, and for namespaces also those in spec.
fn has_pending_finalizers(obj: &Value) -> bool {
    let spec_finalizers = obj
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
        && obj.get("kind").and_then(Value::as_str) == Some("Namespace");
    !meta::finalizers(obj).is_empty() || spec_finalizers
}

/// While an object is being deleted, finalizers may only be removed, never added.
fn check_finalizer_rules(old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    if !meta::is_deleting(old) {
        return;
    }
    let before = meta::finalizers(old);
    for f in meta::finalizers(new) {
        if !before.contains(&f) {
            causes.push(Cause::forbidden("metadata.finalizers", &format!("no new finalizers can be added if the object is being deleted, found new finalizers [\"{f}\"]")));
        }
    }
}

/// Builds the stored object of an update from the old one and the client's proposal.
fn merge_update(r: &Resource, old: &Value, proposed: Value, part: Part) -> ApiResult<Value> {
    let mut new = match part {
        // A signing request's spec never changes after create.
        Part::Main if certificates::is_csr(r.group, r.kind) => {
            let mut new = proposed;
            copy_field(old, &mut new, "spec");
            copy_field(old, &mut new, "status");
            new
        }
        Part::Status if certificates::is_csr(r.group, r.kind) => {
            certificates::merge_status(old, &proposed)
        }
        Part::Approval => certificates::merge_approval(old, &proposed)?,
        Part::EphemeralContainers => super::ephemeral::merge(old, &proposed),
        Part::Main => {
            let mut new = proposed;
            if r.has_status {
                copy_field(old, &mut new, "status");
            }
            new
        }
        Part::Status => {
            let mut new = old.clone();
            copy_field(&proposed, &mut new, "status");
            new
        }
        Part::Finalize => {
            let mut new = old.clone();
            new["spec"]["finalizers"] = proposed
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or_else(|| json!([]));
            new
        }
    };
    // Fields the server owns come from the stored object whatever the client sent.
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let meta = meta::metadata_mut(&mut new);
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "name",
        "namespace",
    ] {
        match old_meta.get(field) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
    meta.remove("resourceVersion");
    if r.group.is_empty() && r.kind == "Service" {
        keep_service_allocations(old, &mut new)?;
        if part == Part::Main {
            services::prepare_update(old, &mut new)?;
        }
    }
    if kinds::tracks_generation(r) && spec_changed(old, &new) {
        let generation = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        meta::metadata_mut(&mut new).insert("generation".into(), json!(generation));
    }
    Ok(new)
}

/// Makes `to[field]` what `from[field]` is, absent included.
fn copy_field(from: &Value, to: &mut Value, field: &str) {
    match from.get(field) {
        Some(v) => to[field] = v.clone(),
        None => {
            if let Some(o) = to.as_object_mut() {
                o.remove(field);
            }
        }
    }
}

/// A service keeps its cluster IP and node ports: unset in an update means "unchanged", a
/// different value is refused (upstream: the field is immutable).
fn keep_service_allocations(old: &Value, new: &mut Value) -> ApiResult<()> {
    let name = meta::name(old).to_string();
    let old_ip = old
        .pointer("/spec/clusterIP")
        .cloned()
        .unwrap_or(Value::Null);
    match new.pointer("/spec/clusterIP").and_then(Value::as_str) {
        None | Some("") => {
            new["spec"]["clusterIP"] = old_ip.clone();
            new["spec"]["clusterIPs"] = old
                .pointer("/spec/clusterIPs")
                .cloned()
                .unwrap_or(Value::Null);
        }
        Some(ip) if Some(ip) == old_ip.as_str() => {}
        // An ExternalName service had none: the update asks for one (claimed with the rest).
        Some(_) if old_ip.as_str().unwrap_or("").is_empty() => {}
        Some(ip) => {
            let cause = Cause::invalid("spec.clusterIPs[0]", ip, "may not change once set");
            return Err(ApiError::invalid("", "Service", &name, vec![cause]));
        }
    }
    for key in [
        "ipFamilies",
        "ipFamilyPolicy",
        "type",
        "sessionAffinity",
        "internalTrafficPolicy",
    ] {
        if new.pointer(&format!("/spec/{key}")).is_none() {
            if let Some(v) = old.pointer(&format!("/spec/{key}")) {
                new["spec"][key] = v.clone();
            }
        }
    }
    let old_ports = old
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut() {
            let same = old_ports
                .iter()
                .find(|p| p.get("port") == port.get("port") && p.get("name") == port.get("name"));
            if let Some(old_port) = same {
                for key in ["nodePort", "protocol", "targetPort"] {
                    if port.get(key).is_none() {
                        if let Some(v) = old_port.get(key) {
                            port[key] = v.clone();
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Did anything outside metadata and status change?
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("metadata");
            o.remove("status");
        }
        v
    };
    strip(old) != strip(new)
}

fn without_resource_version(obj: &Value) -> Value {
    let mut obj = obj.clone();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    obj
}

fn namespaces_resource() -> &'static Resource {
    resources::find("", "v1", "namespaces").expect("namespaces are always served")
}

fn resource_quotas_resource() -> &'static Resource {
    resources::find("", "v1", "resourcequotas").expect("resource quotas are always served")
}

/// `generateName` plus five characters from upstream's alphabet (no vowels, no look-alikes).
fn generated_name(prefix: &str) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    let max_prefix = 63 - 5;
    let prefix = if prefix.len() > max_prefix {
        &prefix[..max_prefix]
    } else {
        prefix
    };
    format!("{prefix}{suffix}")
}

pub fn decode(raw: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(raw)
        .map_err(|e| ApiError::internal(format!("stored object is not valid JSON: {e}")))
}

/// The stored bytes of `obj` at `revision`: the revision becomes its resourceVersion.
#[cfg(test)]
fn encode_at(mut obj: Value, revision: u64) -> Vec<u8> {
    meta::set_resource_version(&mut obj, revision);
    serde_json::to_vec(&obj).unwrap_or_default()
}

pub fn encode_value_at(mut obj: Value, revision: u64) -> Value {
    meta::set_resource_version(&mut obj, revision);
    obj
}

pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Compacted { compacted } => ApiError::gone(format!(
            "too old resource version (oldest available: {compacted})"
        )),
        // 507 tells the client the write may succeed later, once the disk has room again.
        full if full.is_no_space() => {
            ApiError::new(507, "InsufficientStorage", format!("storage error: {full}"))
        }
        other => ApiError::internal(format!("storage error: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A patch carries the resourceVersion of the object it was applied to. When another
    /// writer gets in between the read and the write, the patch must be applied again to the
    /// fresh object (as upstream's GuaranteedUpdate does), not answered with 409; an update
    /// that named the old resourceVersion itself still gets 409.
    #[tokio::test]
    async fn a_patch_racing_another_writer_is_retried_and_a_stale_update_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("s.redb"),
            crate::store::StoreOptions {
                history_revisions: 100,
                watch_buffer: 16,
            },
        )
        .unwrap();
        let network = ServiceNetwork::parse("10.43.0.0/16", (30000, 32767)).unwrap();
        let registry = Registry::new(store.clone(), network);
        let r = resources::find("", "v1", "configmaps").unwrap();
        let key = r.key("default", "cm");
        let object = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cm", "namespace": "default", "uid": "u1"}, "data": {"a": "1"}});
        store
            .create(&key, move |rev| encode_at(object, rev))
            .await
            .unwrap();

        // The first time the patch is applied, another writer changes the object first.
        let mut calls = 0;
        let patched = registry
            .update_with(r, "default", "cm", Part::Main, false, |old| {
                calls += 1;
                if calls == 1 {
                    let current = store.get(&key).unwrap().unwrap();
                    let mut other = decode(&current.value).unwrap();
                    other["data"]["b"] = json!("2");
                    let store = store.clone();
                    let key = key.clone();
                    std::thread::spawn(move || {
                        futures::executor::block_on(store.update(
                            &key,
                            current.mod_revision,
                            move |rev| encode_at(other, rev),
                        ))
                    })
                    .join()
                    .unwrap()
                    .unwrap();
                }
                let mut new = old.clone();
                new["data"]["c"] = json!("3");
                Ok(new)
            })
            .await
            .unwrap();
        assert_eq!(calls, 2, "applied again to the fresh object");
        assert_eq!(patched["data"], json!({"a": "1", "b": "2", "c": "3"}));

        // An update that names an old resourceVersion is refused.
        let stale = registry
            .update_with(r, "default", "cm", Part::Main, false, |old| {
                let mut new = old.clone();
                new["metadata"]["resourceVersion"] = json!("1");
                new["data"]["d"] = json!("4");
                Ok(new)
            })
            .await
            .unwrap_err();
        assert_eq!(stale.code, 409);
    }

    fn registry(dir: &tempfile::TempDir) -> Registry {
        let store = Store::open(&dir.path().join("s.redb"), Default::default()).unwrap();
        let network = ServiceNetwork::parse("10.43.0.0/16", (30000, 32767)).unwrap();
        Registry::new(store, network)
    }

    /// Creates a ConfigMap in `namespace`: the HTTP code of the refusal, 201 when created.
    async fn create_configmap(registry: &Registry, namespace: &str, name: &str) -> u16 {
        let r = resources::find("", "v1", "configmaps").unwrap();
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
        match registry.create(r, namespace, body, false).await {
            Ok(_) => 201,
            Err(e) => e.code,
        }
    }

    /// Namespaced creates read the namespace from a copy the store's watch keeps: every
    /// namespace write, acknowledged just before, must already show.
    #[tokio::test]
    async fn a_create_sees_the_namespace_as_its_last_acknowledged_write_left_it() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry(&dir);
        let ns = namespaces_resource();
        let namespace = |finalizers: Value| {
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"},
                "spec": {"finalizers": finalizers}})
        };
        assert_eq!(create_configmap(&registry, "team", "a").await, 404);
        registry
            .create(ns, "", namespace(json!(["kubernetes"])), false)
            .await
            .unwrap();
        assert_eq!(create_configmap(&registry, "team", "b").await, 201);
        let deleted = registry
            .delete(ns, "", "team", &DeleteOptions::default())
            .await
            .unwrap();
        assert!(
            matches!(deleted, Deleted::Marked(_)),
            "held by its finalizer"
        );
        let refused = registry
            .create(
                resources::find("", "v1", "configmaps").unwrap(),
                "team",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
                false,
            )
            .await
            .unwrap_err();
        assert_eq!(refused.code, 403);
        assert_eq!(
            refused.message,
            "unable to create new content in namespace team because it is being terminated"
        );
        registry
            .update_with(ns, "", "team", Part::Finalize, false, |old| {
                let mut new = old.clone();
                new["spec"]["finalizers"] = json!([]);
                Ok(new)
            })
            .await
            .unwrap();
        assert_eq!(create_configmap(&registry, "team", "d").await, 404);
        registry
            .create(ns, "", namespace(json!([])), false)
            .await
            .unwrap();
        assert_eq!(create_configmap(&registry, "team", "e").await, 201);
    }

    #[tokio::test]
    async fn a_resource_quota_counts_from_the_moment_its_write_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry(&dir);
        let quotas = resource_quotas_resource();
        assert!(!registry.has_resource_quotas("default").unwrap());
        let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "q", "namespace": "team"}, "spec": {"hard": {"pods": "1"}}});
        registry
            .store()
            .create(&quotas.key("team", "q"), move |rev| encode_at(quota, rev))
            .await
            .unwrap();
        assert!(registry.has_resource_quotas("team").unwrap());
        assert!(!registry.has_resource_quotas("tea").unwrap());
        assert!(!registry.has_resource_quotas("team-b").unwrap());
        registry
            .store()
            .delete(&quotas.key("team", "q"), None)
            .await
            .unwrap();
        assert!(!registry.has_resource_quotas("team").unwrap());
    }

    #[test]
    fn generated_names_keep_the_prefix_and_add_five_safe_characters() {
        let name = generated_name("web-");
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert!(name[4..]
            .bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));
    }

    #[test]
    fn update_keeps_server_owned_metadata_and_bumps_generation_on_spec_change() {
        let deploy = resources::find("apps", "v1", "deployments").unwrap();
        let old = json!({"metadata": {"name": "d", "uid": "u1", "generation": 1, "creationTimestamp": "t"}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let proposed = json!({"metadata": {"name": "d", "uid": "other", "labels": {"a": "b"}}, "spec": {"replicas": 2}, "status": {"replicas": 9}});
        let new = merge_update(deploy, &old, proposed, Part::Main).unwrap();
        assert_eq!(new["metadata"]["uid"], "u1");
        assert_eq!(new["metadata"]["generation"], 2);
        assert_eq!(
            new["status"]["replicas"], 1,
            "status comes from the stored object"
        );
        assert_eq!(new["metadata"]["labels"]["a"], "b");
    }

    #[test]
    fn status_updates_change_only_status() {
        let deploy = resources::find("apps", "v1", "deployments").unwrap();
        let old = json!({"metadata": {"name": "d", "generation": 3}, "spec": {"replicas": 1}});
        let proposed =
            json!({"metadata": {"name": "d"}, "spec": {"replicas": 5}, "status": {"replicas": 1}});
        let new = merge_update(deploy, &old, proposed, Part::Status).unwrap();
        assert_eq!(new["spec"]["replicas"], 1);
        assert_eq!(new["status"]["replicas"], 1);
        assert_eq!(new["metadata"]["generation"], 3);
    }

    #[test]
    fn pods_on_a_node_get_a_grace_period_and_others_go_at_once() {
        let opts = DeleteOptions::default();
        let running = json!({"spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 10}, "status": {"phase": "Running"}});
        assert_eq!(pod_grace_period(&running, &opts), Some(10));
        let pending = json!({"spec": {}, "status": {"phase": "Pending"}});
        assert_eq!(pod_grace_period(&pending, &opts), None);
        let now = DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        assert_eq!(pod_grace_period(&running, &now), None);
    }

    #[test]
    fn finalizers_cannot_be_added_while_deleting() {
        let old = json!({"metadata": {"deletionTimestamp": "t", "finalizers": ["a"]}});
        let new = json!({"metadata": {"deletionTimestamp": "t", "finalizers": ["a", "b"]}});
        let mut causes = Vec::new();
        check_finalizer_rules(&old, &new, &mut causes);
        assert_eq!(causes.len(), 1);
    }

    #[test]
    fn losing_the_last_finalizer_deletes_an_object_unless_its_grace_period_runs() {
        let deleting = |grace: Value| {
            json!({"metadata": {"deletionTimestamp": "t", "deletionGracePeriodSeconds": grace,
                "finalizers": ["batch.kubernetes.io/job-tracking"]}})
        };
        let released = |old: &Value| {
            let mut new = old.clone();
            new["metadata"]["finalizers"] = json!([]);
            new
        };
        // A pod its kubelet is still stopping stays until the kubelet deletes it.
        let stopping = deleting(json!(20));
        assert!(!finalized_during_update(&stopping, &released(&stopping)));
        for grace in [json!(0), Value::Null] {
            let held = deleting(grace);
            assert!(finalized_during_update(&held, &released(&held)));
            assert!(!finalized_during_update(&held, &held));
        }
        let alive = json!({"metadata": {"finalizers": ["a"]}});
        assert!(!finalized_during_update(&alive, &released(&alive)));
    }

    #[test]
    fn a_delete_without_grace_ends_the_grace_period_of_a_pod_finalizers_hold() {
        let pods = resources::find("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"name": "p", "deletionTimestamp": "2030-01-01T00:00:20Z",
                "deletionGracePeriodSeconds": 20, "finalizers": ["f"]},
            "spec": {"nodeName": "n"}, "status": {"phase": "Running"}});
        let now = DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        let marked = mark_for_deletion(pods, &pod, &now).unwrap();
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 0);
        assert_ne!(
            marked["metadata"]["deletionTimestamp"],
            "2030-01-01T00:00:20Z"
        );
        // A longer grace period than the one running changes nothing.
        let later = DeleteOptions {
            grace_period_seconds: Some(30),
            ..Default::default()
        };
        assert_eq!(mark_for_deletion(pods, &pod, &later), Some(pod));
    }

    #[test]
    fn namespaces_with_spec_finalizers_are_marked_terminating() {
        let ns = namespaces_resource();
        let old = json!({"kind": "Namespace", "metadata": {"name": "x"}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        let marked = mark_for_deletion(ns, &old, &DeleteOptions::default()).unwrap();
        assert_eq!(marked["status"]["phase"], "Terminating");
        assert!(meta::is_deleting(&marked));
        let done =
            json!({"kind": "Namespace", "metadata": {"name": "x"}, "spec": {"finalizers": []}});
        assert!(mark_for_deletion(ns, &done, &DeleteOptions::default()).is_none());
    }
}
