//! An endpoint as discovery reports it, before it becomes an `Endpoint`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// One discovered endpoint.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub address: SocketAddr,
    pub weight: u32,
    /// The name it was found under: TLS server name and health-check Host.
    pub host: String,
    pub zone: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// Priority level: 0 takes traffic first (EDS `priority`).
    pub priority: u32,
    /// The control plane holds it out of rotation (EDS UNHEALTHY, DRAINING, TIMEOUT): no new
    /// requests, but it still counts in its priority level's size.
    pub held_out: bool,
}

impl Target {
    pub fn new(address: SocketAddr, weight: u32, host: String) -> Target {
        Target {
            address,
            weight,
            host,
            zone: None,
            metadata: BTreeMap::new(),
            priority: 0,
            held_out: false,
        }
    }
}
