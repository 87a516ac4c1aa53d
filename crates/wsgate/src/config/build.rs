//! From a TOML table to a validated [`Config`]: each section is read (a
//! section that does not parse is one problem, and its own checks are
//! skipped), then checked by its module, and every problem is collected so
//! that the operator sees them all at once, each named by its key.

use super::*;
use jsonwebtoken::Algorithm;
use serde::de::DeserializeOwned;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// The top-level sections, in the documented order.
pub(super) const SECTIONS: &[&str] = &[
    "server",
    "admin",
    "auth",
    "tickets",
    "origins",
    "limits",
    "store",
    "backend",
    "trusted_proxies",
    "hub",
    "log",
];

pub(super) struct Builder<'a> {
    base: PathBuf,
    env: HashMap<&'a str, &'a str>,
    pub(super) dev: bool,
    applied: Vec<overrides::Applied>,
    pub(super) problems: Vec<String>,
    failed: BTreeSet<&'static str>,
}

pub(super) enum EnvLookup<'a> {
    Set(&'a str),
    Unset,
    Empty,
}

impl<'a> Builder<'a> {
    pub(super) fn new(
        base: PathBuf,
        env_vars: &'a [(String, String)],
        dev: bool,
        applied: Vec<overrides::Applied>,
        problems: Vec<String>,
    ) -> Self {
        Builder {
            base,
            env: env_vars
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            dev,
            applied,
            problems,
            failed: BTreeSet::new(),
        }
    }

    pub(super) fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    pub(super) fn env(&self, name: &str) -> EnvLookup<'a> {
        match self.env.get(name) {
            None => EnvLookup::Unset,
            Some(&"") => EnvLookup::Empty,
            Some(v) => EnvLookup::Set(v),
        }
    }

    /// ` (set by WSGATE_...)` when an override set `key` or a parent of it.
    pub(super) fn via(&self, key: &str) -> String {
        self.applied
            .iter()
            .find(|a| {
                key == a.key
                    || key.starts_with(&format!("{}.", a.key))
                    || key.starts_with(&format!("{}[", a.key))
            })
            .map(|a| format!(" (set by {})", a.var))
            .unwrap_or_default()
    }

    /// A configured path: relative ones are relative to the config's folder.
    pub(super) fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() || self.base.as_os_str().is_empty() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// Deserializes one section; on failure reports it and uses defaults
    /// (the section's own checks are then skipped to avoid follow-on noise).
    fn section<T: DeserializeOwned + Default>(
        &mut self,
        root: &mut Table,
        name: &'static str,
    ) -> T {
        let Some(value) = root.remove(name) else {
            return T::default();
        };
        match de::read::<T>(name, value) {
            Ok(t) => t,
            Err(e) => {
                let via = self.via(&e.key);
                self.problem(format!("{}: {}{via}", e.key, e.error));
                self.failed.insert(name);
                T::default()
            }
        }
    }

    pub(super) fn ok(&self, section: &str) -> bool {
        !self.failed.contains(section)
    }

    /// Runs a section's checks, dropping their findings when the section
    /// itself did not parse (its values are defaults, not the operator's).
    fn checked<T>(&mut self, section: &str, f: impl FnOnce(&mut Self) -> T) -> T {
        let before = self.problems.len();
        let out = f(self);
        if !self.ok(section) {
            self.problems.truncate(before);
        }
        out
    }

    pub(super) fn build(mut self, mut root: Table) -> Result<Config, Vec<String>> {
        let mut server: ServerConfig = self.section(&mut root, "server");
        let admin_raw: admin::RawAdmin = self.section(&mut root, "admin");
        let auth_raw: auth::RawAuth = self.section(&mut root, "auth");
        let tickets_raw: tickets::RawTickets = self.section(&mut root, "tickets");
        let mut origins: OriginsConfig = self.section(&mut root, "origins");
        let limits: LimitsConfig = self.section(&mut root, "limits");
        let store: StoreConfig = self.section(&mut root, "store");
        let backend_raw: backend::RawBackend = self.section(&mut root, "backend");
        let proxies_raw: trusted_proxies::RawTrustedProxies =
            self.section(&mut root, "trusted_proxies");
        let mut hub: HubConfig = self.section(&mut root, "hub");
        let log: LogConfig = self.section(&mut root, "log");
        for (key, value) in root {
            let what = if value.is_table() { "section" } else { "key" };
            let via = self.via(&key);
            let hint = match de::did_you_mean(&key, SECTIONS) {
                Some(near) => format!("did you mean [{near}]?"),
                None => format!("expected one of {}", SECTIONS.join(", ")),
            };
            self.problem(format!("{key}: unknown {what}; {hint}{via}"));
        }

        self.checked("server", |b| b.check_server(&mut server));
        let admin = self.checked("admin", |b| b.build_admin(admin_raw, &server));
        let mut auth = self.checked("auth", |b| b.build_auth(auth_raw, &tickets_raw.audience));
        let mut tickets = self.checked("tickets", |b| b.build_tickets(tickets_raw, &store));
        self.checked("limits", |b| b.check_limits(&limits));
        self.checked("store", |b| b.check_store(&store));
        let backend = self.checked("backend", |b| b.build_backend(backend_raw));
        let trusted_proxies = self.checked("trusted_proxies", |b| b.build_proxies(proxies_raw));
        self.checked("hub", |b| b.check_hub(&hub));
        self.checked("log", |b| b.check_log(&log));

        if self.dev {
            self.apply_dev(
                &server,
                &admin,
                &mut auth,
                &mut tickets,
                &mut origins,
                &mut hub,
            );
        }
        self.checked("origins", |b| b.check_origins(&origins));
        if self.ok("tickets") && self.ok("auth") {
            self.check_ticket_secret_distinct(&tickets, &auth);
        }

        if !self.problems.is_empty() {
            return Err(self.problems);
        }
        Ok(Config {
            server,
            admin,
            auth,
            tickets,
            origins,
            limits,
            store,
            backend,
            trusted_proxies,
            hub,
            log,
            dev_mode: self.dev,
            source: None,
        })
    }

    /// Dev mode's generated key, ticket secret, origins and grants.
    fn apply_dev(
        &mut self,
        server: &ServerConfig,
        admin: &AdminConfig,
        auth: &mut AuthConfig,
        tickets: &mut TicketsConfig,
        origins: &mut OriginsConfig,
        hub: &mut HubConfig,
    ) {
        for (key, addr) in [
            ("server.listen", server.listen),
            ("admin.listen", admin.listen),
        ] {
            if !addr.ip().is_loopback() {
                let via = self.via(key);
                self.problem(format!(
                    "{key}: dev mode listens on loopback addresses only, not {addr}{via}; \
                     use a config file to listen elsewhere"
                ));
            }
        }
        // The generated key is first, so the server signs dev tokens with keys[0].
        auth.keys.insert(
            0,
            KeyConfig {
                alg: Some(Algorithm::HS256),
                kid: None,
                source: KeySource::Secret(Secret::random(32)),
                jwks: JwksOptions::default(),
                previous: None,
            },
        );
        if tickets.secret.is_none() {
            tickets.secret = Some(Secret::random(32));
        }
        for o in Config::dev_origins(server.listen) {
            if !origins.allow.contains(&o) {
                origins.allow.push(o);
            }
        }
        // The banner's token is meant for CLI clients, which send no Origin;
        // the cookie transport still demands an allowed Origin.
        origins.allow_missing = true;
        if hub.grants.is_empty() {
            // Everything is allowed so the demo page works out of the box.
            hub.grants.push(Grant {
                claim: None,
                value: None,
                subscribe: vec!["*".into()],
                publish: vec!["*".into()],
            });
        }
    }
}

/// `NAME is not set`, or the key that would name the variable.
pub(super) fn unset_what(env: Option<&str>, key: &str) -> String {
    match env {
        Some(name) => format!("{name} is not set"),
        None => format!("{key} is not set"),
    }
}

pub(super) fn fmt_dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A TOML syntax error as one line: `file: line L, column C: message`.
pub(super) fn toml_syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', "; ");
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("{}: line {line}, column {col}: {msg}", path.display())
        }
        None => format!("{}: {msg}", path.display()),
    }
}
