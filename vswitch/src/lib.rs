//! vfabric's switch: the pure core (`core`), the topology model (`topology`) and the data
//! plane that joins vhost-user ports to the core (`dataplane`).

pub mod control;
pub mod core;
pub mod dataplane;
pub mod hostport;
pub mod metrics;
pub mod natport;
pub mod privs;
pub mod tap;
pub mod topology;
pub mod vxlan;
