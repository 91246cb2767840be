//! IP addresses as upstream's Go code reads the fields that have always taken them loosely.

use std::net::{IpAddr, Ipv4Addr};

/// An address as upstream reads Endpoints and EndpointSlice addresses (Go's sloppy IP parse): IPv4 octets may have
/// leading zeros (read as decimal, not octal), and an IPv4-mapped IPv6 address is the IPv4
/// address. Nothing else is an IP, surrounding spaces included.
pub fn parse_sloppy(text: &str) -> Option<IpAddr> {
    let ip = match text.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => IpAddr::V4(parse_ipv4_with_leading_zeros(text)?),
    };
    Some(match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    })
}

fn parse_ipv4_with_leading_zeros(text: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        let part = parts.next().filter(|p| !p.is_empty())?;
        let value = part.bytes().try_fold(0u32, |value, b| {
            let value = value * 10 + u32::from(b.checked_sub(b'0').filter(|d| *d <= 9)?);
            (value <= 255).then_some(value)
        })?;
        *octet = u8::try_from(value).ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}
