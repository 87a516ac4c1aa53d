//! Valid but risky settings: `serve` logs each as a `config_warning`,
//! `wsgate check` prints them (and `check --strict` fails on them).

use super::build::unset_what;
use super::{urls, BackendKind, Config};
use wsgate_core::Transport;

impl Config {
    /// Non-fatal findings worth a line in the startup log.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let a = &self.auth;
        let has = |t: Transport| a.transports.contains(&t);
        if has(Transport::Query) {
            w.push(format!(
                "auth.transports includes \"query\": session tokens in ?{}= end up in access logs, \
                 proxy logs and browser history; prefer tickets",
                a.query_param
            ));
        }
        let exposed = !self.server.listen.ip().is_loopback()
            && self.server.tls.is_none()
            && self.trusted_proxies.cidrs.is_empty();
        if exposed && (has(Transport::Cookie) || has(Transport::Ticket)) {
            w.push(format!(
                "server.listen {} is not a loopback address and there is no [server.tls] and no \
                 trusted_proxies: cookie and ticket credentials cross the network in clear text \
                 unless a TLS-terminating proxy is in front (list it in trusted_proxies.cidrs)",
                self.server.listen
            ));
        }
        if self.server.proxy_protocol_forwarded && !self.server.proxy_protocol {
            w.push(
                "server.proxy_protocol_forwarded has no effect without server.proxy_protocol: \
                 a trusted proxy's forwarding headers are read anyway"
                    .into(),
            );
        }
        if self.limits.block_after_refusals > 0 && self.server.proxy_protocol {
            w.push(
                "limits.block_after_refusals has no effect with server.proxy_protocol: every \
                 packet comes from the balancer, which is never blocked"
                    .into(),
            );
        }
        if self.tickets.enabled && self.tickets.secret.is_none() {
            w.push(format!(
                "tickets: no ticket secret ({}): a random per-process secret is used, so tickets \
                 are only valid on this node",
                unset_what(self.tickets.secret_env.as_deref(), "tickets.secret_env")
            ));
        }
        if self.tickets.enabled && !has(Transport::Ticket) && !self.dev_mode {
            w.push(
                "tickets.enabled = true but \"ticket\" is not in auth.transports: issued tickets \
                 cannot be used to connect"
                    .into(),
            );
        }
        if !self.tickets.enabled && has(Transport::Ticket) {
            w.push(
                "auth.transports includes \"ticket\" but tickets.enabled = false: the ticket \
                 transport accepts nothing"
                    .into(),
            );
        }
        if self.admin.token.is_none() {
            w.push(format!(
                "admin: no admin token ({}): the admin API (/admin/v1/*) is disabled",
                unset_what(self.admin.token_env.as_deref(), "admin.token_env")
            ));
        }
        if self.admin.allow_plaintext && self.admin.in_clear() {
            w.push(format!(
                "admin.allow_plaintext = true: the admin listener {} is not a loopback address \
                 and has no [admin.tls]; the admin token and every admin request cross the \
                 network in clear text",
                self.admin.listen
            ));
        }
        if self.origins.allow.is_empty() {
            w.push(if self.origins.allow_missing {
                "origins.allow is empty: every browser upgrade is refused (only clients that send \
                 no Origin header can connect)"
                    .into()
            } else {
                "origins.allow is empty and origins.allow_missing = false: every upgrade is refused"
                    .into()
            });
        }
        if self.backend.kind == BackendKind::Hub && self.hub.grants.is_empty() {
            w.push(
                "hub.grants is empty: with the hub backend every subscribe and publish is refused \
                 (forbidden)"
                    .into(),
            );
        }
        if self.backend.kind == BackendKind::Upstream {
            if let Some(up) = &self.backend.upstream {
                if urls::upstream_in_clear(up) {
                    w.push(
                        "backend.upstream uses ws:// to a non-loopback host: forwarded identity \
                         headers and messages travel unencrypted"
                            .into(),
                    );
                }
            }
            if self.backend.identity_secret.is_none() {
                w.push(
                    "backend: no identity secret (identity_secret_env / identity_secret_file): \
                     the upstream cannot verify that identity headers come from the gateway"
                        .into(),
                );
            }
        }
        w
    }
}
