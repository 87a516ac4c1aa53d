//! Prometheus metrics (docs/reference.md), served on the admin listener at `/metrics`.
//!
//! Label values come from closed sets (reason codes, transport names, close
//! codes, directions): never a sub, jti, IP or channel, so cardinality is
//! bounded by construction.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;
use wsgate_core::{Reason, Transport};

mod exposition;
pub use exposition::Format;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    pub result: &'static str,
    pub reason: &'static str,
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

/// Transports and "none" (`handshake_series` columns).
const TRANSPORTS: usize = 1 + Transport::FirstMessage as usize + 1;
/// Outcomes ("accepted", then each reason) times transports.
const HANDSHAKE_SERIES: usize = (1 + Reason::ALL.len()) * TRANSPORTS;

/// All gateway metrics. Counters are cheap clones of shared atomics.
pub struct Metrics {
    registry: Registry,
    handshakes: Family<HandshakeLabels, Counter>,
    /// `handshakes` series by (outcome, transport), each taken from the
    /// family on its first use: the family's lookup hashes three label
    /// strings under a lock, ~600 instructions per attempt.
    handshake_series: Box<[std::sync::OnceLock<Counter>]>,
    pub connections_active: Gauge,
    closes: Family<CodeLabels, Counter>,
    pub messages_in: Counter,
    pub messages_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    token_verify: Histogram,
    pub revocations: Counter,
    pub tickets_issued: Counter,
    ticket_refusals: Family<ReasonLabels, Counter>,
    admin_auth_failures: Family<ReasonLabels, Counter>,
    pub store_errors: Counter,
    pub egress_alerts: Counter,
    pub schema_rejections: Counter,
    pub ws_recycles: Counter,
    pub blocks: Counter,
    pub blocked: Gauge,
    pub upstream_connect: Histogram,
    pub upstream_http2_connections: Gauge,
    /// Bytes held for peers that are behind (crate::backlog).
    pub buffered: Gauge,
    /// Sockets closed as slow consumers, by the peer that was slow.
    pub slow_clients: Counter,
    pub slow_upstreams: Counter,
    sessions: Family<TransportLabels, Gauge>,
    /// JWKS refreshes, reloads (keys/mod.rs).
    pub keys: std::sync::Arc<crate::keys::KeyMetrics>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    pub transport: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let handshakes = Family::<HandshakeLabels, Counter>::default();
        registry.register(
            "wsgate_handshakes",
            "Upgrade attempts by result, reason and transport",
            handshakes.clone(),
        );
        let connections_active = Gauge::default();
        registry.register(
            "wsgate_connections_active",
            "Open WebSocket sessions on this node",
            connections_active.clone(),
        );
        let closes = Family::<CodeLabels, Counter>::default();
        registry.register(
            "wsgate_closes",
            "Closed sessions by close code",
            closes.clone(),
        );
        let messages = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "wsgate_messages",
            "Data messages relayed, by direction (in: from clients)",
            messages.clone(),
        );
        let bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "wsgate_bytes",
            "Payload bytes relayed, by direction (in: from clients)",
            bytes.clone(),
        );
        // 1 us .. ~16 ms: HS256 sits at the bottom, RSA/EC in the middle.
        let token_verify = Histogram::new(exponential_buckets(1e-6, 2.0, 15));
        // The unit is appended to the name (`wsgate_token_verify_seconds`)
        // and, in OpenMetrics, declared by a `# UNIT` line.
        registry.register_with_unit(
            "wsgate_token_verify",
            "Time to verify a token (signature and claims)",
            Unit::Seconds,
            token_verify.clone(),
        );
        let revocations = Counter::default();
        registry.register(
            "wsgate_revocations",
            "Revocations accepted",
            revocations.clone(),
        );
        let tickets_issued = Counter::default();
        registry.register(
            "wsgate_tickets_issued",
            "Tickets minted",
            tickets_issued.clone(),
        );
        let ticket_refusals = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "wsgate_ticket_refusals",
            "POST /v1/tickets requests refused, by reason",
            ticket_refusals.clone(),
        );
        let admin_auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "wsgate_admin_auth_failures",
            "Admin API requests refused for their credentials: unauthorized (wrong or missing \
             token) or rate_limited (their address failed too often)",
            admin_auth_failures.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "wsgate_store_errors",
            "Store operations that failed (each failed closed)",
            store_errors.clone(),
        );
        let egress_alerts = Counter::default();
        registry.register(
            "wsgate_egress_alerts",
            "Users who crossed limits.egress_alert_bytes_per_min in a minute",
            egress_alerts.clone(),
        );
        let ws_recycles = Counter::default();
        registry.register(
            "wsgate_websocket_recycles",
            "WebSockets (client or upstream side) replaced after a large message to give back their buffers",
            ws_recycles.clone(),
        );
        let blocks = Counter::default();
        registry.register(
            "wsgate_address_blocks",
            "Addresses whose connections were dropped in the kernel after limits.block_after_refusals",
            blocks.clone(),
        );
        let blocked = Gauge::default();
        registry.register(
            "wsgate_addresses_blocked",
            "Addresses (IPv4, or IPv6 /64) blocked in the kernel now",
            blocked.clone(),
        );
        let schema_rejections = Counter::default();
        registry.register(
            "wsgate_schema_rejections",
            "Client messages refused by backend.message_schema_file (closed 1007)",
            schema_rejections.clone(),
        );
        // 100 us .. ~3 s: loopback upstreams at the bottom, wss across a WAN at the top.
        let upstream_connect = Histogram::new(exponential_buckets(1e-4, 2.0, 16));
        registry.register_with_unit(
            "wsgate_upstream_connect",
            "Time to open the upstream WebSocket (TCP, TLS and handshake)",
            Unit::Seconds,
            upstream_connect.clone(),
        );
        let upstream_http2_connections = Gauge::default();
        registry.register(
            "wsgate_upstream_http2_connections",
            "HTTP/2 connections open to the upstream (backend.upstream_http2)",
            upstream_http2_connections.clone(),
        );
        let buffered = Gauge::default();
        registry.register(
            "wsgate_buffered_bytes",
            "Bytes held for peers that are behind: queued or unwritten while a write waits, and hub deliveries not yet written to every subscriber",
            buffered.clone(),
        );
        let slow = Family::<PeerLabels, Counter>::default();
        registry.register(
            "wsgate_slow_consumers",
            "Sessions closed 1013 because a peer did not read: no progress for limits.write_timeout, past its byte budget, or behind while the node was past its total",
            slow.clone(),
        );
        let slow_for = |peer| slow.get_or_create(&PeerLabels { peer }).clone();
        let (slow_clients, slow_upstreams) = (slow_for("client"), slow_for("upstream"));
        let sessions = Family::<TransportLabels, Gauge>::default();
        registry.register(
            "wsgate_sessions_active",
            "Open sessions by the transport they authenticated with",
            sessions.clone(),
        );
        let keys = crate::keys::KeyMetrics::register(&mut registry);
        let counter = |f: &Family<DirectionLabels, Counter>, d| {
            f.get_or_create(&DirectionLabels { direction: d }).clone()
        };
        let (messages_in, messages_out) = (counter(&messages, "in"), counter(&messages, "out"));
        let (bytes_in, bytes_out) = (counter(&bytes, "in"), counter(&bytes, "out"));
        Metrics {
            messages_in,
            messages_out,
            bytes_in,
            bytes_out,
            registry,
            handshakes,
            handshake_series: (0..HANDSHAKE_SERIES)
                .map(|_| std::sync::OnceLock::new())
                .collect(),
            connections_active,
            closes,
            token_verify,
            revocations,
            tickets_issued,
            ticket_refusals,
            admin_auth_failures,
            store_errors,
            egress_alerts,
            schema_rejections,
            ws_recycles,
            blocks,
            blocked,
            upstream_connect,
            upstream_http2_connections,
            buffered,
            slow_clients,
            slow_upstreams,
            sessions,
            keys,
        }
    }

    /// Open sessions of one transport (incremented at open, decremented at close).
    pub fn sessions(&self, t: Transport) -> Gauge {
        self.sessions
            .get_or_create(&TransportLabels {
                transport: t.as_str(),
            })
            .clone()
    }

    /// Counts one upgrade attempt.
    pub fn handshake(&self, result: Result<(), Reason>, transport: Option<Transport>) {
        let outcome = result.map_or_else(|r| 1 + r.index(), |()| 0);
        let via = transport.map_or(0, |t| 1 + t as usize);
        let Some(slot) = self.handshake_series.get(outcome * TRANSPORTS + via) else {
            return;
        };
        slot.get_or_init(|| {
            let (result, reason) = match result {
                Ok(()) => ("accepted", "none"),
                Err(r) => ("rejected", r.code()),
            };
            self.handshakes
                .get_or_create(&HandshakeLabels {
                    result,
                    reason,
                    transport: transport.map(|t| t.as_str()).unwrap_or("none"),
                })
                .clone()
        })
        .inc();
    }

    /// Counts one refused ticket request.
    pub fn ticket_refused(&self, r: Reason) {
        self.ticket_refusals
            .get_or_create(&ReasonLabels { reason: r.code() })
            .inc();
    }

    /// Counts one admin request refused for its credentials (`reason`:
    /// `unauthorized` or `rate_limited`).
    pub fn admin_auth_failure(&self, reason: &'static str) {
        self.admin_auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn close(&self, code: u16) {
        self.closes.get_or_create(&CodeLabels { code }).inc();
    }

    pub fn verify_time(&self, d: Duration) {
        self.token_verify.observe(d.as_secs_f64());
    }

    /// The exposition in `format` (see [`Format::negotiate`]).
    pub fn encode(&self, format: Format) -> String {
        use prometheus_client::encoding::{prometheus_text, text};
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail.
        let _ = match format {
            Format::Text => prometheus_text::encode(&mut out, &self.registry),
            Format::OpenMetrics => text::encode(&mut out, &self.registry),
        };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_handshake_series_is_counted_under_its_labels() {
        let m = Metrics::new();
        let transports = [
            None,
            Some(Transport::Bearer),
            Some(Transport::Subprotocol),
            Some(Transport::Ticket),
            Some(Transport::Cookie),
            Some(Transport::Query),
            Some(Transport::FirstMessage),
        ];
        // What the family would hold without the cached handles (two
        // reasons may share a code, e.g. `bad_upgrade` for 400 and 426).
        let mut expected = std::collections::HashMap::new();
        let outcomes = std::iter::once(Ok(())).chain(Reason::ALL.iter().map(|r| Err(*r)));
        for (i, result) in outcomes.enumerate() {
            for t in transports {
                let (res, reason) = match result {
                    Ok(()) => ("accepted", "none"),
                    Err(r) => ("rejected", r.code()),
                };
                let labels = HandshakeLabels {
                    result: res,
                    reason,
                    transport: t.map_or("none", |t| t.as_str()),
                };
                // A different count per series: a slot shared by two
                // series would show their sum.
                for _ in 0..=i {
                    m.handshake(result, t);
                }
                *expected.entry(labels).or_insert(0) += i as u64 + 1;
            }
        }
        for (labels, n) in expected {
            assert_eq!(m.handshakes.get_or_create(&labels).get(), n, "{labels:?}");
        }
    }
}
