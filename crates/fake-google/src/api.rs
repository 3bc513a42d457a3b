//! Request handlers: the Calendar events methods (auth -> scope -> quota -> calendar -> op)
//! and the token endpoint.

use hyper::header::HeaderValue;
use serde_json::Value;

use crate::errors::ApiError;
use crate::list::{ListQuery, list};
use crate::log::ApiMethod;
use crate::server::{
    Req, Resp, Route, api_error_response, empty_response, json_response, oauth_error_response,
};
use crate::state::{Shared, State};
use crate::store::WriteCtx;

/// Handles a routed request (faults already applied).
pub(crate) fn dispatch(shared: &Shared, route: &Route, req: &Req) -> Resp {
    let mut st = shared.lock();
    let shape = st.settings.error_shape;
    let result = match route {
        Route::Token => return token(&mut st, req),
        Route::Events(m, cal, id) => events(&mut st, *m, cal, id.as_deref(), req),
        Route::Calendar(cal) => calendar(&mut st, cal, req),
        _ => Err(ApiError::not_found()),
    };
    result.unwrap_or_else(|e| api_error_response(&e, shape))
}

fn parse_body(req: &Req) -> Result<Value, ApiError> {
    serde_json::from_slice(&req.body).map_err(|_| ApiError::bad_request("Parse Error"))
}

fn events(
    st: &mut State,
    m: ApiMethod,
    cal: &str,
    id: Option<&str>,
    req: &Req,
) -> Result<Resp, ApiError> {
    let principal = st.oauth.authenticate(req.header("authorization"))?;
    principal.check_scope(!matches!(m, ApiMethod::Get | ApiMethod::List))?;
    if let Some(cfg) = st.settings.quota {
        let cost = if m == ApiMethod::Patch { 3 } else { 1 };
        if !st
            .quota
            .admit(&cfg, &principal.user_email, &principal.client_id, cost)
        {
            return Err(ApiError::rate_limit(cfg.reject_status));
        }
    }
    let cal = st.store.resolve(cal, Some(&principal.user_email))?;
    let id = id.unwrap_or_default();
    let ctx = WriteCtx {
        if_match: req.header("if-match"),
        cancelled_policy: st.settings.cancelled_write,
    };
    match m {
        ApiMethod::Insert => {
            let body = parse_body(req)?;
            let ev = st.store.insert(&cal, body, &principal.user_email)?;
            Ok(json_response(200, &ev))
        }
        ApiMethod::Get => {
            let ev = st.store.get(&cal, id)?;
            let etag = ev.body.get("etag").and_then(Value::as_str).unwrap_or("");
            if req
                .header("if-none-match")
                .is_some_and(|h| h.split(',').any(|t| t.trim() == etag))
            {
                return Ok(empty_response(304));
            }
            Ok(json_response(200, &Value::Object(ev.body.clone())))
        }
        ApiMethod::List => {
            let mut q = ListQuery::parse(&req.query_pairs())?;
            q.cap_page(st.settings.max_page_size);
            let out = list(
                &st.store,
                &cal,
                &q,
                st.settings.paging,
                st.settings.ext_prop_match,
            )?;
            Ok(json_response(200, &out))
        }
        ApiMethod::Update => {
            let body = parse_body(req)?;
            Ok(json_response(200, &st.store.update(&cal, id, body, &ctx)?))
        }
        ApiMethod::Patch => {
            let body = parse_body(req)?;
            Ok(json_response(200, &st.store.patch(&cal, id, body, &ctx)?))
        }
        ApiMethod::Delete => {
            st.store.delete(&cal, id, ctx.if_match)?;
            Ok(empty_response(st.settings.delete_status))
        }
        ApiMethod::CalendarGet | ApiMethod::Token | ApiMethod::Batch | ApiMethod::Other => {
            Err(ApiError::not_found())
        }
    }
}

/// calendars.get: the calendar's real id (`primary` resolved), 404 if unknown.
fn calendar(st: &mut State, cal: &str, req: &Req) -> Result<Resp, ApiError> {
    let principal = st.oauth.authenticate(req.header("authorization"))?;
    principal.check_scope(false)?;
    let id = st.store.resolve(cal, Some(&principal.user_email))?;
    Ok(json_response(
        200,
        &serde_json::json!({
            "kind": "calendar#calendar",
            "etag": format!("\"cal-{id}\""),
            "id": id,
            "summary": id,
            "timeZone": "UTC",
        }),
    ))
}

fn token(st: &mut State, req: &Req) -> Resp {
    let form: Vec<(String, String)> = form_urlencoded::parse(&req.body).into_owned().collect();
    let lifetime = st.settings.access_token_lifetime;
    match st.oauth.grant(&form, req.header("authorization"), lifetime) {
        Ok(body) => {
            let mut r = json_response(200, &body);
            r.headers_mut()
                .insert("cache-control", HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => oauth_error_response(&e),
    }
}
