//! Answers questions: cluster names from the zone, everything else through the forwarder; and
//! the UDP/TCP serving around it (hickory-server frames, and truncates UDP answers that do not
//! fit the client's payload size, setting TC so it retries over TCP).

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use super::forward::{Forwarder, EDNS_PAYLOAD};
use super::zone::{ClusterZone, Lookup};

/// The current zone; the reflector swaps in a new one on every change.
pub type ZoneHandle = Arc<RwLock<Arc<ClusterZone>>>;

/// How many CNAMEs are followed before giving up on a loop.
const MAX_CNAME_CHAIN: usize = 8;
/// A TCP client that sends nothing for this long is dropped.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// One answer, before it is framed.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub code: ResponseCode,
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl Reply {
    fn new() -> Reply {
        Reply {
            code: ResponseCode::NoError,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

pub struct Answerer {
    zone: ZoneHandle,
    forwarder: Arc<Forwarder>,
}

impl Answerer {
    pub fn new(zone: ZoneHandle, forwarder: Arc<Forwarder>) -> Answerer {
        Answerer { zone, forwarder }
    }

    fn zone(&self) -> Arc<ClusterZone> {
        self.zone.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The reply to one question, following CNAMEs from the cluster zone (an ExternalName
    /// Service) out to the upstreams the way CoreDNS does.
    pub async fn answer(&self, name: &Name, qtype: RecordType) -> Reply {
        let zone = self.zone();
        let mut reply = Reply::new();
        let mut current = name.clone();
        for _ in 0..MAX_CNAME_CHAIN {
            match zone.lookup(&current, qtype) {
                Lookup::Found {
                    answers,
                    additionals,
                } => {
                    reply.authoritative = zone.is_cluster_name(&current);
                    let next = cname_target(&answers, qtype);
                    reply.answers.extend(answers);
                    reply.additionals.extend(additionals);
                    match next {
                        Some(target) => current = target,
                        None => return reply,
                    }
                }
                Lookup::NoData => {
                    reply.authoritative = true;
                    reply.authorities.push(zone.soa().clone());
                    return reply;
                }
                Lookup::NxDomain => {
                    reply.authoritative = true;
                    reply.code = ResponseCode::NXDomain;
                    reply.authorities.push(zone.soa().clone());
                    return reply;
                }
                Lookup::Elsewhere => {
                    match self.forwarder.resolve(&current, qtype).await {
                        Ok(upstream) => {
                            reply.authoritative = false;
                            reply.code = upstream.metadata.response_code;
                            reply.answers.extend(upstream.answers);
                            reply.authorities = upstream.authorities;
                            reply.additionals.extend(upstream.additionals);
                        }
                        Err(error) => {
                            tracing::debug!(%current, %error, "forwarding failed");
                            reply.code = ResponseCode::ServFail;
                        }
                    }
                    return reply;
                }
            }
        }
        reply.code = ResponseCode::ServFail;
        reply
    }
}

fn cname_target(answers: &[Record], qtype: RecordType) -> Option<Name> {
    if qtype == RecordType::CNAME || qtype == RecordType::ANY {
        return None;
    }
    match answers {
        [record] => match &record.data {
            RData::CNAME(cname) => Some(cname.0.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Speaks DNS for an [`Answerer`].
pub struct DnsHandler {
    answerer: Arc<Answerer>,
}

impl DnsHandler {
    pub fn new(answerer: Arc<Answerer>) -> DnsHandler {
        DnsHandler { answerer }
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        // Answer EDNS with EDNS, and never promise more than fits an unfragmented datagram.
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().clamp(512, EDNS_PAYLOAD));
            edns
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());

        let query = match request.request_info() {
            Ok(info)
                if request.metadata.op_code == OpCode::Query
                    && request.metadata.message_type == MessageType::Query =>
            {
                info.query.original().clone()
            }
            Ok(_) => {
                metadata.response_code = ResponseCode::NotImp;
                return send(&mut response_handle, builder.build_no_records(metadata)).await;
            }
            Err(_) => {
                metadata.response_code = ResponseCode::FormErr;
                return send(&mut response_handle, builder.build_no_records(metadata)).await;
            }
        };
        let reply = self.answerer.answer(query.name(), query.query_type()).await;
        metadata.response_code = reply.code;
        metadata.authoritative = reply.authoritative;
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        send(&mut response_handle, response).await
    }
}

async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    response: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    let mut metadata = response.metadata().clone();
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            tracing::debug!(%error, "cannot send a DNS response");
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        }
    }
}

/// Serves DNS on `udp` and `tcp` until `shutdown` completes.
pub async fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    answerer: Arc<Answerer>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), hickory_server::net::NetError> {
    let mut server = Server::new(DnsHandler::new(answerer));
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE_TIMEOUT, 16);
    tokio::select! {
        _ = shutdown => server.shutdown_gracefully().await,
        done = server.block_until_done() => done,
    }
}
