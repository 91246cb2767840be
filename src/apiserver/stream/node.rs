//! The node-local half of `pods/log`, `exec`, `attach` and `portforward`: what serving them
//! needs from the node that runs the pod. The API server serves its own node's pods with it;
//! an agent's kubelet API serves the agent's pods with it (see `agent::kubelet_api`), and the
//! API server proxies there (see `apiserver::kubelet_proxy`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::Value;

use crate::api::{ApiError, ApiResult};
use crate::runtime::ShimRuntime;

/// Reads pods by name: the store on the server, the API on an agent.
pub trait PodSource: Send + Sync {
    fn get<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, ApiResult<Value>>;
}

/// The node a pod's streams are served from.
#[derive(Clone)]
pub struct PodNode {
    pub runtime: ShimRuntime,
    /// The CRI log files of the node's containers.
    pub logs_dir: PathBuf,
    pub pods: Arc<dyn PodSource>,
}

impl PodNode {
    pub async fn pod(&self, namespace: &str, name: &str) -> ApiResult<Value> {
        self.pods.get(namespace, name).await
    }

    /// True while `container` of the pod has not terminated: a followed log and an attach
    /// end once it has (or once the pod is gone).
    pub async fn container_running(&self, namespace: &str, name: &str, container: &str) -> bool {
        match self.pods.get(namespace, name).await {
            Ok(pod) => container_not_terminated(&pod, container),
            Err(_) => false,
        }
    }
}

fn container_not_terminated(pod: &Value, container: &str) -> bool {
    [
        "containerStatuses",
        "initContainerStatuses",
        "ephemeralContainerStatuses",
    ]
    .iter()
    .flat_map(|k| pod["status"][k].as_array().into_iter().flatten())
    .find(|s| s["name"].as_str() == Some(container))
    .is_some_and(|s| s.pointer("/state/terminated").is_none())
}

/// A [`PodSource`] that answers repeated questions about one pod from a copy at most `ttl`
/// old: a followed log or an attach asks several times a second whether its container still
/// runs, which must not become as many API requests from an agent.
pub struct CachedPods<S> {
    inner: S,
    ttl: Duration,
    last: Mutex<Option<(String, String, Instant, Value)>>,
}

impl<S: PodSource> CachedPods<S> {
    pub fn new(inner: S, ttl: Duration) -> CachedPods<S> {
        CachedPods {
            inner,
            ttl,
            last: Mutex::new(None),
        }
    }

    fn cached(&self, namespace: &str, name: &str) -> Option<Value> {
        let last = self.last.lock().ok()?;
        match &*last {
            Some((ns, n, at, pod)) if ns == namespace && n == name && at.elapsed() < self.ttl => {
                Some(pod.clone())
            }
            _ => None,
        }
    }
}

impl<S: PodSource> PodSource for CachedPods<S> {
    fn get<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, ApiResult<Value>> {
        Box::pin(async move {
            if let Some(pod) = self.cached(namespace, name) {
                return Ok(pod);
            }
            let pod = self.inner.get(namespace, name).await?;
            if let Ok(mut last) = self.last.lock() {
                *last = Some((
                    namespace.to_string(),
                    name.to_string(),
                    Instant::now(),
                    pod.clone(),
                ));
            }
            Ok(pod)
        })
    }
}

/// Pods read from a kube client (an agent's view of the API).
pub struct ClientPods(pub kube::Client);

impl PodSource for ClientPods {
    fn get<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, ApiResult<Value>> {
        Box::pin(async move {
            let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
                kube::Api::namespaced(self.0.clone(), namespace);
            match pods.get(name).await {
                Ok(pod) => serde_json::to_value(pod)
                    .map_err(|e| ApiError::internal(format!("pod {namespace}/{name}: {e}"))),
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    Err(ApiError::not_found("", "pods", name))
                }
                Err(e) => Err(ApiError::unavailable(format!(
                    "cannot read pod {namespace}/{name}: {e}"
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(AtomicUsize);

    impl PodSource for Counting {
        fn get<'a>(&'a self, _: &'a str, name: &'a str) -> BoxFuture<'a, ApiResult<Value>> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { Ok(json!({"metadata": {"name": name}, "n": n})) })
        }
    }

    #[tokio::test]
    async fn a_pod_asked_for_again_within_the_ttl_is_not_fetched_again() {
        let pods = CachedPods::new(Counting(AtomicUsize::new(0)), Duration::from_secs(60));
        assert_eq!(pods.get("ns", "a").await.unwrap()["n"], 0);
        assert_eq!(pods.get("ns", "a").await.unwrap()["n"], 0);
        // Another pod is another question.
        assert_eq!(pods.get("ns", "b").await.unwrap()["n"], 1);
        assert_eq!(pods.inner.0.load(Ordering::SeqCst), 2);
        let fresh = CachedPods::new(Counting(AtomicUsize::new(0)), Duration::ZERO);
        fresh.get("ns", "a").await.unwrap();
        assert_eq!(fresh.get("ns", "a").await.unwrap()["n"], 1);
    }

    #[test]
    fn a_container_runs_until_its_status_says_terminated() {
        let pod = json!({"status": {"containerStatuses": [
            {"name": "a", "state": {"running": {}}},
            {"name": "b", "state": {"terminated": {"exitCode": 0}}}
        ]}});
        assert!(container_not_terminated(&pod, "a"));
        assert!(!container_not_terminated(&pod, "b"));
        assert!(!container_not_terminated(&pod, "missing"));
    }
}
