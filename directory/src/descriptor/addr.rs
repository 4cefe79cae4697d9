//! Listen addresses of a descriptor.
//!
//! ```text
//! address := kind u8 | ip | port u16
//!   kind 0x04: ip = 4 bytes (IPv4)
//!   kind 0x06: ip = 16 bytes (IPv6, never an IPv4-mapped ::ffff:a.b.c.d)
//! ```
//!
//! A descriptor lists 1 to [`MAX_ADDRESSES`] addresses in strictly ascending
//! order of their encoded bytes (so all IPv4 addresses come first). Port 0
//! and unspecified IPs (`0.0.0.0`, `::`) are rejected: nobody can dial them.

use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use lamina_proto::codec::{Reader, Writer};

use super::{truncated, MAX_ADDRESSES};
use crate::error::DescriptorError;

/// Kind byte of an IPv4 address.
const KIND_V4: u8 = 0x04;
/// Kind byte of an IPv6 address.
const KIND_V6: u8 = 0x06;

/// Check that `addr` can be advertised.
pub(crate) fn check_address(addr: &SocketAddr) -> Result<(), DescriptorError> {
    if addr.port() == 0 {
        return Err(DescriptorError::InvalidAddress("port 0"));
    }
    if addr.ip().is_unspecified() {
        return Err(DescriptorError::InvalidAddress("unspecified IP"));
    }
    if let IpAddr::V6(v6) = addr.ip() {
        if v6.to_ipv4_mapped().is_some() {
            return Err(DescriptorError::InvalidAddress("IPv4-mapped IPv6 address"));
        }
    }
    Ok(())
}

/// The canonical order of addresses: the order of their encodings.
pub(crate) fn canonical_cmp(a: &SocketAddr, b: &SocketAddr) -> Ordering {
    let key = |s: &SocketAddr| -> (u8, [u8; 16], u16) {
        match s.ip() {
            IpAddr::V4(v4) => {
                let mut ip = [0u8; 16];
                ip[..4].copy_from_slice(&v4.octets());
                (KIND_V4, ip, s.port())
            }
            IpAddr::V6(v6) => (KIND_V6, v6.octets(), s.port()),
        }
    };
    key(a).cmp(&key(b))
}

/// Decode the address count and the addresses, enforcing canonical order.
pub(crate) fn decode_addresses(r: &mut Reader<'_>) -> Result<Vec<SocketAddr>, DescriptorError> {
    let n = r.u8().map_err(truncated)?;
    if n == 0 || usize::from(n) > MAX_ADDRESSES {
        return Err(DescriptorError::AddressCount(n));
    }
    let mut out: Vec<SocketAddr> = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let addr = decode_address(r)?;
        check_address(&addr)?;
        if out.last().is_some_and(|prev| canonical_cmp(prev, &addr) != Ordering::Less) {
            return Err(DescriptorError::AddressesNotCanonical);
        }
        out.push(addr);
    }
    Ok(out)
}

/// Decode one address.
fn decode_address(r: &mut Reader<'_>) -> Result<SocketAddr, DescriptorError> {
    let kind = r.u8().map_err(truncated)?;
    let ip = match kind {
        KIND_V4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>().map_err(truncated)?)),
        KIND_V6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>().map_err(truncated)?)),
        other => return Err(DescriptorError::AddressKind(other)),
    };
    let port = r.u16().map_err(truncated)?;
    Ok(SocketAddr::new(ip, port))
}

/// Encode the count and the addresses (already canonical, at most 4).
pub(crate) fn encode_addresses(w: &mut Writer, addrs: &[SocketAddr]) {
    w.put_u8(u8::try_from(addrs.len()).unwrap_or(u8::MAX));
    for addr in addrs {
        match addr.ip() {
            IpAddr::V4(v4) => {
                w.put_u8(KIND_V4);
                w.put_bytes(&v4.octets());
            }
            IpAddr::V6(v6) => {
                w.put_u8(KIND_V6);
                w.put_bytes(&v6.octets());
            }
        }
        w.put_u16(addr.port());
    }
}

/// Put `addrs` in canonical order, dropping exact duplicates (builder only).
pub(crate) fn canonicalize(addrs: &mut Vec<SocketAddr>) {
    addrs.sort_by(canonical_cmp);
    addrs.dedup();
}
