//! The proxy's part of table `ip berth` as plain data: chains of rules and named sets/maps.
//! The renderer produces it, [`Ruleset::to_nft`] prints it for people and golden files, and the
//! netlink layer diffs two of them and encodes only the difference.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;

use crate::network::cidr::Ipv4Cidr;

/// The packet mark bit that asks the proxy's postrouting chain to masquerade (kube-proxy's).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// Everything the proxy owns in the table, keyed by name so two rulesets diff by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub chains: BTreeMap<String, Chain>,
    pub sets: BTreeMap<String, Set>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Present for chains the kernel calls from a netfilter hook.
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: ChainKind,
    pub hook: HookPoint,
    pub priority: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    Nat,
    Filter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl HookPoint {
    /// The kernel's NF_INET_* hook number.
    pub fn number(self) -> u32 {
        match self {
            HookPoint::Prerouting => 0,
            HookPoint::Input => 1,
            HookPoint::Forward => 2,
            HookPoint::Output => 3,
            HookPoint::Postrouting => 4,
        }
    }

    fn nft(self) -> &'static str {
        match self {
            HookPoint::Prerouting => "prerouting",
            HookPoint::Input => "input",
            HookPoint::Forward => "forward",
            HookPoint::Output => "output",
            HookPoint::Postrouting => "postrouting",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }

    pub fn nft(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }

    /// Kubernetes' spelling; anything else is not a protocol the proxy serves.
    pub fn from_kubernetes(name: Option<&str>) -> Option<Proto> {
        match name.unwrap_or("TCP") {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }
}

/// One rule: statements evaluated left to right, as in `nft`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule(pub Vec<Stmt>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    /// `ct state new`
    CtStateNew,
    /// `ip saddr [!=] <cidr>`
    Saddr {
        cidr: Ipv4Cidr,
        negate: bool,
    },
    /// `ip daddr @<set>` (a set of addresses)
    DaddrInSet(String),
    /// `ip saddr @<set>` (a set of addresses)
    SaddrInSet(String),
    /// `ip daddr . meta l4proto . th dport @<set>`
    DestinationInSet(String),
    /// `meta l4proto . th dport @<set>`
    ProtoPortInSet(String),
    /// `ip daddr . meta l4proto . th dport vmap @<map>`
    DestinationVmap(String),
    /// `meta l4proto . th dport vmap @<map>`
    ProtoPortVmap(String),
    /// `numgen random mod N vmap { 0 : goto a, 1 : goto b, ... }`
    RandomVmap(Vec<String>),
    /// `update @<set> { ip saddr }`
    UpdateSaddr(String),
    /// `meta mark set meta mark | 0x4000`
    SetMasqueradeMark,
    /// `meta mark & 0x4000 == 0x4000`
    HasMasqueradeMark,
    /// `meta l4proto <proto> dnat to <addr>:<port>`
    Dnat {
        proto: Proto,
        addr: Ipv4Addr,
        port: u16,
    },
    Masquerade,
    /// `reject`: ICMP port unreachable, which TCP clients see as "connection refused".
    Reject,
    Drop,
    Jump(String),
    Goto(String),
    /// `ct state established,related`
    CtStateEstablished,
    /// `ip daddr [!=] <cidr>`
    Daddr {
        cidr: Ipv4Cidr,
        negate: bool,
    },
    /// `meta l4proto <proto>`
    L4Proto(Proto),
    /// `th dport <from>` or, for a range, `th dport <from>-<to>`
    Dport {
        from: u16,
        to: u16,
    },
    Accept,
    /// `iif != "lo"`: the packet did not arrive on loopback (index 1 in every namespace).
    IifNotLoopback,
    /// `oif != "lo"`: the packet does not leave through loopback.
    OifNotLoopback,
}

/// A named set, or a map whose values are verdicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub key: KeyType,
    /// Elements are added by the data path (`update @set`), with this timeout in seconds.
    pub dynamic_timeout_secs: Option<u64>,
    /// Maps to a `goto <chain>` per key; `None` for plain sets.
    pub elements: BTreeMap<Key, Option<String>>,
    pub is_map: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// `ipv4_addr`
    Addr,
    /// `ipv4_addr . inet_proto . inet_service`
    Destination,
    /// `inet_proto . inet_service`
    ProtoPort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Addr(Ipv4Addr),
    Destination(Ipv4Addr, Proto, u16),
    ProtoPort(Proto, u16),
}

impl KeyType {
    fn nft(self) -> &'static str {
        match self {
            KeyType::Addr => "ipv4_addr",
            KeyType::Destination => "ipv4_addr . inet_proto . inet_service",
            KeyType::ProtoPort => "inet_proto . inet_service",
        }
    }
}

impl Key {
    fn nft(&self) -> String {
        match self {
            Key::Addr(a) => a.to_string(),
            Key::Destination(a, p, port) => format!("{a} . {} . {port}", p.nft()),
            Key::ProtoPort(p, port) => format!("{} . {port}", p.nft()),
        }
    }
}

impl Set {
    pub fn map(key: KeyType) -> Set {
        Set {
            key,
            dynamic_timeout_secs: None,
            elements: BTreeMap::new(),
            is_map: true,
        }
    }

    pub fn plain(key: KeyType) -> Set {
        Set {
            is_map: false,
            ..Set::map(key)
        }
    }

    /// The set's definition without its elements: what decides whether it must be recreated.
    pub fn same_definition(&self, other: &Set) -> bool {
        self.key == other.key
            && self.is_map == other.is_map
            && self.dynamic_timeout_secs == other.dynamic_timeout_secs
    }
}

impl Rule {
    pub fn to_nft(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(Stmt::to_nft).collect();
        parts.join(" ")
    }
}

impl Stmt {
    pub fn to_nft(&self) -> String {
        match self {
            Stmt::CtStateNew => "ct state new".into(),
            Stmt::Saddr { cidr, negate } => {
                let op = if *negate { "!= " } else { "" };
                format!("ip saddr {op}{}", nft_prefix(cidr))
            }
            Stmt::DaddrInSet(s) => format!("ip daddr @{s}"),
            Stmt::SaddrInSet(s) => format!("ip saddr @{s}"),
            Stmt::DestinationInSet(s) => format!("ip daddr . meta l4proto . th dport @{s}"),
            Stmt::ProtoPortInSet(s) => format!("meta l4proto . th dport @{s}"),
            Stmt::DestinationVmap(m) => format!("ip daddr . meta l4proto . th dport vmap @{m}"),
            Stmt::ProtoPortVmap(m) => format!("meta l4proto . th dport vmap @{m}"),
            Stmt::RandomVmap(targets) => {
                let arms: Vec<String> = targets
                    .iter()
                    .enumerate()
                    .map(|(i, t)| format!("{i} : goto {t}"))
                    .collect();
                format!(
                    "numgen random mod {} vmap {{ {} }}",
                    targets.len(),
                    arms.join(", ")
                )
            }
            Stmt::UpdateSaddr(s) => format!("update @{s} {{ ip saddr }}"),
            Stmt::SetMasqueradeMark => {
                format!("meta mark set meta mark | {MASQUERADE_MARK:#010x}")
            }
            Stmt::HasMasqueradeMark => {
                format!("meta mark & {MASQUERADE_MARK:#010x} == {MASQUERADE_MARK:#010x}")
            }
            Stmt::Dnat { proto, addr, port } => {
                format!("meta l4proto {} dnat to {addr}:{port}", proto.nft())
            }
            Stmt::Masquerade => "masquerade".into(),
            Stmt::Reject => "reject".into(),
            Stmt::Drop => "drop".into(),
            Stmt::Jump(c) => format!("jump {c}"),
            Stmt::Goto(c) => format!("goto {c}"),
            Stmt::CtStateEstablished => "ct state established,related".into(),
            Stmt::Daddr { cidr, negate } => {
                let op = if *negate { "!= " } else { "" };
                format!("ip daddr {op}{}", nft_prefix(cidr))
            }
            Stmt::L4Proto(proto) => format!("meta l4proto {}", proto.nft()),
            Stmt::Dport { from, to } if from == to => format!("th dport {from}"),
            Stmt::Dport { from, to } => format!("th dport {from}-{to}"),
            Stmt::Accept => "accept".into(),
            Stmt::IifNotLoopback => "iif != \"lo\"".into(),
            Stmt::OifNotLoopback => "oif != \"lo\"".into(),
        }
    }
}

impl Ruleset {
    /// The proxy's objects as `nft list table ip <table>` would show them (sets first, then
    /// chains, each sorted by name); the form of the golden files.
    pub fn to_nft(&self, table: &str) -> String {
        let mut out = format!("table ip {table} {{\n");
        for (name, set) in &self.sets {
            let kind = if set.is_map { "map" } else { "set" };
            let _ = writeln!(out, "\t{kind} {name} {{");
            let value = if set.is_map { " : verdict" } else { "" };
            let _ = writeln!(out, "\t\ttype {}{value}", set.key.nft());
            if let Some(secs) = set.dynamic_timeout_secs {
                let _ = writeln!(out, "\t\tflags dynamic,timeout\n\t\ttimeout {secs}s");
            }
            if !set.elements.is_empty() {
                let elements: Vec<String> = set
                    .elements
                    .iter()
                    .map(|(k, v)| match v {
                        Some(chain) => format!("{} : goto {chain}", k.nft()),
                        None => k.nft(),
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "\t\telements = {{ {} }}",
                    elements.join(",\n\t\t\t     ")
                );
            }
            out.push_str("\t}\n");
        }
        for (name, chain) in &self.chains {
            let _ = writeln!(out, "\tchain {name} {{");
            if let Some(base) = chain.base {
                let kind = match base.kind {
                    ChainKind::Nat => "nat",
                    ChainKind::Filter => "filter",
                };
                let _ = writeln!(
                    out,
                    "\t\ttype {kind} hook {} priority {}; policy accept;",
                    base.hook.nft(),
                    base.priority
                );
            }
            for rule in &chain.rules {
                let _ = writeln!(out, "\t\t{}", rule.to_nft());
            }
            out.push_str("\t}\n");
        }
        out.push_str("}\n");
        out
    }
}

/// nft prints a /32 as a bare address.
fn nft_prefix(cidr: &Ipv4Cidr) -> String {
    if cidr.prefix_len() == 32 {
        cidr.network().to_string()
    } else {
        cidr.to_string()
    }
}
