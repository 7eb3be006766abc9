//! Integration tests: one binary (one link of the library) with a module per feature.

mod support;

mod access_log;
mod admin;
mod admin_security;
mod architecture;
mod balancing;
mod citizen;
mod config_errors;
mod deadlines;
mod deploy;
mod discovery;
mod docs;
mod errors;
mod grpc;
mod health;
mod hygiene;
mod lifecycle;
mod limits;
mod mesh;
mod mesh_netns;
mod policies;
mod pool;
mod protocols;
mod readme;
mod reload;
mod resilience;
mod routing;
mod shutdown;
mod smuggling;
mod streaming;
mod tcp;
mod tls;
mod tunnels_and_drain;
mod xds;
