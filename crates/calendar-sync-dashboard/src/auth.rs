//! Who may write: the dashboard token, the session cookie minted from it, the
//! bearer header, and the cross-site checks every POST passes first.
//!
//! A session is `v1.<expiry>.<mac>`: the Unix time it expires (12 h after
//! login) and HMAC-SHA256 over that time keyed by the token. Nothing is
//! stored on the server; a cookie cannot be forged without the token, cannot
//! be extended (the time is under the MAC), and every session dies when the
//! token changes.

use std::fmt;

use axum::http::{HeaderMap, Uri, header};
use sha2::{Digest, Sha256};

/// The shortest dashboard token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// How long a session lasts after login.
pub(crate) const SESSION_SECONDS: i64 = 12 * 3600;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "calendar_sync_dashboard_session";

/// The secret that enables the dashboard's write actions
/// (`CALENDAR_SYNC_DASHBOARD_TOKEN` in the worker). Its `Debug` never shows
/// it, and nothing in the dashboard logs or renders it.
#[derive(Clone)]
pub struct DashboardToken(String);

impl DashboardToken {
    /// The token, if it is at least [`MIN_TOKEN_LEN`] characters long.
    ///
    /// # Errors
    /// A short or empty token, with a message that does not contain it.
    pub fn new(token: impl Into<String>) -> Result<Self, TokenError> {
        let token = token.into();
        if token.chars().count() < MIN_TOKEN_LEN {
            return Err(TokenError);
        }
        Ok(Self(token))
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for DashboardToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DashboardToken(<redacted>)")
    }
}

/// A token too short to be one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError;

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the dashboard token must be at least {MIN_TOKEN_LEN} characters long"
        )
    }
}

impl std::error::Error for TokenError {}

/// HMAC-SHA256 (RFC 2104).
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Equal bytes, in a time that depends only on the lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `candidate` is the token: compared as SHA-256 digests, so the
/// time taken says nothing about the token's length or contents.
pub(crate) fn token_matches(token: &DashboardToken, candidate: &str) -> bool {
    constant_time_eq(
        &Sha256::digest(token.bytes()),
        &Sha256::digest(candidate.as_bytes()),
    )
}

fn session_mac(token: &DashboardToken, expires: i64) -> String {
    let message = format!("calendar-sync-dashboard session v1 {expires}");
    data_encoding::HEXLOWER.encode(&hmac_sha256(token.bytes(), message.as_bytes()))
}

/// A session's cookie value, valid until `now + SESSION_SECONDS`.
pub(crate) fn mint_session(token: &DashboardToken, now: i64) -> String {
    let expires = now + SESSION_SECONDS;
    format!("v1.{expires}.{}", session_mac(token, expires))
}

/// Whether a cookie value is a live session minted under this token.
pub(crate) fn session_valid(token: &DashboardToken, value: &str, now: i64) -> bool {
    let mut parts = value.splitn(3, '.');
    let (Some("v1"), Some(expires), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(expires) = expires.parse::<i64>() else {
        return false;
    };
    // Always compute and compare the MAC, then check the time.
    let good = constant_time_eq(session_mac(token, expires).as_bytes(), mac.as_bytes());
    good && expires > now && expires <= now + SESSION_SECONDS
}

/// The session cookie's value among the request's cookies.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
}

/// The bearer token of an `Authorization` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// No token is configured: nobody writes.
    ReadOnly,
    /// Writes are possible, but this request has no valid session or bearer.
    LoggedOut,
    /// A valid session cookie or bearer token.
    Writer,
}

pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub(crate) fn access(token: Option<&DashboardToken>, headers: &HeaderMap) -> Access {
    let Some(token) = token else {
        return Access::ReadOnly;
    };
    let by_bearer = bearer(headers).is_some_and(|b| token_matches(token, b));
    let by_cookie = session_cookie(headers).is_some_and(|c| session_valid(token, c, now()));
    if by_bearer || by_cookie {
        Access::Writer
    } else {
        Access::LoggedOut
    }
}

/// Why a POST looks cross-site, if it does: `Sec-Fetch-Site` other than
/// `same-origin` or `none`, or an `Origin` (or "null") whose host and port
/// are not the request's `Host`. A request with neither header (a script with
/// a bearer token) passes.
pub(crate) fn cross_site(headers: &HeaderMap, uri: &Uri) -> Option<&'static str> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("").trim().to_ascii_lowercase();
        if site != "same-origin" && site != "none" {
            return Some("the browser says this request came from another site");
        }
    }
    let origin = headers.get(header::ORIGIN)?;
    let Some((scheme, origin_authority)) = origin
        .to_str()
        .ok()
        .map(str::trim)
        .and_then(|o| o.split_once("://"))
    else {
        return Some("the request's Origin is not a web origin");
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()));
    let Some(host) = host else {
        return Some("the request has an Origin but no Host");
    };
    let scheme = scheme.to_ascii_lowercase();
    if normalize(origin_authority, &scheme) == normalize(&host, &scheme) {
        None
    } else {
        Some("the request's Origin is another site")
    }
}

/// `host[:port]`, lower-cased, without the scheme's default port.
fn normalize(authority: &str, scheme: &str) -> String {
    let a = authority.trim().trim_end_matches('/').to_ascii_lowercase();
    let default = match scheme {
        "http" => Some(":80"),
        "https" => Some(":443"),
        _ => None,
    };
    match default {
        Some(port) if a.ends_with(port) => a[..a.len() - port.len()].to_owned(),
        _ => a,
    }
}

/// Whether the request reached us over https (directly or, by
/// `X-Forwarded-Proto`, through a proxy): the cookie is then `Secure`.
pub(crate) fn over_https(headers: &HeaderMap, uri: &Uri) -> bool {
    let forwarded = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    forwarded || uri.scheme_str() == Some("https")
}

/// The `Set-Cookie` value of a new session, or (value `None`) of its removal.
pub(crate) fn set_cookie(base: &str, value: Option<&str>, secure: bool) -> String {
    let path = if base.is_empty() { "/" } else { base };
    let secure = if secure { "; Secure" } else { "" };
    match value {
        Some(v) => format!(
            "{COOKIE}={v}; Path={path}; Max-Age={SESSION_SECONDS}; HttpOnly; SameSite=Strict{secure}"
        ),
        None => format!("{COOKIE}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Strict{secure}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            data_encoding::HEXLOWER.encode(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            data_encoding::HEXLOWER.encode(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn sessions_are_bound_to_the_token_and_expire() {
        let token = DashboardToken::new("a-long-enough-token").unwrap();
        let other = DashboardToken::new("another-long-token!").unwrap();
        let cookie = mint_session(&token, 1_000);
        assert!(session_valid(&token, &cookie, 1_000));
        assert!(session_valid(&token, &cookie, 1_000 + SESSION_SECONDS - 1));
        assert!(!session_valid(&token, &cookie, 1_000 + SESSION_SECONDS));
        assert!(!session_valid(&other, &cookie, 1_000));
        let extended = cookie.replacen(&(1_000 + SESSION_SECONDS).to_string(), "99999999", 1);
        assert!(!session_valid(&token, &extended, 1_000));
        assert!(!session_valid(&token, "v1.99999.00", 1_000));
        assert!(DashboardToken::new("short").is_err());
        assert_eq!(format!("{token:?}"), "DashboardToken(<redacted>)");
    }

    #[test]
    fn origins() {
        let uri: Uri = "/x".parse().unwrap();
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().unwrap());
            }
            m
        };
        assert!(cross_site(&h(&[]), &uri).is_none());
        assert!(cross_site(&h(&[("sec-fetch-site", "same-origin")]), &uri).is_none());
        assert!(cross_site(&h(&[("sec-fetch-site", "none")]), &uri).is_none());
        assert!(cross_site(&h(&[("sec-fetch-site", "same-site")]), &uri).is_some());
        let same = h(&[
            ("host", "a.example:8080"),
            ("origin", "http://a.example:8080"),
        ]);
        assert!(cross_site(&same, &uri).is_none());
        let default_port = h(&[("host", "a.example"), ("origin", "https://a.example:443")]);
        assert!(cross_site(&default_port, &uri).is_none());
        let other_port = h(&[
            ("host", "a.example:8080"),
            ("origin", "http://a.example:9090"),
        ]);
        assert!(cross_site(&other_port, &uri).is_some());
        let null = h(&[("host", "a.example"), ("origin", "null")]);
        assert!(cross_site(&null, &uri).is_some());
    }
}
