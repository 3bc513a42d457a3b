//! `/items` and `/items/{id}`.

use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use maud::html;

use crate::layout;
use crate::{AppState, server_error};

pub(crate) async fn list(State(_state): State<AppState>, parts: Parts) -> Response {
    let base = layout::base(&parts.extensions);
    layout::page(&base, "Items", html! { h1 { "Items" } }).into_response()
}

pub(crate) async fn detail(
    State(_state): State<AppState>,
    Path(_id): Path<String>,
    parts: Parts,
) -> Response {
    let base = layout::base(&parts.extensions);
    let _ = server_error;
    let _: Option<Query<()>> = None;
    layout::page(&base, "Item", html! { h1 { "Item" } }).into_response()
}
