//! Envoy's v3 resources → the file's model. Every field is either translated, ignored with a
//! log line (it changes nothing a client sees: names of stats, metadata), or the resource is
//! rejected (NACK) with a message naming the field, because ignoring it would change
//! behaviour. Unknown and unhandled fields are caught by re-encoding what is left of a
//! message after the handled fields are taken out: anything still set is named by number.

pub mod cluster;
pub mod endpoint;
mod fields;
pub mod listener;
pub mod route;
mod tls;

use crate::config::ConfigDuration;
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use prost::Message;

/// Why a resource was rejected: the resource and field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

/// Shorthand for a rejection.
pub(crate) fn reject<T>(what: impl Into<String>) -> Result<T, Rejected> {
    Err(Rejected(what.into()))
}

/// Decodes an `Any` of the expected type.
pub fn unpack<M: Message + Default>(any: &Any, type_url: &str, what: &str) -> Result<M, Rejected> {
    if any.type_url != type_url {
        return reject(format!(
            "{what}: type {:?} where {type_url:?} was expected",
            any.type_url
        ));
    }
    M::decode(any.value.as_slice()).map_err(|e| Rejected(format!("{what}: cannot decode: {e}")))
}

/// A protobuf duration as the model's.
pub(crate) fn duration(d: &Option<PbDuration>) -> Option<ConfigDuration> {
    d.as_ref().map(|d| {
        ConfigDuration(
            std::time::Duration::from_secs(d.seconds.max(0) as u64)
                + std::time::Duration::from_nanos(d.nanos.max(0) as u64),
        )
    })
}

/// Rejects `rest` (a message with every handled field taken out) if anything is still set,
/// naming the fields by number, and by name where `names` knows it.
pub(crate) fn no_leftovers<M: Message>(
    what: &str,
    rest: &M,
    names: &[(u32, &str)],
) -> Result<(), Rejected> {
    let fields = field_numbers(&rest.encode_to_vec());
    if fields.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = fields
        .iter()
        .map(|n| match names.iter().find(|(k, _)| k == n) {
            Some((_, name)) => (*name).to_string(),
            None => format!("field #{n}"),
        })
        .collect();
    reject(format!(
        "{what}: {} not supported by outrigger (ignoring it would change behaviour)",
        named.join(", ")
    ))
}

/// The field numbers present in an encoded message, in order, each once.
fn field_numbers(mut buf: &[u8]) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    while !buf.is_empty() {
        let Some((key, n)) = varint(buf) else { break };
        buf = &buf[n..];
        let field = (key >> 3) as u32;
        let skip = match key & 7 {
            0 => varint(buf).map(|(_, n)| n),
            1 => Some(8),
            2 => varint(buf).map(|(len, n)| n + len as usize),
            5 => Some(4),
            _ => None,
        };
        if !out.contains(&field) {
            out.push(field);
        }
        match skip {
            Some(s) if s <= buf.len() => buf = &buf[s..],
            _ => break,
        }
    }
    out
}

fn varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Logs fields that are set but change nothing a client sees.
pub(crate) fn ignored(what: &str, fields: &[(&str, bool)]) {
    for (name, set) in fields {
        if *set {
            tracing::info!(
                resource = what,
                field = name,
                "xDS field ignored (no effect on traffic)"
            );
        }
    }
}

/// A socket address as `ip:port`.
pub(crate) fn socket_address(
    a: &Option<envoy_types::pb::envoy::config::core::v3::Address>,
    what: &str,
) -> Result<std::net::SocketAddr, Rejected> {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address::PortSpecifier};
    let Some(address::Address::SocketAddress(s)) = a.as_ref().and_then(|a| a.address.as_ref())
    else {
        return reject(format!("{what}: only socket_address is supported"));
    };
    let Some(PortSpecifier::PortValue(port)) = s.port_specifier else {
        return reject(format!(
            "{what}.socket_address: port_value is required (named ports are not supported)"
        ));
    };
    if s.protocol != 0 {
        return reject(format!(
            "{what}.socket_address.protocol: only TCP is supported"
        ));
    }
    let ip: std::net::IpAddr = s.address.parse().map_err(|_| {
        Rejected(format!(
            "{what}.socket_address.address: {:?} is not an IP address (names need a STRICT_DNS cluster, which is not supported)",
            s.address
        ))
    })?;
    Ok(std::net::SocketAddr::new(ip, port as u16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_fields_are_named() {
        use envoy_types::pb::envoy::config::cluster::v3::Cluster;
        let c = Cluster {
            alt_stat_name: "x".into(),
            ..Default::default()
        };
        let e = no_leftovers("cluster \"a\"", &c, &[(28, "alt_stat_name")]).unwrap_err();
        assert!(e.0.contains("alt_stat_name"), "{e}");
        assert!(no_leftovers("c", &Cluster::default(), &[]).is_ok());
    }
}
