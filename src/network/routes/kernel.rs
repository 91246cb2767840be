//! Programs a [`Plan`] into the node's namespace over rtnetlink: the VXLAN device with its
//! neighbour and FDB entries, and the routes marked with [`ROUTE_PROTOCOL`]. Each apply
//! converges: what the plan lacks and berth made is removed, what it has is (re)placed.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use netlink_packet_route::AddressFamily;
use rtnetlink::{LinkUnspec, LinkVxlan, RouteMessageBuilder};

use super::{Plan, Route, VxlanPeer, ROUTE_PROTOCOL, VNI, VXLAN_DEVICE, VXLAN_PORT};
use crate::network::links::{errno, Netlink};
use crate::network::{Ipv4Cidr, NetError};

/// This node's end of the tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalVtep {
    pub mac: [u8; 6],
    /// The address encapsulated packets leave from (the node's InternalIP).
    pub address: Ipv4Addr,
    /// This node's pod CIDR: its network address is the device's.
    pub pod_cidr: Ipv4Cidr,
    pub mtu: u32,
}

/// Makes the kernel hold `plan` and nothing else of berth's routing. True when the VXLAN
/// device exists afterwards (it is then worth publishing).
pub async fn apply(nl: &Netlink, plan: &Plan, local: &LocalVtep) -> Result<bool, NetError> {
    let vxlan = match &plan.vxlan {
        Some(peers) => {
            let index = ensure_vxlan(nl, local).await?;
            sync_neighbours(nl, index, peers).await?;
            Some(index)
        }
        None => {
            nl.delete_link(VXLAN_DEVICE).await?;
            None
        }
    };
    sync_routes(nl, &plan.routes, vxlan).await?;
    Ok(vxlan.is_some())
}

/// Removes all of it: the device (its entries and routes go with it) and every berth route.
pub async fn remove_all(nl: &Netlink) -> Result<(), NetError> {
    nl.delete_link(VXLAN_DEVICE).await?;
    sync_routes(nl, &[], None).await
}

/// IPv4 networks this node is directly connected to, pod networks (inside `cluster`) aside.
pub async fn connected_networks(
    nl: &Netlink,
    cluster: Ipv4Cidr,
) -> Result<Vec<Ipv4Cidr>, NetError> {
    let addresses: Vec<_> = nl
        .handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| NetError::netlink("list addresses".into(), e))?;
    let mut networks = Vec::new();
    for message in addresses {
        let ip = message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        let Some(ip) = ip else { continue };
        if ip.is_loopback() || cluster.contains(ip) {
            continue;
        }
        let prefix = message.header.prefix_len;
        let network = Ipv4Addr::from(u32::from(ip) & mask(prefix));
        if let Ok(net) = Ipv4Cidr::new(network, prefix) {
            networks.push(net);
        }
    }
    Ok(networks)
}

fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

/// What an existing VXLAN device was made with: its MAC and local address.
fn vxlan_identity(link: &LinkMessage) -> (Option<Vec<u8>>, Option<Ipv4Addr>) {
    let mac = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(mac) => Some(mac.clone()),
        _ => None,
    });
    let local = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|info| match info {
            LinkInfo::Data(InfoData::Vxlan(data)) => data.iter().find_map(|d| match d {
                InfoVxlan::Local(ip) => Some(*ip),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    });
    (mac, local)
}

async fn ensure_vxlan(nl: &Netlink, local: &LocalVtep) -> Result<u32, NetError> {
    let existing = nl
        .handle
        .link()
        .get()
        .match_name(VXLAN_DEVICE.to_string())
        .execute()
        .try_next()
        .await;
    if let Ok(Some(link)) = existing {
        // A device of an earlier address (the node's IP changed) or name would send from the
        // wrong place or under a MAC peers no longer know: made again, as flannel does.
        let wanted = (Some(local.mac.to_vec()), Some(local.address));
        if vxlan_identity(&link) != wanted {
            tracing::info!(
                device = VXLAN_DEVICE,
                "re-creating the VXLAN device for a new address"
            );
            nl.delete_link(VXLAN_DEVICE).await?;
        }
    }
    let index = match nl.link_index(VXLAN_DEVICE).await? {
        Some(index) => index,
        None => {
            // No learning: every peer's MAC and address is programmed from the Nodes, so
            // the device never floods or trusts what arrives.
            let message = LinkVxlan::new(VXLAN_DEVICE, VNI)
                .port(VXLAN_PORT)
                .local(local.address)
                .learning(false)
                .mtu(local.mtu)
                .address(local.mac.to_vec())
                .build();
            match nl.handle.link().add(message).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => {
                    return Err(NetError::netlink(format!("create {VXLAN_DEVICE}"), e));
                }
            }
            nl.link_index(VXLAN_DEVICE)
                .await?
                .ok_or_else(|| NetError::LinkVanished(VXLAN_DEVICE.into()))?
        }
    };
    nl.replace_address(index, local.pod_cidr.network(), 32)
        .await?;
    let up = LinkUnspec::new_with_index(index).up().build();
    nl.handle
        .link()
        .set(up)
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("set {VXLAN_DEVICE} up"), e))?;
    Ok(index)
}

/// Neighbour entries (peer VTEP address → MAC) and FDB entries (MAC → peer address) on the
/// device: the wanted ones replaced, any other permanent one removed.
async fn sync_neighbours(nl: &Netlink, index: u32, peers: &[VxlanPeer]) -> Result<(), NetError> {
    let handle = &nl.handle;
    let arp: Vec<NeighbourMessage> = handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Inet)
        .execute()
        .try_collect()
        .await
        .map_err(|e| NetError::netlink("list neighbours".into(), e))?;
    let wanted_ips: BTreeSet<Ipv4Addr> = peers.iter().map(|p| p.vtep_ip).collect();
    for entry in arp.into_iter().filter(|m| m.header.ifindex == index) {
        let ip = entry.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
            _ => None,
        });
        if ip.is_some_and(|ip| !wanted_ips.contains(&ip)) {
            delete_neighbour(nl, entry).await?;
        }
    }
    let fdb: Vec<NeighbourMessage> = handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Bridge)
        .execute()
        .try_collect()
        .await
        .map_err(|e| NetError::netlink("list fdb".into(), e))?;
    let wanted_macs: BTreeSet<[u8; 6]> = peers.iter().map(|p| p.mac).collect();
    for entry in fdb.into_iter().filter(|m| m.header.ifindex == index) {
        let mac = entry.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(mac) => <[u8; 6]>::try_from(mac.as_slice()).ok(),
            _ => None,
        });
        if mac.is_some_and(|mac| !wanted_macs.contains(&mac)) {
            delete_neighbour(nl, entry).await?;
        }
    }
    for peer in peers {
        handle
            .neighbours()
            .add_bridge(index, &peer.mac)
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .destination(IpAddr::V4(peer.address))
            .replace()
            .execute()
            .await
            .map_err(|e| NetError::netlink(format!("add fdb entry for {}", peer.address), e))?;
        handle
            .neighbours()
            .add(index, IpAddr::V4(peer.vtep_ip))
            .link_layer_address(&peer.mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| NetError::netlink(format!("add neighbour {}", peer.vtep_ip), e))?;
    }
    Ok(())
}

async fn delete_neighbour(nl: &Netlink, entry: NeighbourMessage) -> Result<(), NetError> {
    match nl.handle.neighbours().del(entry).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(NetError::netlink("delete neighbour".into(), e)),
    }
}

/// The (destination, prefix, gateway) of one of berth's routes in the kernel.
fn route_key(message: &RouteMessage) -> Option<(Ipv4Addr, u8, Ipv4Addr)> {
    let destination = message.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })?;
    let gateway = message.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })?;
    Some((
        destination,
        message.header.destination_prefix_length,
        gateway,
    ))
}

async fn sync_routes(nl: &Netlink, wanted: &[Route], vxlan: Option<u32>) -> Result<(), NetError> {
    let protocol = RouteProtocol::from(ROUTE_PROTOCOL);
    let existing: Vec<RouteMessage> = nl
        .handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(|e| NetError::netlink("list routes".into(), e))?;
    let wanted_keys: BTreeSet<(Ipv4Addr, u8, Ipv4Addr)> = wanted
        .iter()
        .map(|r| (r.destination.0, r.destination.1, r.gateway))
        .collect();
    for route in existing
        .into_iter()
        .filter(|r| r.header.protocol == protocol)
    {
        if route_key(&route).is_some_and(|key| wanted_keys.contains(&key)) {
            continue;
        }
        match nl.handle.route().del(route).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::ESRCH) => {}
            Err(e) => return Err(NetError::netlink("delete route".into(), e)),
        }
    }
    for route in wanted {
        let (network, prefix) = route.destination;
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(network, prefix)
            .gateway(route.gateway)
            .protocol(protocol);
        if route.via_vxlan {
            // The gateway is the peer's VTEP address, which no connected network holds.
            let Some(index) = vxlan else { continue };
            builder = builder.output_interface(index).onlink();
        }
        nl.handle
            .route()
            .add(builder.build())
            .replace()
            .execute()
            .await
            .map_err(|e| {
                NetError::netlink(
                    format!("add route {network}/{prefix} via {}", route.gateway),
                    e,
                )
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vxlan_devices_identity_is_its_mac_and_local_address() {
        let mut link = LinkMessage::default();
        assert_eq!(vxlan_identity(&link), (None, None));
        link.attributes
            .push(LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]));
        link.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Data(
                InfoData::Vxlan(vec![
                    InfoVxlan::Id(1),
                    InfoVxlan::Local(Ipv4Addr::new(192, 168, 1, 2)),
                ]),
            )]));
        assert_eq!(
            vxlan_identity(&link),
            (
                Some(vec![2, 0, 0, 0, 0, 1]),
                Some(Ipv4Addr::new(192, 168, 1, 2))
            )
        );
    }

    #[test]
    fn masks_cover_the_whole_prefix_range() {
        assert_eq!(mask(0), 0);
        assert_eq!(mask(24), 0xffff_ff00);
        assert_eq!(mask(32), u32::MAX);
    }
}
