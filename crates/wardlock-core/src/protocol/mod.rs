//! Wire types: what crosses a process or machine boundary. Kept apart from the internal
//! types so the internals can change without changing the protocols; conversions live here.

pub mod collector;
pub mod local;
