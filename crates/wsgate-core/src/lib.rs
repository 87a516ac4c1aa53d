//! wsgate-core: the gateway's policy with no I/O and no clock of its own.
//!
//! Every decision (is this upgrade allowed, which credential counts, is this
//! token valid at `now`, what happens to a session at `now`) is a pure
//! function of its inputs, so the security rules are tested in microseconds
//! without sockets or sleeps.
#![forbid(unsafe_code)]

pub mod client_ip;
pub mod close_reason;
pub mod control;
pub mod credential;
pub mod grants;
pub mod json;
pub mod jwks;
pub mod origin;
pub mod reason;
pub mod revocation;
pub mod session;
pub mod ticket;
pub mod verify;

pub use close_reason::CloseReason;
pub use credential::{Credential, Transport};
pub use reason::Reason;

/// Wall-clock time as milliseconds since the Unix epoch. The core never
/// reads a clock: callers pass `now`.
pub type UnixMillis = i64;
