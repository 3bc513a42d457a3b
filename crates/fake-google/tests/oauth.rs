//! Token endpoint and bearer checks.

mod common;

use std::time::Duration;

use base64::Engine;
use common::*;
use fake_google::{ErrorShape, Fault, FaultKind};
use serde_json::json;

#[tokio::test]
async fn refresh_grant_answers_google_shape_without_refresh_token() {
    let g = fake().await;
    let (status, body) = refresh_grant(&g, CLIENT_ID, CLIENT_SECRET, REFRESH).await;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(
        body["scope"],
        "https://www.googleapis.com/auth/calendar.events"
    );
    assert!(body["access_token"].as_str().unwrap().starts_with("ya29."));
    assert!(body.get("refresh_token").is_none());
    assert_eq!(g.token_refresh_count(REFRESH), 1);

    // client_secret_basic works too.
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    let (s, _, body) = raw(
        "POST",
        &g.token_url(),
        &[
            ("authorization", &format!("Basic {basic}")),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        Some(format!(
            "grant_type=refresh_token&refresh_token={}",
            REFRESH.replace('/', "%2F")
        )),
    )
    .await;
    assert_eq!((s, body["token_type"].as_str()), (200, Some("Bearer")));
    assert_eq!(g.token_refresh_count(REFRESH), 2);
}

#[tokio::test]
async fn token_endpoint_errors() {
    let g = fake().await;
    g.add_client("client-2", "secret-2");
    let (s, b) = refresh_grant(&g, CLIENT_ID, "wrong", REFRESH).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_client")));
    let (s, b) = refresh_grant(&g, "nobody", "x", REFRESH).await;
    assert_eq!(
        (s, b),
        (
            401,
            json!({"error": "invalid_client", "error_description": "The OAuth client was not found."})
        )
    );
    let (s, b) = refresh_grant(&g, "client-2", "secret-2", REFRESH).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("unauthorized_client")));
    let (s, b) = refresh_grant(&g, CLIENT_ID, CLIENT_SECRET, "1//unknown").await;
    let invalid_grant = json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."});
    assert_eq!((s, &b), (400, &invalid_grant));

    // Revocation: refresh fails, and the access token issued before stops working.
    let token = access_token(&g, REFRESH).await;
    let hub = hub(&g, token);
    hub.events().list(ALICE).doit().await.unwrap();
    g.revoke_refresh_token(REFRESH);
    let (s, b) = refresh_grant(&g, CLIENT_ID, CLIENT_SECRET, REFRESH).await;
    assert_eq!((s, b), (400, invalid_grant));
    let body = bad_request(hub.events().list(ALICE).doit().await);
    assert_eq!(code_reason(&body), (401, "authError".into()));
    assert_eq!(g.token_refresh_count(REFRESH), 5);
}

#[tokio::test]
async fn expired_access_tokens_answer_401_in_both_shapes() {
    let (g, hub) = setup().await;
    hub.events().list(ALICE).doit().await.unwrap();
    g.expire_access_tokens();
    let legacy = bad_request(hub.events().list(ALICE).doit().await);
    assert_eq!(
        legacy,
        json!({"error": {"errors": [{"domain": "global", "reason": "authError", "message": "Invalid Credentials",
            "locationType": "header", "location": "Authorization"}], "code": 401, "message": "Invalid Credentials"}})
    );
    g.set_error_shape(ErrorShape::WithStatus);
    let newer = bad_request(hub.events().list(ALICE).doit().await);
    assert_eq!(newer["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(newer["error"]["errors"][0]["reason"], "authError");
    // The raw answer carries WWW-Authenticate.
    let (s, h, _) = cal_raw(
        &g,
        "ya29.bogus",
        "GET",
        &format!("calendars/{ALICE}/events"),
        &[],
        None,
    )
    .await;
    assert_eq!(s, 401);
    assert!(
        h["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer realm=")
    );

    // A fresh token works again.
    let fresh = hub_with(&g, access_token(&g, REFRESH).await);
    fresh.events().list(ALICE).doit().await.unwrap();

    // Short lifetimes expire by themselves.
    g.set_access_token_lifetime(Duration::from_secs(1));
    let (_, body) = refresh_grant(&g, CLIENT_ID, CLIENT_SECRET, REFRESH).await;
    assert_eq!(body["expires_in"], 1);
    let short = hub_with(&g, body["access_token"].as_str().unwrap().to_string());
    short.events().list(ALICE).doit().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        code_reason(&bad_request(short.events().list(ALICE).doit().await)).0,
        401
    );
}

fn hub_with(g: &fake_google::FakeGoogle, token: String) -> Hub {
    hub(g, token)
}

#[tokio::test]
async fn missing_authorization_is_login_required() {
    let g = fake().await;
    let (s, _, b) = raw(
        "GET",
        &format!("{}calendars/{ALICE}/events", g.calendar_base_url()),
        &[],
        None,
    )
    .await;
    assert_eq!(s, 401);
    assert_eq!(b["error"]["errors"][0]["reason"], "required");
    assert_eq!(b["error"]["errors"][0]["message"], "Login Required.");
}

#[tokio::test]
async fn rotation_returns_a_new_refresh_token_and_retires_the_old() {
    let g = fake().await;
    g.rotate_on_next_refresh(REFRESH);
    let (s, b) = refresh_grant(&g, CLIENT_ID, CLIENT_SECRET, REFRESH).await;
    assert_eq!(s, 200);
    let new = b["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(
        g.rotated_refresh_token(REFRESH).as_deref(),
        Some(new.as_str())
    );
    let (s, b) = refresh_grant(&g, CLIENT_ID, CLIENT_SECRET, REFRESH).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_grant")));
    let (s, b) = refresh_grant(&g, CLIENT_ID, CLIENT_SECRET, &new).await;
    assert_eq!(s, 200);
    assert!(b.get("refresh_token").is_none(), "rotation is one-shot");
}

#[tokio::test]
async fn token_endpoint_faults_500_and_503() {
    let g = fake().await;
    g.inject(Fault::new(FaultKind::BackendError).path("/token"));
    g.inject(Fault::new(FaultKind::ServiceUnavailable).path("/token"));
    let (s, b) = refresh_grant(&g, CLIENT_ID, CLIENT_SECRET, REFRESH).await;
    assert_eq!((s, b["error"].as_str()), (500, Some("internal_failure")));
    let (s, b) = refresh_grant(&g, CLIENT_ID, CLIENT_SECRET, REFRESH).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (503, Some("temporarily_unavailable"))
    );
    let (s, _) = refresh_grant(&g, CLIENT_ID, CLIENT_SECRET, REFRESH).await;
    assert_eq!(s, 200);
    assert_eq!(g.calls(fake_google::ApiMethod::Token), 3);
    assert_eq!(
        g.token_request_count(),
        1,
        "faulted requests never reach the grant logic"
    );
}

#[tokio::test]
async fn read_only_scope_cannot_write() {
    let g = fake().await;
    g.add_refresh_token_with_scope(
        "rt-ro",
        CLIENT_ID,
        ALICE,
        "https://www.googleapis.com/auth/calendar.readonly",
    );
    let h = hub(&g, access_token(&g, "rt-ro").await);
    h.events().list(ALICE).doit().await.unwrap();
    let body = bad_request(
        h.events()
            .insert(event(None, "x", json!({})), ALICE)
            .doit()
            .await,
    );
    assert_eq!(code_reason(&body), (403, "insufficientPermissions".into()));
    assert_eq!(
        body["error"]["message"],
        "Request had insufficient authentication scopes."
    );
}
