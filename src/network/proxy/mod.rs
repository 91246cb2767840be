//! The service proxy: Services and EndpointSlices become nftables chains and maps in berth's
//! table `ip berth`, next to (never touching) the egress masquerade chain of [`super::nft`].
//!
//! [`render`] is pure and produces a [`model::Ruleset`]; [`netlink`] diffs two rulesets and
//! applies the difference in one atomic batch; [`controller`] watches the API and drives both.

pub mod apply;
pub mod controller;
pub mod incremental;
pub mod model;
pub mod netlink;
pub mod render;

pub use apply::{Applied, Applier};
pub use model::Ruleset;
pub use render::{render, ProxyConfig};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("nf_tables: {op}: {source}")]
    Netlink {
        op: &'static str,
        source: nix::errno::Errno,
    },
    #[error("nf_tables refused the change ({op}): {errno}")]
    Kernel {
        op: &'static str,
        errno: nix::errno::Errno,
    },
    #[error("nf_tables refused {subject}: {errno}")]
    Refused {
        subject: String,
        errno: nix::errno::Errno,
    },
    #[error("network namespace: {0}")]
    Netns(#[from] crate::network::NetError),
}

impl ProxyError {
    fn netlink(op: &'static str, source: nix::errno::Errno) -> ProxyError {
        ProxyError::Netlink { op, source }
    }
}
