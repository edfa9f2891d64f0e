//! ironroot-dhcp integration tests, one binary: RFC conformance modules
//! named by section, pool properties, malformed input, the async driver and
//! real DHCP clients in network namespaces.

#[path = "dhcp/support.rs"]
mod support;

#[path = "dhcp/driver_coalescing.rs"]
mod driver_coalescing;
#[path = "dhcp/group_commit.rs"]
mod group_commit;
#[path = "dhcp/lease_log.rs"]
mod lease_log;
#[path = "dhcp/malformed.rs"]
mod malformed;
#[path = "dhcp/peers.rs"]
mod peers;
#[path = "dhcp/pool_properties.rs"]
mod pool_properties;
#[path = "dhcp/rfc2131_4_1_destinations.rs"]
mod rfc2131_4_1_destinations;
#[path = "dhcp/rfc2131_4_3_1_discover.rs"]
mod rfc2131_4_3_1_discover;
#[path = "dhcp/rfc2131_4_3_2_request.rs"]
mod rfc2131_4_3_2_request;
#[path = "dhcp/rfc2131_4_3_3_decline.rs"]
mod rfc2131_4_3_3_decline;
#[path = "dhcp/rfc2131_4_3_4_release.rs"]
mod rfc2131_4_3_4_release;
#[path = "dhcp/rfc2131_4_3_5_inform.rs"]
mod rfc2131_4_3_5_inform;
#[path = "dhcp/rfc3046_relay_agent.rs"]
mod rfc3046_relay_agent;
#[path = "dhcp/rfc4578_pxe.rs"]
mod rfc4578_pxe;
#[path = "dhcp/sim_failover.rs"]
mod sim_failover;
