//! What the xDS client knows per resource type, and the resources themselves, translated.

use super::translate::{cluster, endpoint, listener::ListenerDraft, route::RouteTable};
use crate::config::{ClusterConfig, XdsResourceType};
use crate::reload::Dynamic;
use std::collections::BTreeMap;

/// The four resource types, in the order Envoy initialises them.
pub const ORDER: [XdsResourceType; 4] = [
    XdsResourceType::Clusters,
    XdsResourceType::Endpoints,
    XdsResourceType::Listeners,
    XdsResourceType::Routes,
];

/// The type URL of a resource type.
pub fn type_url(t: XdsResourceType) -> &'static str {
    match t {
        XdsResourceType::Clusters => cluster::TYPE_URL,
        XdsResourceType::Endpoints => endpoint::TYPE_URL,
        XdsResourceType::Listeners => super::translate::listener::TYPE_URL,
        XdsResourceType::Routes => super::translate::route::TYPE_URL,
    }
}

/// The resource type of a type URL.
pub fn kind_of(url: &str) -> Option<XdsResourceType> {
    ORDER.into_iter().find(|t| type_url(*t) == url)
}

/// The metric label of a resource type.
pub fn label(t: XdsResourceType) -> &'static str {
    match t {
        XdsResourceType::Clusters => "clusters",
        XdsResourceType::Endpoints => "endpoints",
        XdsResourceType::Listeners => "listeners",
        XdsResourceType::Routes => "routes",
    }
}

/// The protocol state of one type on the stream.
#[derive(Clone, Debug, Default)]
pub struct TypeState {
    /// The version last accepted (sent back on every request of the type).
    pub version: String,
    /// The nonce of the last response received on this stream.
    pub nonce: String,
    /// Named subscriptions (EDS, RDS); CDS and LDS are wildcard (empty).
    pub names: Vec<String>,
    /// A first response was handled (accepted or rejected) since start.
    pub answered: bool,
    /// Subscribed on the current stream.
    pub requested: bool,
}

/// The accepted resources, translated.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    /// CDS.
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// LDS.
    pub listeners: BTreeMap<String, ListenerDraft>,
    /// RDS.
    pub routes: BTreeMap<String, RouteTable>,
}

impl Resources {
    /// The listeners and clusters to merge into the file's config. A listener whose route
    /// configuration has not arrived is held back (it would answer 404 to everything).
    pub fn dynamic(&self) -> Dynamic {
        let listeners = self
            .listeners
            .values()
            .filter_map(|d| match &d.rds {
                None => Some(d.config.clone()),
                Some(name) => self.routes.get(name).map(|t| {
                    let mut l = d.config.clone();
                    l.routes = t.routes.clone();
                    l
                }),
            })
            .collect();
        Dynamic {
            listeners,
            clusters: self.clusters.values().cloned().collect(),
        }
    }

    /// Route configurations the listeners name.
    pub fn rds_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .listeners
            .values()
            .filter_map(|d| d.rds.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Listeners still waiting for their route configuration.
    pub fn warming_listeners(&self) -> usize {
        self.listeners
            .values()
            .filter(|d| d.rds.as_ref().is_some_and(|n| !self.routes.contains_key(n)))
            .count()
    }
}

/// EDS service names of these clusters.
pub fn eds_names<'a>(clusters: impl Iterator<Item = &'a ClusterConfig>) -> Vec<String> {
    let mut v: Vec<String> = clusters
        .filter_map(|c| c.discovery.as_ref().and_then(|d| d.eds.clone()))
        .collect();
    v.sort();
    v.dedup();
    v
}
