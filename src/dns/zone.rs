//! The cluster zone: every name the cluster DNS answers for, built in one pass from Services and
//! EndpointSlices, the way CoreDNS' `kubernetes` plugin names things:
//!
//! - `<svc>.<ns>.svc.<domain>`: the ClusterIP(s); for a headless Service, each ready endpoint;
//!   for an ExternalName Service, a CNAME.
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>`: SRV per named port.
//! - `<hostname>.<svc>.<ns>.svc.<domain>`: a headless endpoint (StatefulSet pods set `hostname`;
//!   others get their address with dashes).
//! - `<a-b-c-d>.<ns>.pod.<domain>`: any pod address, synthesized without a lookup.
//! - PTR for service and headless endpoint addresses.
//!
//! Rebuilding the whole zone on a change is cheap at edge scale and keeps lookups lock-free
//! reads of an immutable map.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// CoreDNS' `kubernetes` plugin default: short, because services and endpoints change.
pub const TTL: u32 = 5;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What the zone says about one question.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The name has records of the asked type (or a CNAME standing in for them).
    Found {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// The name exists but has nothing of the asked type: NOERROR with no answers.
    NoData,
    /// The name does not exist in the cluster zone.
    NxDomain,
    /// Not a cluster name: ask upstream.
    Elsewhere,
}

#[derive(Debug, Clone)]
pub struct ClusterZone {
    domain: Name,
    soa: Record,
    /// Every existing name with its records; names that only exist as parents (`svc.<domain>`,
    /// `_tcp.web.ns.svc.<domain>`) have none, so they answer NODATA rather than NXDOMAIN.
    names: HashMap<Name, Vec<Record>>,
}

impl ClusterZone {
    /// An empty zone for `domain` (e.g. `cluster.local`); None when that is not a domain name.
    pub fn empty(domain: &str) -> Option<ClusterZone> {
        let domain = fqdn(domain)?.to_lowercase();
        let soa = soa_record(&domain)?;
        let mut zone = ClusterZone {
            domain: domain.clone(),
            soa,
            names: HashMap::new(),
        };
        zone.names.insert(domain.clone(), Vec::new());
        for sub in ["svc", "pod"] {
            if let Ok(name) = domain.prepend_label(sub) {
                zone.names.insert(name, Vec::new());
            }
        }
        Some(zone)
    }

    /// The zone for `services` and the `slices` that belong to them.
    pub fn build(domain: &str, services: &[&Service], slices: &[&EndpointSlice]) -> Option<Self> {
        let mut zone = ClusterZone::empty(domain)?;
        for service in services {
            zone.add_service(service, slices);
        }
        Some(zone)
    }

    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// The SOA that goes into the authority section of negative answers.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// Whether `name` is inside the cluster domain (answered here, never forwarded).
    pub fn is_cluster_name(&self, name: &Name) -> bool {
        self.domain.zone_of(name)
    }

    pub fn lookup(&self, name: &Name, qtype: RecordType) -> Lookup {
        let name = as_fqdn(name);
        if self.is_cluster_name(&name) {
            if let Some(pod) = self.pod_lookup(&name, qtype) {
                return pod;
            }
            if name == self.domain && qtype == RecordType::SOA {
                return found(vec![self.soa.clone()], Vec::new());
            }
            return match self.names.get(&name) {
                None => Lookup::NxDomain,
                Some(records) => self.answer_from(records, qtype),
            };
        }
        if is_reverse_name(&name) {
            // Reverse names of addresses we do not know belong to someone else (host networks).
            return match self.names.get(&name) {
                None => Lookup::Elsewhere,
                Some(records) => self.answer_from(records, qtype),
            };
        }
        Lookup::Elsewhere
    }

    fn answer_from(&self, records: &[Record], qtype: RecordType) -> Lookup {
        if qtype != RecordType::CNAME {
            if let Some(cname) = records
                .iter()
                .find(|r| r.record_type() == RecordType::CNAME)
            {
                return found(vec![cname.clone()], Vec::new());
            }
        }
        let answers: Vec<Record> = records
            .iter()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            .cloned()
            .collect();
        if answers.is_empty() {
            return Lookup::NoData;
        }
        let mut additionals = Vec::new();
        for answer in &answers {
            if let RData::SRV(srv) = &answer.data {
                if let Some(target) = self.names.get(&srv.target) {
                    additionals.extend(target.iter().filter(|r| is_address(r)).cloned());
                }
            }
        }
        found(answers, additionals)
    }

    /// `<a-b-c-d>.<ns>.pod.<domain>`; None when `name` is not under `pod.<domain>`.
    fn pod_lookup(&self, name: &Name, qtype: RecordType) -> Option<Lookup> {
        let depth = usize::from(self.domain.num_labels());
        let labels: Vec<&[u8]> = name.iter().collect();
        if labels.len() <= depth || !labels[labels.len() - depth - 1].eq_ignore_ascii_case(b"pod") {
            return None;
        }
        Some(match labels.len() - depth {
            1 | 2 => Lookup::NoData,
            3 => match dashed_ipv4(labels[0]) {
                None => Lookup::NxDomain,
                Some(ip) if qtype == RecordType::A || qtype == RecordType::ANY => found(
                    vec![Record::from_rdata(name.clone(), TTL, RData::A(A(ip)))],
                    Vec::new(),
                ),
                Some(_) => Lookup::NoData,
            },
            _ => Lookup::NxDomain,
        })
    }

    fn add_service(&mut self, service: &Service, slices: &[&EndpointSlice]) {
        let (Some(name), Some(namespace)) = (
            service.metadata.name.as_deref(),
            service.metadata.namespace.as_deref(),
        ) else {
            return;
        };
        let Some(spec) = service.spec.as_ref() else {
            return;
        };
        let Some(base) = fqdn(&format!("{name}.{namespace}.svc.{}", self.domain)) else {
            return;
        };
        self.add_name(&base);

        if spec.type_.as_deref() == Some("ExternalName") {
            if let Some(target) = spec.external_name.as_deref().and_then(fqdn) {
                self.add_record(&base, RData::CNAME(CNAME(target)));
            }
            return;
        }

        let headless = spec.cluster_ip.as_deref() == Some("None");
        if !headless {
            let mut ips: Vec<&str> = spec
                .cluster_ips
                .iter()
                .flatten()
                .map(String::as_str)
                .collect();
            if ips.is_empty() {
                ips.extend(spec.cluster_ip.as_deref());
            }
            for ip in ips.iter().filter_map(|ip| ip.parse::<IpAddr>().ok()) {
                self.add_record(&base, address_rdata(ip));
                self.add_ptr(ip, &base);
            }
            for port in spec.ports.iter().flatten() {
                let (Some(port_name), Ok(number)) =
                    (port.name.as_deref(), u16::try_from(port.port))
                else {
                    continue;
                };
                let protocol = port.protocol.as_deref().unwrap_or("TCP");
                self.add_srv(&base, port_name, protocol, number, 100, &base);
            }
            return;
        }

        // Headless: the endpoints themselves are the answer.
        let mine = slices.iter().filter(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .map(String::as_str)
                    == Some(name)
        });
        // StatefulSets' peers must find each other before they are ready; such Services ask
        // for every endpoint.
        let everyone = spec.publish_not_ready_addresses == Some(true);
        for slice in mine {
            let ready: Vec<_> = slice
                .endpoints
                .iter()
                .filter(|e| everyone || e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
                .collect();
            let weight = u16::try_from(100 / ready.len().max(1)).unwrap_or(1).max(1);
            for endpoint in ready {
                for ip in endpoint
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<IpAddr>().ok())
                {
                    let host = endpoint.hostname.clone().unwrap_or_else(|| dashed(ip));
                    let Ok(host_name) = base.prepend_label(host.as_str()) else {
                        continue;
                    };
                    self.add_record(&base, address_rdata(ip));
                    self.add_record(&host_name, address_rdata(ip));
                    self.add_ptr(ip, &host_name);
                    for port in slice.ports.iter().flatten() {
                        let (Some(port_name), Some(number)) = (
                            port.name.as_deref().filter(|n| !n.is_empty()),
                            port.port.and_then(|p| u16::try_from(p).ok()),
                        ) else {
                            continue;
                        };
                        let protocol = port.protocol.as_deref().unwrap_or("TCP");
                        self.add_srv(&base, port_name, protocol, number, weight, &host_name);
                    }
                }
            }
        }
    }

    /// SRV at `_<port>._<proto>.<base>` and at `<base>` itself (CoreDNS answers both).
    fn add_srv(
        &mut self,
        base: &Name,
        port: &str,
        proto: &str,
        number: u16,
        weight: u16,
        target: &Name,
    ) {
        let srv = RData::SRV(SRV::new(0, weight, number, target.clone()));
        let proto = format!("_{}", proto.to_ascii_lowercase());
        if let Ok(name) = base
            .prepend_label(proto.as_str())
            .and_then(|n| n.prepend_label(format!("_{port}").as_str()))
        {
            self.add_record(&name, srv.clone());
        }
        self.add_record(base, srv);
    }

    fn add_ptr(&mut self, ip: IpAddr, target: &Name) {
        if let Some(reverse) = reverse_name(ip) {
            let record = Record::from_rdata(reverse.clone(), TTL, RData::PTR(PTR(target.clone())));
            let records = self.names.entry(reverse).or_default();
            if !records.contains(&record) {
                records.push(record);
            }
        }
    }

    fn add_record(&mut self, name: &Name, rdata: RData) {
        self.add_name(name);
        let record = Record::from_rdata(name.clone(), TTL, rdata);
        let records = self.names.entry(name.clone()).or_default();
        if !records.contains(&record) {
            records.push(record);
        }
    }

    /// Makes `name` and each of its parents down to the domain exist.
    fn add_name(&mut self, name: &Name) {
        let mut name = name.clone();
        while name.num_labels() > self.domain.num_labels() {
            self.names.entry(name.clone()).or_default();
            name = name.base_name();
        }
    }
}

fn found(answers: Vec<Record>, additionals: Vec<Record>) -> Lookup {
    Lookup::Found {
        answers,
        additionals,
    }
}

fn is_address(record: &Record) -> bool {
    matches!(record.record_type(), RecordType::A | RecordType::AAAA)
}

fn address_rdata(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// `name` with the trailing dot: what queries carry and what the zone is keyed by.
pub fn fqdn(name: &str) -> Option<Name> {
    let name = name.trim_end_matches('.');
    if name.is_empty() {
        return None;
    }
    Name::from_ascii(format!("{name}.")).ok()
}

fn as_fqdn(name: &Name) -> Name {
    let mut name = name.clone();
    name.set_fqdn(true);
    name
}

/// `10.42.0.7` → `10-42-0-7`, `fd00::1` → `fd00--1`: the endpoint label CoreDNS uses.
pub fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

fn dashed_ipv4(label: &[u8]) -> Option<Ipv4Addr> {
    std::str::from_utf8(label)
        .ok()?
        .replace('-', ".")
        .parse()
        .ok()
}

/// `10.43.0.1` → `1.0.43.10.in-addr.arpa.`; IPv6 by nibbles under `ip6.arpa.`.
pub fn reverse_name(ip: IpAddr) -> Option<Name> {
    let text = match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
        }
        IpAddr::V6(v6) => {
            let mut labels = String::new();
            for byte in v6.octets().iter().rev() {
                labels.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            format!("{labels}ip6.arpa.")
        }
    };
    Name::from_ascii(text).ok()
}

fn is_reverse_name(name: &Name) -> bool {
    ["in-addr.arpa.", "ip6.arpa."]
        .iter()
        .filter_map(|z| Name::from_ascii(z).ok())
        .any(|zone| zone.zone_of(name))
}

/// CoreDNS' SOA for the cluster zone; its minimum (the negative-caching TTL) is the record TTL.
fn soa_record(domain: &Name) -> Option<Record> {
    let mname = domain.prepend_label("dns").ok()?.prepend_label("ns").ok()?;
    let rname = domain.prepend_label("hostmaster").ok()?;
    let serial = jiff::Timestamp::now().as_second() as u32;
    let soa = SOA::new(mname, rname, serial, 7200, 1800, 86400, TTL);
    Some(Record::from_rdata(domain.clone(), TTL, RData::SOA(soa)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).unwrap()
    }

    fn slice(value: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(value).unwrap()
    }

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    fn sample_zone() -> ClusterZone {
        let services = [
            service(json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
                         "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 81}]}})),
            service(json!({"metadata": {"name": "db", "namespace": "prod"},
                "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}})),
            service(json!({"metadata": {"name": "ext", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "example.org"}})),
        ];
        let slices = [slice(json!({
            "metadata": {"name": "db-abc", "namespace": "prod",
                         "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.42.0.6"], "hostname": "db-1"},
                {"addresses": ["10.42.0.7"], "conditions": {"ready": true}},
                {"addresses": ["10.42.0.8"], "hostname": "db-3", "conditions": {"ready": false}},
            ]
        }))];
        let services: Vec<&Service> = services.iter().collect();
        let slices: Vec<&EndpointSlice> = slices.iter().collect();
        ClusterZone::build("cluster.local", &services, &slices).unwrap()
    }

    fn answers(lookup: Lookup) -> Vec<RData> {
        match lookup {
            Lookup::Found { answers, .. } => answers.into_iter().map(|r| r.data).collect(),
            other => panic!("expected answers, got {other:?}"),
        }
    }

    fn a(ip: &str) -> RData {
        RData::A(A(ip.parse().unwrap()))
    }

    #[test]
    fn a_cluster_ip_service_answers_its_cluster_ip() {
        let zone = sample_zone();
        let got = answers(zone.lookup(&name("web.default.svc.cluster.local."), RecordType::A));
        assert_eq!(got, vec![a("10.43.0.20")]);
    }

    #[test]
    fn names_are_matched_without_regard_to_case() {
        let zone = sample_zone();
        let got = answers(zone.lookup(&name("WEB.Default.svc.Cluster.Local."), RecordType::A));
        assert_eq!(got, vec![a("10.43.0.20")]);
    }

    #[test]
    fn aaaa_for_an_ipv4_only_service_is_nodata() {
        let zone = sample_zone();
        let got = zone.lookup(&name("web.default.svc.cluster.local."), RecordType::AAAA);
        assert_eq!(got, Lookup::NoData);
    }

    #[test]
    fn an_unknown_service_is_nxdomain() {
        let zone = sample_zone();
        let got = zone.lookup(&name("nope.default.svc.cluster.local."), RecordType::A);
        assert_eq!(got, Lookup::NxDomain);
    }

    #[test]
    fn search_path_expansions_are_nxdomain_without_forwarding() {
        let zone = sample_zone();
        let q = name("web.default.svc.cluster.local.default.svc.cluster.local.");
        assert_eq!(zone.lookup(&q, RecordType::A), Lookup::NxDomain);
        let q = name("example.com.default.svc.cluster.local.");
        assert_eq!(zone.lookup(&q, RecordType::A), Lookup::NxDomain);
    }

    #[test]
    fn parents_of_existing_names_are_nodata_not_nxdomain() {
        let zone = sample_zone();
        for parent in [
            "default.svc.cluster.local.",
            "svc.cluster.local.",
            "_tcp.web.default.svc.cluster.local.",
        ] {
            assert_eq!(
                zone.lookup(&name(parent), RecordType::A),
                Lookup::NoData,
                "{parent}"
            );
        }
        let missing_namespace = name("nowhere.svc.cluster.local.");
        assert_eq!(
            zone.lookup(&missing_namespace, RecordType::A),
            Lookup::NxDomain
        );
    }

    #[test]
    fn named_ports_get_srv_records_pointing_at_the_service() {
        let zone = sample_zone();
        let got = answers(zone.lookup(
            &name("_http._tcp.web.default.svc.cluster.local."),
            RecordType::SRV,
        ));
        let target = name("web.default.svc.cluster.local.");
        assert_eq!(got, vec![RData::SRV(SRV::new(0, 100, 80, target))]);
        // The unnamed port has no SRV record of its own.
        let all = answers(zone.lookup(&name("web.default.svc.cluster.local."), RecordType::SRV));
        assert_eq!(all.len(), 1);
    }

    #[test]
    fn a_headless_service_answers_each_ready_endpoint() {
        let zone = sample_zone();
        let mut got = answers(zone.lookup(&name("db.prod.svc.cluster.local."), RecordType::A));
        got.sort_by_key(|r| r.to_string());
        assert_eq!(got, vec![a("10.42.0.5"), a("10.42.0.6"), a("10.42.0.7")]);
    }

    #[test]
    fn statefulset_pods_are_named_by_endpoint_hostname() {
        let zone = sample_zone();
        let got = answers(zone.lookup(&name("db-0.db.prod.svc.cluster.local."), RecordType::A));
        assert_eq!(got, vec![a("10.42.0.5")]);
        let dashed = name("10-42-0-7.db.prod.svc.cluster.local.");
        assert_eq!(
            answers(zone.lookup(&dashed, RecordType::A)),
            vec![a("10.42.0.7")]
        );
        let not_ready = name("db-3.db.prod.svc.cluster.local.");
        assert_eq!(zone.lookup(&not_ready, RecordType::A), Lookup::NxDomain);
    }

    #[test]
    fn publish_not_ready_addresses_includes_unready_endpoints() {
        let services = [service(
            json!({"metadata": {"name": "db", "namespace": "prod"},
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": true}}),
        )];
        let slices = [slice(json!({
            "metadata": {"name": "db-x", "namespace": "prod",
                         "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.42.0.8"], "hostname": "db-0",
                           "conditions": {"ready": false}}]
        }))];
        let services: Vec<&Service> = services.iter().collect();
        let slices: Vec<&EndpointSlice> = slices.iter().collect();
        let zone = ClusterZone::build("cluster.local", &services, &slices).unwrap();
        let got = answers(zone.lookup(&name("db-0.db.prod.svc.cluster.local."), RecordType::A));
        assert_eq!(got, vec![a("10.42.0.8")]);
    }

    #[test]
    fn headless_srv_has_one_record_per_endpoint_with_addresses_as_additionals() {
        let zone = sample_zone();
        let q = name("_pg._tcp.db.prod.svc.cluster.local.");
        let Lookup::Found {
            answers,
            additionals,
        } = zone.lookup(&q, RecordType::SRV)
        else {
            panic!("no SRV answer");
        };
        let mut targets: Vec<String> = answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(srv.target.to_string()),
                _ => None,
            })
            .collect();
        targets.sort();
        assert_eq!(
            targets,
            vec![
                "10-42-0-7.db.prod.svc.cluster.local.",
                "db-0.db.prod.svc.cluster.local.",
                "db-1.db.prod.svc.cluster.local."
            ]
        );
        assert_eq!(additionals.len(), 3);
    }

    #[test]
    fn external_name_services_are_cnames() {
        let zone = sample_zone();
        let got = answers(zone.lookup(&name("ext.default.svc.cluster.local."), RecordType::A));
        assert_eq!(got, vec![RData::CNAME(CNAME(name("example.org.")))]);
    }

    #[test]
    fn pod_names_resolve_to_the_address_they_spell() {
        let zone = sample_zone();
        let q = name("10-42-0-9.anything.pod.cluster.local.");
        assert_eq!(
            answers(zone.lookup(&q, RecordType::A)),
            vec![a("10.42.0.9")]
        );
        assert_eq!(zone.lookup(&q, RecordType::AAAA), Lookup::NoData);
        let bad = name("not-an-ip.default.pod.cluster.local.");
        assert_eq!(zone.lookup(&bad, RecordType::A), Lookup::NxDomain);
    }

    #[test]
    fn service_and_endpoint_addresses_have_ptr_records() {
        let zone = sample_zone();
        let got = answers(zone.lookup(&name("20.0.43.10.in-addr.arpa."), RecordType::PTR));
        assert_eq!(
            got,
            vec![RData::PTR(PTR(name("web.default.svc.cluster.local.")))]
        );
        let got = answers(zone.lookup(&name("5.0.42.10.in-addr.arpa."), RecordType::PTR));
        assert_eq!(
            got,
            vec![RData::PTR(PTR(name("db-0.db.prod.svc.cluster.local.")))]
        );
        let unknown = name("9.9.168.192.in-addr.arpa.");
        assert_eq!(zone.lookup(&unknown, RecordType::PTR), Lookup::Elsewhere);
    }

    #[test]
    fn names_outside_the_cluster_domain_go_elsewhere() {
        let zone = sample_zone();
        assert_eq!(
            zone.lookup(&name("example.org."), RecordType::A),
            Lookup::Elsewhere
        );
    }

    #[test]
    fn the_zone_apex_answers_its_soa() {
        let zone = sample_zone();
        let got = answers(zone.lookup(&name("cluster.local."), RecordType::SOA));
        assert!(matches!(got.as_slice(), [RData::SOA(_)]));
    }

    #[test]
    fn reverse_names_spell_addresses_backwards() {
        let v4 = reverse_name("10.43.0.1".parse().unwrap()).unwrap();
        assert_eq!(v4.to_string(), "1.0.43.10.in-addr.arpa.");
        let v6 = reverse_name("2001:db8::1".parse().unwrap())
            .unwrap()
            .to_string();
        assert!(v6.starts_with("1.0.0.0.0.0.0.0"), "{v6}");
        assert!(v6.ends_with("8.b.d.0.1.0.0.2.ip6.arpa."), "{v6}");
    }
}
