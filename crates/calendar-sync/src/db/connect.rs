//! Connection options: a `DATABASE_URL` (URL or key=value form) read with
//! libpq's meaning of the TLS options, which tokio-postgres does not parse
//! (`verify-ca`, `verify-full`, `allow`, `sslrootcert`, `sslcert`, `sslkey`),
//! plus the session defaults every connection of the library gets.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;

/// libpq's `sslmode`.
///
/// ```
/// use calendar_sync::{ConnectOptions, SslMode};
///
/// let url = "postgres://worker@db.internal/app";
/// let env = |name: &str| (name == "PGSSLMODE").then(|| "require".to_owned());
/// // PGSSLMODE fills what the URL does not say; nothing said is `prefer`.
/// assert_eq!(ConnectOptions::parse_with_env(url, env)?.tls.mode, SslMode::Require);
/// assert_eq!(ConnectOptions::parse_with_env(url, |_| None)?.tls.mode, SslMode::Prefer);
/// # Ok::<(), calendar_sync::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// Plaintext first; TLS (unverified) if the server refuses plaintext.
    Allow,
    /// TLS first (unverified); plaintext if the server has no TLS. The default.
    #[default]
    Prefer,
    /// TLS or nothing; the chain is verified only when `sslrootcert` is given.
    Require,
    /// TLS, the chain verified against `sslrootcert`, any host name.
    VerifyCa,
    /// TLS, the chain verified and the certificate valid for the host.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, Error> {
        Ok(match value {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(Error::Config(format!(
                    "sslmode {other:?} is not one of disable, allow, prefer, require, \
                     verify-ca, verify-full"
                )));
            }
        })
    }
}

/// Where trusted root certificates come from.
///
/// ```
/// use calendar_sync::{ConnectOptions, RootCerts};
///
/// let url = "postgres://worker@db.example.com/app?sslmode=verify-full&sslrootcert=system";
/// let options = ConnectOptions::parse(url)?;
/// assert_eq!(options.tls.root_certs, Some(RootCerts::System));
/// # Ok::<(), calendar_sync::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// A PEM file (`sslrootcert=PATH`).
    File(PathBuf),
    /// The platform's store (`sslrootcert=system`).
    System,
}

/// The TLS half of the connection options.
///
/// ```
/// use calendar_sync::{ConnectOptions, RootCerts, SslMode, TlsOptions};
///
/// let url = "host=db.internal user=worker dbname=app sslmode=verify-full \
///            sslrootcert=/etc/ssl/db-ca.pem sslcert=/etc/ssl/worker.crt sslkey=/etc/ssl/worker.key";
/// let options = ConnectOptions::parse_with_env(url, |_| None)?;
/// let expected = TlsOptions {
///     mode: SslMode::VerifyFull,
///     root_certs: Some(RootCerts::File("/etc/ssl/db-ca.pem".into())),
///     client_cert: Some("/etc/ssl/worker.crt".into()),
///     client_key: Some("/etc/ssl/worker.key".into()),
/// };
/// assert_eq!(options.tls, expected);
/// # Ok::<(), calendar_sync::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsOptions {
    /// libpq's `sslmode`.
    pub mode: SslMode,
    /// `sslrootcert`.
    pub root_certs: Option<RootCerts>,
    /// `sslcert`: the client certificate (PEM), with `sslkey`.
    pub client_cert: Option<PathBuf>,
    /// `sslkey`: the client certificate's private key (PEM).
    pub client_key: Option<PathBuf>,
}

/// Everything needed to open a session: tokio-postgres' settings plus TLS.
/// Give it to [`Database::with_options`](crate::Database::with_options).
///
/// ```
/// use std::path::PathBuf;
/// use calendar_sync::{ConnectOptions, RootCerts, SslMode};
///
/// let options = ConnectOptions::parse(
///     "postgres://worker@db.internal:5432/app?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem",
/// )?;
/// assert_eq!(options.tls.mode, SslMode::VerifyFull);
/// let ca = PathBuf::from("/etc/ssl/db-ca.pem");
/// assert_eq!(options.tls.root_certs, Some(RootCerts::File(ca)));
/// assert_eq!(options.config.get_dbname(), Some("app"));
/// # Ok::<(), calendar_sync::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Host, port, user, database, timeouts… (the password is redacted in Debug).
    pub config: tokio_postgres::Config,
    /// How sessions are encrypted and what is verified.
    pub tls: TlsOptions,
}

/// The session name when neither the URL nor the caller sets one.
pub(crate) const DEFAULT_APPLICATION_NAME: &str = "calendar-sync";
/// How long opening a session may take when the URL does not say.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle time before TCP keepalives start when the URL does not say (the
/// kernel's 2 h would let a dead peer behind a NAT go unnoticed for hours).
pub(crate) const DEFAULT_KEEPALIVES_IDLE: Duration = Duration::from_secs(60);

const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

impl ConnectOptions {
    /// Reads `url` (URL or key=value form); `PGSSLMODE`, `PGSSLROOTCERT`,
    /// `PGSSLCERT` and `PGSSLKEY` fill what it does not set.
    pub fn parse(url: &str) -> Result<Self, Error> {
        Self::parse_with_env(url, |name| std::env::var(name).ok())
    }

    /// [`ConnectOptions::parse`] with the environment given as a function.
    pub fn parse_with_env(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let (rest, pairs) = split_tls_keys(url)?;
        let keys: HashSet<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|e| Error::Config(format!("DATABASE_URL does not parse: {}", cause(&e))))?;
        let value = |key: &str, var: &str| {
            let given = pairs.iter().rev().find(|(k, _)| k == key);
            given.map(|(_, v)| v.clone()).or_else(|| env(var))
        };
        let tls = TlsOptions {
            mode: value("sslmode", "PGSSLMODE")
                .map(|m| SslMode::parse(&m))
                .transpose()?
                .unwrap_or_default(),
            root_certs: value("sslrootcert", "PGSSLROOTCERT").map(|r| match r.as_str() {
                "system" => RootCerts::System,
                _ => RootCerts::File(r.into()),
            }),
            client_cert: value("sslcert", "PGSSLCERT").map(PathBuf::from),
            client_key: value("sslkey", "PGSSLKEY").map(PathBuf::from),
        };
        apply_defaults(&mut config, &rest, &keys);
        Ok(Self { config, tls })
    }

    /// Options for an already built tokio-postgres config: its `sslmode`
    /// (disable, prefer or require) without verification, as libpq does
    /// without a root certificate.
    pub fn from_config(mut config: tokio_postgres::Config) -> Self {
        use tokio_postgres::config::SslMode as Pg;
        if config.get_application_name().is_none() {
            config.application_name(DEFAULT_APPLICATION_NAME);
        }
        let mode = match config.get_ssl_mode() {
            Pg::Disable => SslMode::Disable,
            Pg::Require => SslMode::Require,
            _ => SslMode::Prefer,
        };
        let tls = TlsOptions {
            mode,
            ..TlsOptions::default()
        };
        Self { config, tls }
    }

    /// Sets the session name unless the URL set one (the worker names itself).
    pub fn default_application_name(&mut self, name: &str) {
        if self.config.get_application_name() == Some(DEFAULT_APPLICATION_NAME) {
            self.config.application_name(name);
        }
    }
}

/// Fills connect_timeout, keepalives_idle and application_name where the
/// connection string left them out.
fn apply_defaults(config: &mut tokio_postgres::Config, rest: &str, keys: &HashSet<String>) {
    let mentions = |key: &str| keys.contains(key) || rest.contains(key);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    if !mentions("keepalives_idle") {
        config.keepalives_idle(DEFAULT_KEEPALIVES_IDLE);
    }
    if config.get_application_name().is_none() {
        config.application_name(DEFAULT_APPLICATION_NAME);
    }
}

/// The error and its causes, joined: tokio-postgres puts the useful part
/// (PostgreSQL's message, the OS error) in `source()`.
pub(crate) fn cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let mut text = in_words(&e.to_string());
        // Wrappers that only say "something below failed" add nothing.
        for noise in NOISE {
            text = text.replace(&format!("{noise}: "), "");
        }
        let noise = NOISE.contains(&text.as_str()) && e.source().is_some();
        if !noise && !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

const NOISE: [&str; 2] = ["db error", "Error occurred while creating a new object"];

/// rustls names some verification failures by their variant only.
fn in_words(text: &str) -> String {
    text.replace(
        "invalid peer certificate: UnknownIssuer",
        "invalid peer certificate: the server's certificate is not signed by a CA in \
         sslrootcert (UnknownIssuer)",
    )
}

/// Removes the TLS keys tokio-postgres cannot parse; returns the rest of the
/// string and the removed (key, value) pairs in order.
fn split_tls_keys(url: &str) -> Result<(String, Vec<(String, String)>), Error> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(split_url(url))
    } else {
        split_key_value(url)
    }
}

fn split_url(url: &str) -> (String, Vec<(String, String)>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), Vec::new());
    };
    let (mut kept, mut taken) = (Vec::new(), Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(k);
        if TLS_KEYS.contains(&key.as_str()) {
            taken.push((key, percent_decode(v)));
        } else {
            kept.push(pair);
        }
    }
    let rest = match kept.is_empty() {
        true => base.to_owned(),
        false => format!("{base}?{}", kept.join("&")),
    };
    (rest, taken)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits `key=value key='quoted \' value'` into tokens, keeping the
/// original text of the pairs that stay.
fn split_key_value(text: &str) -> Result<(String, Vec<(String, String)>), Error> {
    let (mut kept, mut taken) = (Vec::new(), Vec::new());
    let mut chars = text.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let key: String =
            std::iter::from_fn(|| chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()))
                .map(|(_, c)| c)
                .collect();
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(Error::Config(format!("DATABASE_URL: {key:?} has no value")));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let value = key_value_value(&mut chars)?;
        let end = chars.peek().map_or(text.len(), |(i, _)| *i);
        match TLS_KEYS.contains(&key.as_str()) {
            true => taken.push((key, value)),
            false => kept.push(&text[start..end]),
        }
    }
    Ok((kept.join(" "), taken))
}

fn key_value_value(
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
) -> Result<String, Error> {
    let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
    let mut value = String::new();
    while let Some((_, c)) = chars.next_if(|(_, c)| quoted || !c.is_whitespace()) {
        match c {
            '\\' => value.extend(chars.next().map(|(_, c)| c)),
            '\'' if quoted => return Ok(value),
            c => value.push(c),
        }
    }
    match quoted {
        true => Err(Error::Config(
            "DATABASE_URL: unterminated quoted value".into(),
        )),
        false => Ok(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str, env: &[(&str, &str)]) -> ConnectOptions {
        ConnectOptions::parse_with_env(url, |name| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
        .unwrap()
    }

    #[test]
    fn url_form_takes_libpq_tls_keys_and_keeps_the_rest() {
        let o = parse(
            "postgres://u:pw@db.example.com:6543/app?sslmode=verify-full&sslrootcert=%2Fetc%2Frds.pem&application_name=me",
            &[],
        );
        assert_eq!(o.tls.mode, SslMode::VerifyFull);
        assert_eq!(
            o.tls.root_certs,
            Some(RootCerts::File("/etc/rds.pem".into()))
        );
        assert_eq!(o.config.get_application_name(), Some("me"));
        assert_eq!(o.config.get_dbname(), Some("app"));
        assert_eq!(o.config.get_ports(), &[6543]);
    }

    #[test]
    fn key_value_form_takes_quoted_values() {
        let o = parse(
            r"host=h dbname=app sslmode = verify-ca sslrootcert='/a b/c\'d.pem' sslcert=/c.pem sslkey=/k.pem",
            &[],
        );
        assert_eq!(o.tls.mode, SslMode::VerifyCa);
        assert_eq!(
            o.tls.root_certs,
            Some(RootCerts::File("/a b/c'd.pem".into()))
        );
        assert_eq!(o.tls.client_cert, Some("/c.pem".into()));
        assert_eq!(o.tls.client_key, Some("/k.pem".into()));
        assert_eq!(o.config.get_dbname(), Some("app"));
    }

    #[test]
    fn libpq_variables_fill_what_the_url_leaves_out() {
        let env = [
            ("PGSSLMODE", "require"),
            ("PGSSLROOTCERT", "system"),
            ("PGSSLCERT", "/c"),
            ("PGSSLKEY", "/k"),
        ];
        let o = parse("postgres://h/app", &env);
        assert_eq!(o.tls.mode, SslMode::Require);
        assert_eq!(o.tls.root_certs, Some(RootCerts::System));
        assert_eq!(o.tls.client_key, Some("/k".into()));
        let o = parse("postgres://h/app?sslmode=disable", &env);
        assert_eq!(o.tls.mode, SslMode::Disable, "the URL wins");
    }

    #[test]
    fn sessions_get_sane_defaults_unless_the_url_says() {
        let o = parse("postgres://h/app", &[]);
        assert_eq!(o.tls.mode, SslMode::Prefer);
        assert_eq!(
            o.config.get_application_name(),
            Some(DEFAULT_APPLICATION_NAME)
        );
        assert_eq!(
            o.config.get_connect_timeout(),
            Some(&DEFAULT_CONNECT_TIMEOUT)
        );
        assert_eq!(o.config.get_keepalives_idle(), DEFAULT_KEEPALIVES_IDLE);
        assert!(o.config.get_keepalives());
        let o = parse("postgres://h/app?connect_timeout=3&keepalives_idle=7", &[]);
        assert_eq!(
            o.config.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        assert_eq!(o.config.get_keepalives_idle(), Duration::from_secs(7));
        let mut o = parse("postgres://h/app", &[]);
        o.default_application_name("calendar-sync-worker");
        assert_eq!(
            o.config.get_application_name(),
            Some("calendar-sync-worker")
        );
        let mut o = parse("postgres://h/app?application_name=mine", &[]);
        o.default_application_name("calendar-sync-worker");
        assert_eq!(o.config.get_application_name(), Some("mine"));
    }

    #[test]
    fn a_bad_sslmode_names_the_choices() {
        let e = ConnectOptions::parse_with_env("postgres://h/app?sslmode=strict", |_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"strict\"") && e.contains("verify-full"), "{e}");
    }
}
