//! The stylesheet, compiled into the binary and served under a name that
//! carries its content hash, so browsers may cache it for a year.

use std::sync::LazyLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

const CSS: &str = include_str!("../assets/dashboard.css");

static CSS_NAME: LazyLock<String> = LazyLock::new(|| {
    let digest = Sha256::digest(CSS.as_bytes());
    let hex = data_encoding::HEXLOWER.encode(&digest);
    format!("dashboard-{}.css", &hex[..16])
});

/// The stylesheet's path inside the router.
pub(crate) fn stylesheet_route() -> String {
    format!("/assets/{}", *CSS_NAME)
}

/// The stylesheet's link under the router's prefix.
pub(crate) fn stylesheet_href(base: &str) -> String {
    format!("{base}{}", stylesheet_route())
}

pub(crate) async fn stylesheet() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        CSS,
    )
        .into_response()
}
