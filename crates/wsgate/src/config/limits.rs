//! `[limits]`: rates, caps, buffers and timeouts of sockets and handshakes.

use super::build::{fmt_dur, Builder};
use super::de;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[limits]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub handshakes_per_ip_per_sec: u32,
    pub handshake_burst_per_ip: u32,
    /// 0 = unlimited.
    pub connections_per_user: u32,
    pub max_connections: u32,
    pub max_message_bytes: usize,
    pub messages_per_sec: u32,
    #[serde(with = "de::duration")]
    pub idle_timeout: Duration,
    #[serde(with = "de::duration")]
    pub ping_interval: Duration,
    /// First-message sockets not yet authenticated, per node.
    pub max_unauthenticated: u32,
    /// Upgrade requests from one IP being processed at once.
    pub pending_handshakes_per_ip: u32,
    /// Hub deliveries queued towards one client at most (also bounded in
    /// bytes by `max_buffered_bytes`).
    pub outgoing_queue: usize,
    /// Bytes the gateway holds for one socket whose peer is behind: queued
    /// for it or handed to the socket and not yet taken by the kernel.
    /// A larger message still goes out alone (crate::backlog).
    pub max_buffered_bytes: usize,
    /// The same, summed over the node: past it every socket that falls
    /// behind is closed `1013 "slow consumer"`.
    pub max_buffered_bytes_total: usize,
    /// A socket whose writes make no progress for this long is closed
    /// `1013 "slow consumer"` (its peer, client or upstream, is not reading).
    #[serde(with = "de::duration")]
    pub write_timeout: Duration,
    /// The most one socket read takes (at most 64 KiB). Client and upstream
    /// sockets read through a per-thread buffer and hold only what is not
    /// yet consumed ([`ReadAhead`](crate::readahead::ReadAhead)).
    pub read_buffer_bytes: usize,
    /// Bytes one user may receive per minute (all sockets of the node)
    /// before an `egress_alert` is logged and counted; 0 = off. A user
    /// suddenly pulling far more than usual is a sign of a stolen token.
    pub egress_alert_bytes_per_min: u64,
    /// Also close the socket that crossed the threshold (1008).
    pub egress_alert_close: bool,
    /// Rate-limit refusals of one address (IPv4, or IPv6 /64) within one
    /// second after which its new connections are dropped in the kernel
    /// for `block_duration` (a BPF filter on the listener); 0 = off.
    /// Direct peers only: never trusted proxies, never with PROXY protocol.
    pub block_after_refusals: u32,
    #[serde(with = "de::duration")]
    pub block_duration: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            handshakes_per_ip_per_sec: 20,
            handshake_burst_per_ip: 40,
            connections_per_user: 10,
            max_connections: 100_000,
            max_message_bytes: 1_048_576,
            messages_per_sec: 100,
            idle_timeout: Duration::from_secs(120),
            ping_interval: Duration::from_secs(30),
            max_unauthenticated: 1000,
            pending_handshakes_per_ip: 64,
            outgoing_queue: 256,
            max_buffered_bytes: 1024 * 1024,
            max_buffered_bytes_total: 256 * 1024 * 1024,
            write_timeout: Duration::from_secs(2),
            read_buffer_bytes: 4096,
            egress_alert_bytes_per_min: 0,
            egress_alert_close: false,
            block_after_refusals: 0,
            block_duration: Duration::from_secs(60),
        }
    }
}

impl Builder<'_> {
    pub(super) fn check_limits(&mut self, l: &LimitsConfig) {
        let positive: [(&str, u64); 12] = [
            (
                "handshakes_per_ip_per_sec",
                u64::from(l.handshakes_per_ip_per_sec),
            ),
            (
                "handshake_burst_per_ip",
                u64::from(l.handshake_burst_per_ip),
            ),
            ("max_connections", u64::from(l.max_connections)),
            ("max_message_bytes", l.max_message_bytes as u64),
            ("messages_per_sec", u64::from(l.messages_per_sec)),
            ("max_unauthenticated", u64::from(l.max_unauthenticated)),
            (
                "pending_handshakes_per_ip",
                u64::from(l.pending_handshakes_per_ip),
            ),
            ("outgoing_queue", l.outgoing_queue as u64),
            ("max_buffered_bytes", l.max_buffered_bytes as u64),
            (
                "max_buffered_bytes_total",
                l.max_buffered_bytes_total as u64,
            ),
            (
                "idle_timeout",
                l.idle_timeout.as_millis().min(u128::from(u64::MAX)) as u64,
            ),
            (
                "write_timeout",
                l.write_timeout.as_millis().min(u128::from(u64::MAX)) as u64,
            ),
        ];
        for (key, v) in positive {
            if v == 0 {
                self.problem(format!(
                    "limits.{key}: must be greater than 0 (only connections_per_user uses 0 for unlimited)"
                ));
            }
        }
        if l.max_buffered_bytes_total < l.max_buffered_bytes {
            self.problem(format!(
                "limits.max_buffered_bytes_total: {} is less than limits.max_buffered_bytes ({})",
                l.max_buffered_bytes_total, l.max_buffered_bytes
            ));
        }
        if !(256..=1_048_576).contains(&l.read_buffer_bytes) {
            self.problem(format!(
                "limits.read_buffer_bytes: must be between 256 and 1048576, got {}",
                l.read_buffer_bytes
            ));
        }
        if l.block_after_refusals > 0
            && !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&l.block_duration)
        {
            self.problem(format!(
                "limits.block_duration: must be between 1s and 24h, got {}",
                fmt_dur(l.block_duration)
            ));
        }
        if l.ping_interval.is_zero() {
            self.problem("limits.ping_interval: must be greater than 0".into());
        } else if l.ping_interval >= l.idle_timeout && !l.idle_timeout.is_zero() {
            self.problem(format!(
                "limits.ping_interval: {} must be shorter than limits.idle_timeout ({})",
                fmt_dur(l.ping_interval),
                fmt_dur(l.idle_timeout)
            ));
        }
    }
}
