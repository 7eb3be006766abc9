//! DNS discovery: every A and AAAA record of a name (a Kubernetes headless Service), or the SRV
//! records of a service (Consul DNS, Kubernetes named ports) with port and weight taken from
//! them. Resolution goes through hickory-resolver configured like the pod's own resolver
//! (`/etc/resolv.conf`: nameservers, search domains, ndots), or the configured `resolvers` with
//! the system search list.

use super::{DiscoveryError, Target};
use crate::config::units::split_host_port;
use crate::config::DiscoveryConfig;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use crate::config::units::parse_resolver;

enum Query {
    /// A and AAAA records of `name`, each with `port`.
    Hosts { name: String, port: u16 },
    /// SRV records of `name`.
    Srv { name: String },
}

pub struct DnsSource {
    resolver: TokioResolver,
    query: Query,
}

impl DnsSource {
    pub fn new(cfg: &DiscoveryConfig) -> Result<DnsSource, DiscoveryError> {
        let query = match (&cfg.dns, &cfg.dns_srv) {
            (Some(dns), _) => {
                let (name, port) =
                    split_host_port(dns).map_err(|message| DiscoveryError::Config { message })?;
                Query::Hosts {
                    name: name.to_owned(),
                    port,
                }
            }
            (None, Some(srv)) => Query::Srv { name: srv.clone() },
            (None, None) => {
                return Err(DiscoveryError::Config {
                    message: "no dns or dns_srv name".into(),
                })
            }
        };
        // Without /etc/resolv.conf (a scratch container) the defaults still resolve, and
        // configured resolvers need no system file at all.
        let (system, mut opts) = hickory_resolver::system_conf::read_system_conf()
            .unwrap_or_else(|_| (ResolverConfig::default(), ResolverOpts::default()));
        let config = if cfg.resolvers.is_empty() {
            system
        } else {
            let mut config = ResolverConfig::from_parts(
                system.domain().cloned(),
                system.search().to_vec(),
                vec![],
            );
            for addr in cfg.resolvers.iter().filter_map(|r| parse_resolver(r)) {
                // UDP first; TCP for answers too large for a datagram.
                config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
            }
            config
        };
        // A headless Service may publish both families; take every address.
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // A refresh that outlasts the interval only delays the next one; keep it bounded.
        opts.timeout = cfg
            .refresh_interval()
            .clamp(Duration::from_millis(500), Duration::from_secs(2));
        opts.attempts = 2;
        let mut builder =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
        *builder.options_mut() = opts;
        Ok(DnsSource {
            resolver: builder.build(),
            query,
        })
    }

    pub fn kind(&self) -> &'static str {
        match self.query {
            Query::Hosts { .. } => "dns",
            Query::Srv { .. } => "dns_srv",
        }
    }

    /// One resolution. No records is an empty answer (`Ok(vec![])`); a server that does not
    /// answer, or answers with an error, is a failure.
    pub async fn fetch(&self) -> Result<Vec<Target>, DiscoveryError> {
        // The refresh interval, not record TTLs, decides when to ask again: every round asks.
        self.resolver.clear_cache();
        match &self.query {
            Query::Hosts { name, port } => Ok(self
                .ips(name)
                .await?
                .into_iter()
                .map(|ip| Target::new(SocketAddr::new(ip, *port), 1, name.clone()))
                .collect()),
            Query::Srv { name } => self.srv(name).await,
        }
    }

    async fn ips(&self, name: &str) -> Result<Vec<IpAddr>, DiscoveryError> {
        match self.resolver.lookup_ip(name).await {
            Ok(found) => Ok(found.iter().collect()),
            Err(e) if e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(dns_error(name, e)),
        }
    }

    /// RFC 2782: only the records of the lowest priority are used; weight 0 counts as 1 so
    /// every listed target gets some traffic.
    async fn srv(&self, name: &str) -> Result<Vec<Target>, DiscoveryError> {
        let found = match self.resolver.srv_lookup(name).await {
            Ok(found) => found,
            Err(e) if e.is_no_records_found() => return Ok(Vec::new()),
            Err(e) => return Err(dns_error(name, e)),
        };
        let Some(best) = found.iter().map(|r| r.priority()).min() else {
            return Ok(Vec::new());
        };
        let mut targets = Vec::new();
        for record in found.iter().filter(|r| r.priority() == best) {
            let host = record.target().to_utf8();
            let host = host.trim_end_matches('.').to_owned();
            // A target without addresses is skipped, not fatal: one stale record must not
            // freeze the whole set.
            let ips = self.ips(&record.target().to_utf8()).await?;
            if ips.is_empty() {
                tracing::warn!(srv = %name, target = %host, "SRV target has no addresses; skipped");
            }
            for ip in ips {
                targets.push(Target::new(
                    SocketAddr::new(ip, record.port()),
                    u32::from(record.weight()).max(1),
                    host.clone(),
                ));
            }
        }
        Ok(targets)
    }
}

fn dns_error(name: &str, e: ResolveError) -> DiscoveryError {
    DiscoveryError::Dns {
        name: name.to_owned(),
        message: e.to_string(),
    }
}
