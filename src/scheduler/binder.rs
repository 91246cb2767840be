//! Writes the scheduler's decisions to the API off the scheduling path, as upstream's binding
//! cycle does: a binding (and its `Scheduled` event), a `FailedScheduling` report, run as tasks
//! while the next pods are decided. The pod stays assumed on its node meanwhile; a binding that
//! fails hands its pod back, so the scheduler forgets the assumption and tries again.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{EventType, Recorder, Reporter};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::SCHEDULER_NAME;

/// Writes in flight at once: enough for the store to commit many together, few enough that a
/// burst of thousands of pods does not queue thousands of requests in the API server.
const WRITE_PARALLELISM: usize = 32;

pub struct Binder {
    client: kube::Client,
    recorder: Recorder,
    slots: Arc<Semaphore>,
    /// Each task ends with the uid of a pod whose binding did not happen, or None. Dropping the
    /// set (the scheduler stopping) aborts what is still in flight.
    tasks: JoinSet<Option<String>>,
}

impl Binder {
    pub fn new(client: kube::Client) -> Binder {
        let recorder = Recorder::new(client.clone(), Reporter::from(SCHEDULER_NAME));
        Binder {
            client,
            recorder,
            slots: Arc::new(Semaphore::new(WRITE_PARALLELISM)),
            tasks: JoinSet::new(),
        }
    }

    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Starts binding `pod` to `node`.
    pub fn bind(&mut self, pod: Arc<Pod>, node: String) {
        let (client, recorder, slots) = self.parts();
        self.tasks.spawn(async move {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let bound = {
                let _slot = slots.acquire_owned().await;
                bind(&client, &pod, &node).await
            };
            match bound {
                Ok(true) => {
                    let (namespace, name) = names(&pod);
                    publish(
                        &recorder,
                        &pod,
                        EventType::Normal,
                        "Scheduled",
                        format!("Successfully assigned {namespace}/{name} to {node}"),
                    )
                    .await;
                    None
                }
                Ok(false) => Some(uid),
                Err(error) => {
                    tracing::warn!(%error, pod = ?pod.metadata.name, "binding failed");
                    Some(uid)
                }
            }
        });
    }

    /// Starts recording that `pod` fits nowhere: a `FailedScheduling` event and the
    /// `PodScheduled=False` condition.
    pub fn report_unschedulable(&mut self, pod: Arc<Pod>, message: String) {
        let (client, recorder, slots) = self.parts();
        self.tasks.spawn(async move {
            let _slot = slots.acquire_owned().await;
            publish(
                &recorder,
                &pod,
                EventType::Warning,
                "FailedScheduling",
                message.clone(),
            )
            .await;
            if let Err(error) = set_unschedulable_condition(&client, &pod, &message).await {
                tracing::debug!(%error, "cannot record an unschedulable pod");
            }
            None
        });
    }

    /// The uid of the next pod whose binding failed; pends while none does (cancel-safe, so it
    /// can wait in a `select!`).
    pub async fn next_failure(&mut self) -> String {
        loop {
            match self.tasks.join_next().await {
                Some(Ok(Some(uid))) => return uid,
                Some(_) => continue,
                None => std::future::pending().await,
            }
        }
    }

    fn parts(&self) -> (kube::Client, Recorder, Arc<Semaphore>) {
        (
            self.client.clone(),
            self.recorder.clone(),
            self.slots.clone(),
        )
    }
}

fn names(pod: &Pod) -> (&str, &str) {
    (
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or(""),
    )
}

pub fn pod_reference(pod: &Pod) -> ObjectReference {
    crate::controllers::common::object_reference("v1", "Pod", &pod.metadata)
}

async fn publish(recorder: &Recorder, pod: &Pod, type_: EventType, reason: &str, note: String) {
    crate::controllers::common::publish(recorder, &pod_reference(pod), type_, reason, note).await;
}

/// POSTs the Binding; false if the pod went away or was bound by someone else meanwhile.
async fn bind(client: &kube::Client, pod: &Pod, node: &str) -> Result<bool, kube::Error> {
    let (Some(name), Some(namespace)) = (&pod.metadata.name, &pod.metadata.namespace) else {
        return Ok(false);
    };
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            ..Default::default()
        },
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sets `PodScheduled=False/Unschedulable` with `message`, unless the pod says so already;
/// the transition time stays while the condition stays False.
async fn set_unschedulable_condition(
    client: &kube::Client,
    pod: &Pod,
    message: &str,
) -> Result<(), kube::Error> {
    let (Some(name), Some(namespace)) = (&pod.metadata.name, &pod.metadata.namespace) else {
        return Ok(());
    };
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let previous = current.iter().find(|c| c.type_ == "PodScheduled");
    if previous.is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
            && c.message.as_deref() == Some(message)
    }) {
        return Ok(());
    }
    let now = crate::api::meta::now_rfc3339();
    let transition = previous
        .filter(|c| c.status == "False")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or(now);
    let mut conditions: Vec<serde_json::Value> = current
        .iter()
        .filter(|c| c.type_ != "PodScheduled")
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    conditions.push(json!({
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": transition,
    }));
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let body = json!({"status": {"conditions": conditions}});
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
