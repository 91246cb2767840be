//! berth: a whole single-node Kubernetes in one binary.
//!
//! # Layout
//! - `cli`: clap commands turned into a typed [`config::Config`]; starts nothing itself.
//! - `config`: the TOML config file and every default, in one place.
//! - `daemon`: wires the subsystems together behind readiness gates and one shutdown signal.
//! - `pki`: the cluster CA, serving and client certificates, kubeconfig files.
//! - `image_import`: image archives imported from a directory at start (air-gapped sites).
//! - `certs`: certificate rotation while the server runs (live serving cert, kubeconfig rewrite).
//! - `api`: shared API types: the resource table, `metav1.Status` errors, selectors, request
//!   body formats (JSON, YAML, protobuf, CBOR). No I/O.
//! - `apiserver`: HTTPS front end: authentication, discovery, REST verbs, watch streams.
//! - `aggregator`: APIServices: requests for aggregated groups proxied to their Services.
//! - `audit`: the audit log: an audit.k8s.io/v1 policy, JSON-line events, size rotation.
//! - `admission`: the mutating and validating plugin chain every write passes through.
//! - `cel`: CEL expressions (compiled once, cached, bounded in cost) for policies and CRD rules.
//! - `registry`: per-kind policy (defaults, validation, generation) and the generic CRUD on the store.
//! - `encryption`: Secrets sealed with AES-256-GCM at rest, the key file and key rotation.
//! - `store`: key/value log with revisions, compaction and watch fan-out, on embedded redb or on
//!   etcd (HA); knows no kinds.
//! - `client`: the in-process `kube::Client` whose transport is the apiserver's router.
//! - `crd`: CustomResourceDefinitions: the served custom resources, their schemas and controller.
//! - `controllers`: level-triggered reconcilers, one per file; they only use the client.
//! - `scheduler`: assigns pods to nodes through the `binding` subresource.
//! - `agent`: the kubelet: node registration, pod workers, status.
//! - `runtime`: the container runtime: the per-pod shim, libcontainer, images, cgroups. Knows no API.
//! - `network`: bridge, veths, IPAM and the nftables service proxy.
//! - `dns`: the cluster DNS server.
//! - `fuzzing`: entry points for the fuzz targets (hostile bytes into the server's own parsers).
//! - `metrics`: this node's CPU and memory usage sampled from cgroups, for `metrics.k8s.io`.
//! - `ingress`: the built-in Ingress controller: IngressClass `berth` and an HTTP(S) reverse proxy.
//! - `join`: worker nodes: join tokens, CSR approval and signing, node authorization, `berth agent`.
//! - `leader`: Lease-based election of the server that runs the controllers when servers share etcd.

pub mod admission;
pub mod agent;
pub mod aggregator;
pub mod api;
pub mod apiserver;
pub mod audit;
pub mod cel;
pub mod certs;
pub mod cli;
pub mod client;
pub mod config;
pub mod controllers;
pub mod crd;
pub mod daemon;
pub mod dns;
pub mod encryption;
#[doc(hidden)]
pub mod fsutil;
pub mod fuzzing;
pub mod image_import;
pub mod ingress;
pub mod join;
pub mod leader;
pub mod metrics;
pub mod network;
pub mod pki;
pub mod registry;
pub mod runtime;
pub mod scheduler;
pub mod store;
