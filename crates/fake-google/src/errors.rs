//! Error bodies, in the shapes Google sends them.
//!
//! Calendar API errors come in two shapes (fact sheet §3):
//! - [`ErrorShape::Legacy`][]: `{"error":{"errors":[{"domain","reason","message",…}],"code","message"}}`
//! - [`ErrorShape::WithStatus`][]: the same plus `"status"` (a gRPC-style code such as
//!   `UNAUTHENTICATED`) and, for scope errors, `"details"`.
//!
//! The token endpoint answers RFC 6749 §5.2 bodies: `{"error","error_description"}`
//! (see [`OAuthError`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Which of Google's two error body shapes the fake emits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorShape {
    /// `{"error":{"errors":[…],"code":…,"message":…}}`, as documented on the errors guide.
    #[default]
    Legacy,
    /// The legacy body plus `error.status` (e.g. `"UNAUTHENTICATED"`, `"PERMISSION_DENIED"`) and,
    /// for `insufficientPermissions`, `error.details[]`, as observed in newer responses.
    WithStatus,
}

/// One Calendar API error, before it is rendered into a body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// `errors[0].domain`, e.g. `global`, `usageLimits`, `calendar`.
    pub domain: String,
    /// `errors[0].reason`, e.g. `duplicate`.
    pub reason: String,
    /// `errors[0].message`.
    pub message: String,
    /// `error.message`; the same as `message` unless Google uses a different top-level text.
    pub top_message: Option<String>,
    /// `errors[0].locationType` (e.g. `header`, `parameter`).
    pub location_type: Option<String>,
    /// `errors[0].location` (e.g. `Authorization`, `If-Match`).
    pub location: Option<String>,
    /// Value for a `Retry-After` header (seconds), if any.
    pub retry_after: Option<u64>,
    /// A `Retry-After` header in the HTTP-date form (sent instead of `retry_after`).
    pub retry_after_date: Option<String>,
    /// Overrides the fake's global [`ErrorShape`] for this one error.
    pub shape: Option<ErrorShape>,
}

impl ApiError {
    /// A new error with the given status, domain, reason and message.
    pub fn new(status: u16, domain: &str, reason: &str, message: &str) -> Self {
        ApiError {
            status,
            domain: domain.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            top_message: None,
            location_type: None,
            location: None,
            retry_after: None,
            retry_after_date: None,
            shape: None,
        }
    }

    fn at(mut self, location_type: &str, location: &str) -> Self {
        self.location_type = Some(location_type.to_string());
        self.location = Some(location.to_string());
        self
    }

    fn top(mut self, top: &str) -> Self {
        self.top_message = Some(top.to_string());
        self
    }

    /// 404 `notFound` "Not Found".
    pub fn not_found() -> Self {
        Self::new(404, "global", "notFound", "Not Found")
    }
    /// 409 `conflict` "Conflict" (an inner call of a batch conflicting with another).
    pub fn conflict() -> Self {
        Self::new(409, "global", "conflict", "Conflict")
    }
    /// 409 `duplicate` "The requested identifier already exists."
    pub fn duplicate() -> Self {
        Self::new(
            409,
            "global",
            "duplicate",
            "The requested identifier already exists.",
        )
    }
    /// 410 `deleted` "Resource has been deleted".
    pub fn deleted() -> Self {
        Self::new(410, "global", "deleted", "Resource has been deleted")
    }
    /// 400 `invalid` "Invalid resource id value."
    pub fn invalid_id() -> Self {
        Self::new(400, "global", "invalid", "Invalid resource id value.")
    }
    /// 400 `invalid` with a free message (reason for such cases is UNCONFIRMED).
    pub fn invalid(message: &str) -> Self {
        Self::new(400, "global", "invalid", message)
    }
    /// 400 `required` with the given message (e.g. "Missing end time.").
    pub fn required(message: &str) -> Self {
        Self::new(400, "global", "required", message)
    }
    /// 400 `badRequest` with a free message.
    pub fn bad_request(message: &str) -> Self {
        Self::new(400, "global", "badRequest", message)
    }
    /// 400 `timeRangeEmpty` "The specified time range is empty."
    pub fn time_range_empty(location: &str) -> Self {
        Self::new(
            400,
            "calendar",
            "timeRangeEmpty",
            "The specified time range is empty.",
        )
        .at("parameter", location)
    }
    /// 401 `authError` "Invalid Credentials".
    pub fn auth_error() -> Self {
        Self::new(401, "global", "authError", "Invalid Credentials").at("header", "Authorization")
    }
    /// 401 `required` "Login Required." (no Authorization header at all).
    pub fn login_required() -> Self {
        Self::new(401, "global", "required", "Login Required.")
            .at("header", "Authorization")
            .top(
                "Request is missing required authentication credential. Expected OAuth 2 access \
                 token, login cookie or other valid authentication credential. See \
                 https://developers.google.com/identity/sign-in/web/devconsole-project.",
            )
    }
    /// 412 `conditionNotMet` "Precondition Failed".
    pub fn condition_not_met() -> Self {
        Self::new(412, "global", "conditionNotMet", "Precondition Failed").at("header", "If-Match")
    }
    /// 403 `forbidden` "Forbidden".
    pub fn forbidden() -> Self {
        Self::new(403, "global", "forbidden", "Forbidden")
    }
    /// 403 or 429 `rateLimitExceeded` "Rate Limit Exceeded".
    pub fn rate_limit(status: u16) -> Self {
        Self::new(
            status,
            "usageLimits",
            "rateLimitExceeded",
            "Rate Limit Exceeded",
        )
    }
    /// 403 `userRateLimitExceeded` "User Rate Limit Exceeded".
    pub fn user_rate_limit() -> Self {
        Self::new(
            403,
            "usageLimits",
            "userRateLimitExceeded",
            "User Rate Limit Exceeded",
        )
    }
    /// 403 `quotaExceeded` "Calendar usage limits exceeded."
    pub fn quota_exceeded() -> Self {
        Self::new(
            403,
            "usageLimits",
            "quotaExceeded",
            "Calendar usage limits exceeded.",
        )
    }
    /// 403 `insufficientPermissions` "Insufficient Permission".
    pub fn insufficient_permissions() -> Self {
        Self::new(
            403,
            "global",
            "insufficientPermissions",
            "Insufficient Permission",
        )
        .top("Request had insufficient authentication scopes.")
    }
    /// 403 `requiredAccessLevel` "You need to have writer access to this calendar."
    pub fn required_access_level() -> Self {
        Self::new(
            403,
            "calendar",
            "requiredAccessLevel",
            "You need to have writer access to this calendar.",
        )
    }
    /// 500 `backendError` "Backend Error".
    pub fn backend_error() -> Self {
        Self::new(500, "global", "backendError", "Backend Error")
    }
    /// 503 `backendError` "The service is currently unavailable." (body shape UNCONFIRMED).
    pub fn service_unavailable() -> Self {
        Self::new(
            503,
            "global",
            "backendError",
            "The service is currently unavailable.",
        )
    }
    /// 410 `fullSyncRequired` (sync token no longer valid).
    pub fn full_sync_required() -> Self {
        Self::new(
            410,
            "calendar",
            "fullSyncRequired",
            "Sync token is no longer valid, a full sync is required.",
        )
        .at("parameter", "syncToken")
    }

    /// Renders the JSON body in `shape` (unless this error carries its own shape).
    pub fn body(&self, shape: ErrorShape) -> Value {
        let shape = self.shape.unwrap_or(shape);
        let mut item = Map::new();
        item.insert("domain".into(), json!(self.domain));
        item.insert("reason".into(), json!(self.reason));
        item.insert("message".into(), json!(self.message));
        if let Some(lt) = &self.location_type {
            item.insert("locationType".into(), json!(lt));
        }
        if let Some(l) = &self.location {
            item.insert("location".into(), json!(l));
        }
        let top = self.top_message.as_deref().unwrap_or(&self.message);
        let mut error = Map::new();
        error.insert("errors".into(), Value::Array(vec![Value::Object(item)]));
        error.insert("code".into(), json!(self.status));
        error.insert("message".into(), json!(top));
        if shape == ErrorShape::WithStatus {
            error.insert("status".into(), json!(grpc_status(self.status)));
            if self.reason == "insufficientPermissions" {
                error.insert(
                    "details".into(),
                    json!([{
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                        "domain": "googleapis.com",
                        "metadata": {
                            "service": "calendar-json.googleapis.com",
                            "method": "calendar.v3.Events"
                        }
                    }]),
                );
            }
        }
        json!({ "error": Value::Object(error) })
    }
}

/// The gRPC-style `status` string for an HTTP code (google.rpc.Code's HTTP mapping; the value
/// for 410 is a guess, Google's is UNCONFIRMED).
pub fn grpc_status(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 | 410 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        412 => "FAILED_PRECONDITION",
        429 => "RESOURCE_EXHAUSTED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

/// A token endpoint error: `{"error": …, "error_description": …}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthError {
    /// HTTP status code.
    pub status: u16,
    /// `error`, e.g. `invalid_grant`.
    pub error: String,
    /// `error_description`.
    pub description: String,
}

impl OAuthError {
    /// A new token endpoint error.
    pub fn new(status: u16, error: &str, description: &str) -> Self {
        OAuthError {
            status,
            error: error.to_string(),
            description: description.to_string(),
        }
    }
    /// 400 `invalid_grant` "Token has been expired or revoked."
    pub fn invalid_grant() -> Self {
        Self::new(400, "invalid_grant", "Token has been expired or revoked.")
    }
    /// 401 `invalid_client` "The OAuth client was not found."
    pub fn client_not_found() -> Self {
        Self::new(401, "invalid_client", "The OAuth client was not found.")
    }
    /// 401 `invalid_client` "Unauthorized" (wrong secret).
    pub fn bad_client_secret() -> Self {
        Self::new(401, "invalid_client", "Unauthorized")
    }
    /// 401 `unauthorized_client` "Unauthorized" (token minted for another client).
    pub fn unauthorized_client() -> Self {
        Self::new(401, "unauthorized_client", "Unauthorized")
    }
    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({ "error": self.error, "error_description": self.description })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_body_is_verbatim() {
        let body = ApiError::duplicate().body(ErrorShape::Legacy);
        let expected: Value = serde_json::from_str(
            r#"{"error":{"errors":[{"domain":"global","reason":"duplicate","message":"The requested identifier already exists."}],"code":409,"message":"The requested identifier already exists."}}"#,
        )
        .unwrap();
        assert_eq!(body, expected);
    }

    #[test]
    fn with_status_adds_status() {
        let body = ApiError::auth_error().body(ErrorShape::WithStatus);
        assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
        assert_eq!(body["error"]["errors"][0]["reason"], "authError");
        let legacy = ApiError::auth_error().body(ErrorShape::Legacy);
        assert!(legacy["error"].get("status").is_none());
    }
}
