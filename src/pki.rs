//! PLACEHOLDER with the agreed interface; replaced by the real PKI.
#![allow(unused_variables)]
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
#[derive(Debug, thiserror::Error)]
#[error("pki")]
pub struct PkiError;
pub struct ServingNames {
    pub hostname: String,
    pub ips: Vec<IpAddr>,
    pub cluster_domain: String,
    pub service_cidr: String,
}
pub struct Pki {
    pub ca_cert_pem: String,
}
impl Pki {
    pub fn ensure(dir: &Path, names: &ServingNames) -> Result<Pki, PkiError> {
        todo!()
    }
    pub fn server_tls_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        todo!()
    }
}
pub fn write_kubeconfig(path: &Path, server_url: &str, pki: &Pki) -> Result<(), PkiError> {
    todo!()
}
