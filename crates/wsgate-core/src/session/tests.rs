//! Every transition of [`Session`], with explicit clocks: no sockets, no sleeps.

use super::*;
use jsonwebtoken::Algorithm;

/// Wall-clock origin of the tests; the monotonic clock starts at 0 there.
const T0: i64 = 1_800_000_000_000;
const PING: u64 = 30_000;
const IDLE: u64 = 120_000;

/// `ms` after T0 on both clocks.
fn at(ms: u64) -> Now {
    Now {
        mono: ms,
        wall: T0 + ms as i64,
    }
}

fn policy() -> SessionPolicy {
    SessionPolicy {
        leeway_ms: 5_000,
        expiry_warning_ms: 30_000,
        max_session_ms: None,
        refresh: true,
    }
}

fn limits() -> SocketLimits {
    SocketLimits {
        idle_timeout_ms: IDLE,
        ping_interval_ms: PING,
        messages_per_sec: 10,
        egress_alert_close: false,
        upstream: false,
    }
}

/// Limits of a session that relays to an upstream.
fn relaying() -> SocketLimits {
    SocketLimits {
        upstream: true,
        ..limits()
    }
}

/// A session opened at T0 whose token expires `exp_in` ms later.
fn session(policy: SessionPolicy, limits: SocketLimits, exp_in: i64) -> Session {
    Session::new(policy, limits, "a".into(), T0 + exp_in, at(0))
}

/// A long-lived session: only the keep-alive and traffic timers matter.
fn long(limits: SocketLimits) -> Session {
    session(policy(), limits, 86_400_000)
}

fn verified(sub: &str, exp_ms: i64) -> Verified {
    Verified {
        sub: sub.into(),
        exp_ms,
        iat_ms: None,
        jti: None,
        sid: None,
        alg: Algorithm::HS256,
        claims: Default::default(),
    }
}

fn drain(s: &mut Session) -> Vec<Action> {
    std::iter::from_fn(|| s.poll()).collect()
}

/// Advances to `ms` as the driver does: fire if due.
fn tick(s: &mut Session, ms: u64) -> Vec<Action> {
    if s.poll_timeout().is_some_and(|t| t <= ms) {
        s.handle_timeout(at(ms), true);
    }
    drain(s)
}

fn closed(r: CloseReason) -> Vec<Action> {
    vec![Action::Close(r)]
}

#[test]
fn closes_4401_at_exp_plus_leeway() {
    let mut s = session(
        SessionPolicy {
            refresh: false,
            ..policy()
        },
        limits(),
        20_000,
    );
    assert_eq!(s.poll_timeout(), Some(25_000));
    assert_eq!(tick(&mut s, 24_999), vec![]);
    assert_eq!(tick(&mut s, 25_000), closed(CloseReason::Expired));
    assert_eq!(CloseReason::Expired.code(), 4401);
    assert!(s.is_closed());
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(at(30_000), true);
    assert_eq!(drain(&mut s), vec![]);
}

#[test]
fn warning_then_refresh_moves_deadline() {
    let mut s = session(policy(), limits(), 60_000);
    assert_eq!(s.poll_timeout(), Some(30_000), "the first ping");
    let _ = tick(&mut s, 30_000);
    assert_eq!(s.poll_timeout(), Some(35_000), "the warning");
    assert_eq!(tick(&mut s, 34_999), vec![]);
    assert_eq!(
        tick(&mut s, 35_000),
        vec![Action::Notify(Notice::Expiring {
            exp: (T0 + 60_000) / 1000
        })]
    );
    assert_eq!(s.poll_timeout(), Some(60_000), "ping, then the deadline");
    assert_eq!(
        s.refresh(Ok(&verified("a", T0 + 600_000)), at(40_000)),
        Notice::AuthOk {
            exp: (T0 + 600_000) / 1000
        }
    );
    assert_eq!(drain(&mut s), vec![]);
    assert_eq!(s.deadline(), T0 + 605_000);
    assert_eq!(s.timers.get(Timer::Warning), Some(575_000));
    assert_eq!(s.timers.get(Timer::Deadline), Some(605_000));
}

#[test]
fn a_short_refresh_is_not_warned_again_at_once() {
    let p = policy();
    let mut s = session(p, limits(), 60_000);
    s.handle_timeout(at(35_000), true);
    assert!(matches!(
        drain(&mut s)[..],
        [.., Action::Notify(Notice::Expiring { .. })]
    ));
    // The new token ends 20 s later: inside the 30 s warning window.
    assert!(matches!(
        s.refresh(Ok(&verified("a", T0 + 60_000)), at(40_000)),
        Notice::AuthOk { .. }
    ));
    assert_eq!(
        s.timers.get(Timer::Warning),
        None,
        "no immediate re-warning"
    );
    assert_eq!(s.timers.get(Timer::Deadline), Some(65_000));
    s.handle_timeout(at(40_001), true);
    assert_eq!(drain(&mut s), vec![]);
    // A long refresh arms the warning again.
    s.refresh(Ok(&verified("a", T0 + 600_000)), at(41_000));
    assert_eq!(s.timers.get(Timer::Warning), Some(575_000));
}

#[test]
fn refresh_with_other_sub_or_error_changes_nothing() {
    let mut s = session(policy(), limits(), 60_000);
    let before = (s.deadline(), s.timers.get(Timer::Warning));
    assert_eq!(
        s.refresh(Ok(&verified("b", T0 + 600_000)), at(1)),
        Notice::AuthFail {
            reason: Reason::BadSignature
        }
    );
    assert_eq!(
        s.refresh(Err(Reason::Revoked), at(2)),
        Notice::AuthFail {
            reason: Reason::Revoked
        }
    );
    assert_eq!(drain(&mut s), vec![]);
    assert_eq!((s.deadline(), s.timers.get(Timer::Warning)), before);
    assert!(!s.is_closed(), "a failed refresh does not close");
}

#[test]
fn refresh_off_or_after_close_is_refused() {
    let mut off = session(
        SessionPolicy {
            refresh: false,
            ..policy()
        },
        limits(),
        60_000,
    );
    assert_eq!(
        off.refresh(Ok(&verified("a", T0 + 600_000)), at(1)),
        Notice::AuthFail {
            reason: Reason::BadUpgrade
        }
    );
    assert_eq!(off.deadline(), T0 + 65_000);
    let mut s = session(policy(), limits(), 60_000);
    s.handle(Event::Revoke, at(1));
    let _ = drain(&mut s);
    assert_eq!(
        s.refresh(Ok(&verified("a", T0 + 600_000)), at(2)),
        Notice::AuthFail {
            reason: Reason::Expired
        }
    );
}

#[test]
fn max_session_caps_a_long_token() {
    let p = SessionPolicy {
        max_session_ms: Some(1_800_000),
        ..policy()
    };
    let mut s = session(p, limits(), 86_400_000);
    assert_eq!(s.deadline(), T0 + 1_800_000);
    assert_eq!(s.exp_secs(), (T0 + 1_800_000) / 1000);
    s.refresh(Ok(&verified("a", T0 + 86_400_000)), at(1_000_000));
    assert_eq!(s.deadline(), T0 + 2_800_000);
}

#[test]
fn forced_reauth_gives_warning_window() {
    let mut s = session(policy(), limits(), 3_600_000);
    s.handle(Event::Reauth, at(10_000));
    assert_eq!(
        drain(&mut s),
        vec![Action::Notify(Notice::Expiring {
            exp: (T0 + 40_000) / 1000
        })]
    );
    assert_eq!(s.deadline(), T0 + 40_000);
    assert_eq!(s.timers.get(Timer::Warning), None, "warned already");
    assert_eq!(s.timers.get(Timer::Deadline), Some(40_000));
    s.handle_timeout(at(39_999), true);
    assert!(!drain(&mut s).contains(&Action::Close(CloseReason::Expired)));
    assert_eq!(tick(&mut s, 40_000), closed(CloseReason::Expired));
}

#[test]
fn already_past_warning_sends_it_at_once() {
    let mut s = session(policy(), limits(), 10_000);
    assert_eq!(s.poll_timeout(), Some(0), "due now");
    assert!(matches!(
        tick(&mut s, 0)[..],
        [Action::Notify(Notice::Expiring { .. })]
    ));
    assert_eq!(s.poll_timeout(), Some(15_000));
}

#[test]
fn the_wall_clock_decides_the_deadline() {
    // The wall clock stepped back 10 s after the session opened: the
    // monotonic timer fires at 25 s, the token is not expired yet by the
    // wall clock, and the deadline is re-armed from it.
    let off = session(
        SessionPolicy {
            refresh: false,
            ..policy()
        },
        limits(),
        20_000,
    );
    let mut s = off.clone();
    let stepped_back = Now {
        mono: 25_000,
        wall: T0 + 15_000,
    };
    s.handle_timeout(stepped_back, true);
    assert_eq!(drain(&mut s), vec![]);
    assert_eq!(
        s.poll_timeout(),
        Some(30_000),
        "10 s more by the wall clock"
    );
    // Stepped forward: noticed at the next wake-up (the first ping).
    let mut s = off;
    let stepped_forward = Now {
        mono: PING,
        wall: T0 + 3_600_000,
    };
    s.handle_timeout(stepped_forward, true);
    assert_eq!(
        drain(&mut s),
        vec![Action::PingClient, Action::Close(CloseReason::Expired)]
    );
}

#[test]
fn pings_every_interval_and_closes_4408_when_idle() {
    let mut s = long(limits());
    assert_eq!(s.poll_timeout(), Some(PING));
    assert_eq!(tick(&mut s, PING - 1), vec![]);
    assert_eq!(tick(&mut s, PING), vec![Action::PingClient]);
    assert_eq!(s.poll_timeout(), Some(2 * PING));
    // A late wake-up pings once and re-arms from then.
    assert_eq!(tick(&mut s, 2 * PING + 500), vec![Action::PingClient]);
    assert_eq!(s.poll_timeout(), Some(3 * PING + 500));
    // Silent since 0: the round at or after IDLE closes.
    assert_eq!(tick(&mut s, 3 * PING + 500), vec![Action::PingClient]);
    assert_eq!(
        tick(&mut s, 4 * PING + 500),
        closed(CloseReason::Idle),
        "{} ms >= idle",
        4 * PING + 500
    );
    assert_eq!(CloseReason::Idle.code(), 4408);
}

#[test]
fn a_frame_keeps_the_socket_alive() {
    let mut s = long(limits());
    assert!(s.on_client_frame(IDLE - PING));
    for round in 1..=4 {
        assert_eq!(tick(&mut s, round * PING), vec![Action::PingClient]);
    }
    // Exactly idle_timeout after the last frame: closed.
    assert_eq!(tick(&mut s, IDLE - PING + IDLE), closed(CloseReason::Idle));
}

#[test]
fn upstream_pinged_and_closed_when_silent_for_idle_timeout() {
    let mut s = long(relaying());
    // The client stays alive; the upstream says nothing.
    let mut round = 0;
    let ended = loop {
        round += 1;
        assert!(s.on_client_frame(round * PING - 1));
        let a = tick(&mut s, round * PING);
        if a != vec![Action::PingUpstream, Action::PingClient] {
            break a;
        }
    };
    // Silent for at least (quiet - 1) whole intervals >= 120 s: round 5.
    assert_eq!(round, 5);
    assert_eq!(ended, closed(CloseReason::UpstreamSilent));
    assert_eq!(CloseReason::UpstreamSilent.code(), 1013);
}

#[test]
fn upstream_frames_and_unread_rounds_do_not_count_as_silence() {
    let mut s = long(relaying());
    for round in 1..=20u64 {
        assert!(s.on_client_frame(round * PING - 1));
        if round % 3 == 0 {
            s.on_upstream_frame();
        }
        s.handle_timeout(at(round * PING), true);
        assert!(!s.is_closed(), "round {round}");
        let _ = drain(&mut s);
    }
    // Rounds where the client's queue was full (the upstream not read).
    for round in 21..=40u64 {
        assert!(s.on_client_frame(round * PING - 1));
        s.handle_timeout(at(round * PING), false);
        assert_eq!(
            drain(&mut s),
            vec![Action::PingUpstream, Action::PingClient]
        );
    }
}

#[test]
fn message_rate_closes_4429() {
    let mut s = long(limits());
    // 10/s, burst 20.
    for i in 0..20 {
        assert!(s.on_client_frame(1_000), "frame {i}");
    }
    assert_eq!(drain(&mut s), vec![]);
    assert!(!s.on_client_frame(1_000));
    assert!(s.is_closed());
    assert_eq!(drain(&mut s), closed(CloseReason::RateLimited));
    assert_eq!(CloseReason::RateLimited.code(), 4429);
}

#[test]
fn buffers_recycled_after_a_quiet_second() {
    let mut s = long(limits());
    assert!(!s.recycle_armed());
    s.handle(Event::LargeMessage, at(100));
    assert_eq!(s.poll_timeout(), Some(1_100));
    // More large messages do not move it.
    s.handle(Event::LargeMessage, at(500));
    assert_eq!(s.poll_timeout(), Some(1_100));
    // Still talking at 1 100 (last frame at 800): wait for a quiet second.
    assert!(s.on_client_frame(800));
    assert_eq!(tick(&mut s, 1_100), vec![]);
    assert_eq!(s.poll_timeout(), Some(1_800));
    assert_eq!(tick(&mut s, 1_800), vec![Action::Recycle]);
    assert!(!s.recycle_armed());
    // Something was queued: try again a second later.
    s.handle(Event::Recycled { done: false }, at(1_800));
    assert_eq!(s.poll_timeout(), Some(2_800));
    assert_eq!(tick(&mut s, 2_800), vec![Action::Recycle]);
    s.handle(Event::Recycled { done: true }, at(2_800));
    assert!(!s.recycle_armed());
    assert_eq!(s.poll_timeout(), Some(PING));
}

#[test]
fn revocation_and_drain_close_at_once() {
    for (ev, reason, code) in [
        (Event::Revoke, CloseReason::Revoked, 4403),
        (Event::Drain, CloseReason::Draining, 1001),
    ] {
        let mut s = long(limits());
        s.handle(ev, at(5));
        assert_eq!(drain(&mut s), closed(reason));
        assert_eq!(reason.code(), code);
        assert_eq!(s.poll_timeout(), None);
        // The first reason stays.
        s.handle(Event::Drain, at(6));
        s.handle_timeout(at(IDLE * 10), true);
        assert_eq!(drain(&mut s), vec![]);
        assert_eq!(s.close_reason(), Some(reason));
    }
}

#[test]
fn egress_alerts_and_closes_only_when_configured() {
    let mut s = long(limits());
    s.handle(Event::Egress(EgressVerdict::Ok), at(1));
    s.handle(Event::Egress(EgressVerdict::Alert { bytes: 9 }), at(2));
    assert_eq!(drain(&mut s), vec![Action::EgressAlert { bytes: 9 }]);
    s.handle(Event::Egress(EgressVerdict::Over), at(3));
    assert_eq!(drain(&mut s), vec![]);
    assert!(!s.is_closed());
    let closing = SocketLimits {
        egress_alert_close: true,
        ..limits()
    };
    let mut s = long(closing);
    s.handle(Event::Egress(EgressVerdict::Alert { bytes: 9 }), at(2));
    assert_eq!(
        drain(&mut s),
        vec![
            Action::EgressAlert { bytes: 9 },
            Action::Close(CloseReason::EgressLimit)
        ]
    );
    let mut s = long(closing);
    s.handle(Event::Egress(EgressVerdict::Over), at(2));
    assert_eq!(drain(&mut s), closed(CloseReason::EgressLimit));
}

#[test]
fn every_peer_event_maps_to_its_close() {
    let cases = [
        (Event::SchemaRejected, CloseReason::SchemaMismatch),
        (
            Event::ClientClosed { code: 4000 },
            CloseReason::ClientClosed(4000),
        ),
        (Event::ClientError(WireError::Lost), CloseReason::ClientLost),
        (
            Event::ClientError(WireError::InvalidUtf8),
            CloseReason::ClientError(WireError::InvalidUtf8),
        ),
        (Event::ClientSlow, CloseReason::ClientSlow),
        (
            Event::UpstreamClosed { code: 1005 },
            CloseReason::UpstreamClosed(1005),
        ),
        (
            Event::UpstreamError(WireError::Lost),
            CloseReason::UpstreamLost,
        ),
        (
            Event::UpstreamError(WireError::Protocol),
            CloseReason::UpstreamError(WireError::Protocol),
        ),
        (Event::UpstreamSlow, CloseReason::UpstreamSlow),
    ];
    for (ev, reason) in cases {
        let mut s = long(limits());
        s.handle(ev, at(1));
        assert_eq!(drain(&mut s), closed(reason), "{ev:?}");
    }
}

#[test]
fn actions_come_out_in_decision_order() {
    // The deadline falls on a keep-alive round: pings, then the close.
    let l = relaying();
    let mut s = session(
        SessionPolicy {
            leeway_ms: 0,
            ..policy()
        },
        l,
        PING as i64,
    );
    let _ = tick(&mut s, 0);
    assert_eq!(
        tick(&mut s, PING),
        vec![
            Action::PingUpstream,
            Action::PingClient,
            Action::Close(CloseReason::Expired)
        ]
    );
}

#[test]
fn a_session_stays_small() {
    // Every idle socket holds one: the timers, the rate and the flags are
    // packed (see TimerTable), in place of the loop's old locals.
    assert!(std::mem::size_of::<Session>() <= 184);
}
