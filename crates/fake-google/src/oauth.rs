//! OAuth: registered clients, refresh tokens, issued access tokens, and the refresh grant of
//! `POST /token` (fact sheet §7).
//!
//! Rotation: a refresh token marked with [`crate::FakeGoogle::rotate_on_next_refresh`] answers
//! its next successful refresh with a new `refresh_token`; the old one is revoked at that moment
//! (so a worker that does not store the rotated token fails its next refresh with
//! `invalid_grant`).
//!
//! Revoking a refresh token also invalidates the access tokens issued from it (as Google's
//! revocation does), so the next Calendar call answers 401.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::errors::{ApiError, OAuthError};

/// Scope given to refresh tokens registered without an explicit scope.
pub const DEFAULT_SCOPE: &str = "https://www.googleapis.com/auth/calendar.events";

const READ_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/calendar.readonly",
    "https://www.googleapis.com/auth/calendar.events.readonly",
];
const WRITE_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/calendar",
    "https://www.googleapis.com/auth/calendar.events",
    "https://www.googleapis.com/auth/calendar.events.owned",
    "https://www.googleapis.com/auth/calendar.app.created",
];

#[derive(Debug, Clone)]
struct RefreshToken {
    client_id: String,
    user_email: String,
    scope: String,
    revoked: bool,
    rotate_next: bool,
}

#[derive(Debug, Clone)]
struct AccessToken {
    refresh_token: String,
    expires_at: Instant,
}

/// Who a valid access token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    pub user_email: String,
    pub client_id: String,
    scope: String,
}

impl Principal {
    /// 403 `insufficientPermissions` unless the token's scopes allow this call.
    pub(crate) fn check_scope(&self, write: bool) -> Result<(), ApiError> {
        let has = |list: &[&str]| self.scope.split(' ').any(|s| list.contains(&s));
        if has(WRITE_SCOPES) || (!write && has(READ_SCOPES)) {
            Ok(())
        } else {
            Err(ApiError::insufficient_permissions())
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct OAuth {
    clients: HashMap<String, String>,
    refresh: HashMap<String, RefreshToken>,
    access: HashMap<String, AccessToken>,
    pub(crate) refresh_counts: HashMap<String, u64>,
    pub(crate) token_requests: u64,
    pub(crate) rotations: HashMap<String, String>,
}

fn random_token(prefix: &str, len: usize) -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    let tail: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect();
    format!("{prefix}{tail}")
}

impl OAuth {
    pub(crate) fn add_client(&mut self, id: &str, secret: &str) {
        self.clients.insert(id.to_string(), secret.to_string());
    }

    pub(crate) fn add_refresh_token(&mut self, token: &str, client: &str, user: &str, scope: &str) {
        self.refresh.insert(
            token.to_string(),
            RefreshToken {
                client_id: client.to_string(),
                user_email: user.to_string(),
                scope: scope.to_string(),
                revoked: false,
                rotate_next: false,
            },
        );
    }

    pub(crate) fn revoke(&mut self, token: &str) {
        if let Some(rt) = self.refresh.get_mut(token) {
            rt.revoked = true;
        }
        self.access.retain(|_, a| a.refresh_token != token);
    }

    pub(crate) fn rotate_next(&mut self, token: &str) {
        if let Some(rt) = self.refresh.get_mut(token) {
            rt.rotate_next = true;
        }
    }

    pub(crate) fn expire_all(&mut self) {
        let now = Instant::now();
        for a in self.access.values_mut() {
            a.expires_at = now;
        }
    }

    /// Mints an access token directly (no token endpoint call); for tests that do not care
    /// about OAuth.
    pub(crate) fn mint(&mut self, refresh_token: &str, lifetime: Duration) -> Option<String> {
        self.refresh.get(refresh_token).filter(|r| !r.revoked)?;
        let token = random_token("ya29.fake-", 40);
        self.access.insert(
            token.clone(),
            AccessToken {
                refresh_token: refresh_token.to_string(),
                expires_at: Instant::now() + lifetime,
            },
        );
        Some(token)
    }

    /// Checks an `Authorization` header value.
    pub(crate) fn authenticate(&self, header: Option<&str>) -> Result<Principal, ApiError> {
        let Some(h) = header else {
            return Err(ApiError::login_required());
        };
        let token = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .ok_or_else(ApiError::auth_error)?
            .trim();
        let at = self.access.get(token).ok_or_else(ApiError::auth_error)?;
        if Instant::now() >= at.expires_at {
            return Err(ApiError::auth_error());
        }
        let rt = self
            .refresh
            .get(&at.refresh_token)
            .ok_or_else(ApiError::auth_error)?;
        Ok(Principal {
            user_email: rt.user_email.clone(),
            client_id: rt.client_id.clone(),
            scope: rt.scope.clone(),
        })
    }

    /// The refresh grant. `form` is the decoded form body, `basic` the `Authorization` header.
    pub(crate) fn grant(
        &mut self,
        form: &[(String, String)],
        basic: Option<&str>,
        lifetime: Duration,
    ) -> Result<Value, OAuthError> {
        self.token_requests += 1;
        let get = |k: &str| {
            form.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        let (mut client_id, mut secret) = (get("client_id"), get("client_secret"));
        if let Some((id, s)) = basic.and_then(parse_basic) {
            client_id = Some(id);
            secret = Some(s);
        }
        let refresh_token = get("refresh_token");
        if let Some(rt) = &refresh_token {
            *self.refresh_counts.entry(rt.clone()).or_default() += 1;
        }
        match get("grant_type").as_deref() {
            Some("refresh_token") => {}
            Some(other) => {
                return Err(OAuthError::new(
                    400,
                    "unsupported_grant_type",
                    &format!("Invalid grant_type: {other}"),
                ));
            }
            None => {
                return Err(OAuthError::new(
                    400,
                    "unsupported_grant_type",
                    "Invalid grant_type: ",
                ));
            }
        }
        let client_id = client_id.ok_or_else(|| {
            OAuthError::new(
                400,
                "invalid_request",
                "Could not determine client ID from request.",
            )
        })?;
        let expected = self
            .clients
            .get(&client_id)
            .ok_or_else(OAuthError::client_not_found)?;
        if secret.as_deref() != Some(expected.as_str()) {
            return Err(OAuthError::bad_client_secret());
        }
        let refresh_token = refresh_token.ok_or_else(|| {
            OAuthError::new(
                400,
                "invalid_request",
                "Missing required parameter: refresh_token",
            )
        })?;
        let rt = match self.refresh.get(&refresh_token) {
            Some(rt) if !rt.revoked => rt.clone(),
            _ => return Err(OAuthError::invalid_grant()),
        };
        if rt.client_id != client_id {
            return Err(OAuthError::unauthorized_client());
        }
        let access = random_token("ya29.fake-", 40);
        self.access.insert(
            access.clone(),
            AccessToken {
                refresh_token: refresh_token.clone(),
                expires_at: Instant::now() + lifetime,
            },
        );
        let mut body = json!({
            "access_token": access,
            "expires_in": lifetime.as_secs(),
            "scope": rt.scope,
            "token_type": "Bearer",
        });
        if rt.rotate_next {
            let new = random_token("1//fake-", 40);
            self.refresh.insert(
                new.clone(),
                RefreshToken {
                    rotate_next: false,
                    ..rt.clone()
                },
            );
            // The access token just issued belongs to the new refresh token's lineage.
            if let Some(a) = self.access.get_mut(&access) {
                a.refresh_token = new.clone();
            }
            if let Some(old) = self.refresh.get_mut(&refresh_token) {
                old.revoked = true;
                old.rotate_next = false;
            }
            self.rotations.insert(refresh_token, new.clone());
            body["refresh_token"] = json!(new);
        }
        Ok(body)
    }
}

/// `Basic base64(client_id:client_secret)` (client_secret_basic; parts form-urlencoded).
fn parse_basic(h: &str) -> Option<(String, String)> {
    let b64 = h
        .strip_prefix("Basic ")
        .or_else(|| h.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (id, secret) = s.split_once(':')?;
    let dec = |x: &str| {
        form_urlencoded::parse(format!("v={x}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((dec(id), dec(secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn grant_errors_in_order() {
        let mut o = OAuth::default();
        o.add_client("c1", "s1");
        o.add_client("c2", "s2");
        o.add_refresh_token("rt", "c1", "u@x", DEFAULT_SCOPE);
        let life = Duration::from_secs(60);
        let base = [("grant_type", "refresh_token"), ("refresh_token", "rt")];
        let mut f = form(&base);
        f.extend(form(&[("client_id", "c1"), ("client_secret", "bad")]));
        assert_eq!(o.grant(&f, None, life).unwrap_err().error, "invalid_client");
        let mut f = form(&base);
        f.extend(form(&[("client_id", "c2"), ("client_secret", "s2")]));
        assert_eq!(
            o.grant(&f, None, life).unwrap_err().error,
            "unauthorized_client"
        );
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("c1:s1")
        );
        let ok = o.grant(&form(&base), Some(&basic), life).unwrap();
        assert_eq!(ok["token_type"], "Bearer");
        assert!(ok.get("refresh_token").is_none());
        o.revoke("rt");
        assert_eq!(
            o.grant(&form(&base), Some(&basic), life)
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(o.refresh_counts["rt"], 4);
    }
}
