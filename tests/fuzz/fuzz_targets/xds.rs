//! xDS resources from the network: any bytes, decoded as each resource type the client
//! translates, never panic the translation (a bad resource is a NACK, not a crash).
#![no_main]
use libfuzzer_sys::fuzz_target;
use outrigger::xds::translate::{cluster, endpoint, listener, route};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    use envoy_types::pb::envoy::config as pb;
    match kind % 4 {
        0 => {
            if let Ok(c) = pb::cluster::v3::Cluster::decode(bytes) {
                let _ = cluster::translate(c);
            }
        }
        1 => {
            if let Ok(la) = pb::endpoint::v3::ClusterLoadAssignment::decode(bytes) {
                let _ = endpoint::targets(la, "fuzz");
            }
        }
        2 => {
            if let Ok(l) = pb::listener::v3::Listener::decode(bytes) {
                let _ = listener::translate(l);
            }
        }
        _ => {
            if let Ok(r) = pb::route::v3::RouteConfiguration::decode(bytes) {
                let _ = route::translate(r);
            }
        }
    }
});
