//! The login cache over HTTP (issue 12, item 3): a repeated login with the
//! right password is answered without bcrypt; a wrong password is refused
//! every time, even right after a good login; a changed password is not
//! served from the cache; with `LOGIN_CACHE=false` every login runs bcrypt;
//! concurrent first logins of an account share one bcrypt (single flight).
//!
//! bcrypt runs and cache hits are read from `/metrics`, whose registry is
//! shared by every server in this process, so the tests take turns.

use mock_api::testing::{self, Api};
use reqwest::StatusCode;
use serde_json::json;
use store::db::Db;
use store::seeding::{SeedUser, DEFAULT_EMAIL as EMAIL, DEFAULT_PASSWORD as PASSWORD};
use store::users;
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// bcrypt verifications and cache hits so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counts {
    bcrypt: u64,
    hits: u64,
}

async fn counts(api: &Api) -> Counts {
    let text = api.metrics().await;
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
    };
    Counts {
        bcrypt: value("mock_login_bcrypt_total"),
        hits: value("mock_login_cache_hits_total"),
    }
}

async fn login_status(api: &Api, password: &str) -> StatusCode {
    api.post("/api/auth/login")
        .json(&json!({"email": EMAIL, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
}

/// Logs in with `password`, expecting `status`, and checks what it cost.
async fn expect_login(api: &Api, password: &str, status: StatusCode, bcrypt: u64, hits: u64) {
    let before = counts(api).await;
    assert_eq!(login_status(api, password).await, status, "{password}");
    let after = counts(api).await;
    assert_eq!(
        (after.bcrypt - before.bcrypt, after.hits - before.hits),
        (bcrypt, hits),
        "login with {password:?}: (bcrypt runs, cache hits)"
    );
}

async fn start(login_cache: bool, dir: &tempfile::TempDir) -> (Api, Db) {
    let mut config = testing::test_config(&store::testing::sqlite_url(dir.path()));
    config.login_cache = login_cache;
    Api::start_with_user(config, &SeedUser::new(EMAIL, PASSWORD), 10).await
}

#[tokio::test]
async fn a_repeated_login_is_served_from_the_cache_and_a_wrong_password_never() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (api, _db) = start(true, &dir).await;
    expect_login(&api, PASSWORD, StatusCode::OK, 1, 0).await;
    for _ in 0..3 {
        expect_login(&api, PASSWORD, StatusCode::OK, 0, 1).await;
    }
    for _ in 0..3 {
        expect_login(&api, "testpassword124", StatusCode::UNAUTHORIZED, 1, 0).await;
        expect_login(&api, PASSWORD, StatusCode::OK, 0, 1).await;
    }
    api.server.stop().await.unwrap();
}

#[tokio::test]
async fn concurrent_first_logins_pay_bcrypt_once() {
    const LOGINS: usize = 24;
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (api, _db) = start(true, &dir).await;
    let statuses = |password: &'static str| {
        let logins: Vec<_> = (0..LOGINS).map(|_| login_status(&api, password)).collect();
        futures::future::join_all(logins)
    };

    let before = counts(&api).await;
    let answers = statuses(PASSWORD).await;
    let after = counts(&api).await;
    assert!(answers.iter().all(|s| *s == StatusCode::OK), "{answers:?}");
    assert_eq!(after.bcrypt - before.bcrypt, 1, "{LOGINS} logins at once");

    // A wrong password at once is refused to every login, is not stored,
    // and runs bcrypt again afterwards; the good one stays cached.
    let before = counts(&api).await;
    let answers = statuses("testpassword124").await;
    let after = counts(&api).await;
    assert!(
        answers.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{answers:?}"
    );
    assert!(after.bcrypt > before.bcrypt);
    assert_eq!(after.hits, before.hits, "a wrong password is never a hit");
    expect_login(&api, "testpassword124", StatusCode::UNAUTHORIZED, 1, 0).await;
    expect_login(&api, PASSWORD, StatusCode::OK, 0, 1).await;
    api.server.stop().await.unwrap();
}

#[tokio::test]
async fn a_changed_password_is_not_served_from_the_cache() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (api, db) = start(true, &dir).await;
    expect_login(&api, PASSWORD, StatusCode::OK, 1, 0).await;
    expect_login(&api, PASSWORD, StatusCode::OK, 0, 1).await;

    let user = users::find_by_email(&db, EMAIL).await.unwrap().unwrap();
    let new_hash = users::hash_password("a new password", 4).unwrap();
    assert!(users::set_password_hash(&db, user.id, &new_hash)
        .await
        .unwrap());
    expect_login(&api, PASSWORD, StatusCode::UNAUTHORIZED, 1, 0).await;
    expect_login(&api, PASSWORD, StatusCode::UNAUTHORIZED, 1, 0).await;
    expect_login(&api, "a new password", StatusCode::OK, 1, 0).await;
    expect_login(&api, "a new password", StatusCode::OK, 0, 1).await;
    api.server.stop().await.unwrap();
}

#[tokio::test]
async fn with_the_cache_off_every_login_runs_bcrypt() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (api, _db) = start(false, &dir).await;
    for _ in 0..4 {
        expect_login(&api, PASSWORD, StatusCode::OK, 1, 0).await;
    }
    expect_login(&api, "testpassword124", StatusCode::UNAUTHORIZED, 1, 0).await;
    api.server.stop().await.unwrap();
}

#[test]
fn the_cache_is_on_by_default() {
    assert!(mock_api::config::Config::defaults().login_cache);
    assert!(
        mock_api::config::Config::defaults()
            .resolve()
            .unwrap()
            .http
            .login_cache
    );
}
