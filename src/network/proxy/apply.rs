//! Keeps the kernel's copy of the proxy's rules equal to the latest desired ruleset, sending
//! only what changed since the last successful apply.

use super::model::Ruleset;
use super::netlink::{diff, is_proxy_object, NftSocket, Stale};
use super::ProxyError;
use crate::network::nft::TABLE;

/// What one apply sent to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub messages: usize,
    pub bytes: usize,
}

pub struct Applier {
    socket: NftSocket,
    table: &'static str,
    /// Which names in the table are this applier's to replace after a restart.
    owned: fn(&str) -> bool,
    /// What the kernel holds; `None` until the first apply, or after a failed one, when the
    /// next apply rebuilds everything from what it finds in the kernel.
    applied: Option<Ruleset>,
}

impl Applier {
    /// An applier for the network namespace of the calling thread.
    pub fn open() -> Result<Applier, ProxyError> {
        Applier::open_table(TABLE, is_proxy_object)
    }

    /// An applier for another `ip` table (network policy, host ports), which owns the names
    /// `owned` accepts.
    pub fn open_table(table: &'static str, owned: fn(&str) -> bool) -> Result<Applier, ProxyError> {
        Ok(Applier {
            socket: NftSocket::open()?,
            table,
            owned,
            applied: None,
        })
    }

    /// One atomic batch from the kernel's current state to `desired`, which it keeps as the
    /// base of the next diff.
    pub fn apply(&mut self, desired: Ruleset) -> Result<Applied, ProxyError> {
        let (base, stale) = match self.applied.take() {
            Some(applied) => (applied, Stale::default()),
            // Start over: whatever an earlier run (or a failed batch) left is replaced.
            None => (
                Ruleset::default(),
                self.socket.list_owned(self.table, self.owned)?,
            ),
        };
        let batch = diff(self.table, &base, &desired, &stale);
        let messages = batch.messages();
        let bytes = self.socket.send(batch)?;
        self.applied = Some(desired);
        Ok(Applied { messages, bytes })
    }
}
