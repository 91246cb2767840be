//! A tiny IPv4 CIDR type: just the arithmetic the pod network needs, no dependency.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network such as `10.42.0.0/24`. Always normalized: host bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix_len: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("{0:?} is not an IPv4 CIDR like 10.42.0.0/24")]
    Syntax(String),
    #[error("prefix length {0} is larger than 32")]
    PrefixTooLong(u8),
    #[error("{0:?} has host bits set; did you mean {1}?")]
    HostBitsSet(String, Ipv4Cidr),
}

impl Ipv4Cidr {
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Result<Ipv4Cidr, CidrError> {
        if prefix_len > 32 {
            return Err(CidrError::PrefixTooLong(prefix_len));
        }
        let cidr = Ipv4Cidr {
            network: Ipv4Addr::from(u32::from(network) & mask_bits(prefix_len)),
            prefix_len,
        };
        if cidr.network != network {
            return Err(CidrError::HostBitsSet(
                format!("{network}/{prefix_len}"),
                cidr,
            ));
        }
        Ok(cidr)
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask_bits(self.prefix_len))
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask_bits(self.prefix_len))
    }

    /// How many addresses the network spans, network and broadcast included.
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix_len)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask_bits(self.prefix_len) == u32::from(self.network)
    }

    /// The address at `offset` from the network address, if it is inside the network.
    pub fn nth(&self, offset: u64) -> Option<Ipv4Addr> {
        if offset >= self.size() {
            return None;
        }
        // offset < size <= 2^32, and network + offset stays inside the network.
        Some(Ipv4Addr::from(u32::from(self.network) + offset as u32))
    }

    /// The bridge's address and every pod's default route: the first host address.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.nth(1).filter(|_| self.size() >= 4)
    }

    /// The addresses handed to pods: everything after the gateway, before the broadcast address.
    /// Empty when the network is too small to hold a gateway and one pod (/31, /32).
    pub fn pod_addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.network) as u64 + 2;
        let last = u32::from(self.broadcast()) as u64; // exclusive
        let range = if self.size() >= 4 { first..last } else { 0..0 };
        range.map(|ip| Ipv4Addr::from(ip as u32))
    }

    /// The `index`-th subnet of length `prefix_len` inside this network, e.g. node slices of the
    /// cluster's pod CIDR.
    pub fn subnet(&self, prefix_len: u8, index: u32) -> Option<Ipv4Cidr> {
        if prefix_len < self.prefix_len || prefix_len > 32 {
            return None;
        }
        let count = 1u64 << (prefix_len - self.prefix_len);
        if u64::from(index) >= count {
            return None;
        }
        let step = 1u64 << (32 - prefix_len);
        let start = u64::from(u32::from(self.network)) + u64::from(index) * step;
        Ipv4Cidr::new(Ipv4Addr::from(start as u32), prefix_len).ok()
    }
}

fn mask_bits(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_len))
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || CidrError::Syntax(s.to_string());
        let (addr, len) = s.trim().split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        let len: u8 = len.parse().map_err(|_| syntax())?;
        Ipv4Cidr::new(addr, len)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parsing_round_trips_through_display() {
        assert_eq!(cidr("10.42.0.0/24").to_string(), "10.42.0.0/24");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("192.168.1.7/32").to_string(), "192.168.1.7/32");
    }

    #[test]
    fn parsing_rejects_garbage_long_prefixes_and_host_bits() {
        assert!(matches!(
            "10.42.0.0".parse::<Ipv4Cidr>(),
            Err(CidrError::Syntax(_))
        ));
        assert!(matches!(
            "10.42.0/24".parse::<Ipv4Cidr>(),
            Err(CidrError::Syntax(_))
        ));
        assert!(matches!(
            "10.42.0.0/x".parse::<Ipv4Cidr>(),
            Err(CidrError::Syntax(_))
        ));
        assert_eq!(
            "10.42.0.0/33".parse::<Ipv4Cidr>(),
            Err(CidrError::PrefixTooLong(33))
        );
        assert_eq!(
            "10.42.0.5/24".parse::<Ipv4Cidr>(),
            Err(CidrError::HostBitsSet(
                "10.42.0.5/24".into(),
                cidr("10.42.0.0/24")
            ))
        );
    }

    #[test]
    fn a_slash_24_has_gateway_dot_1_and_pods_dot_2_to_dot_254() {
        let net = cidr("10.42.0.0/24");
        assert_eq!(net.gateway(), Some(Ipv4Addr::new(10, 42, 0, 1)));
        assert_eq!(net.broadcast(), Ipv4Addr::new(10, 42, 0, 255));
        assert_eq!(net.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        let pods: Vec<_> = net.pod_addresses().collect();
        assert_eq!(pods.len(), 253);
        assert_eq!(pods.first(), Some(&Ipv4Addr::new(10, 42, 0, 2)));
        assert_eq!(pods.last(), Some(&Ipv4Addr::new(10, 42, 0, 254)));
    }

    #[test]
    fn networks_too_small_for_a_gateway_and_a_pod_have_no_pod_addresses() {
        assert_eq!(cidr("10.0.0.0/31").pod_addresses().count(), 0);
        assert_eq!(cidr("10.0.0.0/31").gateway(), None);
        assert_eq!(cidr("10.0.0.0/32").pod_addresses().count(), 0);
        assert_eq!(
            cidr("10.0.0.0/30").pod_addresses().collect::<Vec<_>>(),
            [Ipv4Addr::new(10, 0, 0, 2)]
        );
    }

    #[test]
    fn contains_checks_the_masked_prefix() {
        let net = cidr("10.42.0.0/16");
        assert!(net.contains(Ipv4Addr::new(10, 42, 255, 255)));
        assert!(!net.contains(Ipv4Addr::new(10, 43, 0, 0)));
        assert!(cidr("0.0.0.0/0").contains(Ipv4Addr::new(1, 2, 3, 4)));
    }

    #[test]
    fn subnets_slice_the_cluster_cidr_into_node_ranges() {
        let cluster = cidr("10.42.0.0/16");
        assert_eq!(cluster.subnet(24, 0), Some(cidr("10.42.0.0/24")));
        assert_eq!(cluster.subnet(24, 3), Some(cidr("10.42.3.0/24")));
        assert_eq!(cluster.subnet(24, 255), Some(cidr("10.42.255.0/24")));
        assert_eq!(cluster.subnet(24, 256), None);
        assert_eq!(cluster.subnet(8, 0), None);
    }

    #[test]
    fn nth_stays_inside_the_network_even_at_the_top_of_the_address_space() {
        let top = cidr("255.255.255.0/24");
        assert_eq!(top.nth(255), Some(Ipv4Addr::new(255, 255, 255, 255)));
        assert_eq!(top.nth(256), None);
        assert_eq!(
            top.pod_addresses().last(),
            Some(Ipv4Addr::new(255, 255, 255, 254))
        );
    }
}
