//! Pod garbage collection, as upstream's podgc controller: finished pods beyond a threshold
//! are deleted oldest first, pods bound to a Node that no longer exists are deleted, and so are
//! pods being deleted that were never scheduled (no kubelet will ever confirm them).

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Preconditions};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub period: Duration,
    /// Finished pods kept; 0 turns that part off, as upstream.
    pub terminated_threshold: usize,
}

/// Runs the collector until the process ends.
pub async fn run(client: kube::Client, settings: Settings) {
    loop {
        tokio::time::sleep(settings.period).await;
        if let Err(error) = collect(&client, settings).await {
            tracing::warn!(%error, "pod garbage collection failed; retrying");
        }
    }
}

async fn collect(client: &kube::Client, settings: Settings) -> Result<(), Error> {
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let all = pods.list(&ListParams::default()).await?.items;
    for pod in terminated_over_threshold(&all, settings.terminated_threshold) {
        tracing::info!(pod = ?pod.metadata.name, "deleting a finished pod over the threshold");
        force_delete(client, pod).await?;
    }
    for pod in unscheduled_terminating(&all) {
        force_delete(client, pod).await?;
    }
    let known: BTreeSet<String> = nodes
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for pod in orphaned(&all, &known) {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("");
        // The node list may predate a node's registration: ask once more before deleting.
        if nodes.get_opt(node).await?.is_some() {
            continue;
        }
        tracing::info!(pod = ?pod.metadata.name, %node, "deleting a pod whose node is gone");
        super::common::mark_disruption_target(
            client,
            pod,
            "DeletionByPodGC",
            "PodGC: node no longer exists",
            true,
        )
        .await?;
        force_delete(client, pod).await?;
    }
    Ok(())
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// The oldest finished pods beyond `threshold` (none when the threshold is 0).
pub fn terminated_over_threshold(pods: &[Pod], threshold: usize) -> Vec<&Pod> {
    if threshold == 0 {
        return Vec::new();
    }
    let mut finished: Vec<&Pod> = pods
        .iter()
        .filter(|p| matches!(phase(p), Some("Succeeded" | "Failed")))
        .collect();
    if finished.len() <= threshold {
        return Vec::new();
    }
    finished.sort_by(|a, b| {
        let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        created(a)
            .cmp(&created(b))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    let excess = finished.len() - threshold;
    finished.truncate(excess);
    finished
}

/// Pods bound to a node not in `nodes`.
pub fn orphaned<'a>(pods: &'a [Pod], nodes: &BTreeSet<String>) -> Vec<&'a Pod> {
    pods.iter()
        .filter(|p| {
            let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref());
            node.is_some_and(|n| !n.is_empty() && !nodes.contains(n))
        })
        .collect()
}

/// Pods being deleted that no node ever took.
pub fn unscheduled_terminating(pods: &[Pod]) -> Vec<&Pod> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_none_or(str::is_empty)
        })
        .collect()
}

/// Deletes with no grace period: nobody is left to stop the pod's containers gracefully.
async fn force_delete(client: &kube::Client, pod: &Pod) -> Result<(), Error> {
    let (Some(name), Some(namespace)) = (&pod.metadata.name, &pod.metadata.namespace) else {
        return Ok(());
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match pods.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, phase: &str, created: &str, node: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
            "spec": {"containers": [], "nodeName": node},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    fn names(pods: Vec<&Pod>) -> Vec<&str> {
        pods.into_iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect()
    }

    #[test]
    fn finished_pods_over_the_threshold_go_oldest_first_and_running_ones_never() {
        let pods = [
            pod("new", "Succeeded", "2026-01-01T00:03:00Z", None),
            pod("running", "Running", "2026-01-01T00:00:00Z", None),
            pod("old", "Failed", "2026-01-01T00:01:00Z", None),
            pod("mid", "Succeeded", "2026-01-01T00:02:00Z", None),
        ];
        assert_eq!(
            names(terminated_over_threshold(&pods, 1)),
            vec!["old", "mid"]
        );
        assert_eq!(
            names(terminated_over_threshold(&pods, 3)),
            Vec::<&str>::new()
        );
        assert_eq!(
            names(terminated_over_threshold(&pods, 0)),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn pods_on_nodes_that_no_longer_exist_are_orphans() {
        let pods = [
            pod("here", "Running", "2026-01-01T00:00:00Z", Some("a")),
            pod("gone", "Running", "2026-01-01T00:00:00Z", Some("b")),
            pod("pending", "Pending", "2026-01-01T00:00:00Z", None),
        ];
        let nodes = BTreeSet::from(["a".to_string()]);
        assert_eq!(names(orphaned(&pods, &nodes)), vec!["gone"]);
    }

    #[test]
    fn only_unscheduled_pods_being_deleted_are_collected() {
        let mut deleting = pod("d", "Pending", "2026-01-01T00:00:00Z", None);
        deleting.metadata.deletion_timestamp = deleting.metadata.creation_timestamp.clone();
        let mut bound = pod("b", "Running", "2026-01-01T00:00:00Z", Some("a"));
        bound.metadata.deletion_timestamp = bound.metadata.creation_timestamp.clone();
        let pods = [
            deleting,
            bound,
            pod("p", "Pending", "2026-01-01T00:00:00Z", None),
        ];
        assert_eq!(names(unscheduled_terminating(&pods)), vec!["d"]);
    }
}
