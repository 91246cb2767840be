//! Encoding the proxy's rulesets as nf_tables netlink messages, and sending them.
//!
//! rustables (used for the masquerade chain) has no verdict maps, set element data, `numgen`,
//! `dynset` or 32-bit registers for concatenated keys, so the proxy encodes its messages itself;
//! it is the same wire format, one batch per change, applied atomically by the kernel.
//!
//! [`diff`] turns (applied, desired) into the smallest batch: new chains and sets first, then
//! element changes and rewritten chains, then removals once nothing refers to them.

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

use super::model::*;
use super::ProxyError;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFPROTO_IPV4: u8 = 2;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;

// Registers: 0 is the verdict, 1 and 2 are 16-byte registers, 8.. are their 4-byte slices,
// which concatenated keys use one field per slice.
const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;
const REG_2: u32 = 2;
const REG32_00: u32 = 8;

const NFT_GOTO: i32 = -4;
const NFT_JUMP: i32 = -3;
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_TIMEOUT: u32 = 0x10;
const NFT_SET_EVAL: u32 = 0x20;

const PAYLOAD_NETWORK: u32 = 1;
const PAYLOAD_TRANSPORT: u32 = 2;
const META_MARK: u32 = 3;
const META_L4PROTO: u32 = 16;
const META_IIF: u32 = 4;
const META_OIF: u32 = 5;
/// The loopback device's index, the same in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;
const CMP_EQ: u32 = 0;
const CMP_NEQ: u32 = 1;
const CMP_LTE: u32 = 3;
const CMP_GTE: u32 = 5;
const CT_STATE: u32 = 0;
const CT_STATE_NEW: u32 = 1 << 3;
const CT_STATE_ESTABLISHED: u32 = 1 << 1;
const CT_STATE_RELATED: u32 = 1 << 2;

// nft's datatype numbers, so `nft list` prints our sets readably.
const TYPE_INTEGER: u32 = 4;
const TYPE_IPADDR: u32 = 7;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_BITS: u32 = 6;

/// Netlink attributes being built, each padded to 4 bytes.
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn bytes(mut self, ty: u16, data: &[u8]) -> Attrs {
        let len = 4 + data.len();
        // Callers split what could outgrow it (`element_messages`): a longer attribute would
        // go out with a wrapped length, and the kernel would misread the whole batch.
        debug_assert!(
            len <= usize::from(u16::MAX),
            "netlink attribute of {len} bytes"
        );
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }

    fn u32(self, ty: u16, value: u32) -> Attrs {
        self.bytes(ty, &value.to_be_bytes())
    }

    fn u64(self, ty: u16, value: u64) -> Attrs {
        self.bytes(ty, &value.to_be_bytes())
    }

    fn str(self, ty: u16, value: &str) -> Attrs {
        let mut data = value.as_bytes().to_vec();
        data.push(0);
        self.bytes(ty, &data)
    }

    fn nest(self, ty: u16, inner: Attrs) -> Attrs {
        self.bytes(ty | NLA_F_NESTED, &inner.0)
    }
}

/// `NFTA_DATA_VALUE` inside a data nest.
fn value(data: &[u8]) -> Attrs {
    Attrs::default().bytes(1, data)
}

/// `NFTA_DATA_VERDICT { code, chain }` inside a data nest.
fn verdict(code: i32, chain: Option<&str>) -> Attrs {
    let mut v = Attrs::default().u32(1, code as u32);
    if let Some(chain) = chain {
        v = v.str(2, chain);
    }
    Attrs::default().nest(2, v)
}

/// One expression: `NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA }`.
struct Expr(&'static str, Attrs);

fn payload(dreg: u32, base: u32, offset: u32, len: u32) -> Expr {
    Expr(
        "payload",
        Attrs::default()
            .u32(1, dreg)
            .u32(2, base)
            .u32(3, offset)
            .u32(4, len),
    )
}

fn meta_load(dreg: u32, key: u32) -> Expr {
    Expr("meta", Attrs::default().u32(1, dreg).u32(2, key))
}

fn cmp(op: u32, data: &[u8]) -> Expr {
    Expr(
        "cmp",
        Attrs::default()
            .u32(1, REG_1)
            .u32(2, op)
            .nest(3, value(data)),
    )
}

fn bitwise(mask: &[u8], xor: &[u8]) -> Expr {
    Expr(
        "bitwise",
        Attrs::default()
            .u32(1, REG_1)
            .u32(2, REG_1)
            .u32(3, mask.len() as u32)
            .nest(4, value(mask))
            .nest(5, value(xor)),
    )
}

fn lookup(set: &str, sreg: u32, dreg: Option<u32>, set_id: Option<u32>) -> Expr {
    let mut a = Attrs::default().str(1, set).u32(2, sreg);
    if let Some(dreg) = dreg {
        a = a.u32(3, dreg);
    }
    if let Some(id) = set_id {
        a = a.u32(4, id);
    }
    Expr("lookup", a)
}

fn immediate_verdict(code: i32, chain: Option<&str>) -> Expr {
    Expr(
        "immediate",
        Attrs::default()
            .u32(1, REG_VERDICT)
            .nest(2, verdict(code, chain)),
    )
}

fn immediate_value(dreg: u32, data: &[u8]) -> Expr {
    Expr(
        "immediate",
        Attrs::default().u32(1, dreg).nest(2, value(data)),
    )
}

/// `ip daddr . meta l4proto . th dport` into consecutive 4-byte registers.
fn load_destination() -> Vec<Expr> {
    vec![
        payload(REG32_00, PAYLOAD_NETWORK, 16, 4),
        meta_load(REG32_00 + 1, META_L4PROTO),
        payload(REG32_00 + 2, PAYLOAD_TRANSPORT, 2, 2),
    ]
}

fn load_proto_port() -> Vec<Expr> {
    vec![
        meta_load(REG32_00, META_L4PROTO),
        payload(REG32_00 + 1, PAYLOAD_TRANSPORT, 2, 2),
    ]
}

/// A set key as the registers hold it: every field padded to 4 bytes.
fn key_bytes(key: &Key) -> Vec<u8> {
    let proto = |p: Proto| [p.number(), 0, 0, 0];
    let port = |p: u16| {
        let b = p.to_be_bytes();
        [b[0], b[1], 0, 0]
    };
    match key {
        Key::Addr(a) => a.octets().to_vec(),
        Key::Destination(a, p, n) => [a.octets(), proto(*p), port(*n)].concat(),
        Key::ProtoPort(p, n) => [proto(*p), port(*n)].concat(),
    }
}

fn key_type(key: KeyType) -> (u32, u32) {
    let concat = |types: &[u32]| types.iter().fold(0, |acc, t| (acc << TYPE_BITS) | t);
    match key {
        KeyType::Addr => (TYPE_IPADDR, 4),
        KeyType::Destination => (
            concat(&[TYPE_IPADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]),
            12,
        ),
        KeyType::ProtoPort => (concat(&[TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]), 8),
    }
}

/// An nf_tables transaction under construction.
pub struct Batch {
    buf: Vec<u8>,
    seq: u32,
    table: String,
    /// Where the last object message starts, to ask for its acknowledgement.
    last: Option<usize>,
    next_set_id: u32,
    /// What each message is about, by sequence number, to say which one the kernel refused.
    subjects: Vec<String>,
}

impl Batch {
    pub fn new(table: &str) -> Batch {
        let mut batch = Batch {
            buf: Vec::new(),
            seq: 0,
            table: table.to_string(),
            last: None,
            next_set_id: 1,
            subjects: Vec::new(),
        };
        batch.header(NFNL_MSG_BATCH_BEGIN, 0, 0, &Attrs::default());
        batch
    }

    /// Object messages in the batch, begin/end markers excluded.
    pub fn messages(&self) -> usize {
        self.seq.saturating_sub(1) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_none()
    }

    fn header(&mut self, ty: u16, flags: u16, family: u8, attrs: &Attrs) {
        let start = self.buf.len();
        let len = 16 + 4 + attrs.0.len();
        self.buf.extend_from_slice(&(len as u32).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf
            .extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.push(family);
        self.buf.push(0);
        let res_id = if ty == NFNL_MSG_BATCH_BEGIN || ty == NFNL_MSG_BATCH_END {
            NFNL_SUBSYS_NFTABLES
        } else {
            0
        };
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        self.buf.extend_from_slice(&attrs.0);
        self.seq += 1;
        self.subjects.push(format!("message type {}", ty & 0xff));
        if ty != NFNL_MSG_BATCH_BEGIN && ty != NFNL_MSG_BATCH_END {
            self.last = Some(start);
        }
    }

    fn object(&mut self, msg: u16, flags: u16, attrs: Attrs) {
        self.header(
            (NFNL_SUBSYS_NFTABLES << 8) | msg,
            flags,
            NFPROTO_IPV4,
            &attrs,
        );
    }

    fn describe_last(&mut self, subject: String) {
        if let Some(last) = self.subjects.last_mut() {
            *last = subject;
        }
    }

    pub fn add_table(&mut self) {
        let attrs = Attrs::default().str(1, &self.table);
        self.object(NFT_MSG_NEWTABLE, NLM_F_CREATE, attrs);
    }

    pub fn add_chain(&mut self, name: &str, chain: &Chain) {
        let mut attrs = Attrs::default().str(1, &self.table).str(3, name);
        if let Some(base) = chain.base {
            let hook = Attrs::default()
                .u32(1, base.hook.number())
                .u32(2, base.priority as u32);
            let kind = match base.kind {
                ChainKind::Nat => "nat",
                ChainKind::Filter => "filter",
            };
            // NF_ACCEPT
            attrs = attrs.nest(4, hook).u32(5, 1).str(7, kind);
        }
        self.object(NFT_MSG_NEWCHAIN, NLM_F_CREATE, attrs);
        self.describe_last(format!("add chain {name}"));
    }

    /// Deleting a chain's rules: a rule delete naming only the chain.
    pub fn flush_chain(&mut self, name: &str) {
        let attrs = Attrs::default().str(1, &self.table).str(2, name);
        self.object(NFT_MSG_DELRULE, 0, attrs);
    }

    pub fn delete_chain(&mut self, name: &str) {
        let attrs = Attrs::default().str(1, &self.table).str(3, name);
        self.object(NFT_MSG_DELCHAIN, 0, attrs);
    }

    pub fn add_set(&mut self, name: &str, set: &Set) {
        let (ty, len) = key_type(set.key);
        let mut flags = 0;
        let mut attrs = Attrs::default()
            .str(1, &self.table)
            .str(2, name)
            .u32(4, ty)
            .u32(5, len);
        if set.is_map {
            flags |= NFT_SET_MAP;
            attrs = attrs.u32(6, NFT_DATA_VERDICT);
        }
        if let Some(secs) = set.dynamic_timeout_secs {
            flags |= NFT_SET_TIMEOUT | NFT_SET_EVAL;
            attrs = attrs.u64(11, secs.saturating_mul(1000));
        }
        // The kernel insists on a batch-local id even for sets it can find by name.
        let id = self.next_set_id;
        self.next_set_id += 1;
        attrs = attrs.u32(3, flags).u32(10, id);
        self.object(NFT_MSG_NEWSET, NLM_F_CREATE, attrs);
        self.describe_last(format!("add set {name}"));
    }

    pub fn delete_set(&mut self, name: &str) {
        let attrs = Attrs::default().str(1, &self.table).str(2, name);
        self.object(NFT_MSG_DELSET, 0, attrs);
    }

    /// Adds (or with `delete`, removes) elements.
    pub fn elements<'a>(
        &mut self,
        set: &str,
        elements: impl IntoIterator<Item = (&'a Key, &'a Option<String>)>,
        delete: bool,
    ) {
        let elements = elements.into_iter().map(|(key, target)| {
            let element = Attrs::default().nest(1, value(&key_bytes(key)));
            // A delete matches on the key alone.
            match (target, delete) {
                (Some(chain), false) => element.nest(2, verdict(NFT_GOTO, Some(chain))),
                _ => element,
            }
        });
        self.element_messages(set, None, delete, elements);
    }

    /// One message per run of elements, split so no message outgrows netlink's 64 KiB
    /// attribute length (a Service with a thousand endpoints needs two); every message names
    /// the set, and `set_id` for a set made in this batch.
    fn element_messages(
        &mut self,
        set: &str,
        set_id: Option<u32>,
        delete: bool,
        elements: impl IntoIterator<Item = Attrs>,
    ) {
        let mut list = Attrs::default();
        for element in elements {
            list = list.nest(1, element);
            if list.0.len() > ELEMENT_LIST_BYTES {
                self.element_message(set, std::mem::take(&mut list), set_id, delete);
            }
        }
        if !list.0.is_empty() {
            self.element_message(set, list, set_id, delete);
        }
    }

    fn element_message(&mut self, set: &str, list: Attrs, set_id: Option<u32>, delete: bool) {
        let mut attrs = Attrs::default()
            .str(1, &self.table)
            .str(2, set)
            .nest(3, list);
        if let Some(id) = set_id {
            attrs = attrs.u32(4, id);
        }
        let (msg, flags) = if delete {
            (NFT_MSG_DELSETELEM, 0)
        } else {
            (NFT_MSG_NEWSETELEM, NLM_F_CREATE)
        };
        self.object(msg, flags, attrs);
        self.describe_last(format!("elements of {set} (delete: {delete})"));
    }

    pub fn add_rule(&mut self, chain: &str, rule: &Rule) {
        let mut exprs = Vec::new();
        for stmt in &rule.0 {
            self.stmt_exprs(stmt, &mut exprs);
        }
        let mut list = Attrs::default();
        for Expr(name, data) in exprs {
            list = list.nest(1, Attrs::default().str(1, name).nest(2, data));
        }
        let attrs = Attrs::default()
            .str(1, &self.table)
            .str(2, chain)
            .nest(4, list);
        self.object(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, attrs);
        self.describe_last(format!("rule in {chain}: {}", rule.to_nft()));
    }

    /// The expressions of one statement; an anonymous map is added to the batch first.
    fn stmt_exprs(&mut self, stmt: &Stmt, out: &mut Vec<Expr>) {
        match stmt {
            Stmt::CtStateNew => {
                out.push(Expr("ct", Attrs::default().u32(1, REG_1).u32(2, CT_STATE)));
                out.push(bitwise(&CT_STATE_NEW.to_ne_bytes(), &[0; 4]));
                out.push(cmp(CMP_NEQ, &[0; 4]));
            }
            Stmt::Saddr { cidr, negate } => {
                out.push(payload(REG_1, PAYLOAD_NETWORK, 12, 4));
                if cidr.prefix_len() < 32 {
                    out.push(bitwise(&cidr.netmask().octets(), &[0; 4]));
                }
                let op = if *negate { CMP_NEQ } else { CMP_EQ };
                out.push(cmp(op, &cidr.network().octets()));
            }
            Stmt::DaddrInSet(set) => {
                out.push(payload(REG_1, PAYLOAD_NETWORK, 16, 4));
                out.push(lookup(set, REG_1, None, None));
            }
            Stmt::SaddrInSet(set) => {
                out.push(payload(REG_1, PAYLOAD_NETWORK, 12, 4));
                out.push(lookup(set, REG_1, None, None));
            }
            Stmt::DestinationInSet(set) => {
                out.extend(load_destination());
                out.push(lookup(set, REG32_00, None, None));
            }
            Stmt::ProtoPortInSet(set) => {
                out.extend(load_proto_port());
                out.push(lookup(set, REG32_00, None, None));
            }
            Stmt::DestinationVmap(map) => {
                out.extend(load_destination());
                out.push(lookup(map, REG32_00, Some(REG_VERDICT), None));
            }
            Stmt::ProtoPortVmap(map) => {
                out.extend(load_proto_port());
                out.push(lookup(map, REG32_00, Some(REG_VERDICT), None));
            }
            Stmt::RandomVmap(targets) => {
                let id = self.anonymous_map(targets);
                out.push(Expr(
                    "numgen",
                    Attrs::default()
                        .u32(1, REG_1)
                        .u32(2, targets.len() as u32)
                        .u32(3, 1), // NFT_NG_RANDOM
                ));
                out.push(lookup(ANONYMOUS_MAP, REG_1, Some(REG_VERDICT), Some(id)));
            }
            Stmt::UpdateSaddr(set) => {
                out.push(payload(REG_1, PAYLOAD_NETWORK, 12, 4));
                // NFT_DYNSET_OP_UPDATE: add or refresh the timeout.
                out.push(Expr(
                    "dynset",
                    Attrs::default().str(1, set).u32(3, 1).u32(4, REG_1),
                ));
            }
            Stmt::SetMasqueradeMark => {
                out.push(meta_load(REG_1, META_MARK));
                out.push(bitwise(
                    &(!MASQUERADE_MARK).to_ne_bytes(),
                    &MASQUERADE_MARK.to_ne_bytes(),
                ));
                out.push(Expr(
                    "meta",
                    Attrs::default().u32(2, META_MARK).u32(3, REG_1),
                ));
            }
            Stmt::HasMasqueradeMark => {
                out.push(meta_load(REG_1, META_MARK));
                out.push(bitwise(&MASQUERADE_MARK.to_ne_bytes(), &[0; 4]));
                out.push(cmp(CMP_EQ, &MASQUERADE_MARK.to_ne_bytes()));
            }
            Stmt::Dnat { proto, addr, port } => {
                out.push(meta_load(REG_1, META_L4PROTO));
                out.push(cmp(CMP_EQ, &[proto.number()]));
                out.push(immediate_value(REG_1, &addr.octets()));
                out.push(immediate_value(REG_2, &port.to_be_bytes()));
                out.push(Expr(
                    "nat",
                    Attrs::default()
                        .u32(1, 1) // NFT_NAT_DNAT
                        .u32(2, u32::from(NFPROTO_IPV4))
                        .u32(3, REG_1)
                        .u32(5, REG_2),
                ));
            }
            Stmt::Masquerade => out.push(Expr("masq", Attrs::default())),
            Stmt::Reject => {
                // NFT_REJECT_ICMP_UNREACH, code 3: port unreachable.
                out.push(Expr("reject", Attrs::default().u32(1, 0).bytes(2, &[3])));
            }
            Stmt::Drop => out.push(immediate_verdict(NF_DROP, None)),
            Stmt::Jump(chain) => out.push(immediate_verdict(NFT_JUMP, Some(chain))),
            Stmt::Goto(chain) => out.push(immediate_verdict(NFT_GOTO, Some(chain))),
            Stmt::CtStateEstablished => {
                out.push(Expr("ct", Attrs::default().u32(1, REG_1).u32(2, CT_STATE)));
                out.push(bitwise(
                    &(CT_STATE_ESTABLISHED | CT_STATE_RELATED).to_ne_bytes(),
                    &[0; 4],
                ));
                out.push(cmp(CMP_NEQ, &[0; 4]));
            }
            Stmt::Daddr { cidr, negate } => {
                out.push(payload(REG_1, PAYLOAD_NETWORK, 16, 4));
                if cidr.prefix_len() < 32 {
                    out.push(bitwise(&cidr.netmask().octets(), &[0; 4]));
                }
                let op = if *negate { CMP_NEQ } else { CMP_EQ };
                out.push(cmp(op, &cidr.network().octets()));
            }
            Stmt::L4Proto(proto) => {
                out.push(meta_load(REG_1, META_L4PROTO));
                out.push(cmp(CMP_EQ, &[proto.number()]));
            }
            Stmt::Dport { from, to } => {
                out.push(payload(REG_1, PAYLOAD_TRANSPORT, 2, 2));
                // Ports are big-endian in the register, so byte-wise comparison orders them.
                if from == to {
                    out.push(cmp(CMP_EQ, &from.to_be_bytes()));
                } else {
                    out.push(cmp(CMP_GTE, &from.to_be_bytes()));
                    out.push(cmp(CMP_LTE, &to.to_be_bytes()));
                }
            }
            Stmt::Accept => out.push(immediate_verdict(NF_ACCEPT, None)),
            Stmt::IifNotLoopback => {
                out.push(meta_load(REG_1, META_IIF));
                out.push(cmp(CMP_NEQ, &LOOPBACK_IFINDEX.to_ne_bytes()));
            }
            Stmt::OifNotLoopback => {
                out.push(meta_load(REG_1, META_OIF));
                out.push(cmp(CMP_NEQ, &LOOPBACK_IFINDEX.to_ne_bytes()));
            }
        }
    }

    /// `{ 0 : goto a, 1 : goto b, ... }`: a constant anonymous map owned by the rule that
    /// uses it, so flushing the chain frees it. Returns its id within this batch.
    fn anonymous_map(&mut self, targets: &[String]) -> u32 {
        let id = self.next_set_id;
        self.next_set_id += 1;
        let attrs = Attrs::default()
            .str(1, &self.table)
            .str(2, ANONYMOUS_MAP)
            .u32(3, NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_MAP)
            .u32(4, TYPE_INTEGER)
            .u32(5, 4)
            .u32(6, NFT_DATA_VERDICT)
            .u32(10, id);
        self.object(NFT_MSG_NEWSET, NLM_F_CREATE, attrs);
        let elements = targets.iter().enumerate().map(|(i, target)| {
            // numgen writes its number in host byte order.
            Attrs::default()
                .nest(1, value(&(i as u32).to_ne_bytes()))
                .nest(2, verdict(NFT_GOTO, Some(target)))
        });
        self.element_messages(ANONYMOUS_MAP, Some(id), false, elements);
        id
    }

    /// The finished transaction; the last object message asks for an acknowledgement, so a
    /// reply to it means the whole batch was committed (errors are reported either way).
    pub fn finish(mut self) -> (Vec<u8>, Vec<String>) {
        if let Some(start) = self.last {
            let flags_at = start + 6;
            let flags = u16::from_ne_bytes([self.buf[flags_at], self.buf[flags_at + 1]]);
            self.buf[flags_at..flags_at + 2].copy_from_slice(&(flags | NLM_F_ACK).to_ne_bytes());
        }
        self.header(NFNL_MSG_BATCH_END, 0, 0, &Attrs::default());
        (self.buf, self.subjects)
    }
}

/// Where a list of elements is cut into another message: one element is far below 1 KiB, so
/// the list stays under the 65,535 bytes an attribute's length can say.
const ELEMENT_LIST_BYTES: usize = 60_000;

/// The kernel replaces `%d` with a free number, as it does for `nft`'s anonymous sets.
const ANONYMOUS_MAP: &str = "__map%d";

/// The batch that turns `applied` into `desired`. `stale` names chains and sets found in the
/// kernel that `applied` does not know about (left by an earlier run): they are removed too.
pub fn diff(table: &str, applied: &Ruleset, desired: &Ruleset, stale: &Stale) -> Batch {
    let mut batch = Batch::new(table);
    let first_run = applied.chains.is_empty() && applied.sets.is_empty();
    if first_run {
        batch.add_table();
    }
    // Stale objects that we are about to recreate are removed and recreated in the same batch,
    // so a restart never leaves a moment without rules.
    for name in &stale.chains {
        batch.flush_chain(name);
    }
    // Maps hold references to chains (their verdicts), so they go before the chains.
    for name in &stale.sets {
        batch.delete_set(name);
    }
    for name in &stale.chains {
        batch.delete_chain(name);
    }

    // 1. New chains, empty, so rules and map elements can refer to them.
    for (name, chain) in &desired.chains {
        if !applied.chains.contains_key(name) {
            batch.add_chain(name, chain);
        }
    }
    // 2. New sets with their elements; element changes in kept sets.
    for (name, set) in &desired.sets {
        match applied.sets.get(name) {
            Some(old) if old.same_definition(set) => {
                let removed = old
                    .elements
                    .iter()
                    .filter(|(k, v)| set.elements.get(*k) != Some(*v));
                let removed: Vec<_> = removed.collect();
                if !removed.is_empty() {
                    batch.elements(name, removed, true);
                }
                let added: Vec<_> = set
                    .elements
                    .iter()
                    .filter(|(k, v)| old.elements.get(*k) != Some(*v))
                    .collect();
                if !added.is_empty() {
                    batch.elements(name, added, false);
                }
            }
            _ => {
                batch.add_set(name, set);
                if !set.elements.is_empty() {
                    batch.elements(name, &set.elements, false);
                }
            }
        }
    }
    // 3. Rules of new and changed chains.
    for (name, chain) in &desired.chains {
        match applied.chains.get(name) {
            Some(old) if old.rules == chain.rules => continue,
            Some(_) => batch.flush_chain(name),
            None => {}
        }
        for rule in &chain.rules {
            batch.add_rule(name, rule);
        }
    }
    // 4. Removals, once no rule or element refers to them any more.
    let removed: Vec<&String> = applied
        .chains
        .keys()
        .filter(|n| !desired.chains.contains_key(*n))
        .collect();
    for name in &removed {
        batch.flush_chain(name);
    }
    for name in applied.sets.keys() {
        if !desired.sets.contains_key(name) {
            batch.delete_set(name);
        }
    }
    for name in &removed {
        batch.delete_chain(name);
    }
    batch
}

/// Chains and sets of the proxy's present in the kernel but unknown to this process.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stale {
    pub chains: BTreeSet<String>,
    pub sets: BTreeSet<String>,
}

/// Names the proxy creates; everything else in the table belongs to someone else.
pub fn is_proxy_object(name: &str) -> bool {
    ["proxy-", "svc_", "svl_", "ext_", "ep_", "aff_"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// A netlink socket to nf_tables in the network namespace it was opened in.
pub struct NftSocket {
    fd: OwnedFd,
}

impl NftSocket {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open() -> Result<NftSocket, ProxyError> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(|e| ProxyError::netlink("open nf_tables socket", e))?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))
            .map_err(|e| ProxyError::netlink("bind nf_tables socket", e))?;
        // A batch that never gets its acknowledgement must not hang the proxy.
        let timeout = nix::sys::time::TimeVal::new(10, 0);
        socket::setsockopt(&fd, socket::sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| ProxyError::netlink("set receive timeout", e))?;
        Ok(NftSocket { fd })
    }

    /// Sends one transaction and waits for the kernel's verdict on it.
    pub fn send(&self, batch: Batch) -> Result<usize, ProxyError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let (bytes, subjects) = batch.finish();
        // A batch is one datagram: the send buffer must hold it whole.
        let wanted = bytes.len() + 64 * 1024;
        socket::setsockopt(&self.fd, socket::sockopt::SndBufForce, &wanted)
            .map_err(|e| ProxyError::netlink("grow send buffer", e))?;
        socket::send(self.fd.as_raw_fd(), &bytes, MsgFlags::empty())
            .map_err(|e| ProxyError::netlink("send batch", e))?;
        self.wait_ack(&subjects)?;
        Ok(bytes.len())
    }

    fn wait_ack(&self, subjects: &[String]) -> Result<(), ProxyError> {
        let mut buf = vec![0u8; 128 * 1024];
        loop {
            let n = socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())
                .map_err(|e| ProxyError::netlink("receive acknowledgement", e))?;
            for (ty, payload) in messages(&buf[..n]) {
                if ty == NLMSG_ERROR {
                    let errno = payload
                        .get(..4)
                        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(0);
                    if errno != 0 {
                        // The refused message's header follows the error code.
                        let seq = payload
                            .get(12..16)
                            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        let subject = subjects.get(seq as usize).cloned().unwrap_or_default();
                        return Err(ProxyError::Refused {
                            subject,
                            errno: nix::errno::Errno::from_raw(-errno),
                        });
                    }
                    // Only the last message asked for an acknowledgement.
                    return Ok(());
                }
            }
        }
    }

    /// Names of the proxy's chains and sets currently in `table`.
    pub fn list_stale(&self, table: &str) -> Result<Stale, ProxyError> {
        self.list_owned(table, is_proxy_object)
    }

    /// Names of the chains and sets in `table` that `owned` claims.
    pub fn list_owned(&self, table: &str, owned: fn(&str) -> bool) -> Result<Stale, ProxyError> {
        let chains = self.dump_names(NFT_MSG_GETCHAIN, table, 3)?;
        let sets = self.dump_names(NFT_MSG_GETSET, table, 2)?;
        Ok(Stale {
            chains: chains.into_iter().filter(|n| owned(n)).collect(),
            sets: sets.into_iter().filter(|n| owned(n)).collect(),
        })
    }

    /// Dumps every object of one kind and keeps the names of those in `table`; the table name
    /// is attribute 1 for both chains and sets.
    fn dump_names(&self, msg: u16, table: &str, name_attr: u16) -> Result<Vec<String>, ProxyError> {
        let mut request = Vec::new();
        let len: u32 = 20;
        request.extend_from_slice(&len.to_ne_bytes());
        request.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | msg).to_ne_bytes());
        request.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        request.extend_from_slice(&0u32.to_ne_bytes());
        request.extend_from_slice(&0u32.to_ne_bytes());
        request.extend_from_slice(&[NFPROTO_IPV4, 0, 0, 0]);
        socket::send(self.fd.as_raw_fd(), &request, MsgFlags::empty())
            .map_err(|e| ProxyError::netlink("send dump request", e))?;
        let mut names = Vec::new();
        let mut buf = vec![0u8; 128 * 1024];
        loop {
            let n = socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())
                .map_err(|e| ProxyError::netlink("receive dump", e))?;
            for (ty, payload) in messages(&buf[..n]) {
                match ty {
                    NLMSG_DONE => return Ok(names),
                    NLMSG_ERROR => {
                        let errno = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        if errno == -libc::ENOENT || errno == 0 {
                            return Ok(names);
                        }
                        return Err(ProxyError::Kernel {
                            op: "dump",
                            errno: nix::errno::Errno::from_raw(-errno),
                        });
                    }
                    _ => {
                        // Skip the nfgenmsg header.
                        let attrs = attributes(payload.get(4..).unwrap_or(&[]));
                        let get = |want: u16| {
                            attrs.iter().find(|(t, _)| *t == want).map(|(_, v)| {
                                String::from_utf8_lossy(v)
                                    .trim_end_matches('\0')
                                    .to_string()
                            })
                        };
                        if get(1).as_deref() == Some(table) {
                            if let Some(name) = get(name_attr) {
                                names.push(name);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Splits a datagram into (type, payload) netlink messages.
fn messages(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < 16 || len > buf.len() {
            break;
        }
        out.push((ty, &buf[16..len]));
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    out
}

/// Splits attributes into (type without flags, payload).
fn attributes(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((ty, &buf[4..len]));
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn a_destination_key_pads_every_field_to_a_register_slice() {
        let key = Key::Destination(Ipv4Addr::new(10, 43, 0, 1), Proto::Tcp, 443);
        assert_eq!(
            key_bytes(&key),
            vec![10, 43, 0, 1, 6, 0, 0, 0, 1, 187, 0, 0]
        );
        assert_eq!(key_type(KeyType::Destination).1, 12);
    }

    #[test]
    fn a_batch_is_framed_and_only_its_last_message_asks_for_an_ack() {
        let mut batch = Batch::new("berth");
        batch.add_table();
        batch.flush_chain("svc_x");
        assert_eq!(batch.messages(), 2);
        let (bytes, subjects) = batch.finish();
        let msgs = messages(&bytes);
        let types: Vec<u16> = msgs.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            types,
            vec![
                16,
                (10 << 8) | NFT_MSG_NEWTABLE,
                (10 << 8) | NFT_MSG_DELRULE,
                17
            ]
        );
        let flags = |i: usize| {
            let mut offset = 0;
            for _ in 0..i {
                let len = u32::from_ne_bytes(bytes[offset..offset + 4].try_into().unwrap());
                offset += len as usize;
            }
            u16::from_ne_bytes([bytes[offset + 6], bytes[offset + 7]])
        };
        assert_eq!(flags(1) & NLM_F_ACK, 0);
        assert_eq!(flags(2) & NLM_F_ACK, NLM_F_ACK);
        assert_eq!(subjects.len(), 4);
    }

    #[test]
    fn only_the_proxys_names_count_as_its_objects() {
        assert!(is_proxy_object("svc_default_web_tcp_80"));
        assert!(is_proxy_object("proxy-services"));
        assert!(!is_proxy_object("postrouting"));
    }
}
