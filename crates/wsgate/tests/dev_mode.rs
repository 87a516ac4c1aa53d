//! Dev mode's `/dev/*` helpers behind the demo page: short-lived logins,
//! logout, revoke, the served client, and the Origin guard on the POSTs.
//! The page itself is exercised in a real browser by e2e/.

mod common;
use common::*;

fn dev() -> Gateway {
    Gateway::start_dev(&[
        ("WSGATE_SERVER__LISTEN", "127.0.0.1:0"),
        ("WSGATE_ADMIN__LISTEN", "127.0.0.1:0"),
    ])
    .0
}

async fn login(gw: &Gateway, body: &str) -> HttpResponse {
    let origin = format!("http://127.0.0.1:{}", gw.addr.port());
    http(
        gw.addr,
        "POST",
        "/dev/login",
        &[("origin", &origin), ("content-type", "application/json")],
        body,
    )
    .await
}

#[tokio::test]
async fn login_ttl_csrf_and_cookie() {
    let gw = dev();
    let r = login(&gw, r#"{"sub":"tess","roles":["user"],"ttl":5}"#).await;
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    let exp = v["exp"].as_i64().expect("exp");
    assert!((exp - now() - 5).abs() <= 1, "exp {exp} is now + 5 s");
    assert_eq!(v["sub"], "tess");
    let token = v["token"].as_str().expect("token");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').nth(1).expect("payload"),
        )
        .expect("b64"),
    )
    .expect("claims");
    assert_eq!(
        claims["csrf"], v["csrf"],
        "the csrf returned is the token's claim"
    );
    assert_eq!(claims["sid"], v["sid"]);
    assert_eq!(claims["exp"], v["exp"]);
    let cookie = r.header("set-cookie").expect("cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert!(cookie.contains("Max-Age=5"), "{cookie}");
    // The token works, and the cookie can mint a ticket with the csrf value.
    let (_ws, _) = bearer(&gw.url(), token).await.open();
    let origin = format!("http://127.0.0.1:{}", gw.addr.port());
    let pair = format!("session={token}");
    let t = http(
        gw.addr,
        "POST",
        "/v1/tickets",
        &[
            ("origin", &origin),
            ("cookie", &pair),
            ("x-csrf-token", v["csrf"].as_str().expect("csrf")),
        ],
        "",
    )
    .await;
    assert_eq!(t.status, 201, "{t:?}");
    // Out-of-range ttl and unknown fields are refused.
    for body in [
        r#"{"sub":"a","ttl":0}"#,
        r#"{"sub":"a","ttl":3601}"#,
        r#"{"sub":"a","admin":true}"#,
    ] {
        assert_eq!(login(&gw, body).await.status, 400, "{body}");
    }
    // Default: an hour.
    let v = login(&gw, r#"{"sub":"a"}"#).await.json();
    assert!((v["exp"].as_i64().expect("exp") - now() - 3600).abs() <= 1);
}

#[tokio::test]
async fn posts_refuse_a_foreign_origin() {
    let gw = dev();
    for path in ["/dev/login", "/dev/logout", "/dev/revoke"] {
        let r = http(
            gw.addr,
            "POST",
            path,
            &[("origin", "http://evil.test")],
            r#"{"sub":"victim"}"#,
        )
        .await;
        assert_eq!(r.status, 403, "{path}: {r:?}");
        assert_eq!(r.json()["error"], "origin_not_allowed");
        assert!(r.header("set-cookie").is_none());
    }
    // No Origin (a CLI client) is fine.
    let r = http(gw.addr, "POST", "/dev/login", &[], r#"{"sub":"cli"}"#).await;
    assert_eq!(r.status, 200);
    // GETs are not logins.
    let r = http(gw.addr, "GET", "/dev/login", &[], "").await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn revoke_closes_4403_and_logout_clears_the_cookie() {
    let gw = dev();
    let v = login(&gw, r#"{"sub":"rob"}"#).await.json();
    let (mut ws, _) = bearer(&gw.url(), v["token"].as_str().expect("token"))
        .await
        .open();
    let origin = format!("http://127.0.0.1:{}", gw.addr.port());
    let r = http(
        gw.addr,
        "POST",
        "/dev/revoke",
        &[("origin", &origin)],
        r#"{"sub":"rob"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["closed"], 1);
    assert_eq!(
        close_code(&mut ws, std::time::Duration::from_secs(5))
            .await
            .0,
        4403
    );
    let r = http(gw.addr, "POST", "/dev/revoke", &[("origin", &origin)], "{}").await;
    assert_eq!(r.status, 400);
    let r = http(gw.addr, "POST", "/dev/logout", &[("origin", &origin)], "").await;
    assert_eq!(r.status, 200);
    let cookie = r.header("set-cookie").expect("cookie");
    assert!(
        cookie.starts_with("session=;") && cookie.contains("Max-Age=0"),
        "{cookie}"
    );
}

#[tokio::test]
async fn serves_the_compiled_client() {
    let gw = dev();
    let r = http(gw.addr, "GET", "/dev/wsgate.js", &[], "").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/javascript")));
    assert!(r.body.contains("export class WsgateClient"));
    let r = http(gw.addr, "GET", "/dev/wsgate.d.ts", &[], "").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("export interface WsgateOptions"));
    let page = http(gw.addr, "GET", "/", &[], "").await;
    assert!(page.body.contains(r#"from "/dev/wsgate.js""#));
    assert_eq!(http(gw.addr, "GET", "/dev/nope", &[], "").await.status, 404);
}
