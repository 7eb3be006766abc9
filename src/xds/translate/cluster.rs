//! CDS: `envoy.config.cluster.v3.Cluster` → `ClusterConfig`.

use super::{duration, fields, ignored, no_leftovers, reject, Rejected};
use crate::config::{
    CircuitBreakerConfig, ClusterConfig, DiscoveryConfig, EndpointConfig, GrpcHealthCheckConfig,
    HealthCheckConfig, HttpHealthCheckConfig, LbPolicy, OutlierDetectionConfig,
    TcpHealthCheckConfig, UpstreamProtocol,
};
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster, OutlierDetection};
use envoy_types::pb::envoy::config::core::v3::{health_check::HealthChecker, HealthCheck};

/// The type URL of a CDS resource.
pub const TYPE_URL: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

/// Translates one cluster. EDS clusters get `discovery.eds` (the service name, or the cluster's
/// own name); STATIC ones their inline `load_assignment`.
pub fn translate(mut c: Cluster) -> Result<ClusterConfig, Rejected> {
    let name = std::mem::take(&mut c.name);
    let what = format!("cluster {name:?}");
    if name.is_empty() {
        return reject("cluster: name is required");
    }
    let mut out: ClusterConfig = serde_yaml::from_str(&format!("name: {name:?}"))
        .map_err(|e| Rejected(format!("{what}: {e}")))?;
    out.lb = match c.lb_policy {
        0 => LbPolicy::RoundRobin,
        1 => LbPolicy::LeastRequest,
        2 => LbPolicy::RingHash,
        3 => LbPolicy::Random,
        p => return reject(format!("{what}: lb_policy {p} (MAGLEV, CLUSTER_PROVIDED, LOAD_BALANCING_POLICY_CONFIG) is not supported")),
    };
    c.lb_policy = 0;
    discovery_type(&mut c, &mut out, &name, &what)?;
    if let Some(t) = duration(&c.connect_timeout.take()) {
        out.connect_timeout = t;
    }
    if let Some(cb) = c.circuit_breakers.take() {
        out.circuit_breaker = breaker(cb, &what)?;
    }
    if let Some(od) = c.outlier_detection.take() {
        out.outlier_detection = Some(outlier(od, &what)?);
    }
    let checks = std::mem::take(&mut c.health_checks);
    if checks.len() > 1 {
        return reject(format!(
            "{what}.health_checks: one health check at most is supported"
        ));
    }
    if let Some(h) = checks.into_iter().next() {
        out.health_check = Some(health_check(h, &what)?);
    }
    if let Some(ts) = c.transport_socket.take() {
        out.tls = super::tls::upstream(ts, &what)?;
    }
    #[allow(deprecated)]
    if c.http2_protocol_options.take().is_some() {
        out.protocol = UpstreamProtocol::Http2;
    }
    ignored(
        &what,
        &[
            (
                "alt_stat_name",
                !std::mem::take(&mut c.alt_stat_name).is_empty(),
            ),
            ("metadata", c.metadata.take().is_some()),
            ("common_lb_config", c.common_lb_config.take().is_some()),
            (
                "dns_lookup_family",
                std::mem::take(&mut c.dns_lookup_family) != 0,
            ),
            (
                "track_cluster_stats",
                c.track_cluster_stats.take().is_some(),
            ),
        ],
    );
    no_leftovers(&what, &c, fields::CLUSTER)?;
    Ok(out)
}

/// STATIC (inline endpoints) or EDS (the service's assignment); other types are refused.
fn discovery_type(
    c: &mut Cluster,
    out: &mut ClusterConfig,
    name: &str,
    what: &str,
) -> Result<(), Rejected> {
    let kind = match c.cluster_discovery_type.take() {
        None => 0,
        Some(cluster::ClusterDiscoveryType::Type(t)) => t,
        Some(cluster::ClusterDiscoveryType::ClusterType(_)) => {
            return reject(format!(
                "{what}: cluster_type (custom clusters) is not supported"
            ))
        }
    };
    match kind {
        0 => {
            let Some(la) = c.load_assignment.take() else {
                return reject(format!("{what}: a STATIC cluster needs load_assignment"));
            };
            // The file's endpoints have no held-out state: an inline endpoint the server
            // marks unhealthy is left out.
            for t in super::endpoint::targets(la, &format!("{what}.load_assignment"))? {
                if !t.held_out {
                    out.endpoints.push(EndpointConfig {
                        address: t.address.to_string(),
                        weight: t.weight,
                        priority: t.priority,
                    });
                }
            }
            if out.endpoints.is_empty() {
                // Validation wants an endpoint or discovery; an empty static cluster is legal in
                // Envoy and answers 503, which an empty EDS assignment does too.
                out.discovery = Some(eds(name, name));
            }
        }
        3 => {
            let service = c
                .eds_cluster_config
                .take()
                .map(|e| e.service_name)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| name.to_owned());
            out.discovery = Some(eds(name, &service));
            if c.load_assignment.take().is_some() {
                tracing::info!(cluster = %name, "xDS: load_assignment of an EDS cluster ignored (EDS sends its endpoints)");
            }
        }
        t => return reject(format!("{what}: type {t} (STRICT_DNS, LOGICAL_DNS, ORIGINAL_DST) is not supported; use EDS or STATIC")),
    }
    Ok(())
}

fn eds(_cluster: &str, service: &str) -> DiscoveryConfig {
    DiscoveryConfig {
        dns: None,
        dns_srv: None,
        file: None,
        eds: Some(service.to_owned()),
        refresh: None,
        resolvers: Vec::new(),
        start_healthy: false,
        empty_confirmations: 1,
    }
}

fn breaker(
    cb: envoy_types::pb::envoy::config::cluster::v3::CircuitBreakers,
    what: &str,
) -> Result<Option<CircuitBreakerConfig>, Rejected> {
    let mut out = None;
    for mut t in cb.thresholds {
        if t.priority != 0 {
            return reject(format!("{what}.circuit_breakers.thresholds: priority HIGH is not supported (one set of limits, DEFAULT)"));
        }
        let v =
            |x: Option<envoy_types::pb::google::protobuf::UInt32Value>| x.map_or(1024, |v| v.value);
        out = Some(CircuitBreakerConfig {
            max_connections: v(t.max_connections.take()),
            max_pending_requests: v(t.max_pending_requests.take()),
            max_requests: v(t.max_requests.take()),
        });
        ignored(
            what,
            &[(
                "circuit_breakers.thresholds.track_remaining",
                std::mem::take(&mut t.track_remaining),
            )],
        );
        no_leftovers(
            &format!("{what}.circuit_breakers.thresholds"),
            &t,
            fields::THRESHOLDS,
        )?;
    }
    if !cb.per_host_thresholds.is_empty() {
        return reject(format!(
            "{what}.circuit_breakers.per_host_thresholds is not supported"
        ));
    }
    Ok(out)
}

fn outlier(mut od: OutlierDetection, what: &str) -> Result<OutlierDetectionConfig, Rejected> {
    let mut out: OutlierDetectionConfig =
        serde_yaml::from_str("{}").map_err(|e| Rejected(e.to_string()))?;
    if let Some(n) = od.consecutive_5xx.take() {
        out.consecutive_failures = n.value;
    }
    if let Some(d) = duration(&od.base_ejection_time.take()) {
        out.base_ejection_time = d;
    }
    if let Some(p) = od.max_ejection_percent.take() {
        out.max_ejection_percent = p.value;
    }
    if let Some(d) = duration(&od.max_ejection_time.take()) {
        out.max_ejection_time = d;
    }
    // Ejection is decided per failure here, not on a sweep: the interval changes nothing.
    ignored(
        what,
        &[("outlier_detection.interval", od.interval.take().is_some())],
    );
    no_leftovers(&format!("{what}.outlier_detection"), &od, fields::OUTLIER)?;
    Ok(out)
}

fn health_check(mut h: HealthCheck, what: &str) -> Result<HealthCheckConfig, Rejected> {
    let w = format!("{what}.health_checks[0]");
    let mut out: HealthCheckConfig =
        serde_yaml::from_str("{}").map_err(|e| Rejected(e.to_string()))?;
    if let Some(d) = duration(&h.interval.take()) {
        out.interval = d;
    }
    if let Some(d) = duration(&h.timeout.take()) {
        out.timeout = d;
    }
    if let Some(d) = duration(&h.interval_jitter.take()) {
        out.jitter = Some(d);
    }
    if let Some(n) = h.unhealthy_threshold.take() {
        out.unhealthy_threshold = n.value;
    }
    if let Some(n) = h.healthy_threshold.take() {
        out.healthy_threshold = n.value;
    }
    match h.health_checker.take() {
        Some(HealthChecker::HttpHealthCheck(mut http)) => {
            let mut statuses = Vec::new();
            for r in std::mem::take(&mut http.expected_statuses) {
                // Int64Range is [start, end).
                for s in r.start.max(100)..r.end.min(600) {
                    statuses.push(s as u16);
                }
            }
            out.http = Some(HttpHealthCheckConfig {
                path: std::mem::take(&mut http.path),
                expected_statuses: if statuses.is_empty() {
                    vec![200]
                } else {
                    statuses
                },
                host: Some(std::mem::take(&mut http.host)).filter(|h| !h.is_empty()),
            });
            no_leftovers(&format!("{w}.http_health_check"), &http, &[])?;
        }
        Some(HealthChecker::TcpHealthCheck(tcp)) => {
            if tcp.send.is_some() || !tcp.receive.is_empty() {
                return reject(format!(
                    "{w}.tcp_health_check: send/receive payloads are not supported"
                ));
            }
            out.tcp = Some(TcpHealthCheckConfig {});
        }
        Some(HealthChecker::GrpcHealthCheck(g)) => {
            if !g.authority.is_empty() {
                return reject(format!("{w}.grpc_health_check.authority is not supported"));
            }
            out.grpc = Some(GrpcHealthCheckConfig {
                service: g.service_name,
            });
        }
        _ => {
            return reject(format!(
                "{w}: http_health_check, tcp_health_check or grpc_health_check is required"
            ))
        }
    }
    no_leftovers(&w, &h, fields::HEALTH_CHECK)?;
    Ok(out)
}
