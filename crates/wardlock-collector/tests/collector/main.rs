//! The collector as it ships, end to end: real `wardlock-collector` processes over TLS on
//! loopback, on SQLite and on throwaway PostgreSQL clusters, with real `wardlockd`
//! workstations syncing to them (`wardlock-testkit`).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

/// Runs each named test function, which takes a `Backend`, once on SQLite (`sqlite::…`)
/// and once on PostgreSQL (`postgres::…`).
macro_rules! on_both_backends {
    ($($name:ident),*) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name(super::Backend::Sqlite)
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                super::$name(super::Backend::Postgres)
            })*
        }
    };
}

mod browser;
mod console;
mod contract;
mod strangers;
mod sync;
