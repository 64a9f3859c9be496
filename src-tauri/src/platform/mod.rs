//! Platform glue behind plain functions and types, one file per platform.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;
#[cfg(target_os = "linux")]
pub mod randr;

#[cfg(not(target_os = "linux"))]
compile_error!("the session guard's lock windows are built for Linux (X11) only so far");
