//! Value types of the config file that are written as strings: durations (`250ms`, `2s`, `1m`,
//! `1h`) and `host:port` addresses. Their serde impls give the error a key path and line.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A duration written with a unit: `us`, `ms`, `s`, `m` or `h` (`0s` disables where a key says so).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    /// `s` seconds.
    pub const fn secs(s: u64) -> Self {
        ConfigDuration(Duration::from_secs(s))
    }
    /// `ms` milliseconds.
    pub const fn millis(ms: u64) -> Self {
        ConfigDuration(Duration::from_millis(ms))
    }
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
    /// Whether it is zero (which some keys read as "off").
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

/// Parses `250ms`, `1.5s`, `2m`, `1h`, `100us`. A bare number is refused: units are never guessed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("duration {text:?} has no unit (write e.g. 250ms, 2s, 1m, 1h)"))?;
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("duration {text:?} does not start with a number"))?;
    let scale = match unit {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "duration {text:?} has an unknown unit {unit:?} (use us, ms, s, m or h)"
            ))
        }
    };
    let secs = value * scale;
    if !secs.is_finite() || secs > 365.0 * 86400.0 {
        return Err(format!("duration {text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(ConfigDuration)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for ConfigDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            let s = d.as_secs();
            if s != 0 && s.is_multiple_of(3600) {
                write!(f, "{}h", s / 3600)
            } else if s != 0 && s.is_multiple_of(60) {
                write!(f, "{}m", s / 60)
            } else {
                write!(f, "{s}s")
            }
        } else if d.subsec_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}us", d.as_micros())
        }
    }
}

/// Splits `host:port` / `[v6]:port`; the host may be an IP or a DNS name.
pub fn split_host_port(text: &str) -> Result<(&str, u16), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let end = rest
            .find(']')
            .ok_or_else(|| format!("address {text:?} has an unclosed '['"))?;
        let after = &rest[end + 1..];
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| format!("address {text:?} needs a port: [addr]:port"))?;
        (&rest[..end], port)
    } else {
        let (h, p) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("address {text:?} needs a port: host:port"))?;
        if h.contains(':') {
            return Err(format!("IPv6 address {text:?} must be written [addr]:port"));
        }
        (h, p)
    };
    if host.is_empty() {
        return Err(format!("address {text:?} has an empty host"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("address {text:?} has an invalid port {port:?}"))?;
    Ok((host, port))
}

/// `10.96.0.10` or `10.96.0.10:53` (`[fd00::a]:53` for IPv6 with a port).
pub fn parse_resolver(s: &str) -> Option<std::net::SocketAddr> {
    s.parse::<std::net::SocketAddr>().ok().or_else(|| {
        s.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| std::net::SocketAddr::new(ip, 53))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("ms").is_err());
        assert_eq!(ConfigDuration::millis(250).to_string(), "250ms");
        assert_eq!(ConfigDuration::secs(90).to_string(), "90s");
        assert_eq!(ConfigDuration::secs(120).to_string(), "2m");
    }

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("127.0.0.1:80"), Ok(("127.0.0.1", 80)));
        assert_eq!(split_host_port("[::1]:8080"), Ok(("::1", 8080)));
        assert_eq!(split_host_port("web.svc:8080"), Ok(("web.svc", 8080)));
        assert!(split_host_port("web.svc").is_err());
        assert!(split_host_port("::1:80").is_err());
        assert!(split_host_port("h:99999").is_err());
        assert!(split_host_port(":80").is_err());
    }
}

/// An address block, `10.0.0.0/8` or `fd00::/8`; a bare address is a block of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub network: std::net::IpAddr,
    /// The prefix length in bits.
    pub prefix: u8,
}

impl Cidr {
    /// The block `network/prefix`.
    pub const fn new(network: std::net::IpAddr, prefix: u8) -> Cidr {
        Cidr { network, prefix }
    }

    /// Whether `ip` lies in the block. An IPv4-mapped IPv6 peer (`::ffff:a.b.c.d`, what a
    /// dual-stack socket reports) is compared as the IPv4 address it is.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let bad = || {
            format!(
                "{text:?} is not an address block (write e.g. 10.0.0.0/8, fd00::/8 or 192.0.2.7)"
            )
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: std::net::IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether `ip` lies in any of `blocks`.
pub fn any_contains(blocks: &[Cidr], ip: std::net::IpAddr) -> bool {
    blocks.iter().any(|b| b.contains(ip))
}
