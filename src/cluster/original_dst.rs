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

    /// Whether a connection with original destination `dst` may be forwarded: `Err` is the
    /// refusal's metric label (`unknown`: not captured; `not_allowed`: outside the list).
    pub fn admits(&self, dst: Option<SocketAddr>) -> Result<(), &'static str> {
        match dst {
            None => Err("unknown"),
            Some(d) if !self.allows(d) => Err(DstRefusal::NotAllowed.as_str()),
            Some(_) => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max_hosts: usize) -> OriginalDst {
        OriginalDst::new(&OriginalDstConfig {
            allow: vec!["10.0.0.0/8".parse().unwrap()],
            ports: vec![80],
            max_hosts,
        })
    }

    fn make(a: SocketAddr) -> impl FnOnce() -> Endpoint {
        move || Endpoint::standalone(a, 1)
    }

    #[test]
    fn destinations_are_allowed_listed_bounded_and_evicted_only_when_unused() {
        let t = table(2);
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let c: SocketAddr = "10.0.0.3:80".parse().unwrap();
        let forget = |_: &Endpoint| {};
        assert_eq!(
            t.endpoint("192.168.0.1:80".parse().unwrap(), make(a), forget)
                .err(),
            Some(DstRefusal::NotAllowed)
        );
        assert_eq!(
            t.endpoint("10.0.0.1:443".parse().unwrap(), make(a), forget)
                .err(),
            Some(DstRefusal::NotAllowed)
        );
        let held_a = t.endpoint(a, make(a), forget).unwrap();
        let held_b = t.endpoint(b, make(b), forget).unwrap();
        assert!(Arc::ptr_eq(
            &held_a,
            &t.endpoint(a, make(a), forget).unwrap()
        ));
        // Both in use: a third destination is refused, not added.
        assert_eq!(
            t.endpoint(c, make(c), forget).err(),
            Some(DstRefusal::TooManyHosts)
        );
        assert_eq!(t.len(), 2);
        // One let go: it makes room.
        drop(held_b);
        let held_c = t.endpoint(c, make(c), forget).unwrap();
        assert_eq!(held_c.address, c);
        assert_eq!(t.len(), 2);
        drop(held_a);
    }
}
