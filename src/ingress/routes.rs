//! The routing table: which backend answers a request for a host and a path, built from the
//! Ingresses of our class as upstream's Ingress spec defines matching.
//!
//! Hosts: an exact host beats a `*.wildcard` (which covers exactly one more label), which beats
//! rules without a host. Within the first tier that has a match, the longest path wins, and an
//! `Exact` path beats a `Prefix` one of the same length. When several Ingresses claim the same
//! host and path, the oldest one keeps it. No match anywhere: the default backend, else 404.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressServiceBackend};

/// A Service port as an Ingress names it, resolved to the addresses of its ready endpoints.
#[derive(Debug)]
pub struct Backend {
    /// `namespace/name:port`, for logs.
    pub service: String,
    pub endpoints: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl Backend {
    pub fn new(service: String, endpoints: Vec<SocketAddr>) -> Backend {
        Backend {
            service,
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// The next endpoint in round-robin order; `None` when none is ready.
    pub fn pick(&self) -> Option<SocketAddr> {
        if self.endpoints.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Some(self.endpoints[n % self.endpoints.len()])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathKind {
    Exact,
    /// `Prefix` and `ImplementationSpecific`: element-wise prefix.
    Prefix,
}

#[derive(Debug)]
struct PathRule {
    kind: PathKind,
    /// For `Prefix` without its trailing `/` (so `/` itself is empty and matches everything).
    path: String,
    backend: Arc<Backend>,
}

impl PathRule {
    fn matches(&self, request_path: &str) -> bool {
        match self.kind {
            PathKind::Exact => request_path == self.path,
            PathKind::Prefix => {
                self.path.is_empty()
                    || request_path
                        .strip_prefix(self.path.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
        }
    }

    /// Longer paths win; on a tie `Exact` beats `Prefix`.
    fn precedence(&self) -> (usize, bool) {
        (self.path.len(), self.kind == PathKind::Exact)
    }
}

/// What the proxy should do with a request.
#[derive(Debug)]
pub enum Route<'a> {
    Backend(&'a Arc<Backend>),
    NotFound,
}

/// The routes of all Ingresses of our class, swapped as a whole on every change.
#[derive(Debug, Default)]
pub struct RoutingTable {
    exact_hosts: HashMap<String, Vec<PathRule>>,
    /// Keyed by the part after `*.`.
    wildcard_hosts: HashMap<String, Vec<PathRule>>,
    any_host: Vec<PathRule>,
    default_backend: Option<Arc<Backend>>,
}

impl RoutingTable {
    /// Builds the table from `ingresses` (all of our class), resolving each Service backend
    /// in the Ingress's namespace with `resolve`.
    pub fn build(
        ingresses: &[&Ingress],
        mut resolve: impl FnMut(&str, &IngressServiceBackend) -> Backend,
    ) -> RoutingTable {
        let mut table = RoutingTable::default();
        for ingress in oldest_first(ingresses) {
            let namespace = ingress.metadata.namespace.as_deref().unwrap_or("default");
            let Some(spec) = ingress.spec.as_ref() else {
                continue;
            };
            if table.default_backend.is_none() {
                if let Some(service) = spec
                    .default_backend
                    .as_ref()
                    .and_then(|b| b.service.as_ref())
                {
                    table.default_backend = Some(Arc::new(resolve(namespace, service)));
                }
            }
            for rule in spec.rules.iter().flatten() {
                let Some(http) = rule.http.as_ref() else {
                    continue;
                };
                let host = rule.host.as_deref().map(normalize_host).unwrap_or_default();
                let rules = if host.is_empty() {
                    &mut table.any_host
                } else if let Some(suffix) = host.strip_prefix("*.") {
                    table.wildcard_hosts.entry(suffix.to_string()).or_default()
                } else {
                    table.exact_hosts.entry(host).or_default()
                };
                for path in &http.paths {
                    let Some(service) = path.backend.service.as_ref() else {
                        continue;
                    };
                    let kind = match path.path_type.as_str() {
                        "Exact" => PathKind::Exact,
                        _ => PathKind::Prefix,
                    };
                    let raw = path.path.as_deref().unwrap_or("/");
                    let path = match kind {
                        PathKind::Exact => raw.to_string(),
                        PathKind::Prefix => raw.trim_end_matches('/').to_string(),
                    };
                    // The oldest Ingress keeps a host and path that several claim.
                    if rules.iter().any(|r| r.kind == kind && r.path == path) {
                        continue;
                    }
                    rules.push(PathRule {
                        kind,
                        path,
                        backend: Arc::new(resolve(namespace, service)),
                    });
                }
            }
        }
        table
    }

    /// The route for a request to `host` (as in the `Host` header, port allowed) and `path`.
    pub fn route(&self, host: &str, path: &str) -> Route<'_> {
        let host = normalize_host(host);
        let wildcard = host
            .split_once('.')
            .and_then(|(_, parent)| self.wildcard_hosts.get(parent));
        let tiers = [self.exact_hosts.get(&host), wildcard, Some(&self.any_host)];
        for rules in tiers.into_iter().flatten() {
            let best = rules
                .iter()
                .filter(|r| r.matches(path))
                .max_by_key(|r| r.precedence());
            if let Some(rule) = best {
                return Route::Backend(&rule.backend);
            }
        }
        match &self.default_backend {
            Some(backend) => Route::Backend(backend),
            None => Route::NotFound,
        }
    }
}

/// Lower case, without a port or a trailing dot.
pub fn normalize_host(host: &str) -> String {
    let host = if host.starts_with('[') {
        // An IPv6 literal: the port, if any, follows the closing bracket.
        host.split_once(']')
            .map_or(host, |(addr, _)| addr)
            .trim_start_matches('[')
    } else {
        host.split_once(':').map_or(host, |(name, _)| name)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Ingresses by age, then namespace and name, so conflicts resolve the same way every time.
fn oldest_first<'a>(ingresses: &[&'a Ingress]) -> Vec<&'a Ingress> {
    let mut sorted = ingresses.to_vec();
    sorted.sort_by(|a, b| {
        let key = |i: &Ingress| {
            (
                i.metadata.creation_timestamp.as_ref().map(|t| t.0),
                i.metadata.namespace.clone(),
                i.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ingress(name: &str, created: &str, spec: serde_json::Value) -> Ingress {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
            "spec": spec,
        }))
        .unwrap()
    }

    fn path(path: &str, kind: &str, service: &str) -> serde_json::Value {
        json!({"path": path, "pathType": kind,
               "backend": {"service": {"name": service, "port": {"number": 80}}}})
    }

    /// Every backend resolves to no endpoints; its name tells which rule matched.
    fn table(ingresses: &[Ingress]) -> RoutingTable {
        let refs: Vec<&Ingress> = ingresses.iter().collect();
        RoutingTable::build(&refs, |ns, svc| {
            Backend::new(format!("{ns}/{}", svc.name), vec![])
        })
    }

    fn routed(table: &RoutingTable, host: &str, path: &str) -> String {
        match table.route(host, path) {
            Route::Backend(b) => b.service.clone(),
            Route::NotFound => "404".into(),
        }
    }

    #[test]
    fn prefix_paths_match_whole_elements_only() {
        let t = table(&[ingress(
            "a",
            "2026-01-01T00:00:00Z",
            json!({"rules": [{"http": {"paths": [path("/foo/bar/", "Prefix", "bar")]}}]}),
        )]);
        assert_eq!(routed(&t, "x", "/foo/bar"), "default/bar");
        assert_eq!(routed(&t, "x", "/foo/bar/"), "default/bar");
        assert_eq!(routed(&t, "x", "/foo/bar/baz"), "default/bar");
        assert_eq!(routed(&t, "x", "/foo/barbaz"), "404");
        assert_eq!(routed(&t, "x", "/foo"), "404");
    }

    #[test]
    fn an_exact_path_matches_only_itself_and_beats_an_equal_prefix() {
        let t = table(&[ingress(
            "a",
            "2026-01-01T00:00:00Z",
            json!({"rules": [{"http": {"paths": [
                path("/foo", "Prefix", "prefix"),
                path("/foo", "Exact", "exact"),
            ]}}]}),
        )]);
        assert_eq!(routed(&t, "x", "/foo"), "default/exact");
        assert_eq!(routed(&t, "x", "/foo/"), "default/prefix");
        assert_eq!(routed(&t, "x", "/foo/a"), "default/prefix");
    }

    #[test]
    fn the_longest_matching_path_wins_and_implementation_specific_is_a_prefix() {
        let t = table(&[ingress(
            "a",
            "2026-01-01T00:00:00Z",
            json!({"rules": [{"http": {"paths": [
                path("/", "Prefix", "root"),
                path("/api", "ImplementationSpecific", "api"),
                path("/api/v2", "Prefix", "v2"),
            ]}}]}),
        )]);
        assert_eq!(routed(&t, "x", "/"), "default/root");
        assert_eq!(routed(&t, "x", "/index.html"), "default/root");
        assert_eq!(routed(&t, "x", "/api/v1"), "default/api");
        assert_eq!(routed(&t, "x", "/api/v2/items"), "default/v2");
    }

    #[test]
    fn exact_hosts_beat_wildcards_which_cover_one_label_and_beat_hostless_rules() {
        let t = table(&[ingress(
            "a",
            "2026-01-01T00:00:00Z",
            json!({"rules": [
                {"host": "foo.example.com", "http": {"paths": [path("/", "Prefix", "exact")]}},
                {"host": "*.example.com", "http": {"paths": [path("/", "Prefix", "wild")]}},
                {"http": {"paths": [path("/", "Prefix", "any")]}},
            ]}),
        )]);
        assert_eq!(routed(&t, "FOO.example.com:8080", "/"), "default/exact");
        assert_eq!(routed(&t, "bar.example.com", "/"), "default/wild");
        assert_eq!(routed(&t, "a.bar.example.com", "/"), "default/any");
        assert_eq!(routed(&t, "example.com", "/"), "default/any");
    }

    #[test]
    fn a_host_whose_paths_do_not_match_falls_through_to_the_default_backend() {
        let t = table(&[ingress(
            "a",
            "2026-01-01T00:00:00Z",
            json!({
                "defaultBackend": {"service": {"name": "fallback", "port": {"number": 80}}},
                "rules": [{"host": "a.test", "http": {"paths": [path("/app", "Exact", "app")]}}],
            }),
        )]);
        assert_eq!(routed(&t, "a.test", "/app"), "default/app");
        assert_eq!(routed(&t, "a.test", "/other"), "default/fallback");
        assert_eq!(routed(&t, "b.test", "/"), "default/fallback");
    }

    #[test]
    fn the_oldest_ingress_keeps_a_contested_host_and_path() {
        let rule = |svc| json!({"rules": [{"host": "a.test", "http": {"paths": [path("/", "Prefix", svc)]}}]});
        let t = table(&[
            ingress("young", "2026-02-01T00:00:00Z", rule("young")),
            ingress("old", "2026-01-01T00:00:00Z", rule("old")),
        ]);
        assert_eq!(routed(&t, "a.test", "/"), "default/old");
    }

    #[test]
    fn no_rule_and_no_default_backend_is_not_found() {
        let t = table(&[]);
        assert_eq!(routed(&t, "a.test", "/"), "404");
    }

    #[test]
    fn endpoints_are_picked_round_robin() {
        let a: SocketAddr = "10.42.0.2:80".parse().unwrap();
        let b: SocketAddr = "10.42.0.3:80".parse().unwrap();
        let backend = Backend::new("x".into(), vec![a, b]);
        let picks: Vec<_> = (0..4).filter_map(|_| backend.pick()).collect();
        assert_eq!(picks, vec![a, b, a, b]);
        assert_eq!(Backend::new("y".into(), vec![]).pick(), None);
    }

    #[test]
    fn hosts_lose_ports_brackets_trailing_dots_and_case() {
        assert_eq!(normalize_host("Web.Test.:80"), "web.test");
        assert_eq!(normalize_host("[::1]:8080"), "::1");
        assert_eq!(normalize_host("10.0.0.1"), "10.0.0.1");
    }
}
