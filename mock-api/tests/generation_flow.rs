//! The generation flow through the whole server: the k6 test's path to a
//! completed session, credit exhaustion under concurrency, clientKey
//! idempotency under concurrency, and a restart with jobs pending.

use std::time::Duration;

use mock_api::config::Config;
use mock_api::testing::{self, Api, TestServer};
use reqwest::header::COOKIE;
use reqwest::StatusCode;
use serde_json::{json, Value};
use store::audit::audit;
use store::db::Db;
use store::drain::{wait_for_drain, Drain};
use store::seeding::SeedUser;

const EMAIL: &str = "flow@example.com";
const PASSWORD: &str = "flowpassword";

/// A server on `config` whose only user is `EMAIL` with `credits`.
async fn server_with_user(config: Config, credits: i64) -> (Api, Db) {
    Api::start_with_user(config, &SeedUser::new(EMAIL, PASSWORD), credits).await
}

async fn generate(api: &Api, token: &str, body: Value) -> (StatusCode, Value) {
    let r = api.generate(token, body).await;
    (r.status(), r.json().await.unwrap())
}

async fn assert_drained_and_clean(db: &Db, accepted: u64) {
    assert_eq!(
        wait_for_drain(db, Duration::from_secs(60)).await.unwrap(),
        Drain::Drained
    );
    let mut report = audit(db, None).await.unwrap();
    report.compare_accepted(accepted);
    assert!(report.is_clean(), "{report:#?}");
}

#[tokio::test]
async fn k6_flow_reaches_completed_with_its_images_and_charges_once() {
    let dir = tempfile::tempdir().unwrap();
    let (api, db) = server_with_user(
        testing::test_config(&store::testing::sqlite_url(dir.path())),
        100,
    )
    .await;
    let token = api.login(EMAIL, PASSWORD).await;
    let (status, accepted) = generate(
        &api,
        &token,
        json!({"prompt": "a lighthouse", "model": "seedream-4-0-t2i-250415", "outputs": 3}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let session = accepted["session_id"].as_str().unwrap();
    assert_drained_and_clean(&db, 1).await;
    let body: Value = api
        .get(&format!("/api/images/seedream4/sessions/{session}"))
        .header(COOKIE, format!("token={token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "completed", "{body}");
    assert_eq!(body["images"].as_array().unwrap().len(), 3);
    assert!(body["completed_at"].is_string() && body["duration_ms"].is_number());
    let credits: Value = api
        .get("/api/user/credits")
        .header(COOKIE, format!("token={token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        credits,
        json!({"credits": 97, "available": 97, "reserved": 0})
    );
    api.server.stop().await.unwrap();
}

async fn exhaustion_under_concurrency(config: Config) {
    let (api, db) = server_with_user(config, 50).await;
    let token = api.login(EMAIL, PASSWORD).await;
    let requests = (0..200).map(|i| {
        let (api, token) = (&api, &token);
        async move { generate(api, token, json!({"prompt": format!("p{i}")})).await }
    });
    let answers = futures::future::join_all(requests).await;
    let accepted = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .count();
    let refused = answers
        .iter()
        .filter(|(s, b)| *s == StatusCode::PAYMENT_REQUIRED && b["error"] == "Insufficient credits")
        .count();
    assert_eq!((accepted, refused), (50, 150));
    assert_drained_and_clean(&db, 50).await;
    api.server.stop().await.unwrap();
}

#[tokio::test]
async fn two_hundred_concurrent_generates_with_fifty_credits_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    exhaustion_under_concurrency(testing::test_config(&store::testing::sqlite_url(
        dir.path(),
    )))
    .await;
}

#[tokio::test]
async fn two_hundred_concurrent_generates_with_fifty_credits_on_postgres_and_redis() {
    let Some(config) = testing::postgres_and_redis_config("flow").await else {
        return;
    };
    exhaustion_under_concurrency(config).await;
}

async fn duplicate_client_key(config: Config) {
    let (api, db) = server_with_user(config, 100).await;
    let token = api.login(EMAIL, PASSWORD).await;
    let body = json!({"prompt": "same", "clientKey": "retry-me"});
    let answers =
        futures::future::join_all((0..20).map(|_| generate(&api, &token, body.clone()))).await;
    assert!(
        answers.iter().all(|(s, _)| *s == StatusCode::ACCEPTED),
        "{answers:?}"
    );
    let first = &answers[0].1;
    assert!(answers.iter().all(|(_, b)| b == first), "{answers:?}");
    assert_drained_and_clean(&db, 1).await;
    let report = audit(&db, None).await.unwrap();
    assert_eq!((report.counts.sessions, report.counts.reservations), (1, 1));
    api.server.stop().await.unwrap();
}

#[tokio::test]
async fn duplicate_client_key_twenty_times_at_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    duplicate_client_key(testing::test_config(&store::testing::sqlite_url(
        dir.path(),
    )))
    .await;
}

#[tokio::test]
async fn duplicate_client_key_twenty_times_at_once_on_postgres() {
    let Some(db) = store::testing::postgres_url().await else {
        return;
    };
    duplicate_client_key(testing::test_config(&db)).await;
}

#[tokio::test]
async fn restart_with_jobs_pending_completes_every_accepted_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = testing::test_config(&store::testing::sqlite_url(dir.path()));
    // Slow enough that the stop below finds jobs queued and running, and no
    // grace: running jobs go back to the queue at once.
    config.mock_min_ms = 2_000;
    config.mock_max_ms = 3_000;
    config.worker_concurrency = 2;
    config.shutdown_grace_ms = 0;
    let (api, db) = server_with_user(config.clone(), 100).await;
    let token = api.login(EMAIL, PASSWORD).await;
    for i in 0..10 {
        let (status, _) = generate(
            &api,
            &token,
            json!({"prompt": format!("r{i}"), "outputs": 2}),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    api.server.stop().await.unwrap();
    let pending = audit(&db, None).await.unwrap().counts.processing;
    assert!(
        pending > 0,
        "the stop left nothing pending, so this tests nothing"
    );

    config.mock_min_ms = 5;
    config.mock_max_ms = 20;
    config.no_seed = true;
    let server = TestServer::start(config).await;
    assert_drained_and_clean(&db, 10).await;
    let (completed, images): (i64, i64) = store::with_pool!(&db, pool => sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM generation_sessions WHERE status = 'completed'), (SELECT COUNT(*) FROM images)"
    )
    .fetch_one(pool)
    .await
    .unwrap());
    assert_eq!((completed, images), (10, 20));
    server.stop().await.unwrap();
}
