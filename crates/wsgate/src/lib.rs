//! wsgate: an authenticating WebSocket gateway.
//!
//! The policy lives in `wsgate-core`; this crate is the I/O and the wiring:
//! configuration, listeners, the upgrade pipeline, the per-connection task
//! and the backends.
#![forbid(unsafe_code)]

pub mod admission;
pub mod app;
pub mod auth_failures;
pub mod backend;
pub mod backlog;
pub mod blocklist;
pub mod clock;
pub mod config;
pub mod conn;
pub mod egress;
pub mod error;
pub mod head_io;
pub mod http_head;
pub mod init;
pub mod keys;
pub mod limiter;
pub mod log;
pub mod metrics;
pub mod mint;
pub mod outbox;
pub mod readahead;
pub mod registry;
pub mod reload;
pub mod revocations;
pub mod server;
pub mod store;
pub mod tasks;
pub mod tls;
