//! The routing state the proxy reads: a routing table and the certificates, replaced as a whole
//! after every change. Readers clone the `Arc` and let go of the lock at once, so a request in
//! flight (or an open connection) keeps the state it started with and nothing waits on a rebuild.

use std::sync::{Arc, RwLock};

use rustls::sign::CertifiedKey;

use super::routes::RoutingTable;
use super::tls::Certificates;

#[derive(Debug)]
pub struct Routing {
    pub table: RoutingTable,
    pub certificates: Certificates,
}

#[derive(Debug, Clone)]
pub struct State(Arc<RwLock<Arc<Routing>>>);

impl State {
    /// No routes yet: every request gets 404 and every handshake the fallback certificate.
    pub fn new(fallback: Arc<CertifiedKey>) -> State {
        State(Arc::new(RwLock::new(Arc::new(Routing {
            table: RoutingTable::default(),
            certificates: Certificates::new(fallback),
        }))))
    }

    pub fn current(&self) -> Arc<Routing> {
        // A poisoned lock still holds a whole `Arc` (the writer only swaps it).
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn replace(&self, routing: Routing) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(routing);
    }
}
