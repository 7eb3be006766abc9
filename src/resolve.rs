//! Host name lookups through hickory-resolver, never the C library's `getaddrinfo`: the image
//! ships a statically linked binary in a `FROM scratch` root, where glibc's name service
//! modules do not exist. hickory reads the same `/etc/resolv.conf` and `/etc/hosts` that the
//! kubelet writes into every container.

use hickory_resolver::config::{LookupIpStrategy, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Why a name lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The resolver answered with an error.
    #[error("cannot resolve {host:?}: {message}")]
    Lookup {
        /// The name looked up.
        host: String,
        /// The resolver's error.
        message: String,
    },
    /// The name exists but has no addresses.
    #[error("{host:?} has no addresses")]
    Empty {
        /// The name looked up.
        host: String,
    },
}

/// A resolver set up like the pod's own (nameservers, search list, ndots, hosts file); the
/// defaults where there is no `/etc/resolv.conf`.
pub fn system_resolver(timeout: Duration) -> TokioResolver {
    let (config, mut opts) = hickory_resolver::system_conf::read_system_conf()
        .unwrap_or_else(|_| (ResolverConfig::default(), ResolverOpts::default()));
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.timeout = timeout;
    opts.attempts = 2;
    let mut builder =
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
    *builder.options_mut() = opts;
    builder.build()
}

/// Every address of `host` (an IP literal is its own answer), each with `port`.
pub async fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
    if let Some(ips) = literal(host) {
        return Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect());
    }
    let found = system_resolver(Duration::from_secs(2))
        .lookup_ip(host)
        .await
        .map_err(|e| ResolveError::Lookup {
            host: host.to_owned(),
            message: e.to_string(),
        })?;
    let addrs: Vec<SocketAddr> = found.iter().map(|ip| SocketAddr::new(ip, port)).collect();
    if addrs.is_empty() {
        return Err(ResolveError::Empty {
            host: host.to_owned(),
        });
    }
    Ok(addrs)
}

/// `lookup` for code that is not async (building a cluster from its config). It runs on a
/// thread of its own, so it may be called from inside a runtime.
pub fn lookup_blocking(host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
    if let Some(ips) = literal(host) {
        return Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect());
    }
    let owned = host.to_owned();
    let lookup_error = |message: String| ResolveError::Lookup {
        host: host.to_owned(),
        message,
    };
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string());
        rt.map(|rt| rt.block_on(lookup(&owned, port)))
    })
    .join()
    .map_err(|_| lookup_error("the resolver thread panicked".into()))?
    .map_err(lookup_error)?
}

/// IP literals, and `localhost`, which RFC 6761 reserves for loopback, so it resolves the
/// same with or without a hosts file.
fn literal(host: &str) -> Option<Vec<IpAddr>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(vec![ip]);
    }
    host.eq_ignore_ascii_case("localhost")
        .then(|| vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_localhost_need_no_resolver() {
        assert_eq!(
            lookup_blocking("10.0.0.1", 80).unwrap(),
            vec![SocketAddr::from(([10, 0, 0, 1], 80))]
        );
        assert_eq!(
            lookup_blocking("[::1]", 443).unwrap(),
            vec![SocketAddr::from((Ipv6Addr::LOCALHOST, 443))]
        );
        assert_eq!(
            lookup_blocking("LocalHost", 8080).unwrap()[0],
            SocketAddr::from(([127, 0, 0, 1], 8080))
        );
    }
}
