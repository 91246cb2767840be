//! The Kubernetes IP and CIDR libraries (upstream `library/ip.go`, `library/cidr.go`):
//! `ip(s)`, `isIP(s)`, `cidr(s)`, `isCIDR(s)`, and on an IP `family`, `isUnspecified`,
//! `isLoopback`, `isLinkLocalMulticast`, `isLinkLocalUnicast`, `isGlobalUnicast`; on a CIDR
//! `containsIP`, `containsCIDR`, `ip`, `masked`, `prefixLength`.
//!
//! As upstream, IPv4-mapped IPv6 addresses and zones are refused, and an IPv4 address with
//! leading zeros does not parse (the standard library refuses them too).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use cel_interpreter::{ExecutionError, FunctionContext, Value};

use super::opaque;

const IP: &str = "net.IP";
const CIDR: &str = "net.CIDR";

pub fn parse_ip(text: &str) -> Result<IpAddr, String> {
    if text.contains('%') {
        return Err(format!("IP address with zone value is not allowed: {text}"));
    }
    let ip: IpAddr = text
        .parse()
        .map_err(|_| format!("IP Address {text:?} parse error during conversion from string"))?;
    if let IpAddr::V6(v6) = ip {
        if v6.to_ipv4_mapped().is_some() {
            return Err(format!("IPv4-mapped IPv6 address {text:?} is not allowed"));
        }
    }
    Ok(ip)
}

/// An address and a prefix length, the address as written (`cidr.ip()` gives it back).
pub fn parse_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let (address, prefix) = text
        .split_once('/')
        .ok_or_else(|| format!("network address parse error during conversion from string: invalid CIDR address: {text}"))?;
    let ip = parse_ip(address).map_err(|_| {
        format!("network address parse error during conversion from string: invalid CIDR address: {text}")
    })?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= max && !prefix.starts_with('+') && !(prefix.len() > 1 && prefix.starts_with('0')))
        .ok_or_else(|| {
            format!("network address parse error during conversion from string: invalid CIDR address: {text}")
        })?;
    Ok((ip, prefix))
}

fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

fn contains(network: (IpAddr, u8), ip: IpAddr) -> bool {
    network.0.is_ipv4() == ip.is_ipv4() && masked(network.0, network.1) == masked(ip, network.1)
}

fn ip_value(ip: IpAddr) -> Value {
    opaque::object(IP, [("address", Value::String(Arc::new(ip.to_string())))])
}

fn cidr_value(ip: IpAddr, prefix: u8) -> Value {
    opaque::object(
        CIDR,
        [
            ("address", Value::String(Arc::new(ip.to_string()))),
            ("prefix", Value::Int(i64::from(prefix))),
        ],
    )
}

fn ip_of(value: &Value) -> Option<IpAddr> {
    opaque::string_field(value, IP, "address").parse().ok()
}

fn cidr_of(value: &Value) -> Option<(IpAddr, u8)> {
    let ip = opaque::string_field(value, CIDR, "address").parse().ok()?;
    match opaque::field(value, CIDR, "prefix") {
        Some(Value::Int(p)) => u8::try_from(*p).ok().map(|p| (ip, p)),
        _ => None,
    }
}

fn string_argument(ftx: &FunctionContext) -> Result<Arc<String>, ExecutionError> {
    match ftx
        .args
        .first()
        .map(|a| ftx.resolve(a.clone()))
        .transpose()?
    {
        Some(Value::String(s)) => Ok(s),
        _ => Err(ftx.error("no such overload: needs a string")),
    }
}

fn ip_receiver(ftx: &FunctionContext) -> Result<IpAddr, ExecutionError> {
    ftx.this
        .as_ref()
        .and_then(ip_of)
        .ok_or_else(|| ftx.error("no such overload: the receiver must be an IP"))
}

fn cidr_receiver(ftx: &FunctionContext) -> Result<(IpAddr, u8), ExecutionError> {
    ftx.this
        .as_ref()
        .and_then(cidr_of)
        .ok_or_else(|| ftx.error("no such overload: the receiver must be a CIDR"))
}

pub fn ip(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    // `cidr.ip()`: the CIDR's address.
    if let Some(this) = &ftx.this {
        return match cidr_of(this) {
            Some((address, _)) => Ok(ip_value(address)),
            None => Err(ftx.error("no such overload: ip() needs a CIDR receiver")),
        };
    }
    let text = string_argument(ftx)?;
    parse_ip(&text).map(ip_value).map_err(|e| ftx.error(e))
}

pub fn is_ip(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(Value::Bool(parse_ip(&string_argument(ftx)?).is_ok()))
}

pub fn cidr(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let text = string_argument(ftx)?;
    parse_cidr(&text)
        .map(|(ip, prefix)| cidr_value(ip, prefix))
        .map_err(|e| ftx.error(e))
}

pub fn is_cidr(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(Value::Bool(parse_cidr(&string_argument(ftx)?).is_ok()))
}

pub fn family(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(Value::Int(if ip_receiver(ftx)?.is_ipv4() { 4 } else { 6 }))
}

pub fn is_unspecified(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(Value::Bool(ip_receiver(ftx)?.is_unspecified()))
}

pub fn is_loopback(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(Value::Bool(ip_receiver(ftx)?.is_loopback()))
}

pub fn is_link_local_multicast(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(Value::Bool(match ip_receiver(ftx)? {
        IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
        IpAddr::V6(v6) => v6.segments()[0] & 0xff0f == 0xff02,
    }))
}

pub fn is_link_local_unicast(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(Value::Bool(match ip_receiver(ftx)? {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }))
}

/// Go's `IsGlobalUnicast`: not unspecified, loopback, multicast, link-local or broadcast.
pub fn is_global_unicast(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(Value::Bool(match ip_receiver(ftx)? {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_multicast()
                || v4.is_link_local()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || v6.segments()[0] & 0xffc0 == 0xfe80)
        }
    }))
}

/// `cidr.containsIP(ip or string)`
pub fn contains_ip(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let network = cidr_receiver(ftx)?;
    let ip = match ftx
        .args
        .first()
        .map(|a| ftx.resolve(a.clone()))
        .transpose()?
    {
        Some(Value::String(s)) => parse_ip(&s).map_err(|e| ftx.error(e))?,
        Some(other) => ip_of(&other).ok_or_else(|| ftx.error("no such overload: needs an IP"))?,
        None => return Err(ftx.error("missing argument")),
    };
    Ok(Value::Bool(contains(network, ip)))
}

/// `cidr.containsCIDR(cidr or string)`
pub fn contains_cidr(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let network = cidr_receiver(ftx)?;
    let (ip, prefix) = match ftx
        .args
        .first()
        .map(|a| ftx.resolve(a.clone()))
        .transpose()?
    {
        Some(Value::String(s)) => parse_cidr(&s).map_err(|e| ftx.error(e))?,
        Some(other) => {
            cidr_of(&other).ok_or_else(|| ftx.error("no such overload: needs a CIDR"))?
        }
        None => return Err(ftx.error("missing argument")),
    };
    Ok(Value::Bool(prefix >= network.1 && contains(network, ip)))
}

/// `cidr.masked()`: the CIDR with the host bits cleared.
pub fn masked_cidr(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let (ip, prefix) = cidr_receiver(ftx)?;
    Ok(cidr_value(masked(ip, prefix), prefix))
}

pub fn prefix_length(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(Value::Int(i64::from(cidr_receiver(ftx)?.1)))
}

#[cfg(test)]
mod tests {
    use crate::cel::test_support::{eval, holds};

    #[test]
    fn the_ip_library_works_as_upstream_documents_it() {
        // Upstream's examples from library/ip.go.
        holds("isIP('127.0.0.1')");
        holds("isIP('::1')");
        holds("!isIP('127.0.0.256')");
        holds("!isIP(':::1')");
        holds("!isIP('127.0.0.01')");
        holds("!isIP('::ffff:1.2.3.4')");
        holds("!isIP('fe80::1%eth0')");
        holds("ip('127.0.0.1').family() == 4");
        holds("ip('::1').family() == 6");
        holds("ip('127.0.0.1') == ip('127.0.0.1')");
        holds("ip('::1') == ip('0:0::1')");
        holds("ip('0.0.0.0').isUnspecified()");
        holds("!ip('127.0.0.1').isUnspecified()");
        holds("ip('::').isUnspecified()");
        holds("ip('127.0.0.1').isLoopback()");
        holds("ip('::1').isLoopback()");
        holds("!ip('1.2.3.4').isLoopback()");
        holds("ip('224.0.0.1').isLinkLocalMulticast()");
        holds("!ip('224.0.1.1').isLinkLocalMulticast()");
        holds("ip('ff02::1').isLinkLocalMulticast()");
        holds("!ip('fd00::1').isLinkLocalMulticast()");
        holds("ip('169.254.169.254').isLinkLocalUnicast()");
        holds("!ip('192.168.0.1').isLinkLocalUnicast()");
        holds("ip('fe80::1').isLinkLocalUnicast()");
        holds("!ip('fd80::1').isLinkLocalUnicast()");
        holds("ip('192.168.0.1').isGlobalUnicast()");
        holds("!ip('255.255.255.255').isGlobalUnicast()");
        holds("ip('2001:db8::abcd').isGlobalUnicast()");
        holds("!ip('ff00::1').isGlobalUnicast()");
        let err = eval("ip('::ffff:1.2.3.4')").unwrap_err();
        assert!(err.contains("IPv4-mapped IPv6 address"), "{err}");
    }

    #[test]
    fn the_cidr_library_works_as_upstream_documents_it() {
        // Upstream's examples from library/cidr.go.
        holds("isCIDR('192.168.0.0/16')");
        holds("isCIDR('::1/128')");
        holds("!isCIDR('192.168.0.0/33')");
        holds("!isCIDR('192.168.0.0')");
        holds("cidr('192.168.0.0/16').containsIP(ip('192.168.0.1'))");
        holds("!cidr('192.168.0.0/16').containsIP(ip('192.169.0.1'))");
        holds("cidr('192.168.0.0/16').containsIP('192.168.0.1')");
        holds("!cidr('192.168.0.0/16').containsIP(ip('::1'))");
        holds("cidr('192.168.0.0/16').containsCIDR(cidr('192.168.10.0/24'))");
        holds("!cidr('192.168.0.0/16').containsCIDR(cidr('192.0.0.0/8'))");
        holds("cidr('192.168.0.0/16').containsCIDR('192.168.10.0/24')");
        holds("cidr('2001:db8::/32').containsCIDR('2001:db8::/64')");
        holds("cidr('192.168.0.0/24').ip() == ip('192.168.0.0')");
        holds("cidr('192.168.0.1/24').ip() == ip('192.168.0.1')");
        holds("cidr('::1/128').ip() == ip('::1')");
        holds("cidr('192.168.0.1/24').masked() == cidr('192.168.0.0/24')");
        holds("cidr('192.168.0.0/24').masked() == cidr('192.168.0.0/24')");
        holds("cidr('::1/0').masked() == cidr('::/0')");
        holds("cidr('192.168.0.0/16').prefixLength() == 16");
        holds("cidr('::1/128').prefixLength() == 128");
    }
}
