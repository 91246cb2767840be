//! The Node object of this machine: registration, status, and the Lease heartbeat.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};

/// How often the Lease is renewed; the node lifecycle controller reads it as the heartbeat.
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
const LEASE_SECONDS: i32 = 40;
/// Status is re-posted this often even when nothing changed, as upstream's report frequency.
const STATUS_REPORT: Duration = Duration::from_secs(60);

/// What this node tells the cluster about itself.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub name: String,
    pub addresses: Vec<(String, String)>,
    pub cpus: u64,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
    pub max_pods: u64,
    pub reserved_cpu_millis: u64,
    pub reserved_memory_bytes: u64,
    pub kernel: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
    pub pod_cidr: Option<String>,
    /// The port of the node's kubelet API, published so the API server can reach it.
    pub kubelet_port: Option<u16>,
}

impl NodeFacts {
    /// Reads the facts of the machine we run on.
    pub fn gather(
        name: &str,
        data_dir: &Path,
        addresses: Vec<(String, String)>,
        pod_cidr: Option<String>,
    ) -> NodeFacts {
        let uname = nix::sys::utsname::uname().ok();
        NodeFacts {
            name: name.to_string(),
            addresses,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
            memory_bytes: meminfo_total().unwrap_or(0),
            ephemeral_storage_bytes: filesystem_size(data_dir).unwrap_or(0),
            max_pods: 110,
            reserved_cpu_millis: 0,
            reserved_memory_bytes: 0,
            kernel: uname
                .as_ref()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            os_image: os_pretty_name().unwrap_or_else(|| "Linux".into()),
            machine_id: read_trimmed("/etc/machine-id"),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            pod_cidr,
            kubelet_port: None,
        }
    }

    /// The Node object as registered (spec and labels; status is separate).
    pub fn node(&self) -> Node {
        let labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), self.name.clone()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            (
                "kubernetes.io/arch".to_string(),
                crate::apiserver::discovery::go_arch().to_string(),
            ),
            ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
            (
                "beta.kubernetes.io/arch".to_string(),
                crate::apiserver::discovery::go_arch().to_string(),
            ),
            (
                "node-role.kubernetes.io/control-plane".to_string(),
                "true".to_string(),
            ),
        ]);
        Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(labels),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::core::v1::NodeSpec {
                pod_cidr: self.pod_cidr.clone(),
                pod_cidrs: self.pod_cidr.clone().map(|c| vec![c]),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// The node's status at `now`.
    pub fn status(&self, now: &Time, ready: bool) -> NodeStatus {
        let capacity = BTreeMap::from([
            ("cpu".to_string(), Quantity(self.cpus.to_string())),
            (
                "memory".to_string(),
                Quantity(format!("{}Ki", self.memory_bytes / 1024)),
            ),
            (
                "ephemeral-storage".to_string(),
                Quantity(format!("{}Ki", self.ephemeral_storage_bytes / 1024)),
            ),
            ("pods".to_string(), Quantity(self.max_pods.to_string())),
        ]);
        let allocatable_cpu = (self.cpus * 1000).saturating_sub(self.reserved_cpu_millis);
        let allocatable_memory = self.memory_bytes.saturating_sub(self.reserved_memory_bytes);
        let allocatable = BTreeMap::from([
            ("cpu".to_string(), Quantity(format!("{allocatable_cpu}m"))),
            (
                "memory".to_string(),
                Quantity(format!("{}Ki", allocatable_memory / 1024)),
            ),
            (
                "ephemeral-storage".to_string(),
                Quantity(format!("{}Ki", self.ephemeral_storage_bytes / 1024)),
            ),
            ("pods".to_string(), Quantity(self.max_pods.to_string())),
        ]);
        let condition = |type_: &str, status: bool, reason: &str, message: &str| NodeCondition {
            type_: type_.to_string(),
            status: if status { "True" } else { "False" }.to_string(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(now.clone()),
        };
        NodeStatus {
            addresses: Some(
                self.addresses
                    .iter()
                    .map(|(t, a)| NodeAddress {
                        type_: t.clone(),
                        address: a.clone(),
                    })
                    .collect(),
            ),
            capacity: Some(capacity),
            allocatable: Some(allocatable),
            daemon_endpoints: self.kubelet_port.map(|port| {
                k8s_openapi::api::core::v1::NodeDaemonEndpoints {
                    kubelet_endpoint: Some(k8s_openapi::api::core::v1::DaemonEndpoint {
                        port: i32::from(port),
                    }),
                }
            }),
            // MemoryPressure, DiskPressure and PIDPressure are posted by the eviction manager,
            // which measures them (see `agent::eviction`).
            conditions: Some(vec![match ready {
                true => condition(
                    "Ready",
                    true,
                    "KubeletReady",
                    "kubelet is posting ready status",
                ),
                false => condition(
                    "Ready",
                    false,
                    "KubeletNotReady",
                    "container runtime is starting",
                ),
            }]),
            node_info: Some(NodeSystemInfo {
                architecture: crate::apiserver::discovery::go_arch().to_string(),
                boot_id: self.boot_id.clone(),
                container_runtime_version: format!("berth://{}", env!("CARGO_PKG_VERSION")),
                kernel_version: self.kernel.clone(),
                kube_proxy_version: String::new(),
                kubelet_version: format!("v1.35.0+berth-{}", env!("CARGO_PKG_VERSION")),
                machine_id: self.machine_id.clone(),
                operating_system: "linux".to_string(),
                os_image: self.os_image.clone(),
                system_uuid: self.machine_id.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// Registers the node (or adopts an existing object of the same name) and then keeps its status
/// and Lease fresh until the task is dropped.
pub async fn run(client: kube::Client, facts: NodeFacts) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes.create(&PostParams::default(), &facts.node()).await {
        Ok(_) => tracing::info!(node = %facts.name, "registered node"),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::info!(node = %facts.name, "node already registered")
        }
        Err(e) => return Err(e),
    }
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut last_status = std::time::Instant::now() - STATUS_REPORT;
    loop {
        // A failed heartbeat (a full disk refusing writes, say) is retried on the next tick, as
        // the kubelet does: ending the task would take all of berth down with it. The node
        // lifecycle controller marks a node Unknown when it missed heartbeats (a suspended
        // machine, an overloaded API): then say at once that we are back.
        if last_status.elapsed() >= STATUS_REPORT || !marked_ready(&nodes, &facts.name).await {
            match post_status(&nodes, &facts).await {
                Ok(()) => last_status = std::time::Instant::now(),
                Err(error) => tracing::warn!(%error, "cannot post the node status; will retry"),
            }
        }
        if let Err(error) = renew_lease(&leases, &facts.name).await {
            tracing::warn!(%error, "cannot renew the node lease; will retry");
        }
        tokio::time::sleep(LEASE_RENEW).await;
    }
}

async fn marked_ready(nodes: &Api<Node>, name: &str) -> bool {
    let Ok(node) = nodes.get(name).await else {
        return true;
    };
    let conditions = node.status.and_then(|s| s.conditions).unwrap_or_default();
    conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

async fn post_status(nodes: &Api<Node>, facts: &NodeFacts) -> Result<(), kube::Error> {
    let now = Time(jiff::Timestamp::now());
    let status = facts.status(&now, true);
    let patch = serde_json::json!({"status": status});
    // Strategic: conditions merge by type, so the eviction manager's pressure conditions stay.
    nodes
        .patch_status(
            &facts.name,
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await?;
    Ok(())
}

async fn renew_lease(leases: &Api<Lease>, node: &str) -> Result<(), kube::Error> {
    let now = MicroTime(jiff::Timestamp::now());
    let spec = LeaseSpec {
        holder_identity: Some(node.to_string()),
        lease_duration_seconds: Some(LEASE_SECONDS),
        renew_time: Some(now),
        ..Default::default()
    };
    let patch = serde_json::json!({"spec": spec});
    match leases
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(node.to_string()),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn meminfo_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn filesystem_size(path: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some(stat.blocks() as u64 * stat.fragment_size() as u64)
}

fn os_pretty_name() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    let line = text.lines().find(|l| l.starts_with("PRETTY_NAME="))?;
    Some(
        line.trim_start_matches("PRETTY_NAME=")
            .trim_matches('"')
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> NodeFacts {
        NodeFacts {
            name: "pi".into(),
            addresses: vec![
                ("InternalIP".into(), "10.0.0.2".into()),
                ("Hostname".into(), "pi".into()),
            ],
            cpus: 4,
            memory_bytes: 1 << 30,
            ephemeral_storage_bytes: 32 << 30,
            max_pods: 110,
            reserved_cpu_millis: 100,
            reserved_memory_bytes: 64 << 20,
            kernel: "6.1.0".into(),
            os_image: "Debian".into(),
            machine_id: "m".into(),
            boot_id: "b".into(),
            pod_cidr: Some("10.42.0.0/24".into()),
            kubelet_port: Some(10250),
        }
    }

    #[test]
    fn the_status_publishes_the_kubelet_port_for_the_api_server() {
        let now = Time(jiff::Timestamp::now());
        let status = facts().status(&now, true);
        let port = status
            .daemon_endpoints
            .and_then(|d| d.kubelet_endpoint)
            .map(|e| e.port);
        assert_eq!(port, Some(10250));
    }

    #[test]
    fn allocatable_subtracts_what_the_system_reserves() {
        let status = facts().status(&Time(jiff::Timestamp::UNIX_EPOCH), true);
        let allocatable = status.allocatable.unwrap();
        assert_eq!(allocatable["cpu"].0, "3900m");
        assert_eq!(
            allocatable["memory"].0,
            format!("{}Ki", ((1u64 << 30) - (64 << 20)) / 1024)
        );
        assert_eq!(status.capacity.unwrap()["pods"].0, "110");
    }

    #[test]
    fn a_ready_node_reports_kubelet_ready_and_no_pressure() {
        let status = facts().status(&Time(jiff::Timestamp::UNIX_EPOCH), true);
        let conditions = status.conditions.unwrap();
        let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("True", Some("KubeletReady"))
        );
        assert!(conditions
            .iter()
            .filter(|c| c.type_ != "Ready")
            .all(|c| c.status == "False"));
        assert!(status
            .node_info
            .unwrap()
            .container_runtime_version
            .starts_with("berth://"));
    }

    #[test]
    fn the_node_object_carries_well_known_labels_and_its_pod_cidr() {
        let node = facts().node();
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "pi");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(node.spec.unwrap().pod_cidr.as_deref(), Some("10.42.0.0/24"));
    }
}
