//! Contract tests: every row of contract §1, §2 and §7 — status and exact
//! JSON key set — on SQLite with the embedded queue, and on PostgreSQL with
//! Redis.

use std::collections::BTreeSet;

use mock_api::config::Config;
use mock_api::testing::{self, Api};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use store::seeding::{DEFAULT_EMAIL as EMAIL, DEFAULT_PASSWORD as PASSWORD};

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn json_of(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap();
    let value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} not JSON ({e}): {text}"));
    (status, value)
}

async fn expect_error(r: Response, status: StatusCode, message: &str) {
    let (got, body) = json_of(r).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(body, json!({"error": message}));
}

/// The login cookie, whole: `Expires` is the issue time + 7 days as an
/// HTTP date (Express's `res.cookie` with `maxAge`), the issue time being
/// some second between `before` and `after`.
fn assert_login_cookie(
    cookie: &str,
    token: &str,
    before: chrono::DateTime<chrono::Utc>,
    after: chrono::DateTime<chrono::Utc>,
) {
    let week = chrono::Duration::days(7);
    let expected: Vec<String> = (before.timestamp()..=after.timestamp())
        .map(|t| {
            let expires = chrono::DateTime::from_timestamp(t, 0).unwrap() + week;
            format!(
                "token={token}; Max-Age=604800; Path=/; Expires={}; HttpOnly; SameSite=Lax",
                expires.format("%a, %d %b %Y %H:%M:%S GMT")
            )
        })
        .collect();
    assert!(
        expected.iter().any(|e| e == cookie),
        "{cookie} is none of {expected:?}"
    );
}

async fn auth_rows(api: &Api) {
    // Login: body with token, the real cookie, case-insensitive e-mail.
    let before = chrono::Utc::now();
    let r = api
        .post("/api/auth/login")
        .json(&json!({"email": "TEST@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let after = chrono::Utc::now();
    let cookie = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys(&body), set(&["id", "email", "credits", "token"]));
    assert_eq!(body["credits"], 1000);
    let token = body["token"].as_str().unwrap();
    assert_login_cookie(&cookie, token, before, after);

    for (email, password) in [(EMAIL, "wrong"), ("nobody@example.com", PASSWORD)] {
        let r = api
            .post("/api/auth/login")
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::UNAUTHORIZED, "Invalid credentials").await;
    }
    let r = api
        .post("/api/auth/login")
        .json(&json!({"email": EMAIL}))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "password is required").await;
    // No e-mail finds no user, as on the real backend: 401, not 400.
    for body in [
        json!({}),
        json!({"password": PASSWORD}),
        json!({"email": " "}),
    ] {
        let r = api
            .post("/api/auth/login")
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::UNAUTHORIZED, "Invalid credentials").await;
    }
    let r = api
        .post("/api/auth/login")
        .header(CONTENT_TYPE, "application/json")
        .body("{\"email\":")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON"),
        "{body}"
    );
    let r = api
        .post("/api/auth/login")
        .header(CONTENT_TYPE, "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_error(
        r,
        StatusCode::BAD_REQUEST,
        "Content-Type must be application/json",
    )
    .await;

    // Register: the same cookie, with a token for the new account.
    let before = chrono::Utc::now();
    let r = api
        .post("/api/auth/register")
        .json(&json!({"email": "new@example.com", "password": "pw123456"}))
        .send()
        .await
        .unwrap();
    let after = chrono::Utc::now();
    let cookie = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
    let new_token = cookie
        .strip_prefix("token=")
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .to_string();
    assert_login_cookie(&cookie, &new_token, before, after);
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys(&body), set(&["id", "email", "credits"]));
    assert_eq!(body["credits"], 10);
    let r = api
        .get("/api/auth/me")
        .header(COOKIE, format!("token={new_token}"))
        .send()
        .await
        .unwrap();
    let (status, me) = json_of(r).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["email"], "new@example.com");
    let r = api
        .post("/api/auth/register")
        .json(&json!({"email": "NEW@example.com", "password": "x"}))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "Email already registered").await;

    // Me: its own wording; cookie or bearer.
    let r = api
        .get("/api/auth/me")
        .header(COOKIE, format!("token={token}"))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys(&body), set(&["id", "email", "credits"]));
    let r = api
        .get("/api/auth/me")
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = api.get("/api/auth/me").send().await.unwrap();
    expect_error(r, StatusCode::UNAUTHORIZED, "Not authenticated").await;
    let r = api
        .get("/api/auth/me")
        .header(COOKIE, "token=garbage")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNAUTHORIZED, "Invalid token").await;

    // Credits: the auth middleware's wording.
    let r = api
        .get("/api/user/credits")
        .header(COOKIE, format!("token={token}"))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys(&body), set(&["credits", "available", "reserved"]));
    let r = api.get("/api/user/credits").send().await.unwrap();
    expect_error(
        r,
        StatusCode::UNAUTHORIZED,
        "No token, authorization denied",
    )
    .await;
    let r = api
        .get("/api/user/credits")
        .header(AUTHORIZATION, "Bearer x.y.z")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNAUTHORIZED, "Token is not valid").await;

    // Logout.
    let r = api.post("/api/auth/logout").send().await.unwrap();
    assert_eq!(
        r.headers()[SET_COOKIE].to_str().unwrap(),
        "token=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; SameSite=Lax"
    );
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"message": "Logged out successfully"}));
}

async fn generation_rows(api: &Api) {
    let token = api.login(EMAIL, PASSWORD).await;
    let k6_body = json!({"prompt": "a red fox", "model": "seedream-4-0-t2i-250415", "outputs": 1});
    let (status, body) = json_of(api.generate(&token, k6_body.clone()).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        keys(&body),
        set(&[
            "accepted",
            "clientKey",
            "reservationId",
            "sessionId",
            "session_id",
            "status"
        ])
    );
    assert_eq!(body["session_id"], body["sessionId"]);
    assert_eq!(body["status"], "queued");
    assert!(uuid::Uuid::parse_str(body["clientKey"].as_str().unwrap()).is_ok());

    // The same clientKey again: the same ids, nothing new reserved.
    let keyed = json!({"prompt": "p", "clientKey": "k-1"});
    let (_, first) = json_of(api.generate(&token, keyed.clone()).await).await;
    let (status, again) = json_of(api.generate(&token, keyed).await).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(first, again);

    for (bad, message) in [
        (json!({"prompt": ""}), "Prompt is required"),
        (json!({"model": "m"}), "Prompt is required"),
        (
            json!({"prompt": "p", "outputs": 0}),
            "outputs must be an integer from 1 to 15",
        ),
        (
            json!({"prompt": "p", "outputs": -1}),
            "outputs must be an integer from 1 to 15",
        ),
        (
            json!({"prompt": "p", "outputs": "abc"}),
            "outputs must be an integer from 1 to 15",
        ),
        (
            json!({"prompt": "p", "outputs": 16}),
            "outputs must be an integer from 1 to 15",
        ),
        (
            json!({"prompt": "p", "outputs": 1.5}),
            "outputs must be an integer from 1 to 15",
        ),
    ] {
        expect_error(
            api.generate(&token, bad).await,
            StatusCode::BAD_REQUEST,
            message,
        )
        .await;
    }
    let r = api
        .post("/api/images/seedream4/generate")
        .header(COOKIE, format!("token={token}"))
        .header(CONTENT_TYPE, "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = api
        .post("/api/images/seedream4/generate")
        .json(&k6_body)
        .send()
        .await
        .unwrap();
    expect_error(
        r,
        StatusCode::UNAUTHORIZED,
        "No token, authorization denied",
    )
    .await;
    let r = api
        .post("/api/images/seedream4/generate")
        .header(COOKIE, format!("token={token}"))
        .header(CONTENT_TYPE, "application/json")
        .body(format!("{{\"prompt\":\"{}\"}}", "x".repeat(70 * 1024)))
        .send()
        .await
        .unwrap();
    expect_error(
        r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "request body larger than 65536 bytes",
    )
    .await;

    // 402 when the rest of the credits is asked for more than is available.
    let r = api
        .get("/api/user/credits")
        .header(COOKIE, format!("token={token}"))
        .send()
        .await
        .unwrap();
    let (_, credits) = json_of(r).await;
    let available = credits["available"].as_i64().unwrap();
    assert!(available > 15, "{credits}");
    let mut spent = 0;
    while available - spent >= 15 {
        let (status, _) = json_of(
            api.generate(&token, json!({"prompt": "bulk", "outputs": 15}))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        spent += 15;
    }
    let r = api
        .generate(&token, json!({"prompt": "one too many", "outputs": 15}))
        .await;
    expect_error(r, StatusCode::PAYMENT_REQUIRED, "Insufficient credits").await;

    // History: exactly the real item keys.
    let r = api
        .get("/api/images/seedream4/history?limit=10&offset=0")
        .header(COOKIE, format!("token={token}"))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys(&body), set(&["items", "pagination"]));
    // Query-string and path rejections are the API's JSON errors too.
    for path in [
        "/api/images/seedream4/history?offset=1&offset=2",
        "/api/images/seedream4/history?limit=%FF",
        "/api/images/seedream4/sessions/%FF",
    ] {
        let r = api
            .get(path)
            .header(COOKIE, format!("token={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers()[CONTENT_TYPE].to_str().unwrap(),
            "application/json",
            "{path}"
        );
        let (status, error) = json_of(r).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {error}");
        assert_eq!(keys(&error), set(&["error"]), "{path}");
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}: {error}"
        );
    }
    assert_eq!(
        keys(&body["pagination"]),
        set(&["total", "limit", "offset", "hasMore"])
    );
    assert_eq!(body["pagination"]["limit"], 10);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 10);
    assert_eq!(body["pagination"]["hasMore"], true);
    assert_eq!(
        keys(&items[0]),
        set(&[
            "session_id",
            "prompt",
            "model",
            "status",
            "created_at",
            "completed_at",
            "outputs",
            "aspect_ratio",
            "resolution",
            "guidance_scale",
            "credit_cost",
            "error_details",
            "ref_image_url",
            "ref_image_urls",
            "input_settings",
            "client_key",
            "url",
            "b2_url",
            "image_client_key",
            "image_created_at",
            "image_completed_at",
        ])
    );
    let r = api
        .get("/api/images/seedream4/history")
        .send()
        .await
        .unwrap();
    expect_error(
        r,
        StatusCode::UNAUTHORIZED,
        "No token, authorization denied",
    )
    .await;
    let r = api
        .get("/api/images/seedream4/history?limit=abc")
        .header(COOKIE, format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // The single-session route.
    let session = first["sessionId"].as_str().unwrap();
    let r = api
        .get(&format!("/api/images/seedream4/sessions/{session}"))
        .header(COOKIE, format!("token={token}"))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        keys(&body),
        set(&[
            "id",
            "session_id",
            "status",
            "prompt",
            "model",
            "outputs",
            "credit_cost",
            "reservation_id",
            "client_key",
            "error_details",
            "created_at",
            "completed_at",
            "duration_ms",
            "images",
        ])
    );
    for missing in [uuid::Uuid::new_v4().to_string(), "not-a-uuid".to_string()] {
        let r = api
            .get(&format!("/api/images/seedream4/sessions/{missing}"))
            .header(COOKIE, format!("token={token}"))
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::NOT_FOUND, "Session not found").await;
    }
}

async fn around_rows(api: &Api) {
    let r = api.get("/healthz").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "ok");
    let r = api.get("/readyz").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "ready");
    for path in ["/nope", "/api/auth/login"] {
        let r = api.get(path).send().await.unwrap();
        expect_error(r, StatusCode::NOT_FOUND, "Not found").await;
    }
    let r = api.get("/metrics").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(text.contains("mock_http_requests_total"), "{text}");
    let (status, doc) = json_of(api.get("/openapi.json").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/api/images/seedream4/generate"]["post"]["responses"]["202"].is_object());

    // Admin: bearer only, admin role only.
    let r = api
        .post("/api/admin/login")
        .json(&json!({"email": "admin@example.com", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNAUTHORIZED, "Invalid credentials").await;
    let r = api
        .post("/api/admin/login")
        .json(&json!({"email": "admin@example.com", "password": "admin-pw"}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys(&body), set(&["token", "admin"]));
    assert_eq!(keys(&body["admin"]), set(&["id", "email", "role"]));
    let admin_token = body["token"].as_str().unwrap().to_string();

    // The account registered above: no generation moves its credits meanwhile.
    let user_token = api.login("new@example.com", "pw123456").await;
    let r = api
        .get("/api/auth/me")
        .header(COOKIE, format!("token={user_token}"))
        .send()
        .await
        .unwrap();
    let (_, me) = json_of(r).await;
    let user_id = me["id"].as_str().unwrap();
    let credits_path = format!("/api/admin/users/{user_id}/credits");
    let r = api
        .post(&credits_path)
        .header(AUTHORIZATION, format!("Bearer {admin_token}"))
        .json(&json!({"amount": 25, "reason": "test"}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(keys(&body), set(&["success", "newCredits"]));
    assert_eq!(me["credits"], 10);
    assert_eq!(body["newCredits"], 35);
    let r = api
        .post(&credits_path)
        .header(COOKIE, format!("token={admin_token}"))
        .json(&json!({"amount": 25}))
        .send()
        .await
        .unwrap();
    expect_error(
        r,
        StatusCode::UNAUTHORIZED,
        "No token, authorization denied",
    )
    .await;
    let r = api
        .post(&credits_path)
        .header(AUTHORIZATION, format!("Bearer {user_token}"))
        .json(&json!({"amount": 25}))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::FORBIDDEN, "Admin access required").await;
    let r = api
        .post(&credits_path)
        .header(AUTHORIZATION, format!("Bearer {admin_token}"))
        .json(&json!({"amount": -5}))
        .send()
        .await
        .unwrap();
    expect_error(
        r,
        StatusCode::BAD_REQUEST,
        "amount must be a positive integer",
    )
    .await;
}

fn with_admin(mut config: Config) -> Config {
    config.admin_email = Some("admin@example.com".into());
    config.admin_password = Some("admin-pw".into());
    config
}

async fn whole_contract(config: Config) {
    let api = Api::start(with_admin(config)).await;
    auth_rows(&api).await;
    generation_rows(&api).await;
    around_rows(&api).await;
    api.server.stop().await.unwrap();
}

#[tokio::test]
async fn contract_on_sqlite_with_the_embedded_queue() {
    let dir = tempfile::tempdir().unwrap();
    whole_contract(testing::test_config(&store::testing::sqlite_url(
        dir.path(),
    )))
    .await;
}

#[tokio::test]
async fn contract_on_postgres_with_redis() {
    let Some(config) = testing::postgres_and_redis_config("contract").await else {
        return;
    };
    whole_contract(config).await;
}

#[tokio::test]
async fn without_admin_variables_there_is_no_admin_login() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(testing::test_config(&store::testing::sqlite_url(
        dir.path(),
    )))
    .await;
    let r = api
        .post("/api/admin/login")
        .json(&json!({"email": "", "password": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = api
        .post("/api/admin/login")
        .json(&json!({"email": "admin@example.com", "password": "admin-pw"}))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNAUTHORIZED, "Invalid credentials").await;
    api.server.stop().await.unwrap();
}

#[tokio::test]
async fn direct_path_answers_200_with_the_real_body() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = testing::test_config(&store::testing::sqlite_url(dir.path()));
    config.enqueue_first = false;
    let api = Api::start(config).await;
    let token = api.login(EMAIL, PASSWORD).await;
    let (status, body) = json_of(
        api.generate(&token, json!({"prompt": "p", "outputs": 2}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        keys(&body),
        set(&[
            "success",
            "sessionId",
            "clientKey",
            "creditsUsed",
            "creditsLeft",
            "status"
        ])
    );
    assert_eq!(body["creditsUsed"], 2);
    assert_eq!(body["creditsLeft"], 998);
    api.server.stop().await.unwrap();
}

/// What each documented operation answers to a bare `{}` (no token), from
/// the contract's rows: status and exact body (`None`: not JSON, checked by
/// status only).
fn contract_answer_to_empty(method: &str, path: &str) -> (u16, Option<Value>) {
    let no_token = json!({"error": "No token, authorization denied"});
    match (method, path) {
        ("post", "/api/auth/login") => (401, Some(json!({"error": "Invalid credentials"}))),
        ("post", "/api/auth/register") => (400, None),
        ("get", "/api/auth/me") => (401, Some(json!({"error": "Not authenticated"}))),
        ("post", "/api/auth/logout") => (200, Some(json!({"message": "Logged out successfully"}))),
        ("get", "/api/user/credits")
        | ("post", "/api/images/seedream4/generate")
        | ("get", "/api/images/seedream4/history")
        | ("get", "/api/images/seedream4/sessions/{id}")
        | ("post", "/api/admin/users/{id}/credits") => (401, Some(no_token)),
        ("post", "/api/admin/login") => (400, None),
        ("get", "/healthz" | "/readyz" | "/metrics" | "/openapi.json") => (200, None),
        other => panic!("no contract row for {other:?}"),
    }
}

/// `/openapi.json` and the router agree: every documented operation is
/// routed (it never reaches the JSON 404 fallback) and answers an
/// unauthenticated `{}` as its contract row says, with a status the
/// document lists.
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(testing::test_config(&store::testing::sqlite_url(
        dir.path(),
    )))
    .await;
    let (_, doc) = json_of(api.get("/openapi.json").send().await.unwrap()).await;
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 14);
    for (path, operations) in paths {
        let concrete = path.replace("{id}", &uuid::Uuid::new_v4().to_string());
        for (method, operation) in operations.as_object().unwrap() {
            let request = match method.as_str() {
                "get" => api.get(&concrete),
                "post" => api.post(&concrete).json(&json!({})),
                other => panic!("undocumented method {other}"),
            };
            let r = request.send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            let (expected_status, expected_body) = contract_answer_to_empty(method, path);
            assert_eq!(status, expected_status, "{method} {path}: {body}");
            match expected_body {
                Some(expected) => {
                    let got: Value = serde_json::from_str(&body)
                        .unwrap_or_else(|e| panic!("{method} {path} not JSON ({e}): {body}"));
                    assert_eq!(got, expected, "{method} {path}");
                }
                None if status >= 400 => {
                    let got: Value = serde_json::from_str(&body)
                        .unwrap_or_else(|e| panic!("{method} {path} not JSON ({e}): {body}"));
                    assert_eq!(keys(&got), set(&["error"]), "{method} {path}");
                }
                None => {}
            }
            assert!(
                operation["responses"].get(status.to_string()).is_some(),
                "{method} {path} answered {status}, which the document does not list: {body}"
            );
        }
    }
    api.server.stop().await.unwrap();
}

/// Contract §1 rows beyond the happy path: an expired token is `Token is
/// not valid`; login sets `users.last_login_at`; a soft-deleted user cannot
/// log in, even one who logged in before.
#[tokio::test]
async fn expired_tokens_last_login_and_deleted_users() {
    let dir = tempfile::tempdir().unwrap();
    let config = testing::test_config(&store::testing::sqlite_url(dir.path()));
    let tokens = mock_api::http::auth::Tokens::new(config.jwt_secret.as_deref());
    let db = store::db::Db::open(&config.database_url).await.unwrap();
    let api = Api::start(config).await;
    let token = api.login(EMAIL, PASSWORD).await;
    let (_, me) = json_of(
        api.get("/api/auth/me")
            .header(COOKIE, format!("token={token}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = store::db::Id(uuid::Uuid::parse_str(me["id"].as_str().unwrap()).unwrap());

    // Signed with the server's own secret, expired a day ago.
    let expired = tokens
        .issue(
            id,
            EMAIL,
            None,
            chrono::Utc::now() - chrono::Duration::days(8),
        )
        .unwrap();
    for request in [
        api.get("/api/user/credits")
            .header(COOKIE, format!("token={expired}")),
        api.get("/api/user/credits")
            .header(AUTHORIZATION, format!("Bearer {expired}")),
        api.get("/api/images/seedream4/history")
            .header(COOKIE, format!("token={expired}")),
    ] {
        expect_error(
            request.send().await.unwrap(),
            StatusCode::UNAUTHORIZED,
            "Token is not valid",
        )
        .await;
    }
    // The same claims, not expired, pass: the expiry is what was refused.
    let fresh = tokens.issue(id, EMAIL, None, chrono::Utc::now()).unwrap();
    let r = api
        .get("/api/user/credits")
        .header(COOKIE, format!("token={fresh}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // last_login_at: cleared, then set by a login to its time.
    let updated = store::with_pool!(&db, pool => sqlx::query("UPDATE users SET last_login_at = NULL WHERE email = $1")
        .bind(EMAIL)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()));
    assert_eq!(updated.unwrap(), 1);
    let before = chrono::Utc::now();
    api.login(EMAIL, PASSWORD).await;
    let after = chrono::Utc::now();
    let (last_login,): (Option<String>,) = store::with_pool!(&db, pool => sqlx::query_as(
        "SELECT CAST(last_login_at AS TEXT) FROM users WHERE email = $1"
    )
    .bind(EMAIL)
    .fetch_one(pool)
    .await)
    .unwrap();
    let last_login = last_login.expect("login sets users.last_login_at");
    let at = chrono::DateTime::parse_from_rfc3339(&last_login)
        .unwrap_or_else(|e| panic!("last_login_at {last_login:?}: {e}"));
    let slack = chrono::Duration::milliseconds(1);
    assert!(
        before - slack <= at && at <= after + slack,
        "last_login_at {at} is not between {before} and {after}"
    );

    // Soft-deleted: the same credentials no longer log in.
    let updated = store::with_pool!(&db, pool => sqlx::query("UPDATE users SET deleted_at = $2 WHERE email = $1")
        .bind(EMAIL)
        .bind(chrono::Utc::now())
        .execute(pool)
        .await
        .map(|done| done.rows_affected()));
    assert_eq!(updated.unwrap(), 1);
    for _ in 0..2 {
        let r = api
            .post("/api/auth/login")
            .json(&json!({"email": EMAIL, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::UNAUTHORIZED, "Invalid credentials").await;
    }
    api.server.stop().await.unwrap();
    db.close().await;
}

/// Polls `path` until it answers `status` with `text`; panics after 60 s.
async fn until_answers(api: &Api, path: &str, status: StatusCode, text: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let last = match api.get(path).send().await {
            Ok(r) => {
                let got = r.status();
                let body = r.text().await.unwrap_or_default();
                if got == status && body == text {
                    return;
                }
                format!("{got} {body}")
            }
            Err(e) => e.to_string(),
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never answered {status} {text}; last: {last}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Rows a generate request may write: sessions, reservations, outbox.
async fn rows_a_generate_writes(db: &store::db::Db) -> (i64, i64, i64) {
    store::with_pool!(db, pool => sqlx::query_as(
        "SELECT (SELECT CAST(COUNT(*) AS BIGINT) FROM generation_sessions), \
                (SELECT CAST(COUNT(*) AS BIGINT) FROM credit_reservations), \
                (SELECT CAST(COUNT(*) AS BIGINT) FROM outbox)"
    )
    .fetch_one(pool)
    .await
    .unwrap())
}

/// Polls `/metrics` until the line starting with `series` reads `value`.
async fn until_metric(api: &Api, series: &str, value: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = api.metrics().await;
        let got = text
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_string);
        if got.as_deref() == Some(value) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never read {value}; last: {got:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `/readyz` is 503 `not-ready` while Redis (the queue) or PostgreSQL is
/// down, and `ready` again once each returns. Once the mock knows Redis is
/// down, generate answers the contract's 503 `queue temporarily
/// unavailable, please retry` and writes nothing (no session, no
/// reservation, no outbox row); once Redis is back it answers 202 again,
/// the job completes and the audit is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_the_database_or_the_queue_is_down() {
    let Some(redis) = testing::RedisServer::start()
        .map_or_else(|why| store::testing::unavailable("Redis", &why), Some)
    else {
        return;
    };
    let Some(postgres) = tokio::task::spawn_blocking(store::testing::PostgresServer::start)
        .await
        .unwrap()
        .map_or_else(|why| store::testing::unavailable("PostgreSQL", &why), Some)
    else {
        return;
    };
    let mut config = testing::test_config(&postgres.url);
    config.redis_url = Some(redis.url.clone());
    config.queue_name = store::testing::unique_name("readyz");
    config.reconcile_every_ms = 500;
    let queue_up = format!("mock_queue_up{{queue=\"bull:{}:\"}}", config.queue_name);
    let api = Api::start(config).await;
    let db = store::db::Db::connect(&postgres.url).await.unwrap();
    until_answers(&api, "/readyz", StatusCode::OK, "ready").await;
    let token = api.login(EMAIL, PASSWORD).await;

    redis.kill().unwrap();
    until_answers(
        &api,
        "/readyz",
        StatusCode::SERVICE_UNAVAILABLE,
        "not-ready",
    )
    .await;
    until_metric(&api, &queue_up, "0").await;
    let before = rows_a_generate_writes(&db).await;
    for client_key in [None, Some("while-redis-is-down")] {
        let body = match client_key {
            Some(key) => json!({"prompt": "p", "clientKey": key}),
            None => json!({"prompt": "p"}),
        };
        expect_error(
            api.generate(&token, body).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "queue temporarily unavailable, please retry",
        )
        .await;
    }
    assert_eq!(
        rows_a_generate_writes(&db).await,
        before,
        "a 503 wrote rows"
    );

    redis.start_again().unwrap();
    until_answers(&api, "/readyz", StatusCode::OK, "ready").await;
    until_metric(&api, &queue_up, "1").await;
    let (status, accepted) = json_of(api.generate(&token, json!({"prompt": "p"})).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["status"], "queued");
    let session = format!(
        "/api/images/seedream4/sessions/{}",
        accepted["sessionId"].as_str().unwrap()
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = api
            .get(&session)
            .header(COOKIE, format!("token={token}"))
            .send()
            .await
            .unwrap();
        let (_, body) = json_of(r).await;
        if body["status"] == "completed" {
            break;
        }
        assert_eq!(body["status"], "processing", "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job accepted after Redis returned never completed: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let report = store::audit::audit(&db, None).await.unwrap();
    assert!(report.is_clean(), "{report:#?}");
    db.close().await;

    let handle = postgres.clone();
    tokio::task::spawn_blocking(move || handle.stop_immediate())
        .await
        .unwrap()
        .unwrap();
    until_answers(
        &api,
        "/readyz",
        StatusCode::SERVICE_UNAVAILABLE,
        "not-ready",
    )
    .await;
    let handle = postgres.clone();
    tokio::task::spawn_blocking(move || handle.start_again())
        .await
        .unwrap()
        .unwrap();
    until_answers(&api, "/readyz", StatusCode::OK, "ready").await;
    api.server.stop().await.unwrap();
}

/// On the direct path a failing provider's status reaches the client (the
/// k6 test counts it in `provider_errors`), and nothing is charged.
#[tokio::test]
async fn direct_path_passes_the_provider_failure_to_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = testing::test_config(&store::testing::sqlite_url(dir.path()));
    config.enqueue_first = false;
    config.provider_error_rate = Some(1.0);
    config.provider_error_statuses = Some("502:1".into());
    let api = Api::start(config).await;
    let token = api.login(EMAIL, PASSWORD).await;
    let (status, body) = json_of(api.generate(&token, json!({"prompt": "p"})).await).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(keys(&body), set(&["error"]));
    let r = api
        .get("/api/user/credits")
        .header(COOKIE, format!("token={token}"))
        .send()
        .await
        .unwrap();
    let (_, credits) = json_of(r).await;
    assert_eq!(
        credits,
        json!({"credits": 1000, "available": 1000, "reserved": 0})
    );
    api.server.stop().await.unwrap();
}
