//! Fenced writes: events.update and events.delete with `If-Match`, so that a
//! write Google applies late (after a timeout) cannot land over a newer one.
//!
//! google-calendar3 7 offers no way to add a request header, so these two
//! calls are built here as its call builders build them (the hub's hyper
//! client, the same URL, `Event` JSON without nulls, the same error values and
//! delegate hook), plus `If-Match`.

use google_calendar3::api::Event;
use google_calendar3::common::{self, Delegate};
use http::Method;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, IF_MATCH, USER_AGENT};
use hyper_util::client::legacy::connect::Connect;
use serde_json::Value;

/// google-calendar3's own user agent, so Google sees one client.
const USER_AGENT_VALUE: &str = "google-api-rust-client/7.0.0";

/// One fenced call: PUT with `event`, or DELETE without.
pub(crate) struct FencedCall<'a> {
    pub base_url: &'a str,
    pub calendar_id: &'a str,
    pub event_id: &'a str,
    pub etag: &'a str,
    pub event: Option<&'a Event>,
}

impl FencedCall<'_> {
    fn url(&self) -> String {
        let path = format!(
            "{}calendars/{}/events/{}",
            self.base_url, self.calendar_id, self.event_id
        );
        let mut params = common::url::Params::with_capacity(1);
        params.push("alt", "json");
        params.parse_with_url(&path).to_string()
    }

    fn request(&self, token: &str) -> Result<http::Request<common::Body>, http::Error> {
        let builder = http::Request::builder()
            .uri(self.url())
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(IF_MATCH, self.etag);
        match self.event {
            Some(event) => {
                let mut value = serde_json::to_value(event).expect("an Event always serialises");
                common::remove_json_null_values(&mut value);
                let bytes = serde_json::to_vec(&value).expect("JSON always serialises");
                builder
                    .method(Method::PUT)
                    .header(CONTENT_TYPE, "application/json")
                    .header(CONTENT_LENGTH, bytes.len())
                    .body(common::to_body(Some(bytes)))
            }
            None => builder
                .method(Method::DELETE)
                .body(common::to_body(None::<Vec<u8>>)),
        }
    }

    /// Sends the call; the status answered, and the updated event for a PUT
    /// (`None` for a DELETE).
    pub(crate) async fn send<C>(
        &self,
        client: &common::Client<C>,
        token: &str,
        delegate: &mut dyn Delegate,
    ) -> common::Result<(u16, Option<Event>)>
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        let response = client
            .request(
                self.request(token)
                    .map_err(|e| common::Error::Io(std::io::Error::other(e)))?,
            )
            .await
            .map_err(common::Error::HttpError)?;
        let (parts, body) = response.into_parts();
        let bytes = common::to_bytes(body).await.unwrap_or_default();
        if !parts.status.is_success() {
            let error = serde_json::from_slice::<Value>(&bytes);
            let response = common::to_response(parts, Some(bytes));
            delegate.http_failure(&response, error.as_ref().ok());
            return Err(match error {
                Ok(value) => common::Error::BadRequest(value),
                Err(_) => common::Error::Failure(response),
            });
        }
        let status = parts.status.as_u16();
        if self.event.is_none() || bytes.is_empty() {
            return Ok((status, None));
        }
        serde_json::from_slice(&bytes)
            .map(|e| (status, Some(e)))
            .map_err(|e| {
                common::Error::JsonDecodeError(String::from_utf8_lossy(&bytes).into_owned(), e)
            })
    }
}
