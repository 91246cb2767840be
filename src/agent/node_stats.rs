//! The kubelet's read-only node endpoints: `/stats/summary` (the Summary API, in upstream's
//! `stats/v1alpha1` shape), and the Prometheus texts `/metrics` (the kubelet's own series),
//! `/metrics/cadvisor` (per-container series as cAdvisor names them) and `/metrics/resource`
//! (what metrics-server scrapes). All are built from the cgroup rounds the metrics sampler
//! already takes for `metrics.k8s.io` ([`crate::metrics`]) and the node's pods: nothing is
//! read from the kernel per request but the filesystem's size.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::metrics::{Metrics, Point, Round};
use crate::runtime::stats::Usage;

/// Size and use of the filesystem holding the node's data dir (pods, images, logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub capacity_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

impl FsUsage {
    /// The filesystem of `path`, None if it cannot be read.
    pub fn of(path: &std::path::Path) -> Option<FsUsage> {
        let stat = nix::sys::statvfs::statvfs(path).ok()?;
        let block = stat.fragment_size() as u64;
        let capacity_bytes = stat.blocks() as u64 * block;
        let free_bytes = stat.blocks_free() as u64 * block;
        Some(FsUsage {
            capacity_bytes,
            available_bytes: stat.blocks_available() as u64 * block,
            used_bytes: capacity_bytes.saturating_sub(free_bytes),
            inodes: stat.files() as u64,
            inodes_free: stat.files_free() as u64,
        })
    }

    fn to_json(self, time: &str) -> Value {
        json!({
            "time": time,
            "availableBytes": self.available_bytes,
            "capacityBytes": self.capacity_bytes,
            "usedBytes": self.used_bytes,
            "inodesFree": self.inodes_free,
            "inodes": self.inodes,
            "inodesUsed": self.inodes.saturating_sub(self.inodes_free),
        })
    }
}

/// What the endpoints report on: one node's samples and the pods bound to it.
pub struct NodeView<'a> {
    pub node_name: &'a str,
    pub metrics: &'a Metrics,
    /// The node's pods as the API has them (`spec.nodeName` = this node).
    pub pods: &'a [Value],
    pub fs: Option<FsUsage>,
}

/// A container of a pod that the last round measured: cumulative usage, and the rate over the
/// last window when there is one.
struct Measured<'a> {
    name: &'a str,
    usage: Usage,
    rate: Option<Point>,
}

impl NodeView<'_> {
    fn latest(&self) -> Option<Round> {
        self.metrics.latest()
    }

    /// The spec's containers of `pod` measured in `round` (the shim's own cgroup is not one).
    fn measured<'p>(&self, round: &Round, pod: &'p Value) -> Vec<Measured<'p>> {
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        let Some(cgroups) = round.pods.get(uid) else {
            return Vec::new();
        };
        let rates = self.metrics.pod(uid).unwrap_or_default();
        spec_containers(pod)
            .filter_map(|name| {
                Some(Measured {
                    name,
                    usage: *cgroups.get(name)?,
                    rate: rates.get(name).copied(),
                })
            })
            .collect()
    }
}

fn spec_containers(pod: &Value) -> impl Iterator<Item = &str> {
    pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
}

fn running_containers(pod: &Value) -> usize {
    pod["status"]["containerStatuses"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter(|c| c["state"]["running"].is_object())
                .count()
        })
        .unwrap_or(0)
}

fn container_started_at<'a>(pod: &'a Value, name: &str) -> Option<&'a str> {
    pod["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)?["state"]["running"]["startedAt"]
        .as_str()
}

fn cpu_json(time: &str, usage: Usage, rate: Option<Point>) -> Value {
    let mut cpu = json!({"time": time, "usageCoreNanoSeconds": usage.cpu_ns});
    if let Some(rate) = rate {
        cpu["usageNanoCores"] = json!(rate.cpu_nanocores);
    }
    cpu
}

fn memory_json(time: &str, usage: Usage) -> Value {
    json!({"time": time, "workingSetBytes": usage.memory_working_set})
}

/// `/stats/summary`: the node and each of its measured pods.
pub fn summary(view: &NodeView) -> Value {
    let round = view.latest();
    let time = round
        .as_ref()
        .map(|r| r.at.to_string())
        .unwrap_or_else(|| jiff::Timestamp::now().to_string());
    let mut node = json!({"nodeName": view.node_name, "systemContainers": []});
    if let Some(usage) = round.as_ref().and_then(|r| r.node) {
        node["cpu"] = cpu_json(&time, usage, view.metrics.node());
        node["memory"] = memory_json(&time, usage);
    }
    if let Some(fs) = view.fs {
        node["fs"] = fs.to_json(&time);
        // Images live on the data dir's filesystem too.
        node["runtime"] = json!({"imageFs": fs.to_json(&time), "containerFs": fs.to_json(&time)});
    }
    let mut pods = Vec::new();
    for pod in view.pods {
        let measured = match &round {
            Some(round) => view.measured(round, pod),
            None => Vec::new(),
        };
        let meta = &pod["metadata"];
        let containers: Vec<Value> = measured
            .iter()
            .map(|m| {
                let mut c = json!({
                    "name": m.name,
                    "cpu": cpu_json(&time, m.usage, m.rate),
                    "memory": memory_json(&time, m.usage),
                });
                if let Some(started) = container_started_at(pod, m.name) {
                    c["startTime"] = json!(started);
                }
                c
            })
            .collect();
        let mut entry = json!({
            "podRef": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "containers": containers,
            "volume": [],
        });
        if let Some(start) = pod["status"]["startTime"].as_str() {
            entry["startTime"] = json!(start);
        }
        if !measured.is_empty() {
            let total = sum(measured.iter().map(|m| m.usage));
            let rate = measured
                .iter()
                .map(|m| m.rate)
                .collect::<Option<Vec<Point>>>()
                .map(|rates| Point {
                    cpu_nanocores: rates.iter().map(|r| r.cpu_nanocores).sum(),
                    memory_bytes: total.memory_working_set,
                    ..rates[0]
                });
            entry["cpu"] = cpu_json(&time, total, rate);
            entry["memory"] = memory_json(&time, total);
        }
        pods.push(entry);
    }
    json!({"node": node, "pods": pods})
}

fn sum(usages: impl Iterator<Item = Usage>) -> Usage {
    usages.fold(Usage::default(), |a, b| Usage {
        cpu_ns: a.cpu_ns + b.cpu_ns,
        memory_working_set: a.memory_working_set + b.memory_working_set,
    })
}

/// Prometheus text exposition: HELP/TYPE once per family, then its samples.
#[derive(Default)]
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64, at_ms: Option<i64>) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{key}=\"{}\"", escape_label(val));
            }
            self.0.push('}');
        }
        let _ = write!(self.0, " {value}");
        if let Some(at) = at_ms {
            let _ = write!(self.0, " {at}");
        }
        self.0.push('\n');
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn epoch_seconds(rfc3339: &str) -> Option<f64> {
    rfc3339
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second() as f64)
}

/// The Prometheus content type of the text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `/metrics/resource`: the series metrics-server scrapes, with the sample times.
pub fn resource_metrics(view: &NodeView) -> String {
    let mut out = Exposition::default();
    let round = view.latest();
    let at = round.as_ref().map(|r| r.at.as_millisecond());
    let node = round.as_ref().and_then(|r| r.node);
    out.family(
        "node_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
    );
    if let Some(node) = node {
        out.sample(
            "node_cpu_usage_seconds_total",
            &[],
            seconds(node.cpu_ns),
            at,
        );
    }
    out.family(
        "node_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the node in bytes",
    );
    if let Some(node) = node {
        let bytes = node.memory_working_set as f64;
        out.sample("node_memory_working_set_bytes", &[], bytes, at);
    }
    let measured: Vec<(&Value, Vec<Measured>)> = match &round {
        Some(round) => view
            .pods
            .iter()
            .map(|p| (p, view.measured(round, p)))
            .collect(),
        None => Vec::new(),
    };
    let names = |pod: &Value| {
        (
            pod["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            pod["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    };
    out.family(
        "container_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
    );
    for (pod, containers) in &measured {
        let (ns, name) = names(pod);
        for m in containers {
            let labels = [("container", m.name), ("namespace", &ns), ("pod", &name)];
            out.sample(
                "container_cpu_usage_seconds_total",
                &labels,
                seconds(m.usage.cpu_ns),
                at,
            );
        }
    }
    out.family(
        "container_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the container in bytes",
    );
    for (pod, containers) in &measured {
        let (ns, name) = names(pod);
        for m in containers {
            let labels = [("container", m.name), ("namespace", &ns), ("pod", &name)];
            let bytes = m.usage.memory_working_set as f64;
            out.sample("container_memory_working_set_bytes", &labels, bytes, at);
        }
    }
    out.family(
        "container_start_time_seconds",
        "gauge",
        "[STABLE] Start time of the container since unix epoch in seconds",
    );
    for (pod, containers) in &measured {
        let (ns, name) = names(pod);
        for m in containers {
            let Some(start) = container_started_at(pod, m.name).and_then(epoch_seconds) else {
                continue;
            };
            let labels = [("container", m.name), ("namespace", &ns), ("pod", &name)];
            out.sample("container_start_time_seconds", &labels, start, at);
        }
    }
    out.family(
        "pod_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
    );
    for (pod, containers) in measured.iter().filter(|(_, c)| !c.is_empty()) {
        let (ns, name) = names(pod);
        let total = sum(containers.iter().map(|m| m.usage));
        let labels = [("namespace", ns.as_str()), ("pod", &name)];
        out.sample(
            "pod_cpu_usage_seconds_total",
            &labels,
            seconds(total.cpu_ns),
            at,
        );
    }
    out.family(
        "pod_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the pod in bytes",
    );
    for (pod, containers) in measured.iter().filter(|(_, c)| !c.is_empty()) {
        let (ns, name) = names(pod);
        let total = sum(containers.iter().map(|m| m.usage));
        let labels = [("namespace", ns.as_str()), ("pod", &name)];
        let bytes = total.memory_working_set as f64;
        out.sample("pod_memory_working_set_bytes", &labels, bytes, at);
    }
    out.family(
        "resource_scrape_error",
        "gauge",
        "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
    );
    let failed = if round.is_some() { 0.0 } else { 1.0 };
    out.sample("resource_scrape_error", &[], failed, None);
    out.0
}

/// `/metrics/cadvisor`: per-container CPU and memory as cAdvisor names them, and the machine.
pub fn cadvisor_metrics(view: &NodeView) -> String {
    let mut out = Exposition::default();
    let round = view.latest();
    let at = round.as_ref().map(|r| r.at.as_millisecond());
    out.family("machine_cpu_cores", "gauge", "Number of logical CPU cores.");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    out.sample("machine_cpu_cores", &[], cores as f64, None);
    let measured: Vec<(&Value, Vec<Measured>)> = match &round {
        Some(round) => view
            .pods
            .iter()
            .map(|p| (p, view.measured(round, p)))
            .collect(),
        None => Vec::new(),
    };
    let series: [(&str, &str, &str, fn(&Usage) -> f64); 2] = [
        (
            "container_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed in seconds.",
            |u| seconds(u.cpu_ns),
        ),
        (
            "container_memory_working_set_bytes",
            "gauge",
            "Current working set in bytes.",
            |u| u.memory_working_set as f64,
        ),
    ];
    for (name, kind, help, value) in series {
        out.family(name, kind, help);
        for (pod, containers) in &measured {
            let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
            let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
            let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
            for m in containers {
                let id = format!(
                    "/{}/{}",
                    crate::runtime::cgroups::pod_cgroup_parent(uid),
                    m.name
                );
                let mut labels = vec![
                    ("container", m.name),
                    ("id", id.as_str()),
                    ("namespace", ns),
                    ("pod", pod_name),
                ];
                if name == "container_cpu_usage_seconds_total" {
                    labels.insert(1, ("cpu", "total"));
                }
                out.sample(name, &labels, value(&m.usage), at);
            }
        }
    }
    out.0
}

/// `/metrics`: the kubelet's own series about what it runs.
pub fn kubelet_metrics(view: &NodeView) -> String {
    let mut out = Exposition::default();
    out.family(
        "kubelet_node_name",
        "gauge",
        "[ALPHA] The node's name. The count is always 1.",
    );
    out.sample("kubelet_node_name", &[("node", view.node_name)], 1.0, None);
    let running: Vec<&Value> = view
        .pods
        .iter()
        .filter(|p| running_containers(p) > 0)
        .collect();
    out.family(
        "kubelet_running_pods",
        "gauge",
        "[ALPHA] Number of pods that have a running pod sandbox",
    );
    out.sample("kubelet_running_pods", &[], running.len() as f64, None);
    out.family(
        "kubelet_running_containers",
        "gauge",
        "[ALPHA] Number of containers currently running",
    );
    let containers: usize = view.pods.iter().map(running_containers).sum();
    out.sample(
        "kubelet_running_containers",
        &[("container_state", "running")],
        containers as f64,
        None,
    );
    out.0
}

/// A node endpoint the kubelet serves, by its path below the kubelet's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Summary,
    Metrics,
    Cadvisor,
    Resource,
    /// `/logs/<relative>`.
    Logs(String),
}

impl Endpoint {
    /// The endpoint `path` (with or without its leading slash) names, if any.
    pub fn of(path: &str) -> Option<Endpoint> {
        match path.trim_start_matches('/') {
            "stats/summary" | "stats/summary/" => Some(Endpoint::Summary),
            "metrics" => Some(Endpoint::Metrics),
            "metrics/cadvisor" => Some(Endpoint::Cadvisor),
            "metrics/resource" => Some(Endpoint::Resource),
            "logs" => Some(Endpoint::Logs(String::new())),
            // Percent-decoded here, so `..` written as `%2E%2E` is refused like any other.
            other => other.strip_prefix("logs/").map(|rest| {
                Endpoint::Logs(
                    percent_encoding::percent_decode_str(rest)
                        .decode_utf8_lossy()
                        .into_owned(),
                )
            }),
        }
    }

    /// Whether serving it needs the node's pods.
    pub fn needs_pods(&self) -> bool {
        !matches!(self, Endpoint::Logs(_))
    }
}

/// Where the node endpoints get what they report.
#[derive(Clone)]
pub struct NodeEndpoints {
    pub node_name: String,
    pub metrics: Metrics,
    /// The node's data dir: its filesystem is the node's and the images'.
    pub data_dir: std::path::PathBuf,
    /// The node's log directory (`/var/log`).
    pub log_dir: std::path::PathBuf,
}

impl NodeEndpoints {
    /// Serves `endpoint`; `pods` are the node's pods (any list when the endpoint needs none).
    pub async fn serve(
        &self,
        endpoint: Endpoint,
        pods: Vec<Value>,
    ) -> crate::api::ApiResult<axum::response::Response> {
        let (content_type, render): (&str, fn(&NodeView) -> String) = match endpoint {
            Endpoint::Logs(relative) => {
                return super::node_logs::serve(&self.log_dir, &relative).await
            }
            Endpoint::Summary => ("application/json", |view| summary(view).to_string()),
            Endpoint::Metrics => (PROMETHEUS_TEXT, kubelet_metrics),
            Endpoint::Cadvisor => (PROMETHEUS_TEXT, cadvisor_metrics),
            Endpoint::Resource => (PROMETHEUS_TEXT, resource_metrics),
        };
        let data_dir = self.data_dir.clone();
        let fs = tokio::task::spawn_blocking(move || FsUsage::of(&data_dir))
            .await
            .ok()
            .flatten();
        let view = NodeView {
            node_name: &self.node_name,
            metrics: &self.metrics,
            pods: &pods,
            fs,
        };
        let body = render(&view);
        axum::response::Response::builder()
            .status(200)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(axum::body::Body::from(body))
            .map_err(|e| crate::api::ApiError::internal(format!("node endpoint: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    fn view_without_fs<'a>(metrics: &'a Metrics, pods: &'a [Value]) -> NodeView<'a> {
        NodeView {
            node_name: "n1",
            metrics,
            pods,
            fs: None,
        }
    }

    fn round(at_seconds: i64, cpu_ns: u64) -> Round {
        let usage = |cpu_ns| Usage {
            cpu_ns,
            memory_working_set: 4 << 20,
        };
        let containers = BTreeMap::from([
            ("app".to_string(), usage(cpu_ns)),
            ("shim".to_string(), usage(1)),
        ]);
        Round {
            at: jiff::Timestamp::from_second(at_seconds).unwrap(),
            node: Some(usage(cpu_ns * 10)),
            pods: HashMap::from([("u1".to_string(), containers)]),
        }
    }

    fn pods() -> Vec<Value> {
        vec![json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
            "spec": {"containers": [{"name": "app"}]},
            "status": {"startTime": "2026-01-01T00:00:00Z", "containerStatuses": [
                {"name": "app", "state": {"running": {"startedAt": "2026-01-01T00:00:05Z"}}}]},
        })]
    }

    fn measured_metrics() -> Metrics {
        let metrics = Metrics::for_node("n1");
        metrics.record(round(100, 1_000_000_000));
        metrics.record(round(110, 3_000_000_000));
        metrics
    }

    #[test]
    fn the_summary_has_the_node_and_each_pods_spec_containers() {
        let metrics = measured_metrics();
        let pods = pods();
        let fs = FsUsage {
            capacity_bytes: 100,
            available_bytes: 40,
            used_bytes: 60,
            inodes: 10,
            inodes_free: 4,
        };
        let view = NodeView {
            node_name: "n1",
            metrics: &metrics,
            pods: &pods,
            fs: Some(fs),
        };
        let summary = summary(&view);
        assert_eq!(summary["node"]["nodeName"], "n1");
        assert_eq!(
            summary["node"]["cpu"]["usageCoreNanoSeconds"],
            30_000_000_000u64
        );
        assert_eq!(summary["node"]["cpu"]["usageNanoCores"], 2_000_000_000u64);
        assert_eq!(summary["node"]["fs"]["inodesUsed"], 6);
        assert_eq!(summary["node"]["runtime"]["imageFs"]["usedBytes"], 60);
        let pod = &summary["pods"][0];
        assert_eq!(
            pod["podRef"],
            json!({"name": "web", "namespace": "shop", "uid": "u1"})
        );
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(
            containers.len(),
            1,
            "the shim is not a container: {containers:?}"
        );
        assert_eq!(containers[0]["name"], "app");
        assert_eq!(containers[0]["cpu"]["usageNanoCores"], 200_000_000);
        assert_eq!(containers[0]["memory"]["workingSetBytes"], 4 << 20);
        assert_eq!(containers[0]["startTime"], "2026-01-01T00:00:05Z");
        assert_eq!(pod["memory"]["workingSetBytes"], 4 << 20);
        assert_eq!(pod["cpu"]["usageNanoCores"], 200_000_000);
    }

    #[test]
    fn before_any_round_the_summary_lists_pods_without_usage() {
        let metrics = Metrics::for_node("n1");
        let pods = pods();
        let view = view_without_fs(&metrics, &pods);
        let summary = summary(&view);
        assert!(summary["node"].get("cpu").is_none());
        assert_eq!(summary["pods"][0]["containers"], json!([]));
        assert!(resource_metrics(&view).contains("resource_scrape_error 1\n"));
    }

    #[test]
    fn resource_metrics_carry_cumulative_cpu_and_working_set_per_container() {
        let metrics = measured_metrics();
        let pods = pods();
        let view = view_without_fs(&metrics, &pods);
        let text = resource_metrics(&view);
        let at = 110_000;
        assert!(text.contains(&format!(
            "container_cpu_usage_seconds_total{{container=\"app\",namespace=\"shop\",pod=\"web\"}} 3 {at}\n"
        )), "{text}");
        assert!(text.contains(&format!(
            "container_memory_working_set_bytes{{container=\"app\",namespace=\"shop\",pod=\"web\"}} 4194304 {at}\n"
        )), "{text}");
        assert!(text.contains("container_start_time_seconds{container=\"app\",namespace=\"shop\",pod=\"web\"} 1767225605"));
        assert!(text.contains(&format!("node_cpu_usage_seconds_total 30 {at}\n")));
        assert!(
            text.contains("pod_memory_working_set_bytes{namespace=\"shop\",pod=\"web\"} 4194304")
        );
        assert!(text.contains("resource_scrape_error 0\n"));
        assert!(!text.contains("shim"), "{text}");
    }

    #[test]
    fn kubelet_metrics_count_running_pods_and_containers() {
        let metrics = Metrics::for_node("n1");
        let mut pods = pods();
        pods.push(
            json!({"metadata": {"name": "done", "namespace": "shop", "uid": "u2"},
            "status": {"containerStatuses": [{"name": "app", "state": {"terminated": {}}}]}}),
        );
        let view = view_without_fs(&metrics, &pods);
        let text = kubelet_metrics(&view);
        assert!(text.contains("kubelet_running_pods 1\n"), "{text}");
        assert!(text.contains("kubelet_running_containers{container_state=\"running\"} 1\n"));
        assert!(text.contains("kubelet_node_name{node=\"n1\"} 1\n"));
        assert!(text.contains("# TYPE kubelet_running_pods gauge\n"));
    }

    #[test]
    fn cadvisor_series_name_the_container_cgroup() {
        let metrics = measured_metrics();
        let pods = pods();
        let view = view_without_fs(&metrics, &pods);
        let text = cadvisor_metrics(&view);
        assert!(text.contains("container_cpu_usage_seconds_total{container=\"app\",cpu=\"total\",id=\"/berth/podu1/app\",namespace=\"shop\",pod=\"web\"} 3 110000\n"), "{text}");
        assert!(text.contains("machine_cpu_cores "));
    }

    #[test]
    fn endpoint_paths_are_recognised_with_or_without_their_slash() {
        assert_eq!(Endpoint::of("/stats/summary"), Some(Endpoint::Summary));
        assert_eq!(Endpoint::of("metrics/resource"), Some(Endpoint::Resource));
        assert_eq!(Endpoint::of("/metrics/cadvisor"), Some(Endpoint::Cadvisor));
        assert_eq!(Endpoint::of("/logs/"), Some(Endpoint::Logs(String::new())));
        assert_eq!(
            Endpoint::of("/logs/apt/history.log"),
            Some(Endpoint::Logs("apt/history.log".into()))
        );
        assert_eq!(
            Endpoint::of("/logs/a%20b/..%2Fx"),
            Some(Endpoint::Logs("a b/../x".into()))
        );
        assert_eq!(Endpoint::of("/stats"), None);
        assert_eq!(Endpoint::of("/metricsx"), None);
        assert!(!Endpoint::Logs(String::new()).needs_pods());
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
