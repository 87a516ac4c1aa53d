//! One admission decision, every path: each way a credential is turned into
//! rights (upgrade by bearer, subprotocol, cookie and query; ticket mint;
//! first-message auth; in-band refresh) is run against each refusal, and
//! every path must give the same reason. A path that skips a check shows
//! up here as the odd one out.

mod common;
use common::faults::{FaultProxy, Mode};
use common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const ADMIN: &str = "admin-token-0123456789-0123456789";
const TICKET_SECRET: &str = "ticket-secret-0123456789abcdef-0123456789";
const APP: &str = "http://app.test";

/// The paths a credential can take.
#[derive(Clone, Copy, Debug)]
enum Path {
    Bearer,
    Subprotocol,
    Cookie,
    Query,
    TicketMint,
    FirstMessage,
    Refresh,
}

const ALL: [Path; 7] = [
    Path::Bearer,
    Path::Subprotocol,
    Path::Cookie,
    Path::Query,
    Path::TicketMint,
    Path::FirstMessage,
    Path::Refresh,
];

/// The paths that open a socket (and so take a per-user slot).
const OPENING: [Path; 5] = [
    Path::Bearer,
    Path::Subprotocol,
    Path::Cookie,
    Path::Query,
    Path::FirstMessage,
];

/// Claims for `sub` with the configured audience, valid 10 minutes.
fn good(sub: &str) -> Value {
    let mut c = claims(sub, 600);
    c["aud"] = json!("api");
    c["jti"] = json!(format!("{sub}-{}", rand_suffix()));
    c
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Runs `token` (whose subject is `sub`) down `path`; the reason it was
/// refused with, or `None` when it was admitted.
async fn run(gw: &Gateway, path: Path, sub: &str, token: &str) -> Option<String> {
    let url = gw.url();
    let refused = |u: Upgrade| match u {
        Upgrade::Open(..) => None,
        Upgrade::Refused { body, .. } => Some(body["error"].as_str().unwrap_or("?").to_owned()),
    };
    match path {
        Path::Bearer => refused(bearer(&url, token).await),
        Path::Subprotocol => refused(
            upgrade(
                &url,
                &[("sec-websocket-protocol", &format!("jwt, {token}"))],
            )
            .await,
        ),
        Path::Cookie => refused(
            upgrade(
                &url,
                &[("origin", APP), ("cookie", &format!("session={token}"))],
            )
            .await,
        ),
        Path::Query => refused(upgrade(&format!("{url}?token={token}"), &[]).await),
        Path::TicketMint => {
            let r = mint(gw, token).await;
            (r.status != 201).then(|| r.json()["error"].as_str().unwrap_or("?").to_owned())
        }
        Path::FirstMessage => {
            let (mut ws, _) = upgrade(&url, &[]).await.open();
            let reply = auth_reply(&mut ws, token).await;
            (reply["type"] != "auth_ok").then(|| reply["reason"].as_str().unwrap_or("?").to_owned())
        }
        Path::Refresh => {
            // A live session of the same subject, opened with a fresh token.
            let (mut ws, _) = bearer(&url, &hs(&good(sub))).await.open();
            let reply = auth_reply(&mut ws, token).await;
            (reply["type"] != "auth_ok").then(|| reply["reason"].as_str().unwrap_or("?").to_owned())
        }
    }
}

async fn auth_reply(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    token: &str,
) -> Value {
    ws.send(Message::Text(
        json!({"type": "auth", "token": token}).to_string().into(),
    ))
    .await
    .expect("send");
    serde_json::from_str(&next_text(ws).await).expect("json")
}

async fn revoke(gw: &Gateway, target: Value) {
    let r = admin_post(gw, ADMIN, "/admin/v1/revoke", &target).await;
    assert_eq!(r.status, 200, "{r:?}");
}

/// Asserts that every path in `paths` refuses `token` with `want`.
async fn same_everywhere(
    gw: &Gateway,
    paths: &[Path],
    case: &str,
    sub: &str,
    token: &str,
    want: &str,
) {
    let mut got = Vec::new();
    for p in paths {
        got.push((*p, run(gw, *p, sub, token).await));
    }
    for (p, reason) in &got {
        assert_eq!(
            reason.as_deref(),
            Some(want),
            "{case}: {p:?} disagrees; all paths: {got:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_path_refuses_for_the_same_reason() {
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], 6379))).await;
    let cfg = base_config(&format!(
        "[store]\nurl = \"{}\"\nkey_prefix = \"{}\"\n[tickets]\nsecret_env = \"TEST_TICKET_SECRET\"\n\
         [limits]\nconnections_per_user = 2",
        proxy.redis_url(),
        unique_prefix("admission")
    ))
    .replace(
        "expiry_warning = \"1s\"",
        "expiry_warning = \"1s\"\naudience = [\"api\"]\nfirst_message = true",
    );
    let gw = Gateway::start_with_env(
        &cfg,
        &[
            ("WSGATE_ADMIN_TOKEN", ADMIN),
            ("TEST_TICKET_SECRET", TICKET_SECRET),
        ],
    );
    assert!(gw.wait_ready(Duration::from_secs(10)), "not ready");

    // Sanity: a good token is admitted by every path.
    for p in ALL {
        let sub = format!("ok-{p:?}");
        assert_eq!(run(&gw, p, &sub, &hs(&good(&sub))).await, None, "{p:?}");
    }

    // A bad signature: one token's header and claims, another's signature.
    let forged = {
        let mut parts: Vec<String> = hs(&good("sig")).split('.').map(str::to_owned).collect();
        parts[2] = hs(&good("other"))
            .rsplit('.')
            .next()
            .unwrap_or("")
            .to_owned();
        parts.join(".")
    };
    same_everywhere(&gw, &ALL, "bad signature", "sig", &forged, "bad_signature").await;

    // Expired (beyond the 1 s leeway).
    let mut c = good("old");
    c["iat"] = json!(now() - 600);
    c["exp"] = json!(now() - 60);
    same_everywhere(&gw, &ALL, "expired", "old", &hs(&c), "expired").await;

    // Another service's audience.
    let mut c = good("aud");
    c["aud"] = json!("other-api");
    same_everywhere(&gw, &ALL, "wrong audience", "aud", &hs(&c), "bad_audience").await;

    // Revoked by jti and by sid.
    for kind in ["jti", "sid"] {
        let sub = format!("rev-{kind}");
        let mut c = good(&sub);
        let value = format!("{sub}-value");
        c[kind] = json!(value);
        revoke(&gw, json!({kind: value})).await;
        same_everywhere(
            &gw,
            &ALL,
            &format!("revoked by {kind}"),
            &sub,
            &hs(&c),
            "revoked",
        )
        .await;
    }

    // Revoked by sub: tokens issued before the revocation. (A refresh
    // session of the subject is opened with a token issued after it.)
    let old = hs(&good("rev-sub"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    revoke(&gw, json!({"sub": "rev-sub"})).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    same_everywhere(&gw, &ALL, "revoked by sub", "rev-sub", &old, "revoked").await;

    // Over the per-user cap (2): every path that opens a socket refuses the
    // third; the mint and a refresh open none.
    let capped = hs(&good("cap"));
    let (_a, _) = bearer(&gw.url(), &capped).await.open();
    let (_b, _) = bearer(&gw.url(), &capped).await.open();
    same_everywhere(
        &gw,
        &OPENING,
        "over the cap",
        "cap",
        &capped,
        "too_many_connections",
    )
    .await;
    assert_eq!(run(&gw, Path::TicketMint, "cap", &capped).await, None);

    // Store down: past the staleness bound no path trusts the revocation
    // set, so none admits anyone.
    let (mut live, _) = bearer(&gw.url(), &hs(&good("live"))).await.open();
    proxy.set(Mode::Reset);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let down = hs(&good("down"));
    same_everywhere(
        &gw,
        &[
            Path::Bearer,
            Path::Subprotocol,
            Path::Cookie,
            Path::Query,
            Path::TicketMint,
            Path::FirstMessage,
        ],
        "store down",
        "down",
        &down,
        "store_unavailable",
    )
    .await;
    // A refresh on a socket that was already open.
    let reply = auth_reply(&mut live, &hs(&good("live"))).await;
    assert_eq!(reply["reason"], "store_unavailable", "{reply}");
}
