//! Where each attempt's token comes from: a file rotated round-robin (a few
//! clients reconnecting), a file used once per token (`--unique`: a pool
//! minted ahead with `wsgate-bench mint`), or minted on the spot for each
//! attempt (`--mint-alg`). Minting signs with any JWS algorithm, and can make
//! the token invalid on purpose (a forged signature, or already expired) so
//! that rejection figures never repeat a token either.

use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

use std::borrow::Cow;

use crate::common::{jwt_payload, read_tokens, Failure};

/// How a minted token is made invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Invalid {
    /// Signed, then one byte of the signature changed: the verifier does the
    /// whole verification before it refuses (`401 bad_signature`).
    BadSignature,
    /// Signed correctly, but `exp` an hour ago (`401 token_expired`).
    Expired,
}

/// Where a mode's tokens come from: a file (rotated, or used once each), or
/// minted per attempt.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TokenArgs {
    /// File with one token per line; attempts rotate through them.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Use each --token-file token once (a pool from `wsgate-bench mint`):
    /// the run ends when the pool does.
    #[arg(long)]
    pub unique: bool,
    #[command(flatten)]
    pub mint: MintArgs,
}

/// The minting flags, shared by every mode that sends tokens and by `mint`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MintArgs {
    /// Mint a unique token (own `sub` and `jti`) for every attempt, signed
    /// with this algorithm (HS256, ES256, RS256, PS256, EdDSA, ...), instead
    /// of reading --token-file. Signing costs the generator's CPU: for RSA,
    /// mint a pool ahead with `wsgate-bench mint` and use --unique.
    #[arg(long, value_parser = parse_alg)]
    pub mint_alg: Option<Algorithm>,
    /// Environment variable holding the HS* secret (implies --mint-alg HS256
    /// when no algorithm is given).
    #[arg(long)]
    pub mint_secret_env: Option<String>,
    /// PEM private key for ES*, RS*, PS* and EdDSA.
    #[arg(long)]
    pub mint_key_file: Option<PathBuf>,
    /// `kid` header of minted tokens.
    #[arg(long)]
    pub mint_kid: Option<String>,
    /// Extra claims merged into every minted token, as a JSON object, e.g.
    /// '{"aud":"api","iss":"https://auth.example"}'.
    #[arg(long)]
    pub mint_claims: Option<String>,
    /// Lifetime of minted tokens.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub mint_ttl: Duration,
    /// `exp` of every minted token, in Unix seconds, instead of now +
    /// --mint-ttl (an expiry storm: many tokens expiring in one second).
    #[arg(long)]
    pub mint_exp: Option<u64>,
    /// Make every minted token invalid this way.
    #[arg(long, value_enum)]
    pub mint_invalid: Option<Invalid>,
    /// Give minted tokens a `csrf` claim (for the cookie transport with
    /// `auth.cookie_csrf`; the upgrade then carries `?csrf=`).
    #[arg(long)]
    pub mint_csrf: bool,
}

fn parse_alg(s: &str) -> Result<Algorithm, String> {
    Algorithm::from_str(s).map_err(|_| format!("unknown JWS algorithm {s:?}"))
}

impl MintArgs {
    /// Whether any minting was asked for.
    pub fn enabled(&self) -> bool {
        self.mint_alg.is_some() || self.mint_secret_env.is_some()
    }
}

/// Signs unique tokens: `sub` and `jti` carry this process's id and a
/// counter, so two generators running side by side never collide.
pub struct Minter {
    alg: Algorithm,
    key: EncodingKey,
    kid: Option<String>,
    extra: Map<String, Value>,
    ttl_s: u64,
    exp: Option<u64>,
    invalid: Option<Invalid>,
    csrf: bool,
    prefix: String,
}

/// One minted token, and its `csrf` claim when it has one.
#[derive(Clone)]
pub struct Minted {
    pub token: String,
    pub csrf: Option<String>,
}

impl Minter {
    pub fn new(args: &MintArgs) -> anyhow::Result<Minter> {
        let alg = match (args.mint_alg, &args.mint_secret_env) {
            (Some(a), _) => a,
            (None, Some(_)) => Algorithm::HS256,
            (None, None) => bail!("minting needs --mint-alg (and a key)"),
        };
        let key = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let var = args
                    .mint_secret_env
                    .as_deref()
                    .context("--mint-alg HS* needs --mint-secret-env")?;
                let secret =
                    std::env::var(var).map_err(|_| anyhow::anyhow!("${var} is not set"))?;
                EncodingKey::from_secret(secret.as_bytes())
            }
            _ => {
                let path = args
                    .mint_key_file
                    .as_deref()
                    .with_context(|| format!("--mint-alg {alg:?} needs --mint-key-file"))?;
                private_key(alg, path)?
            }
        };
        let extra = match &args.mint_claims {
            None => Map::new(),
            Some(json) => match serde_json::from_str(json).context("--mint-claims")? {
                Value::Object(m) => m,
                _ => bail!("--mint-claims must be a JSON object"),
            },
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let minter = Minter {
            alg,
            key,
            kid: args.mint_kid.clone(),
            extra,
            ttl_s: args.mint_ttl.as_secs().max(1),
            exp: args.mint_exp,
            invalid: args.mint_invalid,
            csrf: args.mint_csrf,
            prefix: format!("m{}x{nanos:x}", std::process::id()),
        };
        // Fail at start, not on the first attempt, if the key cannot sign.
        minter
            .mint(0)
            .map_err(|f| anyhow::anyhow!("{}", f.detail))?;
        Ok(minter)
    }

    /// The `n`th token of this minter: unique for each `n`.
    pub fn mint(&self, n: u64) -> Result<Minted, Failure> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (iat, exp) = match self.invalid {
            Some(Invalid::Expired) => (now.saturating_sub(7200), now.saturating_sub(3600)),
            _ => (now, self.exp.unwrap_or(now + self.ttl_s)),
        };
        let mut claims = self.extra.clone();
        claims.insert("sub".into(), format!("{}-{n}", self.prefix).into());
        claims.insert("jti".into(), format!("{}-j{n}", self.prefix).into());
        claims.insert("iat".into(), iat.into());
        claims.insert("exp".into(), exp.into());
        let csrf = self.csrf.then(|| format!("c{}-{n}", self.prefix));
        if let Some(c) = &csrf {
            claims.insert("csrf".into(), c.clone().into());
        }
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        let mut token = jsonwebtoken::encode(&header, &Value::Object(claims), &self.key)
            .map_err(|e| Failure::new("mint", e.to_string()))?;
        if self.invalid == Some(Invalid::BadSignature) {
            forge(&mut token);
        }
        Ok(Minted { token, csrf })
    }
}

fn private_key(alg: Algorithm, path: &Path) -> anyhow::Result<EncodingKey> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let key = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    };
    key.with_context(|| format!("{}: not a {alg:?} private key", path.display()))
}

/// Changes one character in the middle of the signature: still base64url,
/// still the right length, but the wrong bytes (the last character may
/// carry padding bits, where a change would be a decoding error instead).
fn forge(token: &mut String) {
    let Some(dot) = token.rfind('.') else { return };
    let at = dot + 1 + (token.len() - dot - 1) / 2;
    let swap = if token.as_bytes().get(at) == Some(&b'A') {
        "B"
    } else {
        "A"
    };
    token.replace_range(at..at + 1, swap);
}

/// The `csrf` claim of a token read from a file (unverified: the generator
/// only needs to echo it).
fn csrf_claim(token: &str) -> Option<String> {
    jwt_payload(token)?
        .get("csrf")?
        .as_str()
        .map(str::to_string)
}

/// Tokens for the attempts of one run.
pub enum TokenSource {
    /// No credential at all.
    None,
    /// A file's tokens, round-robin.
    Rotate(Vec<Minted>, Cell<usize>),
    /// A file's tokens, each used once; then the run ends.
    Unique(Vec<Minted>, Cell<usize>),
    /// A new token for every attempt.
    Mint(Box<Minter>, Cell<u64>),
}

impl TokenSource {
    /// From the flags: minting if asked for, else the token file.
    pub fn from_args(args: &TokenArgs) -> anyhow::Result<TokenSource> {
        let (mint, token_file, unique) = (&args.mint, args.token_file.as_deref(), args.unique);
        if mint.enabled() {
            if token_file.is_some() {
                bail!("--token-file and minting (--mint-alg/--mint-secret-env) exclude each other");
            }
            return Ok(TokenSource::Mint(
                Box::new(Minter::new(mint)?),
                Cell::new(0),
            ));
        }
        let Some(path) = token_file else {
            return Ok(TokenSource::None);
        };
        let tokens = read_tokens(path)?
            .into_iter()
            .map(|(lineno, token)| {
                if !token.bytes().all(|b| b.is_ascii_graphic()) {
                    bail!(
                        "{}:{lineno}: token contains characters not allowed in a header",
                        path.display()
                    );
                }
                let csrf = csrf_claim(&token);
                Ok(Minted { token, csrf })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(if unique {
            TokenSource::Unique(tokens, Cell::new(0))
        } else {
            TokenSource::Rotate(tokens, Cell::new(0))
        })
    }

    /// The next attempt's token (borrowed from a file's, owned when
    /// minted); `Ok(None)` once a unique pool is used up (or when there is
    /// no credential: check `has_tokens`).
    pub fn next(&self) -> Result<Option<Cow<'_, Minted>>, Failure> {
        match self {
            TokenSource::None => Ok(None),
            TokenSource::Rotate(tokens, next) => {
                let i = next.get();
                next.set((i + 1) % tokens.len().max(1));
                Ok(tokens.get(i).map(Cow::Borrowed))
            }
            TokenSource::Unique(tokens, next) => {
                let i = next.get();
                next.set(i.saturating_add(1));
                Ok(tokens.get(i).map(Cow::Borrowed))
            }
            TokenSource::Mint(m, n) => {
                let i = n.get();
                n.set(i + 1);
                m.mint(i).map(|t| Some(Cow::Owned(t)))
            }
        }
    }

    /// The first token of a file (to read claims that all of them share).
    pub fn first(&self) -> Option<&str> {
        match self {
            TokenSource::Rotate(t, _) | TokenSource::Unique(t, _) => {
                t.first().map(|m| m.token.as_str())
            }
            TokenSource::None | TokenSource::Mint(..) => None,
        }
    }

    pub fn has_tokens(&self) -> bool {
        !matches!(self, TokenSource::None)
    }

    /// Whether a unique pool has been used up.
    pub fn exhausted(&self) -> bool {
        match self {
            TokenSource::Unique(tokens, next) => next.get() >= tokens.len(),
            _ => false,
        }
    }

    /// For the reports: how many distinct tokens (0: one per attempt).
    pub fn count(&self) -> usize {
        match self {
            TokenSource::None | TokenSource::Mint(..) => 0,
            TokenSource::Rotate(t, _) | TokenSource::Unique(t, _) => t.len(),
        }
    }

    /// For the logs: where the tokens come from.
    pub fn describe(&self) -> String {
        match self {
            TokenSource::None => "none".into(),
            TokenSource::Rotate(t, _) => format!("{} rotated", t.len()),
            TokenSource::Unique(t, _) => format!("{} unique (one per attempt)", t.len()),
            TokenSource::Mint(m, _) => format!(
                "minted per attempt ({:?}{})",
                m.alg,
                match m.invalid {
                    None => "",
                    Some(Invalid::BadSignature) => ", bad signature",
                    Some(Invalid::Expired) => ", expired",
                }
            ),
        }
    }
}

/// `wsgate-bench mint`: a pool of unique tokens, one per line, minted on
/// every core before a run (for --token-file --unique), so that signing
/// costs nothing during the measurement.
#[derive(clap::Args, Debug)]
pub struct MintCmd {
    /// How many tokens.
    #[arg(long)]
    pub count: u64,
    /// Signing threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub mint: MintArgs,
}

pub fn run_mint(cmd: &MintCmd) -> anyhow::Result<i32> {
    if cmd.count == 0 || cmd.count > 10_000_000 {
        bail!("--count must be in 1..=10000000");
    }
    let minter = Minter::new(&cmd.mint)?;
    let threads = cmd
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 256) as u64;
    let chunk = cmd.count.div_ceil(threads);
    let parts: Vec<Result<Vec<String>, Failure>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let minter = &minter;
                let range = t * chunk..((t + 1) * chunk).min(cmd.count);
                s.spawn(move || {
                    range
                        .map(|n| minter.mint(n).map(|m| m.token))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Failure::new("mint", "a signing thread panicked")))
            })
            .collect()
    });
    let mut out: Box<dyn Write> = match &cmd.out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    for part in parts {
        for token in part.map_err(|f| anyhow::anyhow!("{}", f.detail))? {
            writeln!(out, "{token}")?;
        }
    }
    out.flush()?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    fn hs(invalid: Option<Invalid>, csrf: bool) -> Minter {
        std::env::set_var(
            "WSGATE_BENCH_TEST_SECRET",
            "test-secret-test-secret-test-secret",
        );
        let args = MintArgs {
            mint_secret_env: Some("WSGATE_BENCH_TEST_SECRET".into()),
            mint_claims: Some(r#"{"aud":"api"}"#.into()),
            mint_ttl: Duration::from_secs(60),
            mint_invalid: invalid,
            mint_csrf: csrf,
            ..MintArgs::default()
        };
        match Minter::new(&args) {
            Ok(m) => m,
            Err(e) => panic!("minter: {e}"),
        }
    }

    fn check(token: &str) -> Result<Map<String, Value>, jsonwebtoken::errors::ErrorKind> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&["api"]);
        jsonwebtoken::decode::<Map<String, Value>>(
            token,
            &DecodingKey::from_secret(b"test-secret-test-secret-test-secret"),
            &v,
        )
        .map(|d| d.claims)
        .map_err(|e| e.into_kind())
    }

    #[test]
    fn minted_tokens_verify_and_never_repeat() {
        let m = hs(None, true);
        let a = m.mint(1).map(|m| m.token).unwrap_or_default();
        let b = m.mint(2).map(|m| m.token).unwrap_or_default();
        assert_ne!(a, b);
        let ca = check(&a).unwrap_or_default();
        let cb = check(&b).unwrap_or_default();
        assert_ne!(ca.get("sub"), cb.get("sub"));
        assert_ne!(ca.get("jti"), cb.get("jti"));
        assert_eq!(
            ca.get("csrf").and_then(Value::as_str).map(str::to_string),
            csrf_claim(&a)
        );
        assert!(csrf_claim(&a).is_some());
    }

    #[test]
    fn invalid_tokens_are_refused_for_the_stated_reason() {
        let forged = hs(Some(Invalid::BadSignature), false)
            .mint(7)
            .map(|m| m.token);
        assert_eq!(
            check(&forged.unwrap_or_default()).err(),
            Some(jsonwebtoken::errors::ErrorKind::InvalidSignature)
        );
        let expired = hs(Some(Invalid::Expired), false).mint(7).map(|m| m.token);
        assert_eq!(
            check(&expired.unwrap_or_default()).err(),
            Some(jsonwebtoken::errors::ErrorKind::ExpiredSignature)
        );
    }

    #[test]
    fn a_unique_pool_runs_out() {
        let pool = TokenSource::Unique(
            ["a", "b"]
                .iter()
                .map(|t| Minted {
                    token: t.to_string(),
                    csrf: None,
                })
                .collect(),
            Cell::new(0),
        );
        let got: Vec<String> = (0..3)
            .filter_map(|_| pool.next().ok().flatten().map(|m| m.token.clone()))
            .collect();
        assert_eq!(got, ["a", "b"]);
        assert!(pool.exhausted());
    }
}
