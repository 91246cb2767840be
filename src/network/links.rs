//! Links, addresses and routes over rtnetlink, in the node's namespace or in a pod's.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;
use std::path::Path;

use futures::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::{netns, NetError};

const ENODEV: i32 = libc::ENODEV;

/// One rtnetlink connection, bound to the network namespace it was opened in.
pub struct Netlink {
    pub(super) handle: Handle,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Netlink {
    /// A connection in the calling thread's namespace. Needs a tokio runtime.
    pub fn here() -> Result<Netlink, NetError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(NetError::NetlinkSocket)?;
        Ok(Netlink {
            handle,
            connection: tokio::spawn(connection),
        })
    }

    /// A connection inside the namespace pinned at `netns_path`.
    ///
    /// Why a socket and not a thread: a netlink socket talks to the namespace it was created in
    /// for its whole life. So a helper thread joins the pod's namespace only long enough to
    /// create the socket (registered with our runtime), then exits; every request after that
    /// runs on ordinary runtime threads, which never change namespace.
    pub async fn in_netns(netns_path: &Path) -> Result<Netlink, NetError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| NetError::Thread(format!("no tokio runtime: {e}")))?;
        let path = netns_path.to_path_buf();
        let (connection, handle, _) = netns::run_in(netns_path, move || {
            let _entered = runtime.enter();
            rtnetlink::new_connection().map_err(|e| NetError::io(&path, e))
        })
        .await?;
        Ok(Netlink {
            handle,
            connection: tokio::spawn(connection),
        })
    }

    /// The index of link `name`, if it exists.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, NetError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(Some(link.header.index)),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(NetError::netlink(format!("get link {name}"), e)),
        }
    }

    /// Creates bridge `name` unless it exists; returns its index. Does not bring it up.
    pub async fn ensure_bridge(&self, name: &str, mtu: u32) -> Result<u32, NetError> {
        if let Some(index) = self.link_index(name).await? {
            return Ok(index);
        }
        let message = LinkBridge::new(name).mtu(mtu).build();
        match self.handle.link().add(message).execute().await {
            Ok(()) => {}
            // Lost a race with another creator: fine, it exists.
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(NetError::netlink(format!("create bridge {name}"), e)),
        }
        self.link_index(name)
            .await?
            .ok_or_else(|| NetError::LinkVanished(name.to_string()))
    }

    pub async fn set_up(&self, index: u32) -> Result<(), NetError> {
        let message = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(|e| NetError::netlink(format!("set link {index} up"), e))
    }

    /// Attaches link `index` to bridge `bridge_index` and brings it up.
    pub async fn attach_up(&self, index: u32, bridge_index: u32) -> Result<(), NetError> {
        let message = LinkUnspec::new_with_index(index)
            .controller(bridge_index)
            .up()
            .build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(|e| NetError::netlink(format!("attach link {index} to bridge"), e))
    }

    /// Lets bridge port `index` send frames back out the port they came in on.
    pub async fn set_hairpin(&self, index: u32) -> Result<(), NetError> {
        let message = LinkBridgePort::new(index).hairpin(true).build();
        self.handle
            .link()
            .set_port(message)
            .execute()
            .await
            .map_err(|e| NetError::netlink(format!("set hairpin on link {index}"), e))
    }

    /// Puts `ip/prefix_len` on link `index`, replacing the same address if already there.
    pub async fn replace_address(
        &self,
        index: u32,
        ip: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetError> {
        self.handle
            .address()
            .add(index, IpAddr::V4(ip), prefix_len)
            .replace()
            .execute()
            .await
            .map_err(|e| NetError::netlink(format!("add address {ip}/{prefix_len}"), e))
    }

    /// Routes everything not on a local network through `gateway` via link `index`.
    pub async fn replace_default_route(
        &self,
        index: u32,
        gateway: Ipv4Addr,
    ) -> Result<(), NetError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(index)
            .build();
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(|e| NetError::netlink(format!("add default route via {gateway}"), e))
    }

    /// Creates a veth pair: `host` here, attached to bridge `bridge_index` and up; `peer` born
    /// directly inside the namespace open at `peer_netns_fd`, so its name never collides with
    /// a link of the node's namespace.
    pub async fn create_veth(
        &self,
        host: &str,
        peer: &str,
        mtu: u32,
        bridge_index: u32,
        peer_netns_fd: RawFd,
    ) -> Result<(), NetError> {
        let peer_message = LinkUnspec::new_with_name(peer)
            .mtu(mtu)
            .setns_by_fd(peer_netns_fd)
            .build();
        let message = LinkVeth::new(host, peer)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_message)))
            .mtu(mtu)
            .controller(bridge_index)
            .up()
            .build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(|e| NetError::netlink(format!("create veth {host}"), e))
    }

    /// Deletes link `name`; true if it existed.
    pub async fn delete_link(&self, name: &str) -> Result<bool, NetError> {
        let Some(index) = self.link_index(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(false),
            Err(e) => Err(NetError::netlink(format!("delete link {name}"), e)),
        }
    }

    /// Names of the links attached to bridge `bridge_index`.
    pub async fn bridge_ports(&self, bridge_index: u32) -> Result<Vec<String>, NetError> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::netlink("list links".to_string(), e))?;
        Ok(links
            .iter()
            .filter(|link| {
                link.attributes
                    .contains(&LinkAttribute::Controller(bridge_index))
            })
            .filter_map(|link| {
                link.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(name) => Some(name.clone()),
                    _ => None,
                })
            })
            .collect())
    }
}

/// The errno of a kernel-refused request (positive, like `libc::ENODEV`).
pub(super) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()),
        _ => None,
    }
}
