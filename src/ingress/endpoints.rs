//! Resolves an Ingress's Service backend to pod addresses: the Service port (by number or by
//! name), then the matching port of the ready endpoints in the Service's EndpointSlices. The
//! proxy connects to pods directly, as ingress controllers do, skipping the cluster IP.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::IngressServiceBackend;

use super::routes::Backend;

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Services and their EndpointSlices by namespace and name.
pub struct ServiceIndex<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
}

impl<'a> ServiceIndex<'a> {
    pub fn new(services: &[&'a Service], slices: &[&'a EndpointSlice]) -> ServiceIndex<'a> {
        let mut index = ServiceIndex {
            services: HashMap::new(),
            slices: HashMap::new(),
        };
        for service in services {
            if let (Some(ns), Some(name)) = (
                service.metadata.namespace.as_deref(),
                service.metadata.name.as_deref(),
            ) {
                index.services.insert((ns, name), service);
            }
        }
        for slice in slices {
            let owner = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let (Some(ns), Some(owner)) = (slice.metadata.namespace.as_deref(), owner) {
                index
                    .slices
                    .entry((ns, owner.as_str()))
                    .or_default()
                    .push(slice);
            }
        }
        index
    }

    /// The backend for `wanted` in `namespace`: no endpoints when the Service or its port does
    /// not exist or nothing is ready (the proxy answers 503 then).
    pub fn resolve(&self, namespace: &str, wanted: &IngressServiceBackend) -> Backend {
        let label = match wanted.port.as_ref() {
            Some(p) => match (&p.name, p.number) {
                (Some(name), _) if !name.is_empty() => name.clone(),
                (_, Some(number)) => number.to_string(),
                _ => String::new(),
            },
            None => String::new(),
        };
        let service = format!("{namespace}/{}:{label}", wanted.name);
        Backend::new(service, self.endpoints(namespace, wanted))
    }

    fn endpoints(&self, namespace: &str, wanted: &IngressServiceBackend) -> Vec<SocketAddr> {
        let Some(service) = self.services.get(&(namespace, wanted.name.as_str())) else {
            return Vec::new();
        };
        let ports = service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_deref())
            .unwrap_or(&[]);
        let Some(port) = wanted.port.as_ref() else {
            return Vec::new();
        };
        let service_port = ports.iter().find(|p| match (&port.name, port.number) {
            (Some(name), _) if !name.is_empty() => p.name.as_deref() == Some(name.as_str()),
            (_, Some(number)) => p.port == number,
            _ => false,
        });
        let Some(service_port) = service_port else {
            return Vec::new();
        };
        // Slices name their ports after the Service's ports (unnamed: empty or absent).
        let port_name = service_port.name.as_deref().unwrap_or("");
        let mut addrs = Vec::new();
        for slice in self
            .slices
            .get(&(namespace, wanted.name.as_str()))
            .into_iter()
            .flatten()
        {
            if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
                continue;
            }
            let Some(target) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref().unwrap_or("") == port_name)
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            for endpoint in &slice.endpoints {
                // An absent condition means ready, as the EndpointSlice API defines.
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                if !ready {
                    continue;
                }
                for address in &endpoint.addresses {
                    if let Ok(ip) = address.parse::<IpAddr>() {
                        let addr = SocketAddr::new(ip, target);
                        if !addrs.contains(&addr) {
                            addrs.push(addr);
                        }
                    }
                }
            }
        }
        addrs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service() -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"ports": [
                {"name": "http", "port": 80, "targetPort": 8080},
                {"name": "admin", "port": 9000, "targetPort": 9090},
            ]},
        }))
        .unwrap()
    }

    fn slice() -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-x", "namespace": "shop",
                         "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "admin", "port": 9090}],
            "endpoints": [
                {"addresses": ["10.42.0.5"], "conditions": {"ready": true}},
                {"addresses": ["10.42.0.6"], "conditions": {"ready": false}},
                {"addresses": ["10.42.0.7"]},
            ],
        }))
        .unwrap()
    }

    fn backend(port: serde_json::Value, namespace: &str) -> Vec<SocketAddr> {
        let (svc, sl) = (service(), slice());
        let index = ServiceIndex::new(&[&svc], &[&sl]);
        let wanted: IngressServiceBackend =
            serde_json::from_value(json!({"name": "web", "port": port})).unwrap();
        index.resolve(namespace, &wanted).endpoints
    }

    #[test]
    fn a_port_number_resolves_to_the_ready_endpoints_target_port() {
        let addrs = backend(json!({"number": 80}), "shop");
        let want: Vec<SocketAddr> = vec![
            "10.42.0.5:8080".parse().unwrap(),
            "10.42.0.7:8080".parse().unwrap(),
        ];
        assert_eq!(addrs, want);
    }

    #[test]
    fn a_port_name_resolves_to_that_ports_target() {
        let addrs = backend(json!({"name": "admin"}), "shop");
        assert_eq!(addrs.first(), Some(&"10.42.0.5:9090".parse().unwrap()));
    }

    #[test]
    fn an_unknown_port_or_another_namespace_has_no_endpoints() {
        assert!(backend(json!({"number": 81}), "shop").is_empty());
        assert!(backend(json!({"number": 80}), "default").is_empty());
    }
}
