//! berth's nftables table `ip berth` and the pod egress masquerade in it, programmed over
//! netlink (no `nft` binary at run time).
//!
//! The service proxy adds its own chains to the same table later, so [`Masquerade::apply`] only
//! ever rewrites the `postrouting` chain, never the whole table.

use std::net::Ipv4Addr;

use rustables::expr::{
    Bitwise, Cmp, CmpOp, HighLevelPayload, IPv4HeaderField, Masquerade as MasqueradeExpr,
    NetworkHeaderField,
};
use rustables::{Batch, Chain, ChainPolicy, ChainType, Hook, HookClass, MsgType, ProtocolFamily};
use rustables::{Rule, Table};

use super::cidr::Ipv4Cidr;
use super::NetError;

/// berth's table, family `ip`.
pub const TABLE: &str = "berth";
/// The source-NAT chain holding the egress masquerade.
pub const POSTROUTING_CHAIN: &str = "postrouting";
/// nftables' standard "srcnat" priority, the one `nft` names `srcnat`.
const SRCNAT_PRIORITY: i32 = 100;

/// Pod traffic leaving the node gets the node's address: anything from this node's pods to a
/// destination outside the cluster's pod network. Pod-to-pod traffic keeps its source address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masquerade {
    pub pod_cidr_slice: Ipv4Cidr,
    pub cluster_cidr: Ipv4Cidr,
}

impl Masquerade {
    /// The chain and rule as `nft list table ip berth` prints them; the documentation and the
    /// tests' reference for what [`Masquerade::batch`] programs.
    pub fn to_nft(&self) -> String {
        format!(
            "table ip {TABLE} {{\n\
             \tchain {POSTROUTING_CHAIN} {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\t{}\n\
             \t}}\n\
             }}\n",
            self.rule_nft()
        )
    }

    /// The masquerade rule alone, in `nft` syntax.
    pub fn rule_nft(&self) -> String {
        format!(
            "ip saddr {} ip daddr != {} masquerade",
            nft_prefix(&self.pod_cidr_slice),
            nft_prefix(&self.cluster_cidr)
        )
    }

    /// One atomic transaction: create the table and chain if missing, flush the chain, add the
    /// rule. Re-applying it converges to the same state, and a failure leaves the old one.
    pub fn batch(&self) -> Result<Batch, NetError> {
        let mut batch = Batch::new();
        let table = Table::new(ProtocolFamily::Ipv4).with_name(TABLE);
        batch.add(&table, MsgType::Add);
        let chain = Chain::new(&table)
            .with_name(POSTROUTING_CHAIN)
            .with_hook(Hook::new(HookClass::PostRouting, SRCNAT_PRIORITY))
            .with_type(ChainType::Nat)
            .with_policy(ChainPolicy::Accept);
        batch.add(&chain, MsgType::Add);
        // A delete naming only the chain flushes it.
        batch.add(&Rule::new(&chain)?, MsgType::Del);
        let mut rule = Rule::new(&chain)?;
        match_network(
            &mut rule,
            IPv4HeaderField::Saddr,
            CmpOp::Eq,
            &self.pod_cidr_slice,
        )?;
        match_network(
            &mut rule,
            IPv4HeaderField::Daddr,
            CmpOp::Neq,
            &self.cluster_cidr,
        )?;
        rule.add_expr(MasqueradeExpr::default());
        batch.add(&rule, MsgType::Add);
        Ok(batch)
    }

    /// Programs the table in the calling thread's network namespace.
    pub fn apply(&self) -> Result<(), NetError> {
        self.batch()?.send().map_err(NetError::from)
    }
}

/// Deletes the whole `ip berth` table, chains of other berth parts included. Idempotent: the
/// table is added first so the delete never fails for lack of it.
pub fn delete_table() -> Result<(), NetError> {
    let mut batch = Batch::new();
    let table = Table::new(ProtocolFamily::Ipv4).with_name(TABLE);
    batch.add(&table, MsgType::Add);
    batch.add(&table, MsgType::Del);
    batch.send().map_err(NetError::from)
}

/// `ip <field> [!=] <cidr>`: load the address, mask it, compare with the network address.
fn match_network(
    rule: &mut Rule,
    field: IPv4HeaderField,
    op: CmpOp,
    cidr: &Ipv4Cidr,
) -> Result<(), NetError> {
    rule.add_expr(HighLevelPayload::Network(NetworkHeaderField::IPv4(field)).build());
    if cidr.prefix_len() < 32 {
        rule.add_expr(Bitwise::new(
            cidr.netmask().octets(),
            Ipv4Addr::UNSPECIFIED.octets(),
        )?);
    }
    rule.add_expr(Cmp::new(op, cidr.network().octets()));
    Ok(())
}

/// nft prints a /32 as a bare address.
fn nft_prefix(cidr: &Ipv4Cidr) -> String {
    if cidr.prefix_len() == 32 {
        cidr.network().to_string()
    } else {
        cidr.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masquerade() -> Masquerade {
        Masquerade {
            pod_cidr_slice: "10.42.0.0/24".parse().unwrap(),
            cluster_cidr: "10.42.0.0/16".parse().unwrap(),
        }
    }

    #[test]
    fn the_rule_masquerades_this_nodes_pods_unless_they_talk_to_other_pods() {
        assert_eq!(
            masquerade().rule_nft(),
            "ip saddr 10.42.0.0/24 ip daddr != 10.42.0.0/16 masquerade"
        );
    }

    #[test]
    fn the_table_renders_as_nft_lists_it() {
        let golden = include_str!("../../tests/fixtures/network/masquerade.nft");
        assert_eq!(masquerade().to_nft(), golden);
    }

    #[test]
    fn the_batch_names_the_table_chain_and_masquerade_expression() {
        let bytes = masquerade().batch().unwrap().finalize();
        let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(contains(b"berth"));
        assert!(contains(b"postrouting"));
        assert!(contains(b"masq"));
        assert!(contains(&[10, 42, 0, 0]));
        assert!(contains(&[255, 255, 255, 0]));
        assert!(contains(&[255, 255, 0, 0]));
    }

    #[test]
    fn a_host_route_sized_cidr_is_printed_without_prefix() {
        let m = Masquerade {
            pod_cidr_slice: "10.42.0.7/32".parse().unwrap(),
            cluster_cidr: "10.42.0.0/16".parse().unwrap(),
        };
        assert!(m.rule_nft().starts_with("ip saddr 10.42.0.7 ip daddr"));
    }
}
