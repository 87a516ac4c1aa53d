//! Where authenticated traffic goes (docs/reference.md): `echo` and the channel
//! `hub` are served here; `upstream` relays to another WebSocket service.

mod coalesce;
pub mod forwarded;
mod h2stream;
pub mod hub;
pub mod multiplex;
pub mod upstream;
