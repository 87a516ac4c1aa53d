//! The built-in channel hub (docs/reference.md): subscribe, unsubscribe, publish with
//! claim-based grants, and deliveries to every subscriber on this node.
//!
//! A delivery is serialised once and shared (`Utf8Bytes`) by all its
//! subscribers, and counted once in the node's backlog while any socket
//! holds it (crate::backlog). Each socket has a queue bounded in messages
//! (`limits.outgoing_queue`) and in bytes (`limits.max_buffered_bytes`,
//! what is queued plus what its session has not yet written out); a
//! subscriber that is behind and would go past either, or that is behind
//! while the node is past its total, is marked slow and closed rather than
//! letting memory grow.

use crate::backlog::Backlog;
use crate::metrics::Metrics;
use crate::store::{HubFeed, Store};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use wsgate_core::grants::{self, Action, Grant};
use wsgate_core::verify::Verified;

/// Subscriptions one socket may hold at once.
pub const MAX_SUBSCRIPTIONS: usize = 256;

#[derive(Clone)]
struct Subscriber {
    tx: mpsc::Sender<Utf8Bytes>,
    state: Arc<SubscriberState>,
    /// Wakes the socket's task the first time it is found slow.
    wake: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct SubscriberState {
    slow: AtomicBool,
    /// Bytes of deliveries queued for the socket or not yet written out by
    /// its session: what it holds against `limits.max_buffered_bytes`.
    held: AtomicUsize,
}

/// Channels of this node.
pub struct Hub {
    grants: Vec<Grant>,
    backlog: Arc<Backlog>,
    /// This node's id, in its announcements (its own come back to it).
    node_id: String,
    channels: RwLock<HashMap<String, HashMap<u64, Subscriber>>>,
    /// With a shared store: publishes to announce to the other nodes, in
    /// order, through one relay task.
    outbound: std::sync::OnceLock<mpsc::Sender<String>>,
}

/// A hub message as announced between nodes.
#[derive(serde::Serialize, Deserialize)]
pub struct Announcement {
    pub node: String,
    pub channel: String,
    pub data: Value,
    pub from: Option<String>,
}

/// One socket's side of the hub.
pub struct HubSession {
    id: u64,
    sub_handle: Subscriber,
    rx: mpsc::Receiver<Utf8Bytes>,
    channels: HashSet<String>,
    /// Bytes of deliveries taken from `rx` and not yet written out.
    taken: usize,
}

/// One client message, decoded (public for the fuzz target).
#[derive(Deserialize)]
pub struct Request {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    id: Option<Value>,
}

/// Queues `msg` for each subscriber; returns how many took it. A
/// subscriber that is behind (holds earlier deliveries) and past its byte
/// budget with this one, or behind while the node is past its total, or
/// whose queue is full, is marked slow (it will be closed) instead of
/// waiting. One that holds nothing always takes it, however large.
fn send_all(subs: &HashMap<u64, Subscriber>, msg: &Utf8Bytes, backlog: &Backlog) -> usize {
    let len = msg.len();
    let over = backlog.over();
    let fits = |held: usize| held == 0 || (!over && held.saturating_add(len) <= backlog.per_socket);
    let mut n = 0;
    for s in subs.values() {
        let held = &s.state.held;
        let taken = held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                fits(h).then(|| h.saturating_add(len))
            })
            .is_ok();
        let full = if taken {
            match s.tx.try_send(msg.clone()) {
                Ok(()) => {
                    n += 1;
                    continue;
                }
                Err(e) => {
                    held.fetch_sub(len, Ordering::Relaxed);
                    matches!(e, mpsc::error::TrySendError::Full(_))
                }
            }
        } else {
            true
        };
        if full && !s.state.slow.swap(true, Ordering::Relaxed) {
            s.wake.notify_one();
        }
    }
    n
}

impl Hub {
    pub fn new(grants: Vec<Grant>, backlog: Arc<Backlog>, node_id: String) -> Self {
        Hub {
            grants,
            backlog,
            node_id,
            channels: RwLock::new(HashMap::new()),
            outbound: std::sync::OnceLock::new(),
        }
    }

    /// Hub fan-out across nodes (shared store only): this node's publishes
    /// go out through the store in order; announcements from other nodes
    /// are delivered here.
    pub async fn relay(self: Arc<Self>, store: Arc<dyn Store>, metrics: Arc<Metrics>) {
        let (out_tx, mut out_rx) = mpsc::channel::<String>(4096);
        let _ = self.outbound.set(out_tx);
        let (in_tx, mut in_rx) = mpsc::channel(4096);
        store.watch_hub(in_tx);
        loop {
            tokio::select! {
                Some(msg) = out_rx.recv() => {
                    if let Err(e) = store.hub_publish(&msg).await {
                        metrics.store_errors.inc();
                        tracing::warn!(event = "store_error", op = "hub_publish", error = %e);
                    }
                }
                Some(feed) = in_rx.recv() => {
                    let msg = match feed {
                        HubFeed::Message(m) => m,
                        HubFeed::Gap => {
                            let told = self.gap();
                            tracing::info!(event = "hub_gap", subscribers = told as u64);
                            continue;
                        }
                    };
                    let Ok(a) = serde_json::from_str::<Announcement>(&msg) else {
                        continue;
                    };
                    if a.node != self.node_id {
                        self.deliver(&a.channel, &a.data, a.from.as_deref());
                    }
                }
                else => return,
            }
        }
    }

    /// Publishes: delivers here, and announces to the other nodes when the
    /// store is shared. Returns the deliveries made on this node.
    pub fn publish(&self, channel: &str, data: &Value, from: Option<&str>) -> usize {
        if let Some(out) = self.outbound.get() {
            let a = Announcement {
                node: self.node_id.clone(),
                channel: channel.to_owned(),
                data: data.clone(),
                from: from.map(str::to_owned),
            };
            if let Ok(s) = serde_json::to_string(&a) {
                // Full: the relay is behind (Redis slow or down); real-time
                // fan-out is at-most-once, the local delivery still happens.
                let _ = out.try_send(s);
            }
        }
        self.deliver(channel, data, from)
    }

    /// Delivers `data` on `channel` to this node's subscribers; returns how many.
    pub fn deliver(&self, channel: &str, data: &Value, from: Option<&str>) -> usize {
        // Serialised once; clones share the bytes.
        let msg = self.backlog.shared(
            json!({"type": "message", "channel": channel, "data": data, "from": from}).to_string(),
        );
        let g = self.channels.read().unwrap_or_else(|p| p.into_inner());
        let Some(subs) = g.get(channel) else {
            return 0;
        };
        send_all(subs, &msg, &self.backlog)
    }

    /// Tells every subscriber on this node, channel by channel, that
    /// messages published on other nodes may have been lost (this node's
    /// hub feed was re-established after an interruption): `{"type":
    /// "hub_gap","channel":C}`, so a client can fetch what it missed.
    /// Returns how many were told.
    pub fn gap(&self) -> usize {
        let g = self.channels.read().unwrap_or_else(|p| p.into_inner());
        g.iter()
            .map(|(channel, subs)| {
                let msg = self
                    .backlog
                    .shared(json!({"type": "hub_gap", "channel": channel}).to_string());
                send_all(subs, &msg, &self.backlog)
            })
            .sum()
    }

    /// Whether a grant may read the top-level claim `key` (a grant's claim
    /// path names it whole, or starts with it: `realm_access.roles`).
    pub fn reads_claim(&self, key: &str) -> bool {
        self.grants
            .iter()
            .filter_map(|g| g.claim.as_deref())
            .any(|c| c == key || c.split('.').next() == Some(key))
    }

    fn allowed(&self, v: &Verified, action: Action, channel: &str) -> bool {
        grants::allowed(&self.grants, &v.claims, &v.sub, action, channel)
    }

    /// A session's side of the hub, with a queue of `queue` deliveries.
    pub fn session(&self, id: u64, queue: usize) -> HubSession {
        let (tx, rx) = mpsc::channel(queue.max(1));
        HubSession {
            id,
            sub_handle: Subscriber {
                tx,
                state: Arc::default(),
                wake: Arc::new(tokio::sync::Notify::new()),
            },
            rx,
            channels: HashSet::new(),
            taken: 0,
        }
    }

    fn add(&self, channel: &str, s: &HubSession) {
        let mut g = self.channels.write().unwrap_or_else(|p| p.into_inner());
        g.entry(channel.to_owned())
            .or_default()
            .insert(s.id, s.sub_handle.clone());
    }

    fn remove(&self, channel: &str, id: u64) {
        let mut g = self.channels.write().unwrap_or_else(|p| p.into_inner());
        if let Some(subs) = g.get_mut(channel) {
            subs.remove(&id);
            if subs.is_empty() {
                g.remove(channel);
            }
        }
    }
}

fn error(id: &Option<Value>, reason: &str) -> String {
    json!({"type": "error", "id": id, "reason": reason}).to_string()
}

fn ack(id: &Option<Value>) -> Option<String> {
    id.as_ref()
        .map(|id| json!({"type": "ack", "id": id}).to_string())
}

/// Decodes one client text message; `None` is answered `bad_request`.
pub fn decode(text: &str) -> Option<Request> {
    serde_json::from_str(text).ok()
}

impl HubSession {
    /// Whether the hub found this socket slow.
    pub fn is_slow(&self) -> bool {
        self.sub_handle.state.slow.load(Ordering::Relaxed)
    }

    /// The next delivery; it counts against the socket's budget until
    /// [`written`](Self::written) says the session wrote it out.
    pub fn poll_delivery(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Utf8Bytes>> {
        let p = self.rx.poll_recv(cx);
        if let std::task::Poll::Ready(Some(m)) = &p {
            self.taken += m.len();
        }
        p
    }

    /// The session wrote out everything it had queued for the client.
    pub fn written(&mut self) {
        if self.taken > 0 {
            let n = std::mem::take(&mut self.taken);
            self.sub_handle.state.held.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Notified once when the hub finds this socket's queue full.
    pub fn slow_signal(&self) -> Arc<tokio::sync::Notify> {
        self.sub_handle.wake.clone()
    }

    /// Handles one client text message; returns the answer, if any.
    /// Bad input is answered `bad_request` and never closes the socket.
    pub fn handle(&mut self, hub: &Hub, v: &Verified, text: &str) -> Option<String> {
        let Some(req) = decode(text) else {
            return Some(error(&None, "bad_request"));
        };
        let channel = match (&req.kind[..], req.channel.as_deref()) {
            ("subscribe" | "unsubscribe" | "publish", Some(c)) if grants::valid_channel(c) => c,
            _ => return Some(error(&req.id, "bad_request")),
        };
        match req.kind.as_str() {
            "subscribe" => {
                if !hub.allowed(v, Action::Subscribe, channel) {
                    return Some(error(&req.id, "forbidden"));
                }
                if !self.channels.contains(channel) {
                    if self.channels.len() >= MAX_SUBSCRIPTIONS {
                        return Some(error(&req.id, "rate_limited"));
                    }
                    self.channels.insert(channel.to_owned());
                    hub.add(channel, self);
                }
                ack(&req.id)
            }
            "unsubscribe" => {
                if self.channels.remove(channel) {
                    hub.remove(channel, self.id);
                }
                ack(&req.id)
            }
            _ => {
                if !hub.allowed(v, Action::Publish, channel) {
                    return Some(error(&req.id, "forbidden"));
                }
                let Some(data) = req.data.as_ref() else {
                    return Some(error(&req.id, "bad_request"));
                };
                hub.publish(channel, data, Some(&v.sub));
                ack(&req.id)
            }
        }
    }

    /// After a refresh changed the claims: drops channels no longer granted.
    pub fn recheck(&mut self, hub: &Hub, v: &Verified) {
        let lost: Vec<String> = self
            .channels
            .iter()
            .filter(|c| !hub.allowed(v, Action::Subscribe, c))
            .cloned()
            .collect();
        for c in lost {
            self.channels.remove(&c);
            hub.remove(&c, self.id);
        }
    }

    /// Leaves every channel (the socket is closing) and lets go of the
    /// deliveries still queued for it.
    pub fn leave(&mut self, hub: &Hub) {
        for c in self.channels.drain() {
            hub.remove(&c, self.id);
        }
        self.rx.close();
        while self.rx.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(per_socket: usize, total: usize) -> Hub {
        let limits = crate::config::LimitsConfig {
            max_buffered_bytes: per_socket,
            max_buffered_bytes_total: total,
            ..Default::default()
        };
        let backlog = Backlog::new(&limits, Default::default());
        Hub::new(Vec::new(), Arc::new(backlog), "test".into())
    }

    fn deliver(h: &Hub, size: usize) -> usize {
        h.deliver("c", &Value::String("x".repeat(size)), None)
    }

    /// Bytes, not messages: a subscriber that is behind is slow once the
    /// next delivery would take it past its budget; one that holds nothing
    /// takes any delivery; writing out frees its budget.
    #[test]
    fn a_subscriber_is_bounded_in_bytes() {
        let h = hub(1000, 1 << 20);
        let s = h.session(1, 256);
        h.add("c", &s);
        assert_eq!(deliver(&h, 5000), 1, "alone, larger than the budget");
        assert_eq!(deliver(&h, 10), 0, "behind, past its budget");
        assert!(s.is_slow());
        let s = h.session(2, 256);
        h.add("c", &s);
        assert_eq!(deliver(&h, 400), 1);
        assert_eq!(deliver(&h, 400), 1, "~900 of 1000");
        assert_eq!(deliver(&h, 400), 0);
        assert!(s.is_slow());
        // Taken by the session and written out: room again.
        let mut s = h.session(3, 256);
        h.add("c", &s);
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        for _ in 0..5 {
            assert_eq!(deliver(&h, 400), 1);
            assert!(s.poll_delivery(&mut cx).is_ready());
            s.written();
        }
        assert!(!s.is_slow());
    }

    /// Past the node's total, subscribers that are behind are slow; those
    /// that hold nothing still get the delivery. Deliveries count once
    /// while shared, and not at all once every subscriber has let go.
    #[test]
    fn past_the_node_total_only_subscribers_that_are_behind_are_slow() {
        let h = hub(1 << 20, 3000);
        let behind = h.session(1, 256);
        let mut caught_up = h.session(2, 256);
        h.add("c", &behind);
        h.add("c", &caught_up);
        assert_eq!(deliver(&h, 2000), 2);
        let held = h.backlog.held();
        assert!((2000..2100).contains(&held), "counted once: {held}");
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let std::task::Poll::Ready(Some(m)) = caught_up.poll_delivery(&mut cx) else {
            panic!("delivered");
        };
        drop(m);
        caught_up.written();
        // 2 kB shared + 2 kB new: past 3000.
        assert_eq!(deliver(&h, 2000), 1, "only the one that holds nothing");
        assert!(behind.is_slow() && !caught_up.is_slow());
        let mut behind = behind;
        behind.leave(&h);
        let mut caught_up = caught_up;
        caught_up.leave(&h);
        assert_eq!(h.backlog.held(), 0, "everything let go");
    }

    /// A repeated member could be read either way (serde keeps none: the
    /// derive refuses it), so the message is `bad_request`.
    #[test]
    fn repeated_members_are_refused() {
        assert!(decode(r#"{"type":"subscribe","channel":"a","id":1}"#).is_some());
        for text in [
            r#"{"type":"subscribe","type":"publish","channel":"a"}"#,
            r#"{"type":"subscribe","channel":"a","channel":"b"}"#,
            r#"{"type":"publish","channel":"a","data":1,"data":2}"#,
            r#"{"type":"subscribe","channel":"a","id":1,"id":2}"#,
            r#"{"type":"subscribe","\u0074ype":"publish","channel":"a"}"#,
        ] {
            assert!(decode(text).is_none(), "{text}");
        }
    }
}
