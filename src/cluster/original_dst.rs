//! An `original_dst` cluster: its endpoints are the destinations captured connections were
//! going to, made on first use and kept (with their pools and metric series) up to
//! `max_hosts`. Past that, one no request holds is evicted; when every one is in use, the
//! new destination is refused rather than growing without bound.

use crate::config::{Cidr, OriginalDstConfig};
use crate::endpoint::Endpoint;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Why a destination is not served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DstRefusal {
    /// Outside the allowed networks or ports.
    NotAllowed,
    /// `max_hosts` destinations are all in use.
    TooManyHosts,
}

impl DstRefusal {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DstRefusal::NotAllowed => "not_allowed",
            DstRefusal::TooManyHosts => "too_many_hosts",
        }
    }
}

/// The allow-list and the destinations in use.
pub struct OriginalDst {
    allow: Vec<Cidr>,
    ports: Vec<u16>,
    max_hosts: usize,
    hosts: Mutex<HashMap<SocketAddr, Arc<Endpoint>>>,
}

impl OriginalDst {
    pub(super) fn new(cfg: &OriginalDstConfig) -> OriginalDst {
        OriginalDst {
            allow: cfg.allow.clone(),
            ports: cfg.ports.clone(),
            max_hosts: cfg.max_hosts,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `dst` is inside the allow-list.
    pub fn allows(&self, dst: SocketAddr) -> bool {
        crate::config::units::any_contains(&self.allow, dst.ip())
            && (self.ports.is_empty() || self.ports.contains(&dst.port()))
    }

    /// The endpoint for `dst`, made by `make` on first use.
    pub(super) fn endpoint(
        &self,
        dst: SocketAddr,
        make: impl FnOnce() -> Endpoint,
        forget: impl Fn(&Endpoint),
    ) -> Result<Arc<Endpoint>, DstRefusal> {
        if !self.allows(dst) {
            return Err(DstRefusal::NotAllowed);
        }
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = hosts.get(&dst) {
            return Ok(e.clone());
        }
        if hosts.len() >= self.max_hosts {
            // Unused: only this table holds it and nothing is in flight on it.
            let idle = hosts
                .iter()
                .find(|(_, e)| Arc::strong_count(e) == 1 && e.in_flight() == 0)
                .map(|(a, _)| *a);
            let Some(old) = idle.and_then(|a| hosts.remove(&a)) else {
                return Err(DstRefusal::TooManyHosts);
            };
            old.pool.close();
            forget(&old);
        }
        let e = Arc::new(make());
        hosts.insert(dst, e.clone());
        Ok(e)
    }

    /// Destinations held now.
    pub fn len(&self) -> usize {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no destination is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes every destination's idle connections (the cluster is retired).
    pub(super) fn close(&self) {
        for e in self
            .hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            e.pool.close();
        }
    }
}
