//! `metrics.k8s.io/v1beta1` served natively, as metrics-server would through aggregation:
//! NodeMetrics and PodMetrics (get and list) from this node's [`crate::metrics::Metrics`].

use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use http::Method;
use serde_json::{json, Value};

use super::query::Query;
use super::response::{error_response, json_response};
use super::ApiServer;
use crate::api::{ApiError, ApiResult};
use crate::metrics::{Metrics, Point};
use crate::registry::generic::ListOptions;

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";

/// (plural, kind, namespaced) of the two resources.
const RESOURCES: &[(&str, &str, bool)] = &[
    ("nodes", "NodeMetrics", false),
    ("pods", "PodMetrics", true),
];

/// Discovery entries of the group, legacy APIResource shape or aggregated; `None` for other
/// groups.
pub fn discovery_entries(group: &str, version: &str, aggregated: bool) -> Option<Vec<Value>> {
    if group != GROUP || version != VERSION {
        return None;
    }
    Some(
        RESOURCES
            .iter()
            .map(|(plural, kind, namespaced)| match aggregated {
                true => json!({
                    "resource": plural,
                    "responseKind": {"group": GROUP, "version": VERSION, "kind": kind},
                    "scope": if *namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": "",
                    "verbs": ["get", "list"],
                }),
                false => json!({
                    "name": plural,
                    "singularName": "",
                    "namespaced": namespaced,
                    "kind": kind,
                    "verbs": ["get", "list"],
                }),
            })
            .collect(),
    )
}

/// What a metrics path names.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Nodes {
        name: Option<String>,
    },
    Pods {
        namespace: Option<String>,
        name: Option<String>,
    },
}

/// The metrics request a path names, if it is one (discovery paths are not).
pub fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["apis", GROUP, VERSION, rest @ ..] if !rest.is_empty() => rest,
        _ => return None,
    };
    let owned = |s: &&str| Some(s.to_string());
    match rest {
        ["nodes"] => Some(Route::Nodes { name: None }),
        ["nodes", name] => Some(Route::Nodes { name: owned(name) }),
        ["pods"] => Some(Route::Pods {
            namespace: None,
            name: None,
        }),
        ["namespaces", ns, "pods"] => Some(Route::Pods {
            namespace: owned(ns),
            name: None,
        }),
        ["namespaces", ns, "pods", name] => Some(Route::Pods {
            namespace: owned(ns),
            name: owned(name),
        }),
        _ => None,
    }
}

/// Answers a metrics request.
pub fn serve(server: &Arc<ApiServer>, route: Route, request: &Request) -> Response {
    if request.method() != Method::GET {
        return error_response(&ApiError::method_not_allowed(
            request.method().as_str(),
            request.uri().path(),
        ));
    }
    let metrics = server.metrics().unwrap_or_default();
    let answer = Query::parse(request.uri().query()).and_then(|query| match route {
        Route::Nodes { name } => nodes(server, &metrics, name.as_deref(), &query),
        Route::Pods { namespace, name } => pods(
            server,
            &metrics,
            namespace.as_deref(),
            name.as_deref(),
            &query,
        ),
    });
    match answer {
        Ok(body) => json_response(200, &body),
        Err(e) => error_response(&e),
    }
}

fn objects(
    server: &ApiServer,
    plural: &str,
    namespace: Option<&str>,
    name: Option<&str>,
    query: &Query,
) -> ApiResult<Vec<Value>> {
    let resource = crate::api::resources::find("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not a known resource")))?;
    if let Some(name) = name {
        let object = server
            .registry
            .get_value(resource, namespace.unwrap_or(""), name)?;
        return Ok(vec![object]);
    }
    let options = ListOptions {
        label_selector: query.label_selector.clone(),
        field_selector: query.field_selector.clone(),
        limit: 0,
        continue_token: None,
    };
    server
        .registry
        .list(resource, namespace, &options)?
        .items
        .iter()
        .map(|raw| crate::registry::generic::decode(raw))
        .collect()
}

fn metadata(object: &Value) -> Value {
    let mut meta = json!({
        "name": object.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
        "creationTimestamp": jiff::Timestamp::now().to_string(),
    });
    if let Some(ns) = object.pointer("/metadata/namespace") {
        meta["namespace"] = ns.clone();
    }
    if let Some(labels) = object.pointer("/metadata/labels") {
        meta["labels"] = labels.clone();
    }
    meta
}

fn usage(point: &Point) -> Value {
    json!({"cpu": cpu_quantity(point.cpu_nanocores), "memory": memory_quantity(point.memory_bytes)})
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {}, "items": items})
}

fn nodes(
    server: &ApiServer,
    metrics: &Metrics,
    name: Option<&str>,
    query: &Query,
) -> ApiResult<Value> {
    let mut items = Vec::new();
    for node in objects(server, "nodes", None, name, query)? {
        let node_name = node.pointer("/metadata/name").and_then(Value::as_str);
        let point = match node_name == Some(metrics.node_name()) {
            true => metrics.node(),
            false => None,
        };
        if let Some(point) = point {
            items.push(json!({
                "kind": "NodeMetrics",
                "apiVersion": format!("{GROUP}/{VERSION}"),
                "metadata": metadata(&node),
                "timestamp": point.timestamp.to_string(),
                "window": window(point.window),
                "usage": usage(&point),
            }));
        }
    }
    single_or_list(items, name, "nodes", "NodeMetricsList")
}

fn single_or_list(
    mut items: Vec<Value>,
    name: Option<&str>,
    plural: &str,
    list_kind: &str,
) -> ApiResult<Value> {
    match name {
        Some(name) => items
            .pop()
            .ok_or_else(|| ApiError::not_found(GROUP, plural, name)),
        None => Ok(list(list_kind, items)),
    }
}

fn pods(
    server: &ApiServer,
    metrics: &Metrics,
    namespace: Option<&str>,
    name: Option<&str>,
    query: &Query,
) -> ApiResult<Value> {
    let mut items = Vec::new();
    for pod in objects(server, "pods", namespace, name, query)? {
        if let Some(item) = pod_metrics(metrics, &pod) {
            items.push(item);
        }
    }
    single_or_list(items, name, "pods", "PodMetricsList")
}

/// A pod's metrics: its spec's containers that were measured over the window (the shim's own
/// cgroup is not one of them). `None` for a pod of another node or one not yet measured.
fn pod_metrics(metrics: &Metrics, pod: &Value) -> Option<Value> {
    if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(metrics.node_name()) {
        return None;
    }
    let uid = pod.pointer("/metadata/uid").and_then(Value::as_str)?;
    let points = metrics.pod(uid)?;
    let names: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    let measured: Vec<(&str, &Point)> = names
        .iter()
        .filter_map(|n| Some((*n, points.get(*n)?)))
        .collect();
    let (_, first) = measured.first()?;
    let containers: Vec<Value> = measured
        .iter()
        .map(|(name, point)| json!({"name": name, "usage": usage(point)}))
        .collect();
    Some(json!({
        "kind": "PodMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": metadata(pod),
        "timestamp": first.timestamp.to_string(),
        "window": window(first.window),
        "containers": containers,
    }))
}

/// CPU in nanocores, as metrics-server prints it (`123456n`).
pub fn cpu_quantity(nanocores: u64) -> String {
    format!("{nanocores}n")
}

/// Memory in whole KiB (`2048Ki`), as metrics-server prints a working set.
pub fn memory_quantity(bytes: u64) -> String {
    format!("{}Ki", bytes / 1024)
}

/// A Go-style duration with millisecond precision (`15.002s`).
fn window(window: std::time::Duration) -> String {
    let millis = window.as_millis();
    match millis % 1000 {
        0 => format!("{}s", millis / 1000),
        rest => {
            let fraction = format!("{rest:03}");
            format!("{}.{}s", millis / 1000, fraction.trim_end_matches('0'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_the_group_route_to_nodes_and_pods() {
        assert_eq!(
            route("/apis/metrics.k8s.io/v1beta1/nodes"),
            Some(Route::Nodes { name: None })
        );
        assert_eq!(
            route("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web"),
            Some(Route::Pods {
                namespace: Some("default".into()),
                name: Some("web".into())
            })
        );
        assert_eq!(
            route("/apis/metrics.k8s.io/v1beta1/pods"),
            Some(Route::Pods {
                namespace: None,
                name: None
            })
        );
        assert_eq!(route("/apis/metrics.k8s.io/v1beta1"), None);
        assert_eq!(route("/apis/apps/v1/deployments"), None);
    }

    #[test]
    fn discovery_lists_read_only_node_and_pod_metrics() {
        let legacy = discovery_entries(GROUP, VERSION, false).unwrap();
        assert_eq!(legacy[0]["kind"], "NodeMetrics");
        assert_eq!(legacy[1]["namespaced"], true);
        assert_eq!(legacy[1]["verbs"], json!(["get", "list"]));
        let aggregated = discovery_entries(GROUP, VERSION, true).unwrap();
        assert_eq!(aggregated[0]["scope"], "Cluster");
        assert!(discovery_entries("apps", "v1", false).is_none());
    }

    #[test]
    fn quantities_are_printed_as_metrics_server_does() {
        assert_eq!(cpu_quantity(1_000_123), "1000123n");
        assert_eq!(memory_quantity(5 * 1024 * 1024 + 10), "5120Ki");
        assert_eq!(window(std::time::Duration::from_millis(15_020)), "15.02s");
        assert_eq!(window(std::time::Duration::from_secs(15)), "15s");
    }

    #[test]
    fn pods_of_other_nodes_or_not_yet_measured_have_no_metrics() {
        let metrics = Metrics::for_node("n1");
        let pod = json!({"metadata": {"name": "p", "uid": "u"}, "spec": {"nodeName": "n2", "containers": [{"name": "app"}]}});
        assert!(pod_metrics(&metrics, &pod).is_none());
        let pod = json!({"metadata": {"name": "p", "uid": "u"}, "spec": {"nodeName": "n1", "containers": [{"name": "app"}]}});
        assert!(pod_metrics(&metrics, &pod).is_none());
    }

    #[test]
    fn a_measured_pod_reports_its_spec_containers_only() {
        let metrics = Metrics::for_node("n1");
        let usage = |cpu_ns| crate::runtime::stats::Usage {
            cpu_ns,
            memory_working_set: 2048 * 1024,
        };
        for (at, cpu) in [(100, 0), (110, 10_000_000_000)] {
            let containers = std::collections::BTreeMap::from([
                ("app".to_string(), usage(cpu)),
                ("shim".to_string(), usage(cpu)),
            ]);
            metrics.record(crate::metrics::Round {
                at: jiff::Timestamp::from_second(at).unwrap(),
                node: None,
                pods: [("u".to_string(), containers)].into(),
            });
        }
        let pod = json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"a": "b"}}, "spec": {"nodeName": "n1", "containers": [{"name": "app"}]}});
        let item = pod_metrics(&metrics, &pod).unwrap();
        assert_eq!(item["metadata"]["labels"], json!({"a": "b"}));
        assert_eq!(item["window"], "10s");
        assert_eq!(
            item["containers"],
            json!([{"name": "app", "usage": {"cpu": "1000000000n", "memory": "2048Ki"}}])
        );
    }
}
