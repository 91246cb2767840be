//! Worker nodes joining a cluster with a token (`berth token`, `berth agent`).
//!
//! - [`token`]: bootstrap tokens (format, their Secrets, authentication, the CA pin).
//! - [`server`]: what the server publishes for joining nodes (`cluster-info`, bindings).
//! - [`csr`]: the approver and signer of node client certificates.
//! - [`node_authz`]: the Node authorizer and NodeRestriction admission.
//! - [`nodeipam`]: gives every Node a pod CIDR slice.
//! - [`bootstrap`]: the agent's side: trust from the token, a certificate through a CSR.
//! - [`serving`]: the kubelet's serving certificate through a `kubelet-serving` CSR.
//! - [`rotation`]: the agent renews its node certificate before it expires.
//! - [`server_join`]: another server joins the datastore with a server token alone.
//! - [`cluster_secrets`]: servers on one datastore share its CAs and keys through it.
//! - [`key_sharing`]: secrets encryption keys follow rotations on any server of the datastore.
//! - [`cluster_info_jws`]: the bootstrap signer: `cluster-info` signed per bootstrap token.
//! - [`agent`]: the `berth agent` process: heartbeat, pods, proxy, policy against a remote API.

pub mod agent;
pub mod bootstrap;
pub mod cluster_info_jws;
pub mod cluster_secrets;
pub mod csr;
pub mod key_sharing;
pub mod node_authz;
pub mod nodeipam;
pub mod rotation;
pub mod server;
pub mod server_join;
pub mod serving;
pub mod token;
