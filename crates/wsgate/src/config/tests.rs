use super::*;
use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header, Validation};
use std::io::Write;
use std::time::Duration;
use toml::Value;
use wsgate_core::verify::parse_alg;
use wsgate_core::Transport;

const HS32: &str = "0123456789abcdef0123456789abcdef";
const KEY: &str = "[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"WSGATE_JWT_SECRET\"\n";
const ORIGINS: &str = "[origins]\nallow = [\"https://app.example\"]\n";

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn base_env() -> Vec<(String, String)> {
    env(&[("WSGATE_JWT_SECRET", HS32)])
}

fn with_env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut e = base_env();
    e.extend(env(extra));
    e
}

fn load_str(text: &str, env_vars: &[(String, String)]) -> Result<Config, Vec<String>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wsgate.toml");
    std::fs::write(&path, text).expect("write config");
    Config::load(&path, env_vars)
}

fn ok(text: &str, env_vars: &[(String, String)]) -> Config {
    match load_str(text, env_vars) {
        Ok(c) => c,
        Err(p) => panic!("expected a valid config, got:\n{}", p.join("\n")),
    }
}

fn errs(text: &str, env_vars: &[(String, String)]) -> Vec<String> {
    match load_str(text, env_vars) {
        Ok(_) => panic!("expected problems for:\n{text}"),
        Err(p) => p,
    }
}

#[track_caller]
fn assert_has(problems: &[String], needle: &str) {
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "no problem contains {needle:?}:\n{}",
        problems.join("\n")
    );
}

fn secret_file(contents: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("tempfile");
    f.write_all(contents).expect("write");
    f
}

fn key_toml(alg: &str, source: &str) -> String {
    format!("{ORIGINS}[[auth.keys]]\nalg = \"{alg}\"\n{source}\n")
}

fn pub_key(alg: &str, file: &str) -> String {
    key_toml(
        alg,
        &format!("public_key_file = {:?}", data(file).display().to_string()),
    )
}

#[test]
fn defaults() {
    let c = ok(KEY, &base_env());
    assert_eq!(c.server.listen, "127.0.0.1:8080".parse().expect("addr"));
    assert_eq!(c.server.path, "/ws");
    assert_eq!(c.server.handshake_timeout, Duration::from_secs(5));
    assert_eq!(c.server.max_header_bytes, 16384);
    assert!(c.server.tls.is_none());
    assert!(!c.server.proxy_protocol);
    assert!(!c.server.proxy_protocol_forwarded);
    assert_eq!(c.admin.listen, "127.0.0.1:9091".parse().expect("addr"));
    assert!(c.admin.token.is_none());
    assert_eq!(c.admin.token_env.as_deref(), Some("WSGATE_ADMIN_TOKEN"));
    let a = &c.auth;
    assert_eq!(
        a.transports,
        vec![
            Transport::Bearer,
            Transport::Subprotocol,
            Transport::Ticket,
            Transport::Cookie
        ]
    );
    assert_eq!(a.cookie_name, "session");
    assert!(!a.cookie_csrf);
    assert_eq!(a.ticket_param, "ticket");
    assert_eq!(a.query_param, "token");
    assert_eq!(a.subprotocol, "jwt");
    assert_eq!(a.leeway, Duration::from_secs(5));
    assert_eq!(a.issuer, None);
    assert!(a.audience.is_empty());
    assert_eq!(a.max_token_bytes, 8192);
    assert!(!a.first_message);
    assert_eq!(a.first_message_timeout, Duration::from_secs(5));
    assert!(a.refresh);
    assert_eq!(a.expiry_warning, Duration::from_secs(30));
    assert_eq!(a.max_session, None);
    assert_eq!(a.keys.len(), 1);
    assert_eq!(a.keys[0].alg, Some(Algorithm::HS256));
    assert!(c.tickets.enabled);
    assert_eq!(c.tickets.ttl, Duration::from_secs(30));
    assert_eq!(c.tickets.audience, "wsgate-ticket");
    assert!(c.tickets.secret.is_none());
    assert!(c.origins.allow.is_empty());
    assert!(!c.origins.allow_missing);
    let l = &c.limits;
    assert_eq!(
        (
            l.handshakes_per_ip_per_sec,
            l.handshake_burst_per_ip,
            l.connections_per_user,
            l.max_connections,
            l.max_message_bytes,
            l.messages_per_sec
        ),
        (20, 40, 10, 100_000, 1_048_576, 100)
    );
    assert_eq!(l.idle_timeout, Duration::from_secs(120));
    assert_eq!(l.ping_interval, Duration::from_secs(30));
    assert_eq!(
        (
            l.max_unauthenticated,
            l.pending_handshakes_per_ip,
            l.outgoing_queue
        ),
        (1000, 64, 256)
    );
    assert_eq!(l.block_after_refusals, 0, "kernel blocking is opt-in");
    assert_eq!(l.block_duration, Duration::from_secs(60));
    assert_eq!(c.store.url, "memory://");
    assert!(c.store.is_memory());
    assert_eq!(c.store.key_prefix, "wsgate:");
    assert_eq!(c.backend.kind, BackendKind::Hub);
    assert_eq!(c.backend.upstream, None);
    assert_eq!(c.backend.connect_timeout, Duration::from_secs(5));
    assert!(c.backend.identity_secret.is_none());
    assert!(c.backend.forward_client_headers.is_empty());
    assert!(c.trusted_proxies.cidrs.is_empty());
    assert!(c.hub.grants.is_empty());
    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.format, LogFormat::Json);
    assert!(!c.dev_mode);
    // Two warnings at least: no admin token, no ticket secret.
    let w = c.warnings();
    assert!(w
        .iter()
        .any(|w| w.contains("WSGATE_ADMIN_TOKEN is not set")));
    assert!(w
        .iter()
        .any(|w| w.contains("WSGATE_TICKET_SECRET is not set")));
}

const EXAMPLE_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:8080"
path = "/ws"                      # the WebSocket endpoint
handshake_timeout = "5s"          # whole request head must arrive within this
max_header_bytes = 16384          # larger request heads are answered 431

[admin]
listen = "127.0.0.1:9091"         # /metrics and /admin/v1/*; never public by default
token_env = "WSGATE_ADMIN_TOKEN"  # admin API needs Authorization: Bearer <this>

[auth]
transports = ["bearer", "subprotocol", "ticket", "cookie"]  # enabled, in precedence order
cookie_name = "session"
cookie_csrf = false
ticket_param = "ticket"
query_param = "token"
subprotocol = "jwt"
leeway = "5s"
issuer = "https://auth.example"
audience = ["api"]
max_token_bytes = 8192
first_message = false
first_message_timeout = "5s"
refresh = true
expiry_warning = "30s"
max_session = "0s"

[[auth.keys]]
alg = "HS256"
secret_env = "WSGATE_JWT_SECRET"
# kid = "2026-11"

[tickets]
enabled = true
ttl = "30s"
audience = "wsgate-ticket"
secret_env = "WSGATE_TICKET_SECRET"

[origins]
allow = ["https://app.example"]
allow_missing = false

[limits]
handshakes_per_ip_per_sec = 20
handshake_burst_per_ip = 40
connections_per_user = 10
max_connections = 100000
max_message_bytes = 1048576
messages_per_sec = 100
idle_timeout = "120s"
ping_interval = "30s"

[store]
url = "memory://"

[backend]
kind = "hub"
upstream = "ws://127.0.0.1:9000/ws"

[trusted_proxies]
cidrs = []

[[hub.grants]]
subscribe = ["public:*", "user:{sub}"]
publish = ["chat:*"]
[[hub.grants]]
claim = "roles"
value = "admin"
subscribe = ["*"]
publish = ["*"]
"#;

#[test]
fn spec_example_parses() {
    let ticket = "t".repeat(40);
    let e = with_env(&[
        (
            "WSGATE_ADMIN_TOKEN",
            "an-admin-token-of-some-length-0123456789",
        ),
        ("WSGATE_TICKET_SECRET", &ticket),
    ]);
    let c = ok(EXAMPLE_CONFIG, &e);
    assert_eq!(c.auth.issuer.as_deref(), Some("https://auth.example"));
    assert_eq!(c.auth.audience, vec!["api".to_string()]);
    assert_eq!(
        c.admin.token.as_ref().map(Secret::expose),
        Some(&b"an-admin-token-of-some-length-0123456789"[..])
    );
    assert_eq!(
        c.tickets.secret.as_ref().map(Secret::expose),
        Some(ticket.as_bytes())
    );
    assert_eq!(
        c.backend.upstream.as_deref(),
        Some("ws://127.0.0.1:9000/ws")
    );
    assert_eq!(c.hub.grants.len(), 2);
    assert_eq!(c.hub.grants[1].claim.as_deref(), Some("roles"));
    assert_eq!(c.hub.grants[1].value.as_deref(), Some("admin"));
    assert_eq!(c.hub.grants[0].subscribe, vec!["public:*", "user:{sub}"]);
    assert!(c.origins.policy().allows("https://app.example"));
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    // The redacted output is itself TOML.
    let text = c.redacted();
    assert!(text.parse::<Table>().is_ok(), "{text}");
}

#[test]
fn unknown_keys_are_named() {
    let p = errs(
        &format!("{KEY}[server]\nlisten = \"127.0.0.1:1\"\nlisen = 5\n"),
        &base_env(),
    );
    assert_has(&p, "server.lisen: unknown key");
    let p = errs(&format!("{KEY}[server.tls]\ncert = \"x\"\n"), &base_env());
    assert_has(&p, "server.tls.cert: unknown key");
    let p = errs(
        &format!("{KEY}[[auth.keys]]\nalg = \"HS256\"\nsecret = \"inline\"\n"),
        &base_env(),
    );
    assert_has(&p, "auth.keys[1].secret: unknown key");
    let p = errs(&format!("{KEY}[serverz]\nlisten = 1\n"), &base_env());
    assert_has(&p, "serverz: unknown section");
    let p = errs(&format!("top = 1\n{KEY}"), &base_env());
    assert_has(&p, "top: unknown key");
}

#[test]
fn syntax_error_is_one_line() {
    let p = errs("[server\nlisten = 1\n", &base_env());
    assert_eq!(p.len(), 1);
    assert!(p[0].contains("line 1"), "{p:?}");
    assert!(!p[0].contains('\n'));
}

#[test]
fn type_errors_name_the_key() {
    let p = errs(
        &format!("{KEY}[limits]\nmax_connections = \"many\"\n"),
        &base_env(),
    );
    assert_has(&p, "limits.max_connections:");
    let p = errs(
        &format!("{KEY}[server]\nhandshake_timeout = \"5 parsecs\"\n"),
        &base_env(),
    );
    assert_has(&p, "server.handshake_timeout: invalid duration");
    let p = errs(
        &format!("{KEY}[server]\nlisten = \"localhost:80\"\n"),
        &base_env(),
    );
    assert_has(&p, "server.listen: invalid address");
    let p = errs(&format!("{KEY}[backend]\nkind = \"proxy\"\n"), &base_env());
    assert_has(&p, "backend.kind: unknown value \"proxy\"");
}

#[test]
fn env_overrides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("tls.crt");
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .expect("write cert");
    let cert_s = cert.display().to_string();
    let key_s = data("rsa.pem").display().to_string();
    let e = with_env(&[
        ("WSGATE_SERVER__LISTEN", "0.0.0.0:9000"),
        ("WSGATE_AUTH__COOKIE_CSRF", "true"),
        ("WSGATE_AUTH__TRANSPORTS", r#"["bearer","cookie"]"#),
        ("WSGATE_LIMITS__MAX_CONNECTIONS", "42"),
        ("WSGATE_AUTH__ISSUER", "https://idp.example"),
        ("WSGATE_SERVER__TLS__CERT_FILE", &cert_s),
        ("WSGATE_SERVER__TLS__KEY_FILE", &key_s),
        // Not overrides: a single underscore, or another prefix.
        ("WSGATE_SOMETHING_ELSE", "x"),
        ("OTHER__THING", "y"),
    ]);
    let c = ok(&format!("{KEY}{ORIGINS}"), &e);
    assert_eq!(c.server.listen, "0.0.0.0:9000".parse().expect("addr"));
    assert!(c.auth.cookie_csrf);
    assert_eq!(
        c.auth.transports,
        vec![Transport::Bearer, Transport::Cookie]
    );
    assert_eq!(c.limits.max_connections, 42);
    assert_eq!(c.auth.issuer.as_deref(), Some("https://idp.example"));
    let tls = c.server.tls.as_ref().expect("tls from env");
    assert_eq!(tls.cert_file, cert);
    assert_eq!(tls.key_file, data("rsa.pem"));
}

#[test]
fn env_override_of_unknown_key_is_an_error() {
    let p = errs(KEY, &with_env(&[("WSGATE_SERVER__NOPE", "1")]));
    assert_has(&p, "server.nope: unknown key");
    assert_has(&p, "WSGATE_SERVER__NOPE");
    let p = errs(KEY, &with_env(&[("WSGATE_NOSECTION__X", "1")]));
    assert_has(&p, "nosection: unknown section");
    let p = errs(KEY, &with_env(&[("WSGATE_SERVER____X", "1")]));
    assert_has(&p, "WSGATE_SERVER____X: empty key");
    // Only one tls key: the table is incomplete.
    let p = errs(KEY, &with_env(&[("WSGATE_SERVER__TLS__CERT_FILE", "/x")]));
    assert_has(&p, "server.tls.key_file: required");
}

#[test]
fn env_override_indexes_auth_keys() {
    let rs = data("rsa.pub.pem").display().to_string();
    let e = with_env(&[
        ("OTHER_SECRET", "k".repeat(48).as_str()),
        ("WSGATE_AUTH__KEYS__0__SECRET_ENV", "OTHER_SECRET"),
        ("WSGATE_AUTH__KEYS__0__ALG", "HS384"),
        // Index == len appends an entry.
        ("WSGATE_AUTH__KEYS__1__ALG", "RS256"),
        ("WSGATE_AUTH__KEYS__1__PUBLIC_KEY_FILE", rs.as_str()),
    ]);
    let c = ok(KEY, &e);
    assert_eq!(c.auth.keys.len(), 2);
    assert_eq!(c.auth.keys[0].alg, Some(Algorithm::HS384));
    match &c.auth.keys[0].source {
        KeySource::Secret(s) => assert_eq!(s.source(), &SecretSource::Env("OTHER_SECRET".into())),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(c.auth.keys[1].alg, Some(Algorithm::RS256));
    let p = errs(KEY, &with_env(&[("WSGATE_AUTH__KEYS__5__ALG", "HS256")]));
    assert_has(&p, "index out of range");
    let p = errs(KEY, &with_env(&[("WSGATE_AUTH__KEYS__ALG", "HS256")]));
    assert_has(&p, "auth.keys is a list");
}

#[test]
fn override_values_parse_as_toml_or_string() {
    assert_eq!(overrides::parse_value("true"), Value::Boolean(true));
    assert_eq!(overrides::parse_value("42"), Value::Integer(42));
    assert_eq!(
        overrides::parse_value("127.0.0.1:80"),
        Value::String("127.0.0.1:80".into())
    );
    assert_eq!(
        overrides::parse_value("2026-01-01"),
        Value::String("2026-01-01".into())
    );
    assert_eq!(
        overrides::parse_value("1\nextra = 2"),
        Value::String("1\nextra = 2".into())
    );
    assert!(overrides::parse_value(r#"["a", "b"]"#).is_array());
}

#[test]
fn secrets_from_env_and_file() {
    let f = secret_file(format!("{HS32}\n").as_bytes());
    let text = key_toml(
        "HS256",
        &format!("secret_file = {:?}", f.path().display().to_string()),
    );
    let c = ok(&text, &[]);
    match &c.auth.keys[0].source {
        KeySource::Secret(s) => {
            assert_eq!(
                s.expose(),
                HS32.as_bytes(),
                "one trailing newline is trimmed"
            );
            assert_eq!(s.source(), &SecretSource::File(f.path().to_path_buf()));
        }
        other => panic!("unexpected {other:?}"),
    }
    let c = ok(KEY, &base_env());
    match &c.auth.keys[0].source {
        KeySource::Secret(s) => assert_eq!(s.expose(), HS32.as_bytes()),
        other => panic!("unexpected {other:?}"),
    }
    // Admin token and ticket secret from files.
    let tok = secret_file(b"admin-token-admin-token-admin-token\r\n");
    let tick = secret_file(&[7u8; 32]);
    let text = format!(
        "{KEY}[admin]\ntoken_file = {:?}\n[tickets]\nsecret_file = {:?}\n",
        tok.path().display().to_string(),
        tick.path().display().to_string()
    );
    let c = ok(&text, &base_env());
    assert_eq!(
        c.admin.token.as_ref().map(Secret::expose),
        Some(&b"admin-token-admin-token-admin-token"[..])
    );
    assert_eq!(c.admin.token_env, None);
    assert_eq!(c.tickets.secret.as_ref().map(Secret::len), Some(32));
}

#[test]
fn missing_secret_sources() {
    let p = errs(KEY, &[]);
    assert_has(
        &p,
        "auth.keys[0].secret_env: environment variable WSGATE_JWT_SECRET is not set",
    );
    let p = errs(KEY, &env(&[("WSGATE_JWT_SECRET", "")]));
    assert_has(&p, "WSGATE_JWT_SECRET is empty");
    let p = errs(
        &key_toml("HS256", "secret_file = \"/nonexistent/secret\""),
        &[],
    );
    assert_has(
        &p,
        "auth.keys[0].secret_file: cannot read /nonexistent/secret",
    );
    let empty = secret_file(b"\n");
    let p = errs(
        &key_toml(
            "HS256",
            &format!("secret_file = {:?}", empty.path().display().to_string()),
        ),
        &[],
    );
    assert_has(&p, "is empty");
    let p = errs(&format!("{ORIGINS}[[auth.keys]]\nalg = \"HS256\"\n"), &[]);
    assert_has(&p, "auth.keys[0]: no key source");
    let p = errs(ORIGINS, &[]);
    assert_has(&p, "auth.keys: at least one");
    let p = errs(
        &format!("{KEY}[backend]\nidentity_secret_env = \"NOPE_ID\"\n"),
        &base_env(),
    );
    assert_has(
        &p,
        "backend.identity_secret_env: environment variable NOPE_ID is not set",
    );
}

#[test]
fn both_sources_given() {
    let f = secret_file(HS32.as_bytes());
    let p = errs(
        &key_toml(
            "HS256",
            &format!(
                "secret_env = \"WSGATE_JWT_SECRET\"\nsecret_file = {:?}",
                f.path().display().to_string()
            ),
        ),
        &base_env(),
    );
    assert_has(&p, "auth.keys[0]: secret_env and secret_file are both set");
    let p = errs(
        &key_toml(
            "RS256",
            &format!(
                "public_key_file = {:?}\njwks_url = \"https://idp/jwks\"",
                data("rsa.pub.pem").display().to_string()
            ),
        ),
        &[],
    );
    assert_has(&p, "public_key_file and jwks_url are both set");
    let p = errs(
        &format!(
            "{KEY}[admin]\ntoken_env = \"T\"\ntoken_file = {:?}\n",
            f.path().display().to_string()
        ),
        &base_env(),
    );
    assert_has(&p, "admin.token_env and admin.token_file are both set");
}

#[test]
fn short_hs_secrets() {
    for (alg, min) in [("HS256", 32), ("HS384", 48), ("HS512", 64)] {
        let text = key_toml(alg, "secret_env = \"S\"");
        let short = "x".repeat(min - 1);
        let p = errs(&text, &env(&[("S", &short)]));
        assert_has(
            &p,
            &format!(
                "auth.keys[0]: the {alg} secret is {} bytes; at least {min}",
                min - 1
            ),
        );
        assert!(
            !p.iter().any(|l| l.contains(&short)),
            "secret leaked: {p:?}"
        );
        let exact = "x".repeat(min);
        let c = ok(&text, &env(&[("S", &exact)]));
        assert!(c.auth.keys[0].decoding_key().is_ok());
    }
}

fn sign_with(alg: Algorithm, private: &str) -> String {
    let pem = std::fs::read(data(private)).expect("read private key");
    let key = match alg.family() {
        AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(&pem),
        AlgorithmFamily::Ec => EncodingKey::from_ec_pem(&pem),
        AlgorithmFamily::Ed => EncodingKey::from_ed_pem(&pem),
        AlgorithmFamily::Hmac => panic!("not asymmetric"),
    }
    .expect("encoding key");
    let claims = serde_json::json!({"sub": "a", "exp": 4_000_000_000u64});
    jsonwebtoken::encode(&Header::new(alg), &claims, &key).expect("sign")
}

#[test]
fn each_alg_family_with_real_pem() {
    for (alg, public, private) in [
        ("RS256", "rsa.pub.pem", "rsa.pem"),
        ("RS512", "rsa.pub.pem", "rsa.pem"),
        ("PS384", "rsa.pub.pem", "rsa.pem"),
        ("ES256", "ec256.pub.pem", "ec256.pem"),
        ("ES384", "ec384.pub.pem", "ec384.pem"),
        ("EdDSA", "ed25519.pub.pem", "ed25519.pem"),
    ] {
        let c = ok(&pub_key(alg, public), &[]);
        let k = &c.auth.keys[0];
        let a = parse_alg(alg).expect("alg");
        assert_eq!(k.alg, Some(a));
        assert!(matches!(&k.source, KeySource::PublicKeyPem { path, .. } if *path == data(public)));
        let dk = k.decoding_key().expect("decoding key");
        // The key really verifies a token signed by its private half.
        let token = sign_with(a, private);
        let mut v = Validation::new(a);
        v.validate_aud = false;
        jsonwebtoken::decode::<serde_json::Value>(&token, &dk, &v)
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
    }
}

#[test]
fn key_family_mismatches() {
    let cases = [
        (
            "ES256",
            "ec384.pub.pem",
            "is a key on P-384, but ES256 needs P-256",
        ),
        (
            "ES384",
            "ec256.pub.pem",
            "is a key on P-256, but ES384 needs P-384",
        ),
        ("RS256", "ec256.pub.pem", "is not an RSA public key"),
        ("ES256", "rsa.pub.pem", "is not an EC public key"),
        ("EdDSA", "rsa.pub.pem", "is not an Ed25519 public key"),
        ("RS256", "rsa.pem", "is a private key"),
        ("EdDSA", "README.md", "not a PEM file"),
        ("HS256", "rsa.pub.pem", "uses a shared secret"),
        // Loaded, it would refuse every token bad_signature.
        (
            "RS256",
            "rsa1024.pub.pem",
            "is a 1024-bit RSA key: RS256 needs 2048 to 8192 bits (RFC 7518 3.3)",
        ),
        (
            "PS512",
            "rsa1024.pub.pem",
            "1024-bit RSA key: PS512 needs 2048 to 8192",
        ),
    ];
    for (alg, file, needle) in cases {
        let p = errs(&pub_key(alg, file), &[]);
        assert_has(&p, needle);
        assert_has(&p, "auth.keys[0]");
    }
    let p = errs(
        &key_toml("RS256", "secret_env = \"S\""),
        &env(&[("S", HS32)]),
    );
    assert_has(
        &p,
        "RS256 is an asymmetric algorithm and needs public_key_file",
    );
    let p = errs(
        &key_toml("none", "secret_env = \"S\""),
        &env(&[("S", HS32)]),
    );
    assert_has(&p, "auth.keys[0].alg: unknown algorithm \"none\"");
    let p = errs(
        &format!(
            "{ORIGINS}[[auth.keys]]\npublic_key_file = {:?}\n",
            data("rsa.pub.pem").display().to_string()
        ),
        &[],
    );
    assert_has(&p, "auth.keys[0].alg: required");
}

#[test]
fn jwks_sources() {
    let c = ok(
        &format!("{ORIGINS}[[auth.keys]]\njwks_url = \"https://idp.example/jwks.json\"\n"),
        &[],
    );
    assert_eq!(c.auth.keys[0].alg, None);
    assert!(matches!(c.auth.keys[0].source, KeySource::JwksUrl(_)));
    assert_eq!(
        c.auth.keys[0].decoding_key().err().as_deref(),
        Some("jwks keys are loaded by the key manager")
    );
    for local in [
        "http://127.0.0.1:8000/j",
        "http://localhost/j",
        "http://[::1]:9/j",
    ] {
        ok(
            &format!("{ORIGINS}[[auth.keys]]\njwks_url = {local:?}\n"),
            &[],
        );
    }
    let p = errs(
        &format!("{ORIGINS}[[auth.keys]]\njwks_url = \"http://idp.example/jwks\"\n"),
        &[],
    );
    assert_has(
        &p,
        "auth.keys[0].jwks_url: \"http://idp.example/jwks\" must use https://",
    );
    let set = secret_file(br#"{"keys":[{"kty":"oct","k":"AAAA"}]}"#);
    let c = ok(
        &format!(
            "{ORIGINS}[[auth.keys]]\nalg = \"RS256\"\njwks_file = {:?}\n",
            set.path().display().to_string()
        ),
        &[],
    );
    assert!(matches!(c.auth.keys[0].source, KeySource::JwksFile(_)));
    let bad = secret_file(b"{}");
    let p = errs(
        &format!(
            "{ORIGINS}[[auth.keys]]\njwks_file = {:?}\n",
            bad.path().display().to_string()
        ),
        &[],
    );
    assert_has(&p, "is not a JWK set");
}

#[test]
fn ticket_rules() {
    let p = errs(&format!("{KEY}[tickets]\nttl = \"90s\"\n"), &base_env());
    assert_has(&p, "tickets.ttl: 1m 30s is longer than the 60s maximum");
    let p = errs(&format!("{KEY}[tickets]\nttl = \"0s\"\n"), &base_env());
    assert_has(&p, "tickets.ttl: must be greater than 0");
    ok(&format!("{KEY}[tickets]\nttl = \"60s\"\n"), &base_env());
    // Redis store: every node must share the secret.
    let redis = format!("{KEY}[store]\nurl = \"redis://127.0.0.1:6379/0\"\n");
    let p = errs(&redis, &base_env());
    assert_has(
        &p,
        "tickets: no ticket secret (WSGATE_TICKET_SECRET is not set)",
    );
    let t40 = "t".repeat(40);
    let c = ok(&redis, &with_env(&[("WSGATE_TICKET_SECRET", &t40)]));
    assert!(c.tickets.secret.is_some());
    // Tickets disabled: no secret needed.
    ok(&format!("{redis}[tickets]\nenabled = false\n"), &base_env());
    let p = errs(KEY, &with_env(&[("WSGATE_TICKET_SECRET", "short")]));
    assert_has(&p, "tickets.secret: the ticket secret is 5 bytes");
    let p = errs(KEY, &with_env(&[("WSGATE_TICKET_SECRET", HS32)]));
    assert_has(&p, "tickets.secret: is the same secret as auth.keys[0]");
    let p = errs(
        &format!("{KEY}[auth]\naudience = \"wsgate-ticket\"\n"),
        &base_env(),
    );
    assert_has(&p, "auth.audience: contains the ticket audience");
}

#[test]
fn transports_rules() {
    let p = errs(
        &format!(
            "{KEY}[auth]\ntransports = [\"bearer\", \"bearer\", \"carrier\", \"first_message\"]\n"
        ),
        &base_env(),
    );
    assert_has(&p, "auth.transports: \"bearer\" is listed twice");
    assert_has(&p, "auth.transports: unknown transport \"carrier\"");
    assert_has(&p, "auth.first_message = true");
    let p = errs(&format!("{KEY}[auth]\ntransports = []\n"), &base_env());
    assert_has(&p, "auth.transports: is empty");
    let c = ok(
        &format!("{KEY}[auth]\ntransports = []\nfirst_message = true\n"),
        &base_env(),
    );
    assert!(c.auth.transports.is_empty());
    let c = ok(
        &format!("{KEY}{ORIGINS}[auth]\ntransports = [\"query\", \"bearer\"]\n"),
        &base_env(),
    );
    assert_eq!(c.auth.transports, vec![Transport::Query, Transport::Bearer]);
    assert!(c.warnings().iter().any(|w| w.contains("\"query\"")));
}

#[test]
fn admin_listener_rules() {
    let p = errs(
        &format!("{KEY}[admin]\nlisten = \"0.0.0.0:9091\"\n"),
        &base_env(),
    );
    assert_has(
        &p,
        "admin.listen: 0.0.0.0:9091 is not a loopback address, so an admin token is required",
    );
    assert_has(&p, "WSGATE_ADMIN_TOKEN is not set");
    // Off loopback: a token is not enough, the listener needs TLS.
    let token = with_env(&[("WSGATE_ADMIN_TOKEN", "a-long-enough-admin-token-0123456789")]);
    let p = errs(
        &format!("{KEY}[admin]\nlisten = \"0.0.0.0:9091\"\n"),
        &token,
    );
    assert_has(
        &p,
        "admin.listen: 0.0.0.0:9091 is not a loopback address, so [admin.tls] is required",
    );
    assert_eq!(p.len(), 1, "{p:?}");
    for listen in ["[::]:9091", "10.1.2.3:9091", "[::ffff:10.1.2.3]:9091"] {
        let p = errs(&format!("{KEY}[admin]\nlisten = \"{listen}\"\n"), &token);
        assert_has(&p, "so [admin.tls] is required");
    }
    // The same through the environment says so.
    let mut via_env = token.clone();
    via_env.push(("WSGATE_ADMIN__LISTEN".into(), "0.0.0.0:9091".into()));
    assert_has(&errs(KEY, &via_env), "WSGATE_ADMIN__LISTEN");
    // Loopback needs neither, in any spelling.
    for listen in [
        "127.0.0.1:9091",
        "127.9.9.9:9091",
        "[::1]:9091",
        "[::ffff:127.0.0.1]:9091",
    ] {
        let c = ok(&format!("{KEY}[admin]\nlisten = \"{listen}\"\n"), &token);
        assert!(!c.warnings().iter().any(|w| w.contains("allow_plaintext")));
    }
    // With [admin.tls]: fine.
    let text = format!(
        "{KEY}[admin]\nlisten = \"0.0.0.0:9091\"\n[admin.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        data("ec256.pem").display().to_string(),
        data("ec256.pem").display().to_string()
    );
    let p = load_str(&text, &token).err().unwrap_or_default();
    assert!(
        !p.iter().any(|p| p.contains("[admin.tls] is required")),
        "{p:?}"
    );
    // The explicit opt-out: accepted, loudly.
    let c = ok(
        &format!("{KEY}[admin]\nlisten = \"0.0.0.0:9091\"\nallow_plaintext = true\n"),
        &token,
    );
    assert!(c.admin.token.is_some() && c.admin.allow_plaintext);
    assert!(
        c.warnings()
            .iter()
            .any(|w| w.contains("admin.allow_plaintext = true") && w.contains("clear text")),
        "{:?}",
        c.warnings()
    );
    assert!(c.redacted().contains("allow_plaintext = true"));
    // ... but it does not waive the token.
    let p = errs(
        &format!("{KEY}[admin]\nlisten = \"0.0.0.0:9091\"\nallow_plaintext = true\n"),
        &base_env(),
    );
    assert_has(&p, "so an admin token is required");
    let p = errs(
        &format!("{KEY}[admin]\nlisten = \"127.0.0.1:8080\"\n"),
        &base_env(),
    );
    assert_has(&p, "admin.listen: 127.0.0.1:8080 is also server.listen");
}

/// Issue 28: a 1-byte admin token was accepted and guessed in 94 tries.
#[test]
fn admin_tokens_under_32_bytes_are_refused() {
    for (len, good) in [(1, false), (16, false), (31, false), (32, true), (64, true)] {
        let tok = "Q".repeat(len);
        let r = load_str(KEY, &with_env(&[("WSGATE_ADMIN_TOKEN", &tok)]));
        match (r, good) {
            (Ok(_), true) => {}
            (Err(p), false) => {
                assert_has(
                    &p,
                    &format!(
                        "admin.token: the admin token ($WSGATE_ADMIN_TOKEN) is {len} bytes long; \
                         at least 32 are required"
                    ),
                );
                assert!(!p.iter().any(|l| l.contains(&tok)), "{p:?}");
            }
            (r, _) => panic!("{len} bytes: {:?}", r.map(|_| ())),
        }
    }
    // From a file, too (a trailing newline is not counted).
    let f = secret_file(b"short-admin-token\n");
    let text = format!(
        "{KEY}[admin]\ntoken_file = {:?}\n",
        f.path().display().to_string()
    );
    assert_has(
        &errs(&text, &base_env()),
        "admin.token: the admin token (admin.token_file) is 17 bytes long",
    );
}

#[test]
fn origins_each_bad_entry_reported() {
    let p = errs(
        &format!(
            "{KEY}[origins]\nallow = [\"https://ok.example\", \"app.example\", \"https://x/\"]\n"
        ),
        &base_env(),
    );
    assert_has(&p, "origins.allow[1]: invalid origin \"app.example\"");
    assert_has(&p, "origins.allow[2]: invalid origin \"https://x/\"");
    let c = ok(
        &format!("{KEY}[origins]\nallow = [\"https://*.example.com\"]\nallow_missing = true\n"),
        &base_env(),
    );
    let pol = c.origins.policy();
    assert!(pol.allows("https://a.example.com"));
    assert!(pol.allow_missing);
}

#[test]
fn forward_client_headers_rules() {
    let backend = |list: &str| {
        format!("{KEY}[backend]\nkind = \"upstream\"\nupstream = \"ws://127.0.0.1:9/ws\"\nforward_client_headers = {list}\n")
    };
    // Any case, duplicates folded, one string or a list.
    let c = ok(
        &backend(r#"["X-Real-IP", "x-real-ip", "X-Forwarded-Client-Cert", "CF-Connecting-IP"]"#),
        &base_env(),
    );
    let names: Vec<&str> = c
        .backend
        .forward_client_headers
        .iter()
        .map(|n| n.as_str())
        .collect();
    assert_eq!(
        names,
        ["x-real-ip", "x-forwarded-client-cert", "cf-connecting-ip"]
    );
    assert!(c.redacted().contains(
        r#"forward_client_headers = ["x-real-ip", "x-forwarded-client-cert", "cf-connecting-ip"]"#
    ));
    let c = ok(&backend(r#""True-Client-IP""#), &base_env());
    assert_eq!(c.backend.forward_client_headers, ["true-client-ip"]);
    // Each bad entry is its own problem.
    let p = errs(
        &backend(
            r#"["X-Real IP", "", "X-Forwarded-For", "x-forwarded-proto", "X-Forwarded-Host", "X-Request-Id", "Authorization"]"#,
        ),
        &base_env(),
    );
    assert_has(
        &p,
        "backend.forward_client_headers[0]: \"X-Real IP\" is not a valid header name",
    );
    assert_has(
        &p,
        "backend.forward_client_headers[1]: \"\" is not a valid header name",
    );
    for i in 2..=4 {
        assert_has(&p, &format!("backend.forward_client_headers[{i}]: "));
    }
    assert_has(&p, "\"X-Forwarded-For\" is written by the gateway");
    assert_has(
        &p,
        "backend.forward_client_headers[5]: \"X-Request-Id\" is not a forwarding header",
    );
    assert_has(
        &p,
        "backend.forward_client_headers[6]: \"Authorization\" is not a forwarding header",
    );
    assert_eq!(p.len(), 7, "{p:?}");
    // Overridden from the environment, named in the problem.
    let c = ok(
        &backend("[]"),
        &with_env(&[("WSGATE_BACKEND__FORWARD_CLIENT_HEADERS", r#"["X-Real-IP"]"#)]),
    );
    assert_eq!(c.backend.forward_client_headers, ["x-real-ip"]);
    let c = ok(
        &backend("[]"),
        &with_env(&[("WSGATE_BACKEND__FORWARD_CLIENT_HEADERS", "Fastly-Client-IP")]),
    );
    assert_eq!(c.backend.forward_client_headers, ["fastly-client-ip"]);
    let p = errs(
        &backend("[]"),
        &with_env(&[("WSGATE_BACKEND__FORWARD_CLIENT_HEADERS", "Cookie")]),
    );
    assert_has(&p, "(set by WSGATE_BACKEND__FORWARD_CLIENT_HEADERS)");
}

#[test]
fn limits_store_backend_proxies_hub_log() {
    let p = errs(
        &format!(
            "{KEY}[limits]\nping_interval = \"2m\"\nidle_timeout = \"1m\"\nmax_connections = 0\n"
        ),
        &base_env(),
    );
    assert_has(
        &p,
        "limits.ping_interval: 2m must be shorter than limits.idle_timeout (1m)",
    );
    assert_has(&p, "limits.max_connections: must be greater than 0");
    let c = ok(
        &format!("{KEY}[limits]\nconnections_per_user = 0\n"),
        &base_env(),
    );
    assert_eq!(c.limits.connections_per_user, 0);
    let c = ok(
        &format!("{KEY}[limits]\nread_buffer_bytes = 1024\n"),
        &base_env(),
    );
    assert_eq!(c.limits.read_buffer_bytes, 1024);
    let p = errs(
        &format!("{KEY}[limits]\nread_buffer_bytes = 100\n"),
        &base_env(),
    );
    assert_has(
        &p,
        "limits.read_buffer_bytes: must be between 256 and 1048576, got 100",
    );

    let p = errs(
        &format!("{KEY}[store]\nurl = \"postgres://u:hunter2@db\"\n"),
        &base_env(),
    );
    assert_has(&p, "store.url: must be");
    assert!(!p.iter().any(|l| l.contains("hunter2")));

    let p = errs(
        &format!("{KEY}[backend]\nkind = \"upstream\"\n"),
        &base_env(),
    );
    assert_has(
        &p,
        "backend.upstream: required when backend.kind = \"upstream\"",
    );
    let p = errs(
        &format!("{KEY}[backend]\nkind = \"upstream\"\nupstream = \"http://x\"\n"),
        &base_env(),
    );
    assert_has(
        &p,
        "backend.upstream: \"http://x\" must be a ws:// or wss:// URL",
    );
    let c = ok(
        &format!("{KEY}[backend]\nkind = \"upstream\"\nupstream = \"wss://up.example/ws\"\nidentity_secret_env = \"ID\"\n"),
        &with_env(&[("ID", &"i".repeat(32))]),
    );
    assert_eq!(c.backend.kind, BackendKind::Upstream);
    assert_eq!(
        c.backend.identity_secret.as_ref().map(Secret::len),
        Some(32)
    );

    let c = ok(
        &format!("{KEY}[trusted_proxies]\ncidrs = [\"10.0.0.0/8\", \"192.168.1.7\", \"::1\", \"fd00::1/64\"]\n"),
        &base_env(),
    );
    let cidrs: Vec<String> = c
        .trusted_proxies
        .cidrs
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        cidrs,
        vec!["10.0.0.0/8", "192.168.1.7/32", "::1/128", "fd00::/64"]
    );
    assert!(c.trusted_proxies.contains("10.1.2.3".parse().expect("ip")));
    assert!(c
        .trusted_proxies
        .contains("::ffff:10.1.2.3".parse().expect("ip")));
    assert!(!c.trusted_proxies.contains("11.0.0.1".parse().expect("ip")));
    let p = errs(
        &format!("{KEY}[trusted_proxies]\ncidrs = [\"10.0.0.0/33\", \"nope\"]\n"),
        &base_env(),
    );
    assert_has(&p, "trusted_proxies.cidrs[0]");
    assert_has(&p, "trusted_proxies.cidrs[1]");

    let c = ok(
        &format!("{KEY}[[hub.grants]]\nclaim = \"admin\"\nvalue = true\nsubscribe = [\"*\"]\n[[hub.grants]]\nclaim = \"level\"\nvalue = 3\n"),
        &base_env(),
    );
    assert_eq!(c.hub.grants[0].value.as_deref(), Some("true"));
    assert_eq!(c.hub.grants[1].value.as_deref(), Some("3"));
    let p = errs(
        &format!("{KEY}[[hub.grants]]\nvalue = \"x\"\n[[hub.grants]]\nclaim = \"roles\"\n"),
        &base_env(),
    );
    assert_has(&p, "hub.grants[0].value: given without claim");
    assert_has(&p, "hub.grants[1].value: required with claim");

    for good in ["debug", "WARN", "info,wsgate=debug", "wsgate=trace"] {
        ok(
            &format!("{KEY}[log]\nlevel = {good:?}\nformat = \"human\"\n"),
            &base_env(),
        );
    }
    let p = errs(&format!("{KEY}[log]\nlevel = \"verbose\"\n"), &base_env());
    assert_has(&p, "log.level: \"verbose\" is not a level");
}

#[test]
fn buffered_bytes_and_write_timeout() {
    let c = ok(KEY, &base_env());
    let l = &c.limits;
    assert_eq!(
        (l.max_buffered_bytes, l.max_buffered_bytes_total),
        (1_048_576, 268_435_456)
    );
    assert_eq!(l.write_timeout, Duration::from_secs(2));
    let c = ok(
        &format!(
            "{KEY}[limits]\nmax_buffered_bytes = 65536\nmax_buffered_bytes_total = 1000000\nwrite_timeout = \"500ms\"\n"
        ),
        &base_env(),
    );
    assert_eq!(c.limits.max_buffered_bytes, 65536);
    assert_eq!(c.limits.max_buffered_bytes_total, 1_000_000);
    assert_eq!(c.limits.write_timeout, Duration::from_millis(500));
    let p = errs(
        &format!("{KEY}[limits]\nmax_buffered_bytes = 0\nwrite_timeout = \"0s\"\n"),
        &base_env(),
    );
    assert_has(&p, "limits.max_buffered_bytes: must be greater than 0");
    assert_has(&p, "limits.write_timeout: must be greater than 0");
    let p = errs(
        &format!(
            "{KEY}[limits]\nmax_buffered_bytes = 2000000\nmax_buffered_bytes_total = 1000000\n"
        ),
        &base_env(),
    );
    assert_has(
        &p,
        "limits.max_buffered_bytes_total: 1000000 is less than limits.max_buffered_bytes (2000000)",
    );
}

#[test]
fn worker_threads() {
    let c = ok(&format!("{KEY}[server]\nworker_threads = 2\n"), &base_env());
    assert_eq!((c.server.worker_threads, c.server.workers()), (2, 2));
    let auto = ServerConfig::default();
    assert_eq!(auto.worker_threads, 0);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(auto.workers(), cpus);
    let p = errs(
        &format!("{KEY}[server]\nworker_threads = 5000\n"),
        &base_env(),
    );
    assert_has(
        &p,
        "server.worker_threads: must be between 0 (one per CPU) and 1024 (got 5000)",
    );
}

#[test]
fn multiple_problems_reported_together() {
    let text = format!(
        "{KEY}[server]\npath = \"ws\"\nmax_header_bytes = 10\n[tickets]\nttl = \"5m\"\n\
         [origins]\nallow = [\"nope\"]\n[limits]\nmessages_per_sec = 0\n[server.tls]\ncert_file = \"/no/cert\"\nkey_file = \"/no/key\"\n"
    );
    let p = errs(&text, &[]);
    for needle in [
        "server.path",
        "server.max_header_bytes",
        "server.tls.cert_file: cannot read /no/cert",
        "server.tls.key_file",
        "tickets.ttl",
        "origins.allow[0]",
        "limits.messages_per_sec",
        "auth.keys[0].secret_env: environment variable WSGATE_JWT_SECRET is not set",
    ] {
        assert_has(&p, needle);
    }
    assert!(p.len() >= 8, "{p:?}");
    // Deserialization errors in several sections are all reported too.
    let p = errs(
        &format!("{KEY}[server]\nbogus = 1\n[limits]\nmax_connections = \"x\"\n[log]\nformat = \"xml\"\n"),
        &base_env(),
    );
    assert_eq!(p.len(), 3, "{p:?}");
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(data("ec256.pub.pem"), dir.path().join("ec.pem")).expect("copy");
    let path = dir.path().join("wsgate.toml");
    std::fs::write(&path, key_toml("ES256", "public_key_file = \"ec.pem\"")).expect("write");
    let c = Config::load(&path, &[]).unwrap_or_else(|p| panic!("{p:?}"));
    assert!(
        matches!(&c.auth.keys[0].source, KeySource::PublicKeyPem { path, .. } if *path == dir.path().join("ec.pem"))
    );
}

#[test]
fn redacted_never_shows_secrets() {
    let admin = "ADMIN-TOKEN-VALUE-0123456789abcdefghij";
    let ticket = "TICKET-SECRET-VALUE-0123456789abcdef";
    let jwt = "JWT-SECRET-VALUE-0123456789abcdefghij";
    let file_secret = "FILE-SECRET-VALUE-0123456789abcdefghijkl";
    let ident = "IDENTITY-SECRET-VALUE-0123456789abcdef";
    let f = secret_file(file_secret.as_bytes());
    let text = format!(
        "{ORIGINS}[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"JWT\"\n\
         [[auth.keys]]\nalg = \"HS256\"\nkid = \"k2\"\nsecret_file = {:?}\n\
         [store]\nurl = \"redis://user:REDISPASS@127.0.0.1:6379/0\"\n\
         [backend]\nidentity_secret_env = \"IDENT\"\n",
        f.path().display().to_string()
    );
    let e = env(&[
        ("JWT", jwt),
        ("WSGATE_ADMIN_TOKEN", admin),
        ("WSGATE_TICKET_SECRET", ticket),
        ("IDENT", ident),
    ]);
    let c = ok(&text, &e);
    let out = c.redacted();
    for s in [admin, ticket, jwt, file_secret, ident, "REDISPASS"] {
        assert!(!out.contains(s), "{s} leaked in:\n{out}");
        assert!(!format!("{c:?}").contains(s), "{s} leaked in Debug");
    }
    assert!(out.contains("[redacted]"));
    assert!(out.contains("secret_env = \"JWT\""), "{out}");
    assert!(out.contains("token_env = \"WSGATE_ADMIN_TOKEN\""), "{out}");
    assert!(out.contains(&f.path().display().to_string()));
    assert!(
        out.contains("redis://user:[redacted]@127.0.0.1:6379/0"),
        "{out}"
    );
    assert!(out.contains("[[auth.keys]]"));
    let parsed: Table = out.parse().expect("redacted output is TOML");
    assert_eq!(parsed["server"]["listen"].as_str(), Some("127.0.0.1:8080"));
    // Unset secrets say so.
    let c = ok(KEY, &base_env());
    let out = c.redacted();
    assert!(out.contains("(unset: admin API disabled)"), "{out}");
    assert!(!out.contains(HS32));
}

#[test]
fn store_key_prefix() {
    let c = ok(
        &format!(
            "{KEY}[store]\nurl = \"redis://127.0.0.1:6379/0\"\nkey_prefix = \"prod-eu:ws:\"\n"
        ),
        &with_env(&[("WSGATE_TICKET_SECRET", "fedcba9876543210fedcba9876543210")]),
    );
    assert_eq!(c.store.key_prefix, "prod-eu:ws:");
    assert!(c.redacted().contains("key_prefix = \"prod-eu:ws:\""));
    let c = ok(KEY, &with_env(&[("WSGATE_STORE__KEY_PREFIX", "staging:")]));
    assert_eq!(c.store.key_prefix, "staging:");

    for bad in ["", "has space:", "tab\\t", "caf\u{e9}:"] {
        let p = errs(
            &format!("{KEY}[store]\nkey_prefix = \"{bad}\"\n"),
            &base_env(),
        );
        assert_has(
            &p,
            "store.key_prefix: must be non-empty printable ASCII without spaces",
        );
    }
    let p = errs(KEY, &with_env(&[("WSGATE_STORE__KEY_PREFIX", "a b")]));
    assert_has(&p, "(set by WSGATE_STORE__KEY_PREFIX)");
    let p = errs(&format!("{KEY}[store]\nkey_prefix = 7\n"), &base_env());
    assert_has(&p, "store.key_prefix");
}

#[test]
fn store_url_redaction() {
    assert_eq!(redact::store_url("memory://"), "memory://");
    assert_eq!(redact::store_url("redis://h:6379/0"), "redis://h:6379/0");
    assert_eq!(
        redact::store_url("rediss://:pw@h:6379"),
        "rediss://:[redacted]@h:6379"
    );
    assert_eq!(redact::store_url("redis://pw@h"), "redis://[redacted]@h");
}

#[test]
fn secret_type() {
    let a = Secret::new(b"abc".to_vec());
    assert_eq!(format!("{a:?}"), "[redacted]");
    assert_eq!(a.to_string(), "[redacted]");
    assert_eq!(a, Secret::new(b"abc".to_vec()));
    assert_ne!(a, Secret::new(b"abd".to_vec()));
    assert_ne!(a, Secret::new(b"abcd".to_vec()));
    let r1 = Secret::random(32);
    let r2 = Secret::random(32);
    assert_eq!(r1.len(), 32);
    assert_ne!(r1, r2);
    assert_eq!(r1.source(), &SecretSource::Generated);
}

#[test]
fn dev_mode_defaults() {
    let c = Config::dev(&[]).unwrap_or_else(|p| panic!("{p:?}"));
    assert!(c.dev_mode);
    assert_eq!(c.server.listen, "127.0.0.1:8080".parse().expect("addr"));
    assert_eq!(c.admin.listen, "127.0.0.1:9091".parse().expect("addr"));
    assert_eq!(
        c.origins.allow,
        vec!["http://127.0.0.1:8080", "http://localhost:8080"]
    );
    assert_eq!(c.backend.kind, BackendKind::Hub);
    assert!(c.store.is_memory());
    assert!(!c.hub.grants.is_empty());
    let k = &c.auth.keys[0];
    assert_eq!(k.alg, Some(Algorithm::HS256));
    match &k.source {
        KeySource::Secret(s) => assert_eq!(s.len(), 32),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(c.tickets.secret.as_ref().map(Secret::len), Some(32));
    // Fresh secrets every time.
    let c2 = Config::dev(&[]).unwrap_or_else(|p| panic!("{p:?}"));
    match (&c.auth.keys[0].source, &c2.auth.keys[0].source) {
        (KeySource::Secret(a), KeySource::Secret(b)) => assert_ne!(a, b),
        _ => panic!("secret keys expected"),
    }
    assert!(c.redacted().contains("dev mode"));
}

#[test]
fn dev_mode_with_listen_override() {
    let e = env(&[
        ("WSGATE_SERVER__LISTEN", "127.0.0.1:9999"),
        ("WSGATE_ADMIN__LISTEN", "[::1]:9998"),
        ("WSGATE_LOG__FORMAT", "human"),
    ]);
    let c = Config::dev(&e).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(c.server.listen.port(), 9999);
    assert_eq!(c.admin.listen, "[::1]:9998".parse().expect("addr"));
    assert_eq!(
        c.origins.allow,
        vec!["http://127.0.0.1:9999", "http://localhost:9999"]
    );
    assert_eq!(c.log.format, LogFormat::Human);
    assert_eq!(
        Config::dev_origins("[::1]:8080".parse().expect("addr")),
        vec!["http://[::1]:8080", "http://localhost:8080"]
    );
}

#[test]
fn dev_mode_refuses_non_loopback() {
    let p = Config::dev(&env(&[("WSGATE_SERVER__LISTEN", "0.0.0.0:8080")]))
        .expect_err("non-loopback dev listener");
    assert_has(
        &p,
        "server.listen: dev mode listens on loopback addresses only, not 0.0.0.0:8080",
    );
    assert_has(&p, "WSGATE_SERVER__LISTEN");
    let p = Config::dev(&env(&[
        ("WSGATE_ADMIN__LISTEN", "10.0.0.1:9091"),
        ("WSGATE_ADMIN_TOKEN", "a-long-enough-admin-token-0123456789"),
    ]))
    .expect_err("non-loopback dev admin");
    assert_has(
        &p,
        "admin.listen: dev mode listens on loopback addresses only",
    );
}

#[test]
fn warnings_for_exposed_listeners() {
    let c = ok(
        &format!("{KEY}{ORIGINS}[server]\nlisten = \"0.0.0.0:8080\"\n"),
        &base_env(),
    );
    assert!(c.warnings().iter().any(|w| w.contains("clear text")));
    let c = ok(
        &format!("{KEY}{ORIGINS}[server]\nlisten = \"0.0.0.0:8080\"\n[trusted_proxies]\ncidrs = [\"10.0.0.1\"]\n"),
        &base_env(),
    );
    assert!(!c.warnings().iter().any(|w| w.contains("clear text")));
}

#[test]
fn proxy_protocol_forwarded_from_file_and_env() {
    let pp = "[server]\nproxy_protocol = true\n[trusted_proxies]\ncidrs = [\"10.0.0.0/24\"]\n";
    let c = ok(&format!("{KEY}{ORIGINS}{pp}"), &base_env());
    assert!(!c.server.proxy_protocol_forwarded);
    assert!(c.redacted().contains("proxy_protocol_forwarded = false"));
    let mut e = base_env();
    e.push((
        "WSGATE_SERVER__PROXY_PROTOCOL_FORWARDED".into(),
        "true".into(),
    ));
    let c = ok(&format!("{KEY}{ORIGINS}{pp}"), &e);
    assert!(c.server.proxy_protocol_forwarded);
    assert!(c.redacted().contains("proxy_protocol_forwarded = true"));
    assert!(!c
        .warnings()
        .iter()
        .any(|w| w.contains("proxy_protocol_forwarded")));
    // Without proxy_protocol it does nothing, and says so.
    let c = ok(
        &format!("{KEY}{ORIGINS}[server]\nproxy_protocol_forwarded = true\n"),
        &base_env(),
    );
    assert!(c
        .warnings()
        .iter()
        .any(|w| w.contains("proxy_protocol_forwarded has no effect")));
}

#[test]
fn duplicate_kid_names_the_file_index() {
    let text = format!(
        "{ORIGINS}[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"NOPE\"\n\
         [[auth.keys]]\nalg = \"HS256\"\nkid = \"a\"\nsecret_env = \"S\"\n\
         [[auth.keys]]\nalg = \"HS256\"\nkid = \"a\"\nsecret_env = \"S2\"\n"
    );
    let p = errs(&text, &env(&[("S", HS32), ("S2", &"y".repeat(32))]));
    assert_has(&p, "auth.keys[2].kid: another key has kid \"a\"");
    assert_has(
        &p,
        "auth.keys[0].secret_env: environment variable NOPE is not set",
    );
}

#[test]
fn secret_errors_name_the_override() {
    let p = errs(
        KEY,
        &env(&[("WSGATE_AUTH__KEYS__0__SECRET_ENV", "MISSING_VAR")]),
    );
    assert_has(
        &p,
        "auth.keys[0].secret_env: environment variable MISSING_VAR is not set (set by WSGATE_AUTH__KEYS__0__SECRET_ENV)",
    );
}

/// Issue 27: type errors say what the key takes, in words, and what the
/// file holds instead.
#[test]
fn type_errors_speak_human() {
    for (toml, needle) in [
        (
            "[limits]\nmax_connections = \"many\"\n",
            "limits.max_connections: expected a whole number ≥ 0, got \"many\"",
        ),
        (
            "[limits]\nmax_connections = -1\n",
            "limits.max_connections: expected a whole number ≥ 0, got -1",
        ),
        (
            "[limits]\nmax_connections = 5000000000\n",
            "limits.max_connections: expected a whole number from 0 to 4294967295, got 5000000000",
        ),
        (
            "[auth]\ncookie_csrf = \"yes\"\n",
            "auth.cookie_csrf: expected true or false, got \"yes\"",
        ),
        (
            "[limits]\nidle_timeout = 120\n",
            "limits.idle_timeout: expected a duration string such as \"500ms\", \"30s\", \"5m\" or \"1h\", got 120",
        ),
        (
            "[origins]\nallow = \"https://a.example\"\n",
            "origins.allow: expected a list, got \"https://a.example\"",
        ),
        ("[server]\ntls = 5\n", "server.tls: expected a table, got 5"),
        (
            "[log]\nlevel = 1979-05-27\n",
            "log.level: expected a string, got the date-time 1979-05-27 (quote it",
        ),
        (
            "[[auth.keys]]\nalg = \"HS256\"\nkid = 7\n",
            "auth.keys[1].kid: expected a string, got 7",
        ),
    ] {
        let p = errs(&format!("{KEY}{toml}"), &base_env());
        assert_has(&p, needle);
        assert!(!p.iter().any(|l| l.contains("u32") || l.contains("invalid type")), "{p:?}");
    }
    // Through an override, the variable is named.
    let p = errs(
        KEY,
        &with_env(&[("WSGATE_LIMITS__MAX_CONNECTIONS", "lots")]),
    );
    assert_has(
        &p,
        "limits.max_connections: expected a whole number ≥ 0, got \"lots\" (set by WSGATE_LIMITS__MAX_CONNECTIONS)",
    );
}

/// Issue 27: an unknown key, section or value gets the nearest known one.
#[test]
fn unknown_names_get_a_did_you_mean() {
    for (toml, needle) in [
        (
            "[server]\nlisen = \"127.0.0.1:1\"\n",
            "server.lisen: unknown key; did you mean \"listen\"?",
        ),
        (
            "[limits]\nmax_conections = 5\n",
            "limits.max_conections: unknown key; did you mean \"max_connections\"?",
        ),
        (
            "[[auth.keys]]\nalg = \"HS256\"\nsecret_evn = \"X\"\n",
            "auth.keys[1].secret_evn: unknown key; did you mean \"secret_env\"?",
        ),
        (
            "[serverz]\nlisten = 1\n",
            "serverz: unknown section; did you mean [server]?",
        ),
        (
            "[backend]\nkind = \"upstrem\"\n",
            "backend.kind: unknown value \"upstrem\"; did you mean \"upstream\"?",
        ),
        (
            "[log]\nformat = \"xml\"\n",
            "log.format: unknown value \"xml\"; expected one of \"json\" or \"human\"",
        ),
        (
            "[auth]\ntransports = [\"berer\"]\n",
            "unknown transport \"berer\"; expected bearer, subprotocol, ticket, cookie or query (did you mean \"bearer\"?)",
        ),
        (
            "[server]\nzzz = 1\n",
            "server.zzz: unknown key; expected one of listen, path,",
        ),
    ] {
        assert_has(&errs(&format!("{KEY}{toml}"), &base_env()), needle);
    }
}

/// Issue 27: a JWK set holds public keys, so an HS algorithm pinned on one
/// never finds a key (the node never became ready): refused at load.
#[test]
fn hs_alg_with_a_jwk_set_is_refused() {
    let set = secret_file(br#"{"keys":[{"kty":"oct","k":"AAAA"}]}"#);
    for (alg, source) in [
        (
            "HS256",
            "jwks_url = \"https://idp.example/jwks\"".to_string(),
        ),
        (
            "HS512",
            "jwks_url = \"http://127.0.0.1:9/jwks\"".to_string(),
        ),
        (
            "HS384",
            format!("jwks_file = {:?}", set.path().display().to_string()),
        ),
    ] {
        let p = errs(&key_toml(alg, &source), &[]);
        assert_has(
            &p,
            &format!("auth.keys[0].alg: {alg} is a shared-secret algorithm, but"),
        );
    }
    let p = errs(
        &format!(
            "{ORIGINS}[[auth.issuers]]\nissuer = \"https://a/\"\n[[auth.issuers.keys]]\n\
             alg = \"HS256\"\njwks_url = \"https://a/jwks\"\n"
        ),
        &[],
    );
    assert_has(&p, "auth.issuers[0].keys[0].alg: HS256 is a shared-secret");
    // Asymmetric or no alg: fine.
    for alg in ["alg = \"RS256\"\n", "alg = \"EdDSA\"\n", ""] {
        ok(
            &format!("{ORIGINS}[[auth.keys]]\n{alg}jwks_url = \"https://idp.example/jwks\"\n"),
            &[],
        );
    }
}
