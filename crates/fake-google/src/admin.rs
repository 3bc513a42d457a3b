//! A small JSON admin API under `/_fake/`, so a fake running as a separate process (the
//! `fake-google` binary, the demo) can be seeded, steered and inspected. Admin calls are not
//! logged, delayed or faulted.
//!
//! | Method + path | Body / answer |
//! |---|---|
//! | `GET /_fake/` | list of endpoints |
//! | `POST /_fake/clients` | `{"client_id","client_secret"}` |
//! | `POST /_fake/refresh_tokens` | `{"refresh_token","client_id","user_email","scope"?}` |
//! | `POST /_fake/refresh_tokens/revoke` | `{"refresh_token"}` |
//! | `POST /_fake/calendars` | `{"calendar_id","primary"?: bool}` |
//! | `GET /_fake/calendars/{cal}/events` | every event, cancelled included |
//! | `POST /_fake/calendars/{cal}/events/{id}/delete` | a human deletes the event |
//! | `POST /_fake/calendars/{cal}/events/{id}/edit` | a human edits it: the body's fields are set (new etag) |
//! | `POST /_fake/sync_tokens/invalidate` | every sync token issued so far answers 410 `fullSyncRequired` |
//! | `POST /_fake/faults` | a [`crate::Fault`] as JSON; `DELETE` clears all faults |
//! | `POST /_fake/expire_access_tokens` | expires every issued access token |
//! | `POST /_fake/latency` | `{"millis": n}` |
//! | `POST /_fake/batch` | `{"enabled": bool}`: the batch endpoint exists or answers 404 |
//! | `GET /_fake/requests` | the request log |
//! | `GET /_fake/stats` | calls per method, token refreshes, quota rejections |

use serde_json::{Value, json};

use crate::errors::ApiError;
use crate::faults::Fault;
use crate::oauth::DEFAULT_SCOPE;
use crate::server::{Req, Resp, api_error_response, json_response};
use crate::state::{Shared, State};

fn field<'a>(body: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    body.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::required(&format!("Missing field {name}")))
}

fn events_json(st: &State, cal: &str) -> Result<Value, ApiError> {
    let c = st
        .store
        .calendars
        .get(cal)
        .ok_or_else(ApiError::not_found)?;
    Ok(Value::Array(
        c.events
            .iter()
            .map(|e| Value::Object(e.body.clone()))
            .collect(),
    ))
}

fn route(st: &mut State, req: &Req) -> Result<Value, ApiError> {
    let body: Value = if req.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&req.body).map_err(|_| ApiError::bad_request("Parse Error"))?
    };
    let rest = req.path.trim_start_matches("/_fake/");
    let segs: Vec<String> = rest
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let ok = json!({ "ok": true });
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", [""]) => Ok(json!({ "endpoints": [
            "POST clients", "POST refresh_tokens", "POST refresh_tokens/revoke", "POST calendars",
            "GET calendars/{cal}/events", "POST calendars/{cal}/events/{id}/delete",
            "POST calendars/{cal}/events/{id}/edit", "POST sync_tokens/invalidate",
            "POST faults", "DELETE faults", "POST expire_access_tokens", "POST latency", "POST batch",
            "GET requests", "GET stats"
        ]})),
        ("POST", ["clients"]) => {
            st.oauth
                .add_client(field(&body, "client_id")?, field(&body, "client_secret")?);
            Ok(ok)
        }
        ("POST", ["refresh_tokens"]) => {
            let scope = body
                .get("scope")
                .and_then(Value::as_str)
                .unwrap_or(DEFAULT_SCOPE);
            st.oauth.add_refresh_token(
                field(&body, "refresh_token")?,
                field(&body, "client_id")?,
                field(&body, "user_email")?,
                scope,
            );
            Ok(ok)
        }
        ("POST", ["refresh_tokens", "revoke"]) => {
            st.oauth.revoke(field(&body, "refresh_token")?);
            Ok(ok)
        }
        ("POST", ["calendars"]) => {
            let id = field(&body, "calendar_id")?;
            st.store.add_calendar(id);
            if body.get("primary").and_then(Value::as_bool) == Some(true) {
                st.store.primary = Some(id.to_string());
            }
            Ok(ok)
        }
        ("GET", ["calendars", cal, "events"]) => events_json(st, cal),
        ("POST", ["calendars", cal, "events", id, "delete"]) => {
            if st.store.human_delete(cal, id) {
                Ok(ok)
            } else {
                Err(ApiError::not_found())
            }
        }
        ("POST", ["calendars", cal, "events", id, "edit"]) => {
            let Value::Object(fields) = body else {
                return Err(ApiError::bad_request(
                    "Expected a JSON object of fields to set",
                ));
            };
            let edited = st.store.human_edit(cal, id, |event| {
                for (name, value) in fields {
                    event.insert(name, value);
                }
            });
            if edited {
                Ok(ok)
            } else {
                Err(ApiError::not_found())
            }
        }
        ("POST", ["sync_tokens", "invalidate"]) => {
            st.store.sync_epoch += 1;
            Ok(ok)
        }
        ("POST", ["faults"]) => {
            let f: Fault = serde_json::from_value(body)
                .map_err(|e| ApiError::bad_request(&format!("Bad fault: {e}")))?;
            st.faults.push(f);
            Ok(ok)
        }
        ("DELETE", ["faults"]) => {
            st.faults.clear();
            Ok(ok)
        }
        ("POST", ["expire_access_tokens"]) => {
            st.oauth.expire_all();
            Ok(ok)
        }
        ("POST", ["latency"]) => {
            let ms = body.get("millis").and_then(Value::as_u64).unwrap_or(0);
            st.settings.latency = std::time::Duration::from_millis(ms);
            Ok(ok)
        }
        ("POST", ["batch"]) => {
            st.settings.batch_endpoint = body
                .get("enabled")
                .and_then(Value::as_bool)
                .ok_or_else(|| ApiError::required("Missing field enabled"))?;
            Ok(ok)
        }
        ("GET", ["requests"]) => {
            serde_json::to_value(&st.log.entries).map_err(|_| ApiError::backend_error())
        }
        ("GET", ["stats"]) => {
            let calls: serde_json::Map<String, Value> = st
                .log
                .calls
                .iter()
                .map(|(k, v)| (format!("{k:?}"), json!(v)))
                .collect();
            Ok(json!({
                "calls": calls,
                "token_requests": st.oauth.token_requests,
                "token_refreshes": st.oauth.refresh_counts,
                "quota_rejections": st.quota.rejections,
            }))
        }
        _ => Err(ApiError::not_found()),
    }
}

/// Handles an `/_fake/…` request.
pub(crate) fn handle(shared: &Shared, req: &Req) -> Resp {
    let mut st = shared.lock();
    let shape = st.settings.error_shape;
    match route(&mut st, req) {
        Ok(v) => json_response(200, &v),
        Err(e) => api_error_response(&e, shape),
    }
}
