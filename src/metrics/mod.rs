//! Every Prometheus collector outrigger exports, in its own `Registry` (no global state, so
//! tests can run many proxies in one process). Names are constants here; labelled children for
//! listeners, routes and clusters are resolved once when a snapshot is built and kept on the
//! runtime objects, never looked up per request.

mod endpoint;
mod error_kind;
pub mod grpc;
pub mod mesh;

pub use endpoint::EndpointMetrics;
pub use error_kind::ErrorKind;
pub use grpc::GrpcCount;
pub use mesh::MeshMetrics;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// `outrigger_downstream_requests_total`: Requests answered to downstream clients, by listener, cluster and status class.
pub const DOWNSTREAM_REQUESTS_TOTAL: &str = "outrigger_downstream_requests_total";
/// `outrigger_request_duration_seconds`: Time from request received to response headers sent downstream.
pub const REQUEST_DURATION_SECONDS: &str = "outrigger_request_duration_seconds";
/// `outrigger_upstream_request_duration_seconds`: Time from request sent upstream to upstream response headers received.
pub const UPSTREAM_REQUEST_DURATION_SECONDS: &str = "outrigger_upstream_request_duration_seconds";
/// `outrigger_downstream_connections_active`: Open downstream connections.
pub const DOWNSTREAM_CONNECTIONS_ACTIVE: &str = "outrigger_downstream_connections_active";
/// `outrigger_downstream_connections_total`: Downstream connections accepted.
pub const DOWNSTREAM_CONNECTIONS_TOTAL: &str = "outrigger_downstream_connections_total";
/// `outrigger_downstream_connections_parked`: Idle HTTP/1.1 connections parked without buffers (limits.park_idle_after).
pub const DOWNSTREAM_CONNECTIONS_PARKED: &str = "outrigger_downstream_connections_parked";
/// `outrigger_upstream_endpoint_healthy`: 1 if the endpoint receives traffic, 0 if it is marked unhealthy.
pub const UPSTREAM_ENDPOINT_HEALTHY: &str = "outrigger_upstream_endpoint_healthy";
/// `outrigger_upstream_connections_active`: Open upstream connections (in use or pooled).
pub const UPSTREAM_CONNECTIONS_ACTIVE: &str = "outrigger_upstream_connections_active";
/// `outrigger_upstream_connect_failures_total`: Upstream connection attempts that failed or timed out.
pub const UPSTREAM_CONNECT_FAILURES_TOTAL: &str = "outrigger_upstream_connect_failures_total";
/// `outrigger_upstream_requests_total`: Responses received from each upstream endpoint, by status class.
pub const UPSTREAM_REQUESTS_TOTAL: &str = "outrigger_upstream_requests_total";
/// `outrigger_upstream_endpoint_ewma_seconds`: Peak-EWMA latency of the endpoint's responses (what least_latency balances on).
pub const UPSTREAM_ENDPOINT_EWMA_SECONDS: &str = "outrigger_upstream_endpoint_ewma_seconds";
/// `outrigger_upstream_endpoint_inflight`: Requests in flight to the endpoint (what least_request balances on).
pub const UPSTREAM_ENDPOINT_INFLIGHT: &str = "outrigger_upstream_endpoint_inflight";
/// `outrigger_upstream_endpoint_effective_weight`: Weight the balancer uses now: configured weight times the slow-start ramp; 0 out of rotation.
pub const UPSTREAM_ENDPOINT_EFFECTIVE_WEIGHT: &str = "outrigger_upstream_endpoint_effective_weight";
/// `outrigger_health_check_total`: Active health check probes, by result.
pub const HEALTH_CHECK_TOTAL: &str = "outrigger_health_check_total";
/// `outrigger_outlier_ejections_total`: Endpoints ejected by outlier detection.
pub const OUTLIER_EJECTIONS_TOTAL: &str = "outrigger_outlier_ejections_total";
/// `outrigger_upstream_cluster_panic`: 1 while too few endpoints are healthy and the cluster balances over all of them.
pub const CLUSTER_PANIC: &str = "outrigger_upstream_cluster_panic";
/// `outrigger_timeouts_total`: Timeouts by kind: route (whole request), per_try, connect.
pub const TIMEOUTS_TOTAL: &str = "outrigger_timeouts_total";
/// `outrigger_downstream_timeouts_total`: Client connections and requests ended by a listener timeout: idle, header_read, stream_idle.
pub const DOWNSTREAM_TIMEOUTS_TOTAL: &str = "outrigger_downstream_timeouts_total";
/// `outrigger_tcp_connections_total`: TCP connections routed to a cluster.
pub const TCP_CONNECTIONS_TOTAL: &str = "outrigger_tcp_connections_total";
/// `outrigger_tcp_bytes_total`: Bytes carried by TCP listeners, by direction (to_upstream, to_downstream), counted while a connection is open (every 2 s) and when it ends.
pub const TCP_BYTES_TOTAL: &str = "outrigger_tcp_bytes_total";
/// `outrigger_tcp_connection_duration_seconds`: Lifetime of proxied TCP connections.
pub const TCP_CONNECTION_DURATION_SECONDS: &str = "outrigger_tcp_connection_duration_seconds";
/// `outrigger_tls_handshakes_total`: TLS handshakes on listeners, by result (failure includes timeouts and rejected client certificates).
pub const TLS_HANDSHAKES_TOTAL: &str = "outrigger_tls_handshakes_total";
/// `outrigger_tls_handshake_duration_seconds`: Time to complete a TLS handshake on a listener.
pub const TLS_HANDSHAKE_DURATION_SECONDS: &str = "outrigger_tls_handshake_duration_seconds";
/// `outrigger_tls_certificate_expiry_timestamp_seconds`: Unix time the listener's certificate expires (alert well before it).
pub const TLS_CERTIFICATE_EXPIRY: &str = "outrigger_tls_certificate_expiry_timestamp_seconds";
/// `outrigger_tls_certificate_reload_total`: Certificate rotations picked up from disk, by result.
pub const TLS_CERTIFICATE_RELOAD_TOTAL: &str = "outrigger_tls_certificate_reload_total";
/// `outrigger_access_log_dropped_total`: Access log lines dropped because the writer fell behind (the request path never waits for it).
pub const ACCESS_LOG_DROPPED_TOTAL: &str = "outrigger_access_log_dropped_total";
/// `outrigger_upstream_retries_total`: Retries sent (beyond first tries).
pub const RETRIES_TOTAL: &str = "outrigger_upstream_retries_total";
/// `outrigger_circuit_breaker_overflow_total`: Requests refused by a circuit breaker, by limit: connections, pending, requests.
pub const CIRCUIT_BREAKER_OVERFLOW_TOTAL: &str = "outrigger_circuit_breaker_overflow_total";
/// `outrigger_circuit_breaker_open`: 1 while some circuit breaker limit of the cluster is reached.
pub const CIRCUIT_BREAKER_OPEN: &str = "outrigger_circuit_breaker_open";
/// `outrigger_load_shed_total`: Connections and requests refused at once because a listener or process limit was reached.
pub const LOAD_SHED_TOTAL: &str = "outrigger_load_shed_total";
/// `outrigger_proxy_errors_total`: Responses generated by the proxy itself, by cause (the x-outrigger-error value).
pub const PROXY_ERRORS_TOTAL: &str = "outrigger_proxy_errors_total";
/// `outrigger_config_reload_total`: Configuration loads, by result (success or failure).
pub const CONFIG_RELOAD_TOTAL: &str = "outrigger_config_reload_total";
/// `outrigger_build_info`: Always 1; the labels name the running build (as `outrigger --version` prints it).
pub const BUILD_INFO: &str = "outrigger_build_info";
/// `outrigger_config_last_reload_success_timestamp_seconds`: Unix time of the last configuration load that was applied.
pub const CONFIG_LAST_RELOAD_SUCCESS: &str =
    "outrigger_config_last_reload_success_timestamp_seconds";
/// `outrigger_config_generation`: Generation of the running configuration: 1 at start, +1 per applied reload.
pub const CONFIG_GENERATION: &str = "outrigger_config_generation";
/// `outrigger_discovery_updates_total`: Discovery rounds by cluster, source (dns, dns_srv, file) and result: changed, unchanged, failure (the last good set stays), empty_ignored (an empty answer not yet confirmed).
pub const DISCOVERY_UPDATES_TOTAL: &str = "outrigger_discovery_updates_total";
/// `outrigger_cluster_endpoints`: Endpoints of each cluster by state: healthy (routable), unhealthy (failing active checks), ejected (outlier detection).
pub const CLUSTER_ENDPOINTS: &str = "outrigger_cluster_endpoints";
/// `outrigger_grpc_responses_total`: gRPC responses by cluster and grpc-status (0-16; proxy-made errors included; unknown when a response ended without one).
pub const GRPC_RESPONSES_TOTAL: &str = "outrigger_grpc_responses_total";
/// `outrigger_admin_denied_total`: Admin requests refused with 403, by reason: peer (not in admin.allow), host (a Host that is not the admin server's), header (a state-changing POST without a JSON body or X-Outrigger-Admin).
pub const ADMIN_DENIED_TOTAL: &str = "outrigger_admin_denied_total";

/// `outrigger_xds_connected`: 1 while the ADS stream to the xDS server is up.
pub const XDS_CONNECTED: &str = "outrigger_xds_connected";
/// `outrigger_xds_updates_total`: xDS responses by type (clusters, endpoints, listeners, routes) and result: accepted (ACK), rejected (NACK).
pub const XDS_UPDATES_TOTAL: &str = "outrigger_xds_updates_total";
/// `outrigger_xds_version`: 1 for the version_info last accepted per type (the version is a label).
pub const XDS_VERSION: &str = "outrigger_xds_version";

/// Latency buckets from 0.5 ms to 30 s: a sidecar's added latency is sub-millisecond, while
/// upstream calls range to the default 15 s route timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The label value used where a request reached no cluster (404 with no route).
pub const NO_CLUSTER: &str = "none";

/// Every collector, in a registry of its own.
pub struct Metrics {
    registry: Registry,
    /// `outrigger_downstream_requests_total`: Requests answered to downstream clients, by listener, cluster and status class.
    pub downstream_requests: IntCounterVec,
    /// `outrigger_request_duration_seconds`: Time from request received to response headers sent downstream.
    pub request_duration: HistogramVec,
    /// `outrigger_upstream_request_duration_seconds`: Time from request sent upstream to upstream response headers received.
    pub upstream_request_duration: HistogramVec,
    /// `outrigger_downstream_connections_active`: Open downstream connections.
    pub downstream_connections_active: IntGaugeVec,
    /// `outrigger_downstream_connections_total`: Downstream connections accepted.
    pub downstream_connections: IntCounterVec,
    /// `outrigger_downstream_connections_parked`: Idle HTTP/1.1 connections parked without buffers (limits.park_idle_after).
    pub downstream_connections_parked: IntGaugeVec,
    /// `outrigger_upstream_endpoint_healthy`: 1 if the endpoint receives traffic, 0 if it is marked unhealthy.
    pub upstream_endpoint_healthy: IntGaugeVec,
    /// `outrigger_upstream_connections_active`: Open upstream connections (in use or pooled).
    pub upstream_connections_active: IntGaugeVec,
    /// `outrigger_upstream_connect_failures_total`: Upstream connection attempts that failed or timed out.
    pub upstream_connect_failures: IntCounterVec,
    /// `outrigger_proxy_errors_total`: Responses generated by the proxy itself, by cause (the x-outrigger-error value).
    pub proxy_errors: IntCounterVec,
    /// `outrigger_upstream_requests_total`: Responses received from each upstream endpoint, by status class.
    pub upstream_requests: IntCounterVec,
    /// `outrigger_upstream_endpoint_ewma_seconds`: Peak-EWMA latency of the endpoint's responses (what least_latency balances on).
    pub endpoint_ewma: GaugeVec,
    /// `outrigger_upstream_endpoint_inflight`: Requests in flight to the endpoint (what least_request balances on).
    pub endpoint_in_flight: IntGaugeVec,
    /// `outrigger_upstream_endpoint_effective_weight`: Weight the balancer uses now: configured weight times the slow-start ramp; 0 out of rotation.
    pub endpoint_effective_weight: GaugeVec,
    /// `outrigger_health_check_total`: Active health check probes, by result.
    pub health_checks: IntCounterVec,
    /// `outrigger_outlier_ejections_total`: Endpoints ejected by outlier detection.
    pub outlier_ejections: IntCounterVec,
    /// `outrigger_upstream_cluster_panic`: 1 while too few endpoints are healthy and the cluster balances over all of them.
    pub cluster_panic: IntGaugeVec,
    /// `outrigger_timeouts_total`: Timeouts by kind: route (whole request), per_try, connect.
    pub timeouts: IntCounterVec,
    /// `outrigger_downstream_timeouts_total`: Client connections and requests ended by a listener timeout: idle, header_read, stream_idle.
    pub downstream_timeouts: IntCounterVec,
    /// `outrigger_access_log_dropped_total`: Access log lines dropped because the writer fell behind (the request path never waits for it).
    pub access_log_dropped: IntCounterVec,
    /// `outrigger_tls_handshakes_total`: TLS handshakes on listeners, by result (failure includes timeouts and rejected client certificates).
    pub tls_handshakes: IntCounterVec,
    /// `outrigger_tls_handshake_duration_seconds`: Time to complete a TLS handshake on a listener.
    pub tls_handshake_duration: HistogramVec,
    /// `outrigger_tls_certificate_expiry_timestamp_seconds`: Unix time the listener's certificate expires (alert well before it).
    pub tls_expiry: GaugeVec,
    /// `outrigger_tls_certificate_reload_total`: Certificate rotations picked up from disk, by result.
    pub tls_reloads: IntCounterVec,
    /// `outrigger_tcp_connections_total`: TCP connections routed to a cluster.
    pub tcp_connections: IntCounterVec,
    /// `outrigger_tcp_bytes_total`: Bytes carried by TCP listeners, by direction (to_upstream, to_downstream), counted while a connection is open (every 2 s) and when it ends.
    pub tcp_bytes: IntCounterVec,
    /// `outrigger_tcp_connection_duration_seconds`: how long TCP connections lasted.
    pub tcp_duration: HistogramVec,
    /// `outrigger_upstream_retries_total`: Retries sent (beyond first tries).
    pub retries: IntCounterVec,
    /// `outrigger_circuit_breaker_overflow_total`: Requests refused by a circuit breaker, by limit: connections, pending, requests.
    pub breaker_overflow: IntCounterVec,
    /// Authorization, original destinations and protocol detection.
    pub mesh: MeshMetrics,
    /// `outrigger_circuit_breaker_open`: 1 while some circuit breaker limit of the cluster is reached.
    pub breaker_open: IntGaugeVec,
    /// `outrigger_load_shed_total`: Connections and requests refused at once because a listener or process limit was reached.
    pub load_shed: IntCounterVec,
    /// `outrigger_config_reload_total`: Configuration loads, by result (success or failure).
    pub config_reload: IntCounterVec,
    /// `outrigger_config_last_reload_success_timestamp_seconds`: when a config was last applied.
    pub config_last_success: prometheus::Gauge,
    /// `outrigger_config_generation`: 1 for the first config, +1 per applied reload.
    pub config_generation: IntGauge,
    /// `outrigger_build_info`: always 1, labelled with the build.
    pub build_info: IntGauge,
    /// `outrigger_discovery_updates_total`: Discovery rounds by cluster, source (dns, dns_srv, file) and result: changed, unchanged, failure (the last good set stays), empty_ignored (an empty answer not yet confirmed).
    pub discovery_updates: IntCounterVec,
    /// `outrigger_cluster_endpoints`: Endpoints of each cluster by state: healthy (routable), unhealthy (failing active checks), ejected (outlier detection).
    pub cluster_endpoints: IntGaugeVec,
    /// `outrigger_grpc_responses_total`: gRPC responses by cluster and grpc-status (0-16; proxy-made errors included; unknown when a response ended without one).
    pub grpc_responses: IntCounterVec,
    /// `outrigger_admin_denied_total`: Admin requests refused with 403, by reason: peer (not in admin.allow), host (a Host that is not the admin server's), header (a state-changing POST without a JSON body or X-Outrigger-Admin).
    pub admin_denied: IntCounterVec,
    /// `outrigger_xds_connected`: 1 while the ADS stream to the xDS server is up.
    pub xds_connected: IntGauge,
    /// `outrigger_xds_updates_total`: xDS responses by type and result (accepted, rejected).
    pub xds_updates: IntCounterVec,
    /// `outrigger_xds_version`: 1 for the version last accepted per type.
    pub xds_version: IntGaugeVec,
}

/// The per-endpoint metric families, kept by a cluster so endpoints that discovery adds later
/// get their children and removed ones lose them.
#[derive(Clone)]
pub struct EndpointFamilies {
    healthy: IntGaugeVec,
    requests: IntCounterVec,
    ewma: GaugeVec,
    in_flight: IntGaugeVec,
    effective_weight: GaugeVec,
}

impl EndpointFamilies {
    /// The series of one endpoint.
    pub fn children(&self, cluster: &str, endpoint: &str) -> EndpointMetrics {
        let labels = [cluster, endpoint];
        EndpointMetrics {
            healthy: self.healthy.with_label_values(&labels),
            requests_by_class: CODE_CLASSES
                .map(|c| self.requests.with_label_values(&[cluster, endpoint, c])),
            ewma_seconds: self.ewma.with_label_values(&labels),
            in_flight: self.in_flight.with_label_values(&labels),
            effective_weight: self.effective_weight.with_label_values(&labels),
        }
    }

    /// Drops the series of an endpoint that is gone, so dashboards do not show a stale health
    /// value for it.
    pub fn forget(&self, cluster: &str, endpoint: &str) {
        let labels = [cluster, endpoint];
        // Removing a series that was never created is not an error worth reporting.
        let _ = self.healthy.remove_label_values(&labels);
        let _ = self.ewma.remove_label_values(&labels);
        let _ = self.in_flight.remove_label_values(&labels);
        let _ = self.effective_weight.remove_label_values(&labels);
        for class in CODE_CLASSES {
            let _ = self
                .requests
                .remove_label_values(&[cluster, endpoint, class]);
        }
    }
}

/// Status code classes are a fixed set of five, which keeps label cardinality bounded.
pub const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index in `CODE_CLASSES` of a status code.
pub fn code_class_index(status: u16) -> usize {
    (status / 100).clamp(1, 5) as usize - 1
}

impl Metrics {
    /// Every family, per-endpoint series included.
    pub fn new() -> Metrics {
        Metrics::with_per_endpoint(true)
    }

    /// `per_endpoint: false` (`metrics.per_endpoint` in the config) leaves the series labelled
    /// by endpoint out of the exposition, as large fleets run Envoy: endpoints still keep
    /// their values (balancers read them), they are just not exported.
    pub fn with_per_endpoint(per_endpoint: bool) -> Metrics {
        let m = Metrics::build();
        if !per_endpoint {
            let families: [Box<dyn prometheus::core::Collector>; 5] = [
                Box::new(m.upstream_endpoint_healthy.clone()),
                Box::new(m.upstream_requests.clone()),
                Box::new(m.endpoint_ewma.clone()),
                Box::new(m.endpoint_in_flight.clone()),
                Box::new(m.endpoint_effective_weight.clone()),
            ];
            for f in families {
                // Each was registered by `build`, so this cannot fail.
                let _ = m.registry.unregister(f);
            }
        }
        m
    }

    fn build() -> Metrics {
        let registry = Registry::new();
        // CPU seconds, resident memory, open and maximum fds, start time: `process_*`, the
        // names every Prometheus client library exports.
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process metrics register once");
        fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            // Registration only fails on a duplicate name, which the constants above rule out.
            r.register(Box::new(c.clone()))
                .expect("metric names are unique constants");
            c
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition"),
            )
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition"),
            )
        };
        let fgauge = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                GaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition"),
            )
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                    labels,
                )
                .expect("valid metric definition"),
            )
        };
        let build_info = gauge(
            BUILD_INFO,
            "Always 1; the labels name the running build (as `outrigger --version` prints it).",
            &["version", "commit", "flavour", "linkage"],
        )
        .with_label_values(&[
            crate::build_info::VERSION,
            crate::build_info::COMMIT,
            crate::build_info::FLAVOUR,
            crate::build_info::LINKAGE,
        ]);
        build_info.set(1);
        Metrics {
            mesh: MeshMetrics::register(&registry),
            downstream_requests: counter(
                DOWNSTREAM_REQUESTS_TOTAL,
                "Requests answered to downstream clients, by listener, cluster and status class.",
                &["listener", "cluster", "code_class"],
            ),
            request_duration: histogram(
                REQUEST_DURATION_SECONDS,
                "Time from request received to response headers sent downstream.",
                &["cluster"],
            ),
            upstream_request_duration: histogram(
                UPSTREAM_REQUEST_DURATION_SECONDS,
                "Time from request sent upstream to upstream response headers received.",
                &["cluster"],
            ),
            downstream_connections_active: gauge(
                DOWNSTREAM_CONNECTIONS_ACTIVE,
                "Open downstream connections.",
                &["listener"],
            ),
            downstream_connections_parked: gauge(
                DOWNSTREAM_CONNECTIONS_PARKED,
                "Idle HTTP/1.1 connections parked without buffers (limits.park_idle_after).",
                &["listener"],
            ),
            downstream_connections: counter(
                DOWNSTREAM_CONNECTIONS_TOTAL,
                "Downstream connections accepted.",
                &["listener"],
            ),
            upstream_endpoint_healthy: gauge(
                UPSTREAM_ENDPOINT_HEALTHY,
                "1 if the endpoint receives traffic, 0 if it is marked unhealthy.",
                &["cluster", "endpoint"],
            ),
            upstream_connections_active: gauge(
                UPSTREAM_CONNECTIONS_ACTIVE,
                "Open upstream connections (in use or pooled).",
                &["cluster"],
            ),
            upstream_connect_failures: counter(
                UPSTREAM_CONNECT_FAILURES_TOTAL,
                "Upstream connection attempts that failed or timed out.",
                &["cluster"],
            ),
            proxy_errors: counter(
                PROXY_ERRORS_TOTAL,
                "Responses generated by the proxy itself, by cause (the x-outrigger-error value).",
                &["listener", "error"],
            ),
            upstream_requests: counter(
                UPSTREAM_REQUESTS_TOTAL,
                "Responses received from each upstream endpoint, by status class.",
                &["cluster", "endpoint", "code_class"],
            ),
            endpoint_ewma: fgauge(
                UPSTREAM_ENDPOINT_EWMA_SECONDS,
                "Peak-EWMA latency of the endpoint's responses (what least_latency balances on).",
                &["cluster", "endpoint"],
            ),
            endpoint_in_flight: gauge(
                UPSTREAM_ENDPOINT_INFLIGHT,
                "Requests in flight to the endpoint (what least_request balances on).",
                &["cluster", "endpoint"],
            ),
            endpoint_effective_weight: fgauge(
                UPSTREAM_ENDPOINT_EFFECTIVE_WEIGHT,
                "Weight the balancer uses now: configured weight times the slow-start ramp; 0 out of rotation.",
                &["cluster", "endpoint"],
            ),
            health_checks: counter(
                HEALTH_CHECK_TOTAL,
                "Active health check probes, by result.",
                &["cluster", "result"],
            ),
            outlier_ejections: counter(
                OUTLIER_EJECTIONS_TOTAL,
                "Endpoints ejected by outlier detection.",
                &["cluster"],
            ),
            cluster_panic: gauge(
                CLUSTER_PANIC,
                "1 while too few endpoints are healthy and the cluster balances over all of them.",
                &["cluster"],
            ),
            timeouts: counter(
                TIMEOUTS_TOTAL,
                "Timeouts by kind: route (whole request), per_try, connect.",
                &["cluster", "kind"],
            ),
            downstream_timeouts: counter(
                DOWNSTREAM_TIMEOUTS_TOTAL,
                "Client connections and requests ended by a listener timeout: idle, header_read, stream_idle.",
                &["listener", "kind"],
            ),
            access_log_dropped: counter(
                ACCESS_LOG_DROPPED_TOTAL,
                "Access log lines dropped because the writer fell behind (the request path never waits for it).",
                &["listener"],
            ),
            tls_handshakes: counter(
                TLS_HANDSHAKES_TOTAL,
                "TLS handshakes on listeners, by result (failure includes timeouts and rejected client certificates).",
                &["listener", "result"],
            ),
            tls_handshake_duration: histogram(
                TLS_HANDSHAKE_DURATION_SECONDS,
                "Time to complete a TLS handshake on a listener.",
                &["listener"],
            ),
            tls_expiry: fgauge(
                TLS_CERTIFICATE_EXPIRY,
                "Unix time the listener's certificate expires (alert well before it).",
                &["listener", "server_name"],
            ),
            tls_reloads: counter(
                TLS_CERTIFICATE_RELOAD_TOTAL,
                "Certificate rotations picked up from disk, by result.",
                &["listener", "result"],
            ),
            tcp_connections: counter(
                TCP_CONNECTIONS_TOTAL,
                "TCP connections routed to a cluster.",
                &["listener", "cluster"],
            ),
            tcp_bytes: counter(
                TCP_BYTES_TOTAL,
                "Bytes carried by TCP listeners, by direction (to_upstream, to_downstream), counted while a connection is open (every 2 s) and when it ends.",
                &["listener", "direction"],
            ),
            tcp_duration: reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(TCP_CONNECTION_DURATION_SECONDS, "Lifetime of proxied TCP connections.")
                        .buckets(vec![0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0]),
                    &["listener"],
                )
                .expect("valid metric definition"),
            ),
            retries: counter(RETRIES_TOTAL, "Retries sent (beyond first tries).", &["cluster"]),
            breaker_overflow: counter(
                CIRCUIT_BREAKER_OVERFLOW_TOTAL,
                "Requests refused by a circuit breaker, by limit: connections, pending, requests.",
                &["cluster", "kind"],
            ),
            breaker_open: gauge(
                CIRCUIT_BREAKER_OPEN,
                "1 while some circuit breaker limit of the cluster is reached.",
                &["cluster"],
            ),
            xds_connected: reg(
                &registry,
                IntGauge::new(XDS_CONNECTED, "1 while the ADS stream to the xDS server is up.")
                    .expect("valid metric definition"),
            ),
            xds_updates: counter(
                XDS_UPDATES_TOTAL,
                "xDS responses by type (clusters, endpoints, listeners, routes) and result: accepted (ACK), rejected (NACK).",
                &["type", "result"],
            ),
            xds_version: gauge(
                XDS_VERSION,
                "1 for the version_info last accepted per type (the version is a label).",
                &["type", "version"],
            ),
            admin_denied: counter(
                ADMIN_DENIED_TOTAL,
                "Admin requests refused with 403, by reason: peer (not in admin.allow), host (a Host that is not the admin server's), header (a state-changing POST without a JSON body or X-Outrigger-Admin).",
                &["reason"],
            ),
            load_shed: counter(
                LOAD_SHED_TOTAL,
                "Connections and requests refused at once because a listener or process limit was reached.",
                &["listener", "reason"],
            ),
            config_reload: counter(
                CONFIG_RELOAD_TOTAL,
                "Configuration loads, by result (success or failure).",
                &["result"],
            ),
            config_last_success: reg(
                &registry,
                prometheus::Gauge::new(
                    CONFIG_LAST_RELOAD_SUCCESS,
                    "Unix time of the last configuration load that was applied.",
                )
                .expect("valid metric definition"),
            ),
            config_generation: reg(
                &registry,
                IntGauge::new(
                    CONFIG_GENERATION,
                    "Generation of the running configuration: 1 at start, +1 per applied reload.",
                )
                .expect("valid metric definition"),
            ),
            build_info,
            discovery_updates: counter(
                DISCOVERY_UPDATES_TOTAL,
                "Discovery rounds by cluster, source (dns, dns_srv, file) and result: changed, unchanged, failure (the last good set stays), empty_ignored (an empty answer not yet confirmed).",
                &["cluster", "source", "result"],
            ),
            cluster_endpoints: gauge(
                CLUSTER_ENDPOINTS,
                "Endpoints of each cluster by state: healthy (routable), unhealthy (failing active checks), ejected (outlier detection).",
                &["cluster", "state"],
            ),
            grpc_responses: counter(
                GRPC_RESPONSES_TOTAL,
                "gRPC responses by cluster and grpc-status (0-16; proxy-made errors included; unknown when a response ended without one).",
                &["cluster", "grpc_status"],
            ),
            registry,
        }
    }

    /// The per-endpoint families (their children are made per endpoint).
    pub fn endpoint_families(&self) -> EndpointFamilies {
        EndpointFamilies {
            healthy: self.upstream_endpoint_healthy.clone(),
            requests: self.upstream_requests.clone(),
            ewma: self.endpoint_ewma.clone(),
            in_flight: self.endpoint_in_flight.clone(),
            effective_weight: self.endpoint_effective_weight.clone(),
        }
    }

    /// Drops the series of an endpoint that is no longer configured.
    pub fn forget_endpoint(&self, cluster: &str, endpoint: &str) {
        self.endpoint_families().forget(cluster, endpoint);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
