//! `/metrics` is a format Prometheus reads as written: the Prometheus text
//! format (0.0.4) for plain clients, linted by `promtool check metrics`;
//! OpenMetrics for Prometheus's own `Accept`, read by a real Prometheus
//! scrape (promtool lints only the text format: prometheus/prometheus#8932).
//! Both tools come from Debian's `prometheus` package; a test fails, never
//! skips, without them.

use crate::common::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What Prometheus (2.x) sends on every scrape.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The contract's families (OpenMetrics names) and types.
const CONTRACT: [(&str, &str); 9] = [
    ("wsgate_handshakes", "counter"),
    ("wsgate_connections_active", "gauge"),
    ("wsgate_closes", "counter"),
    ("wsgate_messages", "counter"),
    ("wsgate_bytes", "counter"),
    ("wsgate_token_verify_seconds", "histogram"),
    ("wsgate_revocations", "counter"),
    ("wsgate_tickets_issued", "counter"),
    ("wsgate_store_errors", "counter"),
];

/// A gateway whose contract families all have samples, most with labels:
/// accepted and refused upgrades, messages both ways, a close.
async fn gateway_after_traffic() -> Gateway {
    let gw = Gateway::start(&base_config(""));
    let (mut ws, _) = bearer(&gw.url(), &token("fmt")).await.open();
    assert_eq!(echo(&mut ws, "hello").await, "hello");
    upgrade(&gw.url(), &[]).await.refused(401, "missing_token");
    bearer(&gw.url(), "x.y.z")
        .await
        .refused(401, "malformed_token");
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: 1000.into(),
        reason: "".into(),
    }))
    .await
    .expect("close");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(&gw, &[]).await.body;
        if text.contains("\nwsgate_closes_total{code=\"1000\"} 1\n")
            && text.contains("\nwsgate_connections_active 0\n")
        {
            return gw;
        }
        assert!(Instant::now() < deadline, "session never closed: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A program from Debian's `prometheus` package, or a failed test saying
/// how to get it.
fn tool(name: &str) -> Command {
    match Command::new(name).arg("--version").output() {
        Ok(o) if o.status.success() => Command::new(name),
        _ => panic!(
            "`{name}` is not installed: install Debian's prometheus package \
             (apt-get install --no-install-recommends prometheus; scripts/test.sh does)"
        ),
    }
}

/// `promtool check metrics` on `body`: its exit status and everything it said.
fn promtool_check(body: &str) -> (bool, String) {
    let mut child = tool("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    // promtool reads all of stdin before it writes: no deadlock.
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said.into_owned())
}

/// `/metrics` with these request headers.
async fn scrape(gw: &Gateway, headers: &[(&str, &str)]) -> HttpResponse {
    let r = http(gw.admin, "GET", "/metrics", headers, "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("vary"), Some("accept"));
    r
}

/// Sample series to value, `le` read as a number: the text format writes
/// bounds as Go does (`1e-06`), OpenMetrics as decimals (`0.000001`).
fn samples(body: &str) -> BTreeMap<String, String> {
    let le = |series: &str| -> String {
        let Some((head, rest)) = series.split_once("le=\"") else {
            return series.to_string();
        };
        let (bound, tail) = rest.split_once('"').expect("closed le");
        let bound: f64 = bound.parse().expect("numeric le");
        format!("{head}le=\"{bound}\"{tail}")
    };
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("sample line");
            (le(series), value.to_string())
        })
        .collect()
}

#[tokio::test]
async fn plain_scrapes_get_the_text_format_promtool_passes() {
    let gw = gateway_after_traffic().await;
    let r = scrape(&gw, &[]).await;
    assert_eq!(r.header("content-type"), Some(TEXT));
    let body = r.body;
    // curl's default Accept and a browser's get the same.
    for accept in ["*/*", "text/html,application/xhtml+xml,*/*;q=0.8"] {
        let r = scrape(&gw, &[("accept", accept)]).await;
        assert_eq!(r.header("content-type"), Some(TEXT), "{accept}");
    }

    let (ok, said) = promtool_check(&body);
    assert!(ok && said.trim().is_empty(), "promtool: {said}\n{body}");

    assert!(!body.contains("# EOF"), "{body}");
    // Each `# TYPE` names its samples (a counter's with `_total`).
    let mut typed = BTreeMap::new();
    let mut family = None;
    for l in body.lines() {
        if let Some(t) = l.strip_prefix("# TYPE ") {
            let (name, kind) = t.split_once(' ').expect("TYPE line");
            typed.insert(name.to_string(), kind.to_string());
            family = Some((name.to_string(), kind.to_string()));
        } else if !l.starts_with('#') {
            let (name, kind) = family.as_ref().expect("sample after its TYPE");
            let sample = l.split(['{', ' ']).next().unwrap_or("");
            let ok = match kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| sample == format!("{name}{s}")),
                _ => sample == name,
            };
            assert!(ok, "{sample} under # TYPE {name} {kind}");
        }
    }
    for (family, kind) in CONTRACT {
        let name = match kind {
            "counter" => format!("{family}_total"),
            _ => family.to_string(),
        };
        assert_eq!(typed.get(&name).map(String::as_str), Some(kind), "{name}");
    }
    assert!(
        body.contains(
            "wsgate_handshakes_total{result=\"rejected\",reason=\"missing_token\",transport=\"none\"} 1"
        ),
        "{body}"
    );
}

#[tokio::test]
async fn prometheus_accept_gets_openmetrics_with_the_same_samples() {
    let gw = gateway_after_traffic().await;
    let r = scrape(&gw, &[("accept", PROMETHEUS_ACCEPT)]).await;
    assert_eq!(r.header("content-type"), Some(OPENMETRICS));
    let body = r.body;
    assert!(body.ends_with("\n# EOF\n"), "{body}");
    assert_eq!(body.matches("# EOF").count(), 1, "{body}");
    // OpenMetrics types the family; its counter samples end in `_total`.
    for (family, kind) in CONTRACT {
        assert!(
            body.contains(&format!("\n# TYPE {family} {kind}\n")),
            "{family}: {body}"
        );
    }
    assert!(
        body.contains("\n# UNIT wsgate_token_verify_seconds seconds\n"),
        "{body}"
    );
    assert!(
        body.contains(
            "wsgate_handshakes_total{result=\"rejected\",reason=\"missing_token\",transport=\"none\"} 1"
        ),
        "{body}"
    );
    // The text format carries exactly the same series and values.
    let text = scrape(&gw, &[]).await.body;
    assert_eq!(samples(&body), samples(&text), "{body}\n{text}");
}

/// A Prometheus server of the test's own, scraping one target every second;
/// killed on drop.
struct Prometheus {
    child: Child,
    web: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn scraping(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: wsgate\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("config");
        let web = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr");
        let log = std::fs::File::create(dir.path().join("log")).expect("log");
        let child = tool("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus");
        Prometheus { child, web, dir }
    }

    /// `GET path` on its API as HTTP/1.0, so the answer is never chunked.
    async fn api(&self, path: &str) -> serde_json::Value {
        let Ok(mut s) = tokio::net::TcpStream::connect(self.web).await else {
            return serde_json::Value::Null;
        };
        let req = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.web);
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("answer in time")
            .expect("read");
        let text = String::from_utf8_lossy(&out);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn query(q: &str) -> String {
    form_urlencoded::byte_serialize(q.as_bytes()).collect()
}

/// The symptom, end to end: Prometheus scrapes `/metrics` (asking
/// for OpenMetrics first), parses it without error, and records every
/// family with its type; none is untyped.
#[tokio::test]
async fn prometheus_reads_every_family_with_its_type() {
    let gw = gateway_after_traffic().await;
    let prom = Prometheus::scraping(gw.admin);
    // Its scrape manager applies targets after ~5 s; then one scrape a second.
    let deadline = Instant::now() + Duration::from_secs(30);
    let target = loop {
        let t = prom.api("/api/v1/targets").await;
        let t = &t["data"]["activeTargets"][0];
        if t["health"] == "up" {
            break t.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no successful scrape: {t}\n{}",
            prom.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(target["lastError"], "", "{target}");

    let meta = prom
        .api(&format!(
            "/api/v1/targets/metadata?match_target={}",
            query("{job=\"wsgate\"}")
        ))
        .await;
    let entries = meta["data"]
        .as_array()
        .unwrap_or_else(|| panic!("metadata: {meta}"));
    let field = |name: &str, key: &str| -> Option<String> {
        let m = entries.iter().find(|m| m["metric"] == name)?;
        Some(m[key].as_str().unwrap_or("").to_string())
    };
    let types: BTreeMap<String, String> = entries
        .iter()
        .map(|m| {
            (
                m["metric"].as_str().unwrap_or("").to_string(),
                m["type"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    // Only an OpenMetrics parse keeps `# UNIT`: the text parser, which
    // Prometheus picks for a `text/plain` answer, skips it as a comment.
    assert_eq!(
        field("wsgate_token_verify_seconds", "unit").as_deref(),
        Some("seconds"),
        "{meta}"
    );
    // Families by their OpenMetrics names: the text parser would have named
    // them by their samples (`wsgate_handshakes_total`), as `unknown`.
    for (family, kind) in CONTRACT {
        assert_eq!(
            types.get(family).map(String::as_str),
            Some(kind),
            "{family}: {types:?}"
        );
    }
    for (name, kind) in &types {
        assert!(
            ["counter", "gauge", "histogram"].contains(&kind.as_str()),
            "{name} read as {kind}"
        );
    }
    // And the samples are stored under their labels.
    let r = prom
        .api(&format!(
            "/api/v1/query?query={}",
            query(
                "wsgate_handshakes_total{result=\"accepted\",reason=\"none\",transport=\"bearer\"}"
            )
        ))
        .await;
    assert_eq!(r["data"]["result"][0]["value"][1], "1", "{r}");
}
