//! A management server for the tests: Envoy's ADS (State of the World) over tonic, with the
//! same protos outrigger uses. Tests set resources per type; every subscribed stream gets
//! each new version (named types filtered by the names asked for) and every ACK and NACK is
//! recorded.

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// One answer a client gave: (type, version it holds, nonce, error message if a NACK).
#[derive(Clone, Debug)]
pub struct Answer {
    pub type_url: String,
    pub version: String,
    pub nonce: String,
    pub error: Option<String>,
}

#[derive(Default)]
struct Shared {
    /// type → (version, [(name, resource)]).
    resources: HashMap<String, (String, Vec<(String, Any)>)>,
    answers: Vec<Answer>,
    streams: usize,
    /// TLS handshakes `serve_tls` refused.
    tls_refused: usize,
}

#[derive(Clone)]
pub struct ControlPlane {
    shared: Arc<Mutex<Shared>>,
    /// Cancelled by `Running::stop`: ends the streams of that server.
    streams_stop: Arc<Mutex<tokio_util::sync::CancellationToken>>,
    changed: watch::Sender<u64>,
}

pub struct Running {
    pub addr: SocketAddr,
    stop: tokio_util::sync::CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the server and closes its streams.
    pub async fn stop(self) {
        self.stop.cancel();
        // Streams end at once; the connection may linger in graceful shutdown, so cut it.
        let mut done = self.done;
        if tokio::time::timeout(std::time::Duration::from_secs(1), &mut done)
            .await
            .is_err()
        {
            done.abort();
        }
    }
}

impl ControlPlane {
    pub fn new() -> ControlPlane {
        ControlPlane {
            shared: Default::default(),
            streams_stop: Default::default(),
            changed: watch::Sender::new(0),
        }
    }

    /// Serves on `addr` (port 0 for any).
    pub async fn serve(&self, addr: SocketAddr) -> Running {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind xds");
        let addr = listener.local_addr().expect("addr");
        let stop = tokio_util::sync::CancellationToken::new();
        *self.streams_stop.lock().unwrap() = stop.clone();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let done = self.run_grpc(incoming, &stop);
        Running { addr, stop, done }
    }

    /// Serves on `addr` over TLS: `acceptor` (which may demand a client certificate) runs each
    /// handshake; connections that fail it are dropped before gRPC sees them.
    pub async fn serve_tls(
        &self,
        addr: SocketAddr,
        acceptor: tokio_rustls::TlsAcceptor,
    ) -> Running {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind xds");
        let addr = listener.local_addr().expect("addr");
        let stop = tokio_util::sync::CancellationToken::new();
        *self.streams_stop.lock().unwrap() = stop.clone();
        let (conns, incoming) = mpsc::channel::<Result<TlsIo, std::io::Error>>(16);
        let accepting = stop.clone();
        let cp = self.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => return },
                    _ = accepting.cancelled() => return,
                };
                let (acceptor, conns, cp) = (acceptor.clone(), conns.clone(), cp.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(
                        std::time::Duration::from_secs(5),
                        acceptor.accept(tcp),
                    )
                    .await
                    {
                        Ok(Ok(tls)) => drop(conns.send(Ok(TlsIo(tls))).await),
                        _ => cp.lock().tls_refused += 1,
                    }
                });
            }
        });
        let incoming = tokio_stream::wrappers::ReceiverStream::new(incoming);
        let done = self.run_grpc(incoming, &stop);
        Running { addr, stop, done }
    }

    /// Serves ADS on the connections `incoming` yields until `stop`.
    fn run_grpc<S, IO>(
        &self,
        incoming: S,
        stop: &tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()>
    where
        S: Stream<Item = Result<IO, std::io::Error>> + Send + 'static,
        IO: tonic::transport::server::Connected
            + tokio::io::AsyncRead
            + tokio::io::AsyncWrite
            + Unpin
            + Send
            + 'static,
    {
        let svc = AggregatedDiscoveryServiceServer::new(self.clone());
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, token.cancelled_owned())
                .await;
        })
    }

    /// CDS `web` (EDS), its endpoints, an HTTP listener `ingress` with RDS `main` → web: a
    /// whole config at `version`.
    pub fn push_all(&self, version: &str, endpoints: &[SocketAddr]) {
        self.set(CLUSTER, version, vec![build::eds_cluster("web")]);
        self.set(ENDPOINT, version, vec![build::assignment("web", endpoints)]);
        let ingress = "127.0.0.1:0".parse().unwrap();
        let listener = build::http_listener("ingress", ingress, "main");
        self.set(LISTENER, version, vec![listener]);
        self.set(ROUTE, version, vec![build::routes("main", &[("/", "web")])]);
    }

    /// Sets all resources of a type at a version, and pushes them.
    pub fn set<M: Message>(&self, type_url: &str, version: &str, resources: Vec<(String, M)>) {
        let any = resources
            .into_iter()
            .map(|(n, m)| {
                (
                    n,
                    Any {
                        type_url: type_url.to_owned(),
                        value: m.encode_to_vec(),
                    },
                )
            })
            .collect();
        self.lock()
            .resources
            .insert(type_url.to_owned(), (version.to_owned(), any));
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn answers(&self) -> Vec<Answer> {
        self.lock().answers.clone()
    }

    pub fn tls_refused(&self) -> usize {
        self.lock().tls_refused
    }

    pub fn streams(&self) -> usize {
        self.lock().streams
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A TLS connection handed to tonic (which needs to know what it may about the peer).
pub struct TlsIo(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsIo {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl tokio::io::AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Per stream, per type: what was asked for and what was last sent.
#[derive(Default)]
struct Sub {
    names: Vec<String>,
    sent: Option<(String, Vec<String>)>,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for ControlPlane {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let cp = self.clone();
        cp.lock().streams += 1;
        let killed = cp.streams_stop.lock().unwrap().clone();
        tokio::spawn(async move {
            let mut subs: HashMap<String, Sub> = HashMap::new();
            let mut changed = cp.changed.subscribe();
            let mut nonce = 0u64;
            loop {
                tokio::select! {
                    req = inbound.message() => {
                        let Ok(Some(req)) = req else { return };
                        if !req.response_nonce.is_empty() {
                            cp.lock().answers.push(Answer {
                                type_url: req.type_url.clone(),
                                version: req.version_info.clone(),
                                nonce: req.response_nonce.clone(),
                                error: req.error_detail.as_ref().map(|s| s.message.clone()),
                            });
                        }
                        subs.entry(req.type_url.clone()).or_default().names = req.resource_names.clone();
                    }
                    r = changed.changed() => if r.is_err() { return },
                    _ = killed.cancelled() => return,
                }
                for (type_url, sub) in subs.iter_mut() {
                    let Some((version, all)) = cp.lock().resources.get(type_url).cloned() else {
                        continue;
                    };
                    let key = (version.clone(), sub.names.clone());
                    if sub.sent.as_ref() == Some(&key) {
                        continue;
                    }
                    sub.sent = Some(key);
                    nonce += 1;
                    let resources = all
                        .into_iter()
                        .filter(|(n, _)| sub.names.is_empty() || sub.names.contains(n))
                        .map(|(_, a)| a)
                        .collect();
                    let resp = DiscoveryResponse {
                        version_info: version,
                        resources,
                        type_url: type_url.clone(),
                        nonce: nonce.to_string(),
                        ..Default::default()
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Err(Status::unimplemented("delta xDS"))
    }
}

/// Resource builders.
pub mod build {
    use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
    use envoy_types::pb::envoy::config::core::v3::{
        address, socket_address::PortSpecifier, Address, SocketAddress,
    };
    use envoy_types::pb::envoy::config::endpoint::v3::{
        lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint,
        LocalityLbEndpoints,
    };
    use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
    use envoy_types::pb::envoy::config::route::v3::{
        route::Action, route_action::ClusterSpecifier, route_match::PathSpecifier, Route,
        RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
    };
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        http_connection_manager::RouteSpecifier, HttpConnectionManager, Rds,
    };
    use envoy_types::pb::google::protobuf::{Any, Duration};
    use prost::Message;
    use std::net::SocketAddr;

    pub fn address(a: SocketAddr) -> Address {
        Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: a.ip().to_string(),
                port_specifier: Some(PortSpecifier::PortValue(a.port() as u32)),
                ..Default::default()
            })),
        }
    }

    /// An EDS cluster (service name = its name), round robin, 1 s connect timeout.
    pub fn eds_cluster(name: &str) -> (String, Cluster) {
        (
            name.to_owned(),
            Cluster {
                name: name.to_owned(),
                cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(3)),
                connect_timeout: Some(Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                ..Default::default()
            },
        )
    }

    pub fn assignment(name: &str, endpoints: &[SocketAddr]) -> (String, ClusterLoadAssignment) {
        (
            name.to_owned(),
            ClusterLoadAssignment {
                cluster_name: name.to_owned(),
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints: endpoints
                        .iter()
                        .map(|a| LbEndpoint {
                            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                                address: Some(address(*a)),
                                ..Default::default()
                            })),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        )
    }

    /// An assignment in priority levels: `levels[p]` lists priority p's endpoints, each with
    /// its EDS health status (0 UNKNOWN, 1 HEALTHY, 2 UNHEALTHY, 3 DRAINING).
    pub fn prioritized(
        name: &str,
        levels: &[&[(SocketAddr, i32)]],
    ) -> (String, ClusterLoadAssignment) {
        let (n, mut la) = assignment(name, &[]);
        la.endpoints = levels
            .iter()
            .enumerate()
            .map(|(p, eps)| LocalityLbEndpoints {
                priority: p as u32,
                lb_endpoints: eps
                    .iter()
                    .map(|(a, health)| LbEndpoint {
                        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                            address: Some(address(*a)),
                            ..Default::default()
                        })),
                        health_status: *health,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        (n, la)
    }

    /// An HTTP listener whose routes come from RDS `route`.
    pub fn http_listener(name: &str, addr: SocketAddr, route: &str) -> (String, Listener) {
        let hcm = HttpConnectionManager {
            stat_prefix: name.to_owned(),
            route_specifier: Some(RouteSpecifier::Rds(Rds {
                route_config_name: route.to_owned(),
                config_source: None,
            })),
            ..Default::default()
        };
        listener(name, addr, "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", hcm.encode_to_vec())
    }

    pub fn listener(
        name: &str,
        addr: SocketAddr,
        type_url: &str,
        value: Vec<u8>,
    ) -> (String, Listener) {
        (
            name.to_owned(),
            Listener {
                name: name.to_owned(),
                address: Some(address(addr)),
                filter_chains: vec![FilterChain {
                    filters: vec![Filter {
                        name: "envoy.filters.network.http_connection_manager".into(),
                        config_type: Some(filter::ConfigType::TypedConfig(Any {
                            type_url: type_url.to_owned(),
                            value,
                        })),
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            },
        )
    }

    /// One virtual host (`*`) with prefix routes to clusters.
    pub fn routes(name: &str, routes: &[(&str, &str)]) -> (String, RouteConfiguration) {
        (
            name.to_owned(),
            RouteConfiguration {
                name: name.to_owned(),
                virtual_hosts: vec![VirtualHost {
                    name: "all".into(),
                    domains: vec!["*".into()],
                    routes: routes.iter().map(|(p, c)| route(p, c)).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        )
    }

    pub fn route(prefix: &str, cluster: &str) -> Route {
        Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(PathSpecifier::Prefix(prefix.to_owned())),
                ..Default::default()
            }),
            action: Some(Action::Route(RouteAction {
                cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_owned())),
                ..Default::default()
            })),
            ..Default::default()
        }
    }
}
