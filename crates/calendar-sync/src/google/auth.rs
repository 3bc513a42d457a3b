//! OAuth access tokens per workspace: refreshed from the stored (encrypted)
//! refresh token through Google's token endpoint, cached in memory until
//! shortly before expiry, one refresh at a time per connection.
//!
//! Why the `oauth2` crate and not yup-oauth2: yup-oauth2's authenticator falls
//! back to an interactive flow when a refresh fails, hard-codes the token URI of
//! its authorized-user flow, and logs refresh requests (refresh token and client
//! secret in the body) at debug level. `oauth2` does the refresh grant with a
//! configurable token URL, typed RFC 6749 errors, and no logging of its own.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AsyncHttpClient, AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet,
    HttpClientError, HttpRequest, RefreshToken, RequestTokenError, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};

use crate::calendar::{CalendarError, CalendarErrorKind};
use crate::crypto::{DecryptError, TokenCipher};
use crate::db::Database;
use crate::db::connect::cause;
use crate::google::evict::IdleMap;
use crate::google::versions::VersionReader;
use crate::store;

/// Refresh this long before Google says the token expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// How long items wait when their token's key is not configured: a worker
/// restarted with the key picks them up within this.
const UNKNOWN_KEY_WAIT: Duration = Duration::from_secs(30);
/// Google's usual lifetime, when the response omits `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3599);

type OAuthClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// The application's OAuth client, as registered with Google. Part of
/// [`GoogleConfig`](crate::GoogleConfig).
///
/// ```
/// use calendar_sync::{GoogleConfig, OAuthConfig};
/// use secrecy::SecretString;
///
/// // Against fake-google on port 8089 (README: "Testing your application with fake-google").
/// let mut google = GoogleConfig::new("my-client.apps.example.com", SecretString::from("my-secret"));
/// google.oauth.token_url = "http://127.0.0.1:8089/token".into();
/// google.calendar_api_url = "http://127.0.0.1:8089/calendar/v3/".into();
///
/// let oauth: &OAuthConfig = &google.oauth;
/// assert_eq!(oauth.client_id, "my-client.apps.example.com");
/// assert!(!format!("{oauth:?}").contains("my-secret")); // Debug never shows the secret
/// ```
#[derive(Clone)]
pub struct OAuthConfig {
    /// `GOOGLE_CLIENT_ID`.
    pub client_id: String,
    /// `GOOGLE_CLIENT_SECRET`.
    pub client_secret: SecretString,
    /// `GOOGLE_OAUTH_TOKEN_URL`; default `https://oauth2.googleapis.com/token`.
    pub token_url: String,
}

impl std::fmt::Debug for OAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("token_url", &self.token_url)
            .finish()
    }
}

struct Cached {
    token: SecretString,
    expires_at: Instant,
    /// The connection version the token was minted under.
    version: i64,
}

/// One connection's cache: its access token, and the stored refresh token that
/// Google refused (so that items waiting on the same refresh do not each ask
/// again; storing a new token changes the envelope and clears it).
#[derive(Default)]
struct Slot {
    cached: Option<Cached>,
    refused: Option<(String, CalendarError)>,
}

/// Access tokens of every workspace this process serves.
pub(crate) struct Tokens {
    oauth: OAuthClient,
    http: reqwest::Client,
    db: Database,
    cipher: TokenCipher,
    /// Idle slots without a usable token are evicted (see `IdleMap`).
    slots: Mutex<IdleMap<Slot>>,
    /// Connection versions, read in batched rounds (see `versions`).
    versions: VersionReader,
    refreshes: AtomicU64,
}

impl Tokens {
    pub(crate) fn new(
        config: &OAuthConfig,
        db: Database,
        cipher: TokenCipher,
        timeout: Duration,
    ) -> Result<Self, String> {
        let token_url = TokenUrl::new(config.token_url.clone())
            .map_err(|e| format!("GOOGLE_OAUTH_TOKEN_URL is not a URL: {e}"))?;
        let oauth = BasicClient::new(ClientId::new(config.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                config.client_secret.expose_secret().to_owned(),
            ))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(token_url);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the OAuth HTTP client: {e}"))?;
        Ok(Self {
            oauth,
            http,
            db,
            cipher,
            slots: Mutex::new(IdleMap::new()),
            versions: VersionReader::new(),
            refreshes: AtomicU64::new(0),
        })
    }

    /// How many refresh requests this process has sent.
    pub(crate) fn refresh_count(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    fn slot(&self, workspace_id: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().expect("token slots");
        // A slot worth keeping while idle holds a token still usable: without
        // one, evicting it costs nothing (the next call refreshes anyway).
        slots.get(workspace_id, |slot: &Slot| {
            slot.cached
                .as_ref()
                .is_some_and(|c| c.expires_at > Instant::now() + EXPIRY_MARGIN)
        })
    }

    /// A usable access token. Concurrent callers of one workspace share one
    /// refresh: they wait on the workspace's slot while the first refreshes.
    /// A reconnect anywhere (a new connection version) drops the cached token
    /// before it is used again.
    pub(crate) async fn access_token(
        &self,
        workspace_id: &str,
    ) -> Result<SecretString, CalendarError> {
        let version = self.version(workspace_id).await?;
        let slot = self.slot(workspace_id);
        let mut slot = slot.lock().await;
        if let Some(c) = slot.cached.as_ref()
            && c.version == version
            && c.expires_at > Instant::now() + EXPIRY_MARGIN
        {
            return Ok(c.token.clone());
        }
        let fresh = self.refresh(workspace_id, &mut slot).await?;
        let token = fresh.token.clone();
        slot.cached = Some(fresh);
        Ok(token)
    }

    /// The stored connection's version (0 when there is none), from a read
    /// that started after this call asked, so that a reconnect committed
    /// before the call is always seen.
    pub(crate) async fn version(&self, workspace_id: &str) -> Result<i64, CalendarError> {
        self.versions
            .version(&self.db, workspace_id)
            .await
            .map_err(database)
    }

    /// Drops `stale` from the cache (after Google answered 401 to it), unless
    /// another caller already replaced it.
    pub(crate) async fn forget(&self, workspace_id: &str, stale: &SecretString) {
        let slot = self.slot(workspace_id);
        let mut slot = slot.lock().await;
        if slot
            .cached
            .as_ref()
            .is_some_and(|c| c.token.expose_secret() == stale.expose_secret())
        {
            slot.cached = None;
        }
    }

    /// Drops whatever is cached, so the next call reads the connection again.
    pub(crate) async fn forget_all(&self, workspace_id: &str) {
        self.slot(workspace_id).lock().await.cached = None;
    }

    async fn refresh(&self, workspace_id: &str, slot: &mut Slot) -> Result<Cached, CalendarError> {
        let client = self.db.client().await.map_err(database)?;
        let connection = store::connection(&**client, workspace_id)
            .await
            .map_err(database)?
            .ok_or_else(|| {
                invalid(
                    "no_connection",
                    "no Google connection is stored for this workspace".into(),
                )
            })?;
        if !connection.is_valid {
            let reason = connection
                .invalid_reason
                .unwrap_or_else(|| "marked invalid".into());
            return Err(invalid(
                "connection_invalid",
                format!("connection invalid: {reason}"),
            ));
        }
        if let Some((envelope, error)) = &slot.refused
            && *envelope == connection.refresh_token_encrypted
        {
            return Err(error.clone());
        }
        let refresh_token = self
            .cipher
            .decrypt(workspace_id, &connection.refresh_token_encrypted)
            .map_err(undecryptable)?;
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        let http = StatusRecorder {
            inner: self.http.clone(),
            status: AtomicU16::new(0),
        };
        let response = self
            .oauth
            .exchange_refresh_token(&RefreshToken::new(refresh_token.expose_secret().to_owned()))
            .request_async(&http)
            .await
            .map_err(|e| classify_token_error(e, http.status.load(Ordering::Relaxed)));
        let result = if response.is_ok() { "ok" } else { "error" };
        metrics::counter!("calendar_sync_token_refreshes_total", "result" => result).increment(1);
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                if e.kind == CalendarErrorKind::ConnectionInvalid {
                    slot.refused = Some((connection.refresh_token_encrypted.clone(), e.clone()));
                }
                return Err(e);
            }
        };
        // Store the refresh token again when Google rotated it, or when it is
        // sealed with a retired key (so that key can be dropped once no row
        // carries its id).
        let reseal = match response.refresh_token() {
            Some(rotated) => Some(SecretString::from(rotated.secret().to_owned())),
            None if self
                .cipher
                .needs_reencryption(&connection.refresh_token_encrypted) =>
            {
                Some(refresh_token)
            }
            None => None,
        };
        let mut noted = false;
        if let Some(token) = reseal {
            let sealed = self.cipher.encrypt(workspace_id, &token);
            noted = store::replace_refresh_token(
                &**client,
                workspace_id,
                &connection.refresh_token_encrypted,
                &sealed,
            )
            .await
            .map_err(database)?;
            tracing::info!(
                workspace_id,
                "stored the refresh token sealed with the current key"
            );
        }
        // When the refresh token was not stored again (with the time), one
        // statement for the dashboard's "last token refresh": about once an
        // hour per connection. Its failure is not the refresh's.
        if !noted && let Err(e) = store::note_token_refresh(&**client, workspace_id).await {
            tracing::warn!(workspace_id, error = %e, "could not record the token refresh time");
        }
        let lifetime = response.expires_in().unwrap_or(DEFAULT_LIFETIME);
        Ok(Cached {
            token: SecretString::from(response.access_token().secret().to_owned()),
            expires_at: Instant::now() + lifetime,
            version: connection.version,
        })
    }
}

/// Sends token requests through reqwest and remembers the HTTP status, which
/// the classification needs (5xx and 429 are retryable).
struct StatusRecorder {
    inner: reqwest::Client,
    status: AtomicU16,
}

impl<'c> AsyncHttpClient<'c> for StatusRecorder {
    type Error = HttpClientError<reqwest::Error>;
    type Future =
        Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, Self::Error>> + Send + Sync + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let response = self.inner.call(request).await?;
            self.status
                .store(response.status().as_u16(), Ordering::Relaxed);
            Ok(response)
        })
    }
}

/// A failed read or write of the stored connection: what was tried (a pooled
/// session names host:port) and the cause, PostgreSQL's words included.
fn database(e: impl std::error::Error + 'static) -> CalendarError {
    CalendarError::new(CalendarErrorKind::Transient, "database", cause(&e))
}

/// An envelope under a key id that no configured key has is a deployment
/// mistake, not this connection's fault: its items wait (no attempt used,
/// nothing invalidated) until a worker with the key picks them up. Anything
/// else (a tag that fails under a known key, a malformed envelope) is.
fn undecryptable(error: DecryptError) -> CalendarError {
    match error {
        DecryptError::UnknownKeyId { kid } => CalendarError::new(
            CalendarErrorKind::HeldBack,
            "token_key_unknown",
            format!(
                "the stored refresh token is sealed with key id {kid}, which no configured key has; \
                 add that key to TOKEN_ENCRYPTION_OLD_KEYS"
            ),
        )
        .with_retry_after(Some(UNKNOWN_KEY_WAIT)),
        other => invalid(
            "token_undecryptable",
            format!("the stored refresh token cannot be used: {other}"),
        ),
    }
}

fn invalid(code: &str, message: String) -> CalendarError {
    CalendarError::new(CalendarErrorKind::ConnectionInvalid, code, message)
}

/// Token endpoint failures: `invalid_grant`, `invalid_client` and
/// `unauthorized_client` make the connection invalid; 5xx, 408, 429, Google's
/// transient error codes and network failures are retried.
fn classify_token_error<RE: std::error::Error + 'static>(
    error: RequestTokenError<RE, oauth2::basic::BasicErrorResponse>,
    status: u16,
) -> CalendarError {
    let retryable_status = status >= 500 || status == 408 || status == 429;
    // 0: no answer arrived.
    let answered = (status != 0).then_some(status);
    let error = match error {
        RequestTokenError::ServerResponse(response) => {
            let code = response.error().as_ref().to_owned();
            let description = response.error_description().cloned().unwrap_or_default();
            let message = format!("token endpoint answered {status} {code}: {description}");
            let fatal = matches!(
                response.error(),
                BasicErrorResponseType::InvalidGrant
                    | BasicErrorResponseType::InvalidClient
                    | BasicErrorResponseType::UnauthorizedClient
            );
            if fatal && !retryable_status {
                invalid(&format!("oauth_{code}"), message)
            } else {
                CalendarError::new(
                    CalendarErrorKind::Transient,
                    format!("oauth_{status}"),
                    message,
                )
            }
        }
        RequestTokenError::Request(e) => CalendarError::new(
            CalendarErrorKind::Transient,
            "oauth_network",
            format!(
                "token endpoint unreachable: {}",
                crate::db::connect::cause(&e)
            ),
        ),
        // Deliberately not the body: a success body holds tokens.
        RequestTokenError::Parse(..) | RequestTokenError::Other(_) => CalendarError::new(
            CalendarErrorKind::Transient,
            format!("oauth_{status}"),
            format!("token endpoint answered {status} with an unreadable body"),
        ),
    };
    error.with_status(answered)
}
