//! Names outside the cluster go to upstream resolvers, through a small bounded cache.
//!
//! A forwarder of our own (one UDP exchange, TCP when the answer is truncated) rather than
//! hickory-resolver: we pass answers through instead of resolving, so the resolver's own
//! recursion, lookup strategies and caches would be dead weight in the binary and in memory.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Where the host's resolver configuration lives.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// systemd-resolved's list of its real upstreams, for hosts whose resolv.conf is its stub.
pub const SYSTEMD_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";

/// Entries kept at most: a few hundred KiB, which a Pi can spare.
pub const DEFAULT_CACHE_ENTRIES: usize = 1024;
/// Positive answers are kept at most this long, whatever their TTL says.
const MAX_POSITIVE_TTL: u32 = 300;
/// NXDOMAIN/NODATA are kept at most this long (CoreDNS caps denial at 30 min; we stay modest).
const MAX_NEGATIVE_TTL: u32 = 60;
/// Negative answers without an SOA to say how long they hold.
const DEFAULT_NEGATIVE_TTL: u32 = 5;
/// How long one upstream gets to answer before the next one is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// The EDNS payload size the DNS flag day settled on: avoids fragmentation everywhere.
pub const EDNS_PAYLOAD: u16 = 1232;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream resolver is configured")]
    NoUpstream,
    #[error("upstream {upstream}: {source}")]
    Io {
        upstream: SocketAddr,
        source: io::Error,
    },
    #[error("upstream {upstream} did not answer in time")]
    Timeout { upstream: SocketAddr },
    #[error("upstream {upstream} sent an unreadable answer: {reason}")]
    Malformed {
        upstream: SocketAddr,
        reason: String,
    },
    #[error("cannot encode the query for {name}: {reason}")]
    Encode { name: String, reason: String },
    #[error("upstream {upstream} answered {code}")]
    Failed {
        upstream: SocketAddr,
        code: ResponseCode,
    },
}

/// Nameserver addresses in a resolv.conf text, in order.
pub fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(addr)) => {
                    // A scoped IPv6 address (`fe80::1%eth0`) is no use to a socket address parse.
                    addr.split('%').next()?.parse().ok()
                }
                _ => None,
            }
        })
        .collect()
}

/// The upstreams to forward to: the configured ones, else the host's non-loopback nameservers,
/// else (a host running a loopback stub like systemd-resolved) the stub's own upstreams. A
/// loopback resolver is useless to us: queries arrive from pods, the stub does not listen there,
/// and forwarding to ourselves would loop.
pub fn choose_upstreams(
    configured: &[SocketAddr],
    host_resolv_conf: Option<&str>,
    systemd_resolv_conf: Option<&str>,
) -> Vec<SocketAddr> {
    if !configured.is_empty() {
        return configured.to_vec();
    }
    for text in [host_resolv_conf, systemd_resolv_conf]
        .into_iter()
        .flatten()
    {
        let usable: Vec<SocketAddr> = nameservers(text)
            .into_iter()
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
            .map(|ip| SocketAddr::new(ip, 53))
            .collect();
        if !usable.is_empty() {
            return usable;
        }
    }
    Vec::new()
}

/// [`choose_upstreams`] with the host's files.
pub fn host_upstreams(configured: &[SocketAddr]) -> Vec<SocketAddr> {
    let read = |path: &str| std::fs::read_to_string(Path::new(path)).ok();
    choose_upstreams(
        configured,
        read(HOST_RESOLV_CONF).as_deref(),
        read(SYSTEMD_RESOLV_CONF).as_deref(),
    )
}

pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    cache: Mutex<Cache>,
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, cache_entries: usize) -> Forwarder {
        Forwarder {
            upstreams,
            cache: Mutex::new(Cache::new(cache_entries)),
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// The upstream answer to `name`/`qtype` (from the cache while it is fresh). NXDOMAIN and
    /// NODATA are answers too; SERVFAIL and silence make the next upstream be asked.
    pub async fn resolve(&self, name: &Name, qtype: RecordType) -> Result<Message, ForwardError> {
        let key = (name.to_lowercase(), qtype);
        if let Some(hit) = self.lock_cache().get(&key, Instant::now()) {
            return Ok(hit);
        }
        let mut last = ForwardError::NoUpstream;
        for &upstream in &self.upstreams {
            match exchange(upstream, name, qtype).await {
                Ok(answer)
                    if matches!(
                        answer.metadata.response_code,
                        ResponseCode::NoError | ResponseCode::NXDomain
                    ) =>
                {
                    self.lock_cache()
                        .insert(key, answer.clone(), Instant::now());
                    return Ok(answer);
                }
                Ok(answer) => {
                    last = ForwardError::Failed {
                        upstream,
                        code: answer.metadata.response_code,
                    }
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // The cache holds no invariant a panicking holder could break halfway.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One question to one upstream: UDP first, TCP when the answer did not fit.
async fn exchange(
    upstream: SocketAddr,
    name: &Name,
    qtype: RecordType,
) -> Result<Message, ForwardError> {
    let mut query = Message::query();
    query.add_query(Query::query(name.clone(), qtype));
    query.metadata.recursion_desired = true;
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    query.set_edns(edns);
    let bytes = query.to_vec().map_err(|e| ForwardError::Encode {
        name: name.to_string(),
        reason: e.to_string(),
    })?;
    let id = query.metadata.id;
    let answer = tokio::time::timeout(UPSTREAM_TIMEOUT, udp_exchange(upstream, &bytes, id))
        .await
        .map_err(|_| ForwardError::Timeout { upstream })??;
    if !answer.metadata.truncation {
        return Ok(answer);
    }
    tokio::time::timeout(UPSTREAM_TIMEOUT, tcp_exchange(upstream, &bytes, id))
        .await
        .map_err(|_| ForwardError::Timeout { upstream })?
}

async fn udp_exchange(
    upstream: SocketAddr,
    query: &[u8],
    id: u16,
) -> Result<Message, ForwardError> {
    let io = |source| ForwardError::Io { upstream, source };
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    // A fresh socket per query: its random port and the random id are what stop spoofed answers.
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    socket.connect(upstream).await.map_err(io)?;
    socket.send(query).await.map_err(io)?;
    // We advertise EDNS_PAYLOAD; anything longer than twice that is not an answer to us.
    let mut buf = vec![0u8; 2 * usize::from(EDNS_PAYLOAD)];
    loop {
        let n = socket.recv(&mut buf).await.map_err(io)?;
        match Message::from_vec(&buf[..n]) {
            Ok(answer) if answer.metadata.id == id => return Ok(answer),
            // Stray or late datagrams for another id: keep waiting for ours.
            Ok(_) => continue,
            Err(e) => {
                return Err(ForwardError::Malformed {
                    upstream,
                    reason: e.to_string(),
                })
            }
        }
    }
}

async fn tcp_exchange(
    upstream: SocketAddr,
    query: &[u8],
    id: u16,
) -> Result<Message, ForwardError> {
    let io = |source| ForwardError::Io { upstream, source };
    let len = u16::try_from(query.len()).map_err(|_| ForwardError::Malformed {
        upstream,
        reason: "query too long for TCP".into(),
    })?;
    let mut stream = TcpStream::connect(upstream).await.map_err(io)?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await.map_err(io)?;
    let answer_len = stream.read_u16().await.map_err(io)?;
    let mut buf = vec![0u8; usize::from(answer_len)];
    stream.read_exact(&mut buf).await.map_err(io)?;
    let answer = Message::from_vec(&buf).map_err(|e| ForwardError::Malformed {
        upstream,
        reason: e.to_string(),
    })?;
    if answer.metadata.id != id {
        return Err(ForwardError::Malformed {
            upstream,
            reason: format!("answer id {} for query id {id}", answer.metadata.id),
        });
    }
    Ok(answer)
}

type CacheKey = (Name, RecordType);

struct CacheEntry {
    message: Message,
    stored: Instant,
    expires: Instant,
}

/// Answers by question, each until its TTL runs out, never more than `capacity` of them.
struct Cache {
    capacity: usize,
    entries: HashMap<CacheKey, CacheEntry>,
}

impl Cache {
    fn new(capacity: usize) -> Cache {
        Cache {
            capacity,
            entries: HashMap::new(),
        }
    }

    /// The cached answer with its TTLs aged by the time it spent here.
    fn get(&mut self, key: &CacheKey, now: Instant) -> Option<Message> {
        let entry = self.entries.get(key)?;
        if now >= entry.expires {
            self.entries.remove(key);
            return None;
        }
        let age = u32::try_from(now.duration_since(entry.stored).as_secs()).unwrap_or(u32::MAX);
        let mut message = entry.message.clone();
        for record in message
            .answers
            .iter_mut()
            .chain(message.authorities.iter_mut())
            .chain(message.additionals.iter_mut())
        {
            record.ttl = record.ttl.saturating_sub(age);
        }
        Some(message)
    }

    fn insert(&mut self, key: CacheKey, message: Message, now: Instant) {
        let ttl = cache_ttl(&message);
        if ttl == 0 || self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, e| e.expires > now);
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            // Still full of live answers: the one closest to expiring is worth the least.
            let soonest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.expires)
                .map(|(k, _)| k.clone());
            if let Some(soonest) = soonest {
                self.entries.remove(&soonest);
            }
        }
        let expires = now + Duration::from_secs(u64::from(ttl));
        self.entries.insert(
            key,
            CacheEntry {
                message,
                stored: now,
                expires,
            },
        );
    }
}

/// How long an upstream answer may be served from the cache: the smallest answer TTL for a
/// positive answer; for NXDOMAIN/NODATA the SOA's negative TTL (RFC 2308), both capped.
fn cache_ttl(message: &Message) -> u32 {
    let positive =
        message.metadata.response_code == ResponseCode::NoError && !message.answers.is_empty();
    if positive {
        let min = message.answers.iter().map(|r| r.ttl).min().unwrap_or(0);
        return min.min(MAX_POSITIVE_TTL);
    }
    let negative = message
        .authorities
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })
        .unwrap_or(DEFAULT_NEGATIVE_TTL);
    negative.min(MAX_NEGATIVE_TTL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::Record;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    fn answer_with_ttl(ttl: u32) -> Message {
        let mut m = Message::response(1, hickory_proto::op::OpCode::Query);
        m.add_answer(Record::from_rdata(
            name("example.org."),
            ttl,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
        ));
        m
    }

    fn nxdomain_with_soa(soa_ttl: u32, minimum: u32) -> Message {
        let mut m = Message::response(1, hickory_proto::op::OpCode::Query);
        m.metadata.response_code = ResponseCode::NXDomain;
        let soa = SOA::new(name("a.org."), name("b.org."), 1, 1, 1, 1, minimum);
        m.add_authority(Record::from_rdata(name("org."), soa_ttl, RData::SOA(soa)));
        m
    }

    #[test]
    fn loopback_stub_resolvers_are_skipped() {
        let host = "# stub\nnameserver 127.0.0.53\nnameserver 192.0.2.53\noptions edns0\n";
        let got = choose_upstreams(&[], Some(host), None);
        assert_eq!(got, vec!["192.0.2.53:53".parse().unwrap()]);
    }

    #[test]
    fn a_host_with_only_a_stub_uses_the_stubs_upstreams() {
        let host = "nameserver 127.0.0.53\nsearch lan\n";
        let systemd = "nameserver 198.51.100.1\nnameserver ::1\nnameserver 2001:db8::53\n";
        let got = choose_upstreams(&[], Some(host), Some(systemd));
        let want: Vec<SocketAddr> = vec![
            "198.51.100.1:53".parse().unwrap(),
            "[2001:db8::53]:53".parse().unwrap(),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn configured_upstreams_win_over_the_host() {
        let configured: Vec<SocketAddr> = vec!["203.0.113.9:5353".parse().unwrap()];
        let got = choose_upstreams(&configured, Some("nameserver 192.0.2.53\n"), None);
        assert_eq!(got, configured);
    }

    #[test]
    fn no_usable_resolver_means_no_upstreams() {
        assert!(choose_upstreams(&[], Some("nameserver 127.0.0.1\n"), None).is_empty());
        assert!(choose_upstreams(&[], None, None).is_empty());
    }

    #[test]
    fn positive_answers_are_cached_for_their_ttl_capped() {
        assert_eq!(cache_ttl(&answer_with_ttl(30)), 30);
        assert_eq!(cache_ttl(&answer_with_ttl(86400)), MAX_POSITIVE_TTL);
    }

    #[test]
    fn negative_answers_are_cached_for_the_soa_negative_ttl() {
        assert_eq!(cache_ttl(&nxdomain_with_soa(900, 20)), 20);
        assert_eq!(cache_ttl(&nxdomain_with_soa(10, 3600)), 10);
        assert_eq!(cache_ttl(&nxdomain_with_soa(3600, 3600)), MAX_NEGATIVE_TTL);
    }

    #[test]
    fn cached_answers_age_and_expire() {
        let mut cache = Cache::new(8);
        let key = (name("example.org."), RecordType::A);
        let t0 = Instant::now();
        cache.insert(key.clone(), answer_with_ttl(30), t0);
        let aged = cache.get(&key, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(aged.answers[0].ttl, 20);
        assert!(cache.get(&key, t0 + Duration::from_secs(31)).is_none());
        assert!(cache.entries.is_empty());
    }

    #[test]
    fn the_cache_never_grows_past_its_capacity() {
        let mut cache = Cache::new(4);
        let t0 = Instant::now();
        for i in 0..10u32 {
            let key = (name(&format!("n{i}.example.org.")), RecordType::A);
            cache.insert(key, answer_with_ttl(100 + i), t0);
        }
        assert_eq!(cache.entries.len(), 4);
        // The longest-lived answers are the ones kept.
        let kept = (name("n9.example.org."), RecordType::A);
        assert!(cache.get(&kept, t0).is_some());
    }

    #[test]
    fn zero_ttl_answers_are_not_cached() {
        let mut cache = Cache::new(4);
        let key = (name("example.org."), RecordType::A);
        cache.insert(key.clone(), answer_with_ttl(0), Instant::now());
        assert!(cache.entries.is_empty());
    }
}
