//! Test support shared by Palisade's crates (a dev-dependency only; never published).
//!
//! - [`redis_cluster::get`]: a three-node Redis Cluster of real `redis-server` processes,
//!   started on free loopback ports on first use and stopped when the test process ends.
//! - [`relay::relay_to`]: a TCP relay to a real server that a test can cut (every connection
//!   closed, new ones closed at once) and heal, to exercise outages and reconnection.

pub mod redis_cluster;
pub mod relay;
