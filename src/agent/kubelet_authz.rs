//! Who may use the kubelet API, decided as upstream's kubelet does with
//! `--authorization-mode=Webhook`: a request is an action on this node's subresource
//! (`nodes/proxy` unless the path is `/stats`, `/metrics` or `/logs`), and the API server
//! answers a SubjectAccessReview about the caller. So the API server's kubelet client (in
//! `system:masters`) gets in, and a user the cluster's RBAC grants `nodes/proxy` does, while any
//! other holder of a cluster certificate gets a 403.
//!
//! Answers are cached as the kubelet's defaults: allowed for five minutes, denied for thirty
//! seconds, so an exec storm costs the API server one review.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use crate::api::{ApiError, ApiResult};
use crate::apiserver::authn::UserInfo;

const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);
/// A cache this full is emptied: callers of a kubelet are few, so it only fills under abuse.
const MAX_CACHED: usize = 1024;

/// What a request to the kubelet API asks to do to the node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeAction {
    pub verb: &'static str,
    pub subresource: &'static str,
}

/// Upstream's mapping from a kubelet request to the node subresource it needs.
pub fn action(method: &http::Method, path: &str) -> NodeAction {
    let verb = match *method {
        http::Method::POST => "create",
        http::Method::GET | http::Method::HEAD => "get",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "",
    };
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    let subresource = if under("/stats") {
        "stats"
    } else if under("/metrics") {
        "metrics"
    } else if under("/logs") {
        // "log", as the API's other log subresources (pods/log).
        "log"
    } else {
        "proxy"
    };
    NodeAction { verb, subresource }
}

/// Asks whether `user` may do `action` on node `node`: `(allowed, reason)`.
pub trait Reviewer: Send + Sync {
    fn review<'a>(
        &'a self,
        user: &'a UserInfo,
        node: &'a str,
        action: &'a NodeAction,
    ) -> BoxFuture<'a, ApiResult<(bool, String)>>;
}

/// Reviews through the API server's `subjectaccessreviews`, as the node.
pub struct ApiReviewer(pub kube::Client);

impl Reviewer for ApiReviewer {
    fn review<'a>(
        &'a self,
        user: &'a UserInfo,
        node: &'a str,
        action: &'a NodeAction,
    ) -> BoxFuture<'a, ApiResult<(bool, String)>> {
        Box::pin(async move {
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(user.name.clone()),
                    uid: Some(user.uid.clone()).filter(|u| !u.is_empty()),
                    groups: Some(user.groups.clone()),
                    resource_attributes: Some(ResourceAttributes {
                        verb: Some(action.verb.into()),
                        version: Some("v1".into()),
                        resource: Some("nodes".into()),
                        subresource: Some(action.subresource.into()),
                        name: Some(node.into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            let api: Api<SubjectAccessReview> = Api::all(self.0.clone());
            let answer = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| ApiError::internal(format!("Authorization error: {e}")))?;
            let status = answer.status.unwrap_or_default();
            Ok((status.allowed, status.reason.unwrap_or_default()))
        })
    }
}

type CacheKey = (String, Vec<String>, NodeAction);

/// The kubelet's authorizer: reviews, cached.
pub struct Authorizer {
    node: String,
    reviewer: Box<dyn Reviewer>,
    cache: Mutex<HashMap<CacheKey, (Instant, bool)>>,
}

impl Authorizer {
    pub fn new(node: String, reviewer: Box<dyn Reviewer>) -> Authorizer {
        Authorizer {
            node,
            reviewer,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Ok when `user` may make this request, else the 403 upstream's kubelet answers.
    pub async fn authorize(
        &self,
        user: &UserInfo,
        method: &http::Method,
        path: &str,
    ) -> ApiResult<()> {
        let action = action(method, path);
        let key = (user.name.clone(), user.groups.clone(), action.clone());
        let cached = self.cache.lock().ok().and_then(|cache| {
            cache
                .get(&key)
                .filter(|(until, _)| Instant::now() < *until)
                .map(|(_, allowed)| *allowed)
        });
        let allowed = match cached {
            Some(allowed) => allowed,
            None => {
                let (allowed, reason) = self.reviewer.review(user, &self.node, &action).await?;
                if !allowed {
                    tracing::debug!(user = %user.name, %reason, "kubelet API request denied");
                }
                let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
                if let Ok(mut cache) = self.cache.lock() {
                    if cache.len() >= MAX_CACHED {
                        cache.clear();
                    }
                    cache.insert(key, (Instant::now() + ttl, allowed));
                }
                allowed
            }
        };
        if allowed {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "Forbidden (user={}, verb={}, resource=nodes, subresource={})",
            user.name, action.verb, action.subresource
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn streams_need_nodes_proxy_and_logs_stats_metrics_their_own_subresources() {
        let get = &http::Method::GET;
        let post = &http::Method::POST;
        let proxy = |verb| NodeAction {
            verb,
            subresource: "proxy",
        };
        assert_eq!(action(post, "/exec/ns/p/uid/c"), proxy("create"));
        assert_eq!(action(get, "/exec/ns/p/uid/c"), proxy("get"));
        assert_eq!(action(get, "/containerLogs/ns/p/c"), proxy("get"));
        assert_eq!(action(post, "/portForward/ns/p"), proxy("create"));
        assert_eq!(action(get, "/logs/syslog").subresource, "log");
        assert_eq!(action(get, "/logs").subresource, "log");
        assert_eq!(action(get, "/stats/summary").subresource, "stats");
        assert_eq!(action(get, "/metrics").subresource, "metrics");
        // A prefix is a path segment, not a string prefix.
        assert_eq!(action(get, "/metricsx").subresource, "proxy");
        assert_eq!(action(&http::Method::DELETE, "/pods").verb, "delete");
    }

    /// Allows only `system:masters`, counting the reviews asked.
    struct Masters(Arc<AtomicUsize>);

    impl Reviewer for Masters {
        fn review<'a>(
            &'a self,
            user: &'a UserInfo,
            node: &'a str,
            action: &'a NodeAction,
        ) -> BoxFuture<'a, ApiResult<(bool, String)>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            assert_eq!((node, action.subresource), ("pi", "proxy"));
            let allowed = user.groups.iter().any(|g| g == "system:masters");
            Box::pin(async move { Ok((allowed, String::new())) })
        }
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[tokio::test]
    async fn a_denied_user_gets_a_403_and_answers_are_cached_per_user() {
        let asked = Arc::new(AtomicUsize::new(0));
        let authz = Authorizer::new("pi".into(), Box::new(Masters(asked.clone())));
        let get = http::Method::GET;
        let apiserver = user("kube-apiserver-kubelet-client", &["system:masters"]);
        let alice = user("alice", &["dev"]);
        for _ in 0..3 {
            authz
                .authorize(&apiserver, &get, "/containerLogs/ns/p/c")
                .await
                .unwrap();
            let denied = authz
                .authorize(&alice, &get, "/containerLogs/ns/p/c")
                .await
                .unwrap_err();
            assert_eq!(denied.code, 403);
            assert!(
                denied.message.contains("user=alice") && denied.message.contains("proxy"),
                "{}",
                denied.message
            );
        }
        assert_eq!(asked.load(Ordering::SeqCst), 2, "one review per user");
    }
}
