//! Admission: plugins that may change (mutating phase) or refuse (validating phase) a write after
//! the registry has defaulted it and before it is stored, as kube-apiserver's admission chain.
//!
//! The registry runs the chain inside its guaranteed-update loop, so a plugin sees the object that
//! is about to be written (a patch already applied, defaults set) and the stored one it replaces.
//! Plugins register at start (`Registry::admission().register(..)`); with none registered a write
//! pays one read-lock and nothing else.
//!
//! Who is writing comes from the request: the API server runs each resource request inside
//! [`as_user`], so a plugin can ask [`current_user`] without the user being threaded through every
//! registry call. Writes made by berth itself outside a request have no user.

pub mod builtin;
pub mod cel_request;
pub mod default_toleration_seconds;
pub mod limit_range;
pub mod pod_security;
pub mod policy;
pub mod priority;
pub mod quota;
pub mod quota_ledger;
pub mod resource_quota;
pub mod service_account;
pub mod warnings;
pub mod webhook;

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde_json::Value;

use crate::api::resources::Resource;
use crate::api::ApiResult;
use crate::apiserver::authn::UserInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    /// The name admission webhooks and policies use (`CREATE`, `UPDATE`, `DELETE`).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

/// What is being written, and by whom.
pub struct Attributes<'a> {
    pub operation: Operation,
    pub resource: &'static Resource,
    /// `status`, `finalize`, ... or `None` for the object itself.
    pub subresource: Option<&'static str>,
    pub namespace: &'a str,
    pub name: &'a str,
    /// The stored object an update or delete replaces.
    pub old: Option<&'a Value>,
    pub dry_run: bool,
    pub user: Option<UserInfo>,
}

/// One admission plugin. Both phases default to admitting unchanged, so a plugin implements only
/// the phase it needs; each should return early for resources it does not care about.
#[async_trait]
pub trait Plugin: Send + Sync {
    /// For logs and error messages.
    fn name(&self) -> &'static str;

    /// May change `object` (create and update only).
    async fn mutate(&self, _attributes: &Attributes<'_>, _object: &mut Value) -> ApiResult<()> {
        Ok(())
    }

    /// May refuse the write. `object` is `None` for a delete.
    async fn validate(
        &self,
        _attributes: &Attributes<'_>,
        _object: Option<&Value>,
    ) -> ApiResult<()> {
        Ok(())
    }

    /// The registry is done with the create of the object with this uid: it is stored, or it
    /// never will be. For a plugin that holds something for a create it admitted.
    fn settled(&self, _uid: &str) {}
}

/// The registered plugins, run in registration order (all mutating ones first, then all
/// validating ones, as upstream).
#[derive(Clone, Default)]
pub struct Chain {
    /// Replaced whole on (rare) registration, so that taking a snapshot on every write is one
    /// reference count instead of a vector and one count per plugin.
    plugins: Arc<RwLock<Arc<[Arc<dyn Plugin>]>>>,
}

impl Chain {
    pub fn register(&self, plugin: Arc<dyn Plugin>) {
        if let Ok(mut plugins) = self.plugins.write() {
            *plugins = plugins.iter().cloned().chain([plugin]).collect();
        }
    }

    /// A snapshot, so no lock is held across a plugin's await.
    fn snapshot(&self) -> Arc<[Arc<dyn Plugin>]> {
        self.plugins
            .read()
            .map(|p| Arc::clone(&p))
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.read().map(|p| p.is_empty()).unwrap_or(true)
    }

    pub async fn mutate(&self, attributes: &Attributes<'_>, object: &mut Value) -> ApiResult<()> {
        for plugin in self.snapshot().iter() {
            plugin.mutate(attributes, object).await?;
        }
        Ok(())
    }

    pub async fn validate(
        &self,
        attributes: &Attributes<'_>,
        object: Option<&Value>,
    ) -> ApiResult<()> {
        for plugin in self.snapshot().iter() {
            plugin.validate(attributes, object).await?;
        }
        Ok(())
    }
}

impl Chain {
    /// Tells every plugin, when dropped, that the create of `uid` is settled. The registry
    /// holds one from admission until its create returns, whichever way it returns (a refusal
    /// further on, a store error, a cancelled request).
    pub fn settling(&self, uid: &str) -> Settling {
        Settling {
            chain: self.clone(),
            uid: uid.to_string(),
        }
    }
}

pub struct Settling {
    chain: Chain,
    uid: String,
}

impl Drop for Settling {
    fn drop(&mut self) {
        for plugin in self.chain.snapshot().iter() {
            plugin.settled(&self.uid);
        }
    }
}

tokio::task_local! {
    static REQUEST_USER: UserInfo;
}

/// Runs `work` (a request's handling) with `user` as the writer admission plugins see.
pub async fn as_user<F: std::future::Future>(user: UserInfo, work: F) -> F::Output {
    REQUEST_USER.scope(user, work).await
}

/// The user of the request being handled, if any.
pub fn current_user() -> Option<UserInfo> {
    REQUEST_USER.try_with(|u| u.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiError;
    use serde_json::json;

    struct AddLabel;

    #[async_trait]
    impl Plugin for AddLabel {
        fn name(&self) -> &'static str {
            "AddLabel"
        }
        async fn mutate(&self, _: &Attributes<'_>, object: &mut Value) -> ApiResult<()> {
            object["metadata"]["labels"]["admitted"] = json!("yes");
            Ok(())
        }
    }

    struct RefuseAnonymousWriters;

    #[async_trait]
    impl Plugin for RefuseAnonymousWriters {
        fn name(&self) -> &'static str {
            "RefuseAnonymousWriters"
        }
        async fn validate(&self, a: &Attributes<'_>, _: Option<&Value>) -> ApiResult<()> {
            match &a.user {
                Some(_) => Ok(()),
                None => Err(ApiError::forbidden("no user")),
            }
        }
    }

    fn attributes(user: Option<UserInfo>) -> Attributes<'static> {
        Attributes {
            operation: Operation::Create,
            resource: crate::api::resources::find("", "v1", "configmaps").expect("configmaps"),
            subresource: None,
            namespace: "default",
            name: "x",
            old: None,
            dry_run: false,
            user,
        }
    }

    #[tokio::test]
    async fn mutating_plugins_change_the_object_and_validating_ones_can_refuse() {
        let chain = Chain::default();
        assert!(chain.is_empty());
        chain.register(Arc::new(AddLabel));
        chain.register(Arc::new(RefuseAnonymousWriters));
        let mut obj = json!({"metadata": {"name": "x"}});
        chain
            .mutate(&attributes(None), &mut obj)
            .await
            .expect("mutate");
        assert_eq!(obj["metadata"]["labels"]["admitted"], "yes");
        let refused = chain.validate(&attributes(None), Some(&obj)).await;
        assert_eq!(refused.map_err(|e| e.code), Err(403));
        let user = UserInfo::anonymous();
        assert!(chain
            .validate(&attributes(Some(user)), Some(&obj))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn the_request_user_is_visible_only_inside_its_scope() {
        assert_eq!(current_user(), None);
        let seen = as_user(UserInfo::anonymous(), async { current_user() }).await;
        assert_eq!(seen, Some(UserInfo::anonymous()));
    }
}
