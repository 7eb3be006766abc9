//! LDS: `envoy.config.listener.v3.Listener` → `ListenerConfig`, with one filter chain holding
//! an HTTP connection manager (inline routes or RDS) or a TCP proxy.

use super::{fields, ignored, no_leftovers, reject, socket_address, unpack, Rejected};
use crate::config::{ListenerConfig, ListenerProtocol, RouteConfig};
use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy::ClusterSpecifier, TcpProxy,
};

/// The type URL of an LDS resource.
pub const TYPE_URL: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const HCM_URL: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TCP_PROXY_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const ROUTER_URL: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

/// A translated listener: its routes are inline, or come from the RDS resource `rds` names
/// (the listener waits for it before it is used: Envoy's listener warming).
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerDraft {
    /// The listener, routes filled in when inline.
    pub config: ListenerConfig,
    /// The RouteConfiguration to fill its routes from.
    pub rds: Option<String>,
}

/// Translates one listener.
pub fn translate(mut l: Listener) -> Result<ListenerDraft, Rejected> {
    let name = std::mem::take(&mut l.name);
    let what = format!("listener {name:?}");
    if name.is_empty() {
        return reject("listener: name is required");
    }
    let address = socket_address(&l.address.take(), &format!("{what}.address"))?;
    let mut out: ListenerConfig = serde_yaml::from_str(&format!(
        "{{name: {name:?}, address: {:?}}}",
        address.to_string()
    ))
    .map_err(|e| Rejected(format!("{what}: {e}")))?;
    let chains = std::mem::take(&mut l.filter_chains);
    if chains.len() != 1 {
        return reject(format!(
            "{what}.filter_chains: exactly one filter chain is supported (found {})",
            chains.len()
        ));
    }
    let mut chain = chains.into_iter().next().unwrap_or_default();
    let cw = format!("{what}.filter_chains[0]");
    if chain
        .filter_chain_match
        .take()
        .is_some_and(|m| m != Default::default())
    {
        return reject(format!("{cw}.filter_chain_match is not supported"));
    }
    if chain.transport_socket.is_some() {
        return reject(format!(
            "{cw}.transport_socket (downstream TLS over xDS) is not supported"
        ));
    }
    let filters = std::mem::take(&mut chain.filters);
    if filters.len() != 1 {
        return reject(format!("{cw}.filters: exactly one network filter (http_connection_manager or tcp_proxy) is supported"));
    }
    let f = filters.into_iter().next().unwrap_or_default();
    let fw = format!("{cw}.filters[0]");
    let Some(filter::ConfigType::TypedConfig(any)) = f.config_type else {
        return reject(format!("{fw}: typed_config is required"));
    };
    let mut rds = None;
    if any.type_url == HCM_URL {
        let hcm: HttpConnectionManager = unpack(&any, HCM_URL, &fw)?;
        let (routes, name) = http(hcm, &fw)?;
        out.routes = routes;
        rds = name;
    } else if any.type_url == TCP_PROXY_URL {
        let tcp: TcpProxy = unpack(&any, TCP_PROXY_URL, &fw)?;
        out.protocol = ListenerProtocol::Tcp;
        out.cluster = Some(tcp_cluster(tcp, &fw)?);
    } else {
        return reject(format!(
            "{fw}: filter {:?} is not supported (http_connection_manager or tcp_proxy)",
            any.type_url
        ));
    }
    ignored(
        &cw,
        &[
            ("name", !std::mem::take(&mut chain.name).is_empty()),
            ("metadata", chain.metadata.take().is_some()),
        ],
    );
    no_leftovers(&cw, &chain, fields::FILTER_CHAIN)?;
    listener_filters(std::mem::take(&mut l.listener_filters), &what)?;
    ignored(
        &what,
        &[
            (
                "stat_prefix",
                !std::mem::take(&mut l.stat_prefix).is_empty(),
            ),
            ("metadata", l.metadata.take().is_some()),
            (
                "traffic_direction",
                std::mem::take(&mut l.traffic_direction) != 0,
            ),
        ],
    );
    no_leftovers(&what, &l, fields::LISTENER)?;
    Ok(ListenerDraft { config: out, rds })
}

/// The cluster a TCP proxy filter forwards to.
fn tcp_cluster(mut tcp: TcpProxy, fw: &str) -> Result<String, Rejected> {
    let Some(ClusterSpecifier::Cluster(cluster)) = tcp.cluster_specifier.take() else {
        return reject(format!(
            "{fw}.tcp_proxy: cluster is required (weighted_clusters is not supported)"
        ));
    };
    ignored(
        fw,
        &[(
            "stat_prefix",
            !std::mem::take(&mut tcp.stat_prefix).is_empty(),
        )],
    );
    no_leftovers(&format!("{fw}.tcp_proxy"), &tcp, fields::TCP_PROXY)?;
    Ok(cluster)
}

/// tls_inspector and http_inspector only feed filter_chain_match, which is not supported, so
/// they change nothing; any other listener filter would.
fn listener_filters(
    filters: Vec<envoy_types::pb::envoy::config::listener::v3::ListenerFilter>,
    what: &str,
) -> Result<(), Rejected> {
    for lf in filters {
        if !lf.name.contains("tls_inspector") && !lf.name.contains("http_inspector") {
            return reject(format!(
                "{what}.listener_filters: {:?} is not supported",
                lf.name
            ));
        }
    }
    Ok(())
}

fn http(
    mut hcm: HttpConnectionManager,
    what: &str,
) -> Result<(Vec<RouteConfig>, Option<String>), Rejected> {
    let w = format!("{what}.http_connection_manager");
    let (routes, rds) = match hcm.route_specifier.take() {
        Some(RouteSpecifier::Rds(r)) if !r.route_config_name.is_empty() => (Vec::new(), Some(r.route_config_name)),
        Some(RouteSpecifier::RouteConfig(rc)) => (super::route::translate(rc)?.routes, None),
        _ => return reject(format!("{w}: rds.route_config_name or route_config is required (scoped routes are not supported)")),
    };
    for (i, f) in std::mem::take(&mut hcm.http_filters)
        .into_iter()
        .enumerate()
    {
        use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType;
        let router = match &f.config_type {
            Some(ConfigType::TypedConfig(a)) => a.type_url == ROUTER_URL,
            None => f.name == "envoy.filters.http.router",
            _ => false,
        };
        if !router {
            return reject(format!(
                "{w}.http_filters[{i}]: {:?} is not supported (only the router)",
                f.name
            ));
        }
    }
    // codec_type AUTO (0), HTTP1 and HTTP2 are all served: the listener detects the protocol.
    ignored(
        &w,
        &[
            (
                "stat_prefix",
                !std::mem::take(&mut hcm.stat_prefix).is_empty(),
            ),
            ("codec_type", std::mem::take(&mut hcm.codec_type) != 0),
            (
                "access_log",
                !std::mem::take(&mut hcm.access_log).is_empty(),
            ),
        ],
    );
    no_leftovers(&w, &hcm, fields::HCM)?;
    Ok((routes, rds))
}
