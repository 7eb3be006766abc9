//! Connections to a cluster's endpoints: the one `connect` (timeout, circuit breaker, failure
//! counting) that HTTP, TCP and CONNECT all use, and the choice of the connection a request
//! goes out on (a shared HTTP/2 stream, an idle pooled HTTP/1.1 connection, or a new one).

use super::{Cluster, Endpoint};
use crate::circuit_breaker;
use crate::pool;

impl Cluster {
    /// Opens a new upstream connection to `endpoint`, within the circuit breaker's connection
    /// and pending-request limits.
    pub async fn connect(
        &self,
        endpoint: &Endpoint,
        protocol: pool::Protocol,
    ) -> Result<pool::Connected, pool::ConnectError> {
        let overflow = |o: circuit_breaker::Overflow| {
            self.metrics.overflow[o as usize].inc();
            pool::ConnectError::Overflow(o)
        };
        let _pending = self.breaker.pending().map_err(overflow)?;
        let slot = self.breaker.connection().map_err(overflow)?;
        let result = pool::connect(
            endpoint.address,
            self.config.connect_timeout.get(),
            &self.metrics.connections_active,
            &self.metrics.connect_failures,
            slot,
            self.tls_for(
                endpoint,
                match protocol {
                    pool::Protocol::Http1 | pool::Protocol::Upgrade => {
                        crate::tls::client::Alpn::Http1
                    }
                    _ => crate::tls::client::Alpn::Cluster,
                },
            ),
            protocol,
        )
        .await;
        if let Err(pool::ConnectError::Timeout { .. }) = &result {
            self.metrics.timeouts[2].inc();
        }
        result
    }

    /// Whether connections to the endpoints are TLS.
    pub fn originates_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The protocol new connections of this cluster speak.
    pub fn protocol(&self) -> pool::Protocol {
        match self.config.protocol {
            crate::config::UpstreamProtocol::Http1 => pool::Protocol::Http1,
            crate::config::UpstreamProtocol::Http2 => pool::Protocol::Http2,
            crate::config::UpstreamProtocol::Auto => pool::Protocol::Auto,
        }
    }

    /// The connector and server name for TLS to `endpoint`, when the cluster originates TLS.
    /// `alpn` says which protocols to offer: the cluster's own, or only HTTP/1.1 (health
    /// probes, upgrades) or only h2 (gRPC health probes).
    pub fn tls_for(
        &self,
        endpoint: &Endpoint,
        alpn: crate::tls::client::Alpn,
    ) -> Option<(
        &tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )> {
        let tls = self.tls.as_ref()?;
        let name = tls.server_name(&endpoint.host).or_else(|| {
            Some(rustls::pki_types::ServerName::IpAddress(
                endpoint.address.ip().into(),
            ))
        })?;
        Some((tls.connector(alpn), name))
    }

    /// The connection a request to `endpoint` goes out on. HTTP/2 takes a stream on the least
    /// busy shared connection (opening one when needed, one opener at a time, and failing at
    /// once when a concurrent opener just failed); HTTP/1.1 an idle pooled connection if one
    /// is live, else a new one. An upgrade (WebSocket) always gets a new HTTP/1.1 connection,
    /// which its tunnel takes over.
    pub async fn upstream(
        &self,
        endpoint: &Endpoint,
        upgrade: bool,
    ) -> Result<Upstream, pool::ConnectError> {
        // Boxed: connecting (TCP, TLS, handshake) is a large future that only a new
        // connection needs; inline, every request's future would carry (and copy) its size.
        if upgrade {
            let connected = Box::pin(self.connect(endpoint, pool::Protocol::Upgrade)).await?;
            return Ok(Upstream::New(connected));
        }
        let protocol = self.protocol();
        if protocol != pool::Protocol::Http1 {
            let (streams, conns) = (
                self.config.pool.http2_max_streams_per_connection,
                self.config.pool.http2_max_connections_per_endpoint,
            );
            if let pool::H2Pick::Stream(s) = endpoint.pool.h2_pick(streams, conns) {
                return Ok(Upstream::H2(s));
            }
            if protocol == pool::Protocol::Http2 {
                return self.open_h2(endpoint, streams, conns).await;
            }
        }
        if let Some(conn) = endpoint.pool.take() {
            return Ok(Upstream::Pooled(conn));
        }
        let connected = Box::pin(self.connect(endpoint, protocol)).await?;
        Ok(Upstream::New(connected))
    }

    async fn open_h2(
        &self,
        endpoint: &Endpoint,
        streams: usize,
        conns: usize,
    ) -> Result<Upstream, pool::ConnectError> {
        let waiting_since = std::time::Instant::now();
        let _opening = endpoint.pool.h2_connecting.lock().await;
        // Whoever held the lock before may have opened the connection this one needs ...
        if let pool::H2Pick::Stream(s) = endpoint.pool.h2_pick(streams, conns) {
            return Ok(Upstream::H2(s));
        }
        // ... or failed to, while this one waited: fail the same way at once rather than
        // queueing one connect timeout after another behind a dead endpoint.
        if endpoint.pool.h2_failed_since(waiting_since) {
            return Err(pool::ConnectError::Io {
                endpoint: endpoint.address,
                source: std::io::Error::other("a concurrent connection attempt just failed"),
            });
        }
        match Box::pin(self.connect(endpoint, pool::Protocol::Http2)).await {
            Ok(pool::Connected::H2(sender)) => Ok(Upstream::H2(endpoint.pool.h2_add(sender))),
            Ok(other) => Ok(Upstream::New(other)),
            Err(e) => {
                endpoint.pool.h2_connect_failed();
                Err(e)
            }
        }
    }
}

/// The connection `Cluster::upstream` chose.
pub enum Upstream {
    /// A stream on a shared HTTP/2 connection.
    H2(pool::H2Stream),
    /// An idle pooled HTTP/1.1 connection. It may turn out closed before the request is
    /// written; the request then comes back, and the caller asks again.
    Pooled(Box<pool::H1Conn>),
    /// A new connection, in the protocol it negotiated.
    New(pool::Connected),
}
