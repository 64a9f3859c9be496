//! The central collector: workstations enroll, push their audit logs and pull signed
//! policies; compliance queries what arrived. A thin HTTP shell (`api`) over a storage
//! trait (`store`); every audit rule (the hash chain) comes from `wardlock-core`.

pub mod api;
pub mod connections;
pub mod console;
pub mod fhir;
pub mod secret;
pub mod store;
pub mod syslog;
pub mod tls;
