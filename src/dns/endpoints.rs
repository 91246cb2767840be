//! The `kube-dns` Service has no selector: its endpoints are this node's DNS server, which we
//! publish ourselves so the service proxy's ordinary DNAT delivers `10.43.0.10:53` to it.

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use super::zone::SERVICE_NAME_LABEL;

pub const DNS_SERVICE: &str = "kube-dns";
pub const DNS_NAMESPACE: &str = "kube-system";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGED_BY: &str = "berth";
/// Someone may delete or edit our objects; they are put back this often.
const RESYNC: Duration = Duration::from_secs(60);

/// The Endpoints object naming `address:port` for both DNS ports.
pub fn desired_endpoints(address: Ipv4Addr, port: u16) -> Option<Endpoints> {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": DNS_SERVICE, "namespace": DNS_NAMESPACE,
                     "labels": {"k8s-app": "kube-dns"}},
        "subsets": [{
            "addresses": [{"ip": address.to_string()}],
            "ports": [
                {"name": "dns", "port": port, "protocol": "UDP"},
                {"name": "dns-tcp", "port": port, "protocol": "TCP"},
            ],
        }],
    }))
    .ok()
}

/// The EndpointSlice the service proxy reads, the same as [`desired_endpoints`].
pub fn desired_slice(address: Ipv4Addr, port: u16) -> Option<EndpointSlice> {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": DNS_SERVICE, "namespace": DNS_NAMESPACE,
                     "labels": {SERVICE_NAME_LABEL: DNS_SERVICE, MANAGED_BY_LABEL: MANAGED_BY,
                                "k8s-app": "kube-dns"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address.to_string()], "conditions": {"ready": true}}],
        "ports": [
            {"name": "dns", "port": port, "protocol": "UDP"},
            {"name": "dns-tcp", "port": port, "protocol": "TCP"},
        ],
    }))
    .ok()
}

/// Keeps the kube-dns Endpoints and EndpointSlice pointing at `address:port`, forever.
pub async fn keep_published(client: kube::Client, address: Ipv4Addr, port: u16) {
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), DNS_NAMESPACE);
    let slices: Api<EndpointSlice> = Api::namespaced(client, DNS_NAMESPACE);
    loop {
        if let Some(want) = desired_endpoints(address, port) {
            if let Err(error) =
                put(&endpoints, want, |have, want| have.subsets == want.subsets).await
            {
                tracing::warn!(%error, "cannot publish the kube-dns Endpoints");
            }
        }
        if let Some(want) = desired_slice(address, port) {
            let same = |have: &EndpointSlice, want: &EndpointSlice| {
                have.endpoints == want.endpoints
                    && have.ports == want.ports
                    && have.metadata.labels == want.metadata.labels
            };
            if let Err(error) = put(&slices, want, same).await {
                tracing::warn!(%error, "cannot publish the kube-dns EndpointSlice");
            }
        }
        tokio::time::sleep(RESYNC).await;
    }
}

/// Creates `want`, or replaces what is there unless it already matches.
async fn put<K>(api: &Api<K>, mut want: K, same: impl Fn(&K, &K) -> bool) -> kube::Result<()>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = want.meta().name.clone().unwrap_or_default();
    match api.get_opt(&name).await? {
        None => {
            api.create(&PostParams::default(), &want).await?;
        }
        Some(have) if same(&have, &want) => {}
        Some(have) => {
            want.meta_mut().resource_version = have.meta().resource_version.clone();
            api.replace(&name, &PostParams::default(), &want).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slice_names_the_dns_service_and_its_address_on_both_ports() {
        let slice = desired_slice(Ipv4Addr::new(10, 42, 0, 1), 53).unwrap();
        let labels = slice.metadata.labels.clone().unwrap();
        assert_eq!(
            labels.get(SERVICE_NAME_LABEL).map(String::as_str),
            Some("kube-dns")
        );
        assert_eq!(
            labels.get(MANAGED_BY_LABEL).map(String::as_str),
            Some("berth")
        );
        assert_eq!(slice.endpoints[0].addresses, vec!["10.42.0.1".to_string()]);
        let ports: Vec<_> = slice
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().unwrap(), p.port, p.protocol.clone().unwrap()))
            .collect();
        assert_eq!(
            ports,
            vec![
                ("dns".into(), Some(53), "UDP".into()),
                ("dns-tcp".into(), Some(53), "TCP".into())
            ]
        );
    }

    #[test]
    fn the_endpoints_name_the_same_address() {
        let endpoints = desired_endpoints(Ipv4Addr::new(10, 42, 0, 1), 53).unwrap();
        let subset = &endpoints.subsets.unwrap()[0];
        assert_eq!(subset.addresses.as_ref().unwrap()[0].ip, "10.42.0.1");
        assert_eq!(subset.ports.as_ref().unwrap().len(), 2);
    }
}
