//! Group commit (`ledger::reserve_batch`, `group_commit::GroupCommit`) on
//! SQLite and PostgreSQL: what sharing one transaction could break.
//!
//! - a 402 in the middle of a batch of several users, decided exactly as
//!   one transaction per request would;
//! - a `clientKey` sent twice in one batch, and one already in the
//!   database: replays, reserved once;
//! - a batch whose transaction fails commits nothing and fails every
//!   request; the same requests without the bad one then go through;
//! - many concurrent requests of several users through the committers:
//!   exactly the credits there are, per user;
//! - several outcomes (captures, a release, an unknown and a repeated
//!   reservation) recorded in one transaction;
//! - a finish batch mixing completed, failed, already settled and expired
//!   reservations of two users with several lots each: the same answers
//!   and the same rows as finishing them one at a time.
//!
//! Every test ends with the audit clean. The PostgreSQL halves use a
//! throwaway server from `store::testing` and print SKIP when none can be
//! started (they fail in CI instead).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use store::db::{Db, Id, Timestamp};
use store::group_commit::{GroupCommit, GroupCommitConfig};
use store::ledger::{
    self, Accepted, GenerationParams, LedgerError, NewSession, ReserveRequest, SessionOutcome,
    Transition,
};
use store::testing::{completed, postgres, sqlite, user_with};
use store::with_pool;

const TTL: Duration = Duration::from_secs(600);

fn request(user: Id, amount: i32, client_key: &str) -> ReserveRequest {
    let session = NewSession::for_generation(
        user,
        client_key.to_string(),
        &GenerationParams::new("a group commit test", amount),
    );
    ReserveRequest::for_session(user, amount, TTL, session)
}

async fn count(db: &Db, table: &str) -> i64 {
    let sql = format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {table}");
    with_pool!(db, pool => sqlx::query_as::<_, (i64,)>(&sql).fetch_one(pool).await.unwrap().0)
}

async fn reserved(db: &Db, user: Id) -> i64 {
    ledger::balance(db, user, Utc::now())
        .await
        .unwrap()
        .reserved
}

/// Fails every generation still processing (releasing its credits), then
/// runs the audit.
async fn settle_all_and_audit(db: &Db) {
    let open: Vec<(Id,)> = with_pool!(db, pool => sqlx::query_as(
        "SELECT id FROM credit_reservations WHERE status = 'reserved'",
    )
    .fetch_all(pool)
    .await
    .unwrap());
    let outcome = SessionOutcome::Failed {
        error_details: json!({"error": "test over"}),
        duration_ms: 1,
    };
    for (id,) in open {
        ledger::finish_session(db, id, &outcome, Utc::now())
            .await
            .unwrap();
    }
    let report = store::audit::audit(db, None).await.unwrap();
    assert!(report.is_clean(), "audit: {:#?}", report.violations);
}

fn new_id(answer: &Result<Accepted, LedgerError>) -> Id {
    match answer {
        Ok(Accepted::New(reservation)) => reservation.id,
        other => panic!("expected a new reservation, got {other:?}"),
    }
}

async fn insufficient_mid_batch_with_mixed_users(db: Db) {
    let now = Utc::now();
    let a = user_with(&db, "a@example.com", &[(5, 30)], now).await;
    let b = user_with(&db, "b@example.com", &[(100, 30)], now).await;
    let nobody = Id::random();
    let batch = [
        request(a, 2, "a1"),
        request(b, 10, "b1"),
        request(a, 2, "a2"),
        request(nobody, 1, "n1"),
        request(a, 2, "a3"),
        request(b, 5, "b2"),
        request(a, 1, "a4"),
        request(a, 1, "a5"),
    ];
    let answers = ledger::reserve_batch(&db, &batch, Utc::now())
        .await
        .unwrap();
    assert_eq!(answers.len(), batch.len());
    for i in [0, 1, 2, 5, 6] {
        new_id(&answers[i]);
    }
    assert!(
        matches!(answers[3], Err(LedgerError::UnknownUser(u)) if u == nobody),
        "{:?}",
        answers[3]
    );
    assert!(
        matches!(
            answers[4],
            Err(LedgerError::Insufficient {
                available: 1,
                requested: 2
            })
        ),
        "a3 sees the 1 credit a1 and a2 left: {:?}",
        answers[4]
    );
    assert!(
        matches!(
            answers[7],
            Err(LedgerError::Insufficient {
                available: 0,
                requested: 1
            })
        ),
        "a5 comes after a4 took the last credit: {:?}",
        answers[7]
    );
    assert_eq!(reserved(&db, a).await, 5);
    assert_eq!(reserved(&db, b).await, 15);
    assert_eq!(count(&db, "generation_sessions").await, 5);
    assert_eq!(count(&db, "outbox").await, 5);
    settle_all_and_audit(&db).await;
}

#[tokio::test]
async fn insufficient_mid_batch_with_mixed_users_sqlite() {
    let (_dir, db) = sqlite().await;
    insufficient_mid_batch_with_mixed_users(db).await;
}

#[tokio::test]
async fn insufficient_mid_batch_with_mixed_users_postgres() {
    if let Some(db) = postgres("insufficient_mid_batch_with_mixed_users_postgres").await {
        insufficient_mid_batch_with_mixed_users(db).await;
    }
}

async fn duplicate_client_key_in_one_batch(db: Db) {
    let now = Utc::now();
    let a = user_with(&db, "a@example.com", &[(100, 30)], now).await;
    let b = user_with(&db, "b@example.com", &[(100, 30)], now).await;
    let earlier = ledger::reserve_batch(&db, &[request(a, 3, "old")], now)
        .await
        .unwrap();
    let old = new_id(&earlier[0]);
    let batch = [
        request(a, 2, "dup"),
        request(a, 2, "old"),
        request(b, 2, "dup"),
        request(a, 2, "dup"),
    ];
    let answers = ledger::reserve_batch(&db, &batch, Utc::now())
        .await
        .unwrap();
    let first = new_id(&answers[0]);
    match &answers[1] {
        Ok(Accepted::Replay { reservation_id, .. }) => assert_eq!(*reservation_id, old),
        other => panic!("a key in the database is a replay: {other:?}"),
    }
    // Another user's key of the same text is not a replay.
    new_id(&answers[2]);
    match &answers[3] {
        Ok(Accepted::Replay {
            reservation_id,
            session_id,
        }) => {
            assert_eq!(*reservation_id, first);
            assert_eq!(Some(*session_id), batch[0].session.as_ref().map(|s| s.id));
        }
        other => panic!("a key earlier in the batch is a replay: {other:?}"),
    }
    assert_eq!(reserved(&db, a).await, 5, "3 + 2: each key reserved once");
    assert_eq!(reserved(&db, b).await, 2);
    assert_eq!(count(&db, "generation_sessions").await, 3);
    settle_all_and_audit(&db).await;
}

#[tokio::test]
async fn duplicate_client_key_in_one_batch_sqlite() {
    let (_dir, db) = sqlite().await;
    duplicate_client_key_in_one_batch(db).await;
}

#[tokio::test]
async fn duplicate_client_key_in_one_batch_postgres() {
    if let Some(db) = postgres("duplicate_client_key_in_one_batch_postgres").await {
        duplicate_client_key_in_one_batch(db).await;
    }
}

async fn failed_batch_commits_nothing(db: Db) {
    let now = Utc::now();
    let a = user_with(&db, "a@example.com", &[(100, 30)], now).await;
    let b = user_with(&db, "b@example.com", &[(100, 30)], now).await;
    let earlier = request(a, 1, "earlier");
    let taken_session = earlier.session.as_ref().unwrap().id;
    new_id(&ledger::reserve_batch(&db, &[earlier], now).await.unwrap()[0]);
    let before: Vec<i64> = row_counts(&db).await;
    // The last request reuses an existing session id: its insert violates
    // the primary key, after the other rows of the batch went in.
    let mut poisoned = request(b, 1, "poisoned");
    poisoned.session.as_mut().unwrap().id = taken_session;
    let good = [
        request(a, 2, "g1"),
        request(b, 3, "g2"),
        request(a, 4, "g3"),
    ];
    let mut batch = good.to_vec();
    batch.push(poisoned.clone());
    assert!(ledger::reserve_batch(&db, &batch, Utc::now())
        .await
        .is_err());
    assert_eq!(row_counts(&db).await, before, "nothing committed");
    assert_eq!(reserved(&db, a).await, 1);
    assert_eq!(reserved(&db, b).await, 0);

    // Through the committers: the request of a failed batch is answered
    // with the batch's error, and the others go through afterwards.
    let commits = GroupCommit::start(db.clone(), GroupCommitConfig::default());
    match commits.reserve(poisoned).await {
        Err(LedgerError::BatchFailed(_)) => {}
        other => panic!("a failed batch answers an error: {other:?}"),
    }
    for request in good {
        match commits.reserve(request).await {
            Ok(Accepted::New(_)) => {}
            other => panic!("the good requests alone commit: {other:?}"),
        }
    }
    assert_eq!(reserved(&db, a).await, 7);
    assert_eq!(reserved(&db, b).await, 3);
    settle_all_and_audit(&db).await;
}

/// Rows in the tables a reservation writes.
async fn row_counts(db: &Db) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in ["credit_reservations", "generation_sessions", "outbox"] {
        counts.push(count(db, table).await);
    }
    counts
}

#[tokio::test]
async fn failed_batch_commits_nothing_sqlite() {
    let (_dir, db) = sqlite().await;
    failed_batch_commits_nothing(db).await;
}

#[tokio::test]
async fn failed_batch_commits_nothing_postgres() {
    if let Some(db) = postgres("failed_batch_commits_nothing_postgres").await {
        failed_batch_commits_nothing(db).await;
    }
}

async fn concurrent_users_through_the_committers(db: Db) {
    const USERS: usize = 3;
    const CREDITS: i32 = 50;
    const PER_USER: usize = 200;
    let now = Utc::now();
    let mut ids = Vec::new();
    for n in 0..USERS {
        ids.push(user_with(&db, &format!("u{n}@example.com"), &[(CREDITS, 30)], now).await);
    }
    let commits = Arc::new(GroupCommit::start(
        db.clone(),
        GroupCommitConfig {
            max_batch: 64,
            committers: 2,
        },
    ));
    let tasks: Vec<_> = (0..PER_USER * USERS)
        .map(|n| {
            let commits = Arc::clone(&commits);
            let user = ids[n % USERS];
            // Every fifth request repeats the key of the one before it.
            let key = format!("k{}", n - usize::from(n % 5 == 4) * USERS);
            tokio::spawn(async move { (user, commits.reserve(request(user, 1, &key)).await) })
        })
        .collect();
    let mut accepted = vec![0; USERS];
    for task in tasks {
        let (user, answer) = task.await.unwrap();
        let slot = ids.iter().position(|u| *u == user).unwrap();
        match answer {
            Ok(Accepted::New(_)) => accepted[slot] += 1,
            Ok(Accepted::Replay { .. }) | Err(LedgerError::Insufficient { .. }) => {}
            Err(e) => panic!("reserve: {e}"),
        }
    }
    assert_eq!(
        accepted,
        vec![CREDITS; USERS],
        "exactly the credits there are"
    );
    for user in &ids {
        assert_eq!(reserved(&db, *user).await, i64::from(CREDITS));
    }
    settle_all_and_audit(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_users_through_the_committers_sqlite() {
    let (_dir, db) = sqlite().await;
    concurrent_users_through_the_committers(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_users_through_the_committers_postgres() {
    if let Some(db) = postgres("concurrent_users_through_the_committers_postgres").await {
        concurrent_users_through_the_committers(db).await;
    }
}

async fn finishes_in_one_batch(db: Db) {
    let now = Utc::now();
    let a = user_with(&db, "a@example.com", &[(10, 30)], now).await;
    let b = user_with(&db, "b@example.com", &[(10, 30)], now).await;
    let batch = [
        request(a, 3, "a1"),
        request(a, 4, "a2"),
        request(b, 2, "b1"),
        request(a, 1, "a3"),
    ];
    let ids: Vec<Id> = ledger::reserve_batch(&db, &batch, now)
        .await
        .unwrap()
        .iter()
        .map(new_id)
        .collect();
    let failed = SessionOutcome::Failed {
        error_details: json!({"error": "provider failed"}),
        duration_ms: 1,
    };
    let finishes = [
        (ids[0], completed(3)),
        (ids[1], failed.clone()),
        (Id::random(), completed(1)),
        (ids[2], completed(2)),
        (ids[0], completed(3)),
        (ids[3], completed(1)),
    ];
    let answers: Vec<Result<Transition, LedgerError>> =
        ledger::finish_sessions(&db, &finishes, Utc::now())
            .await
            .unwrap()
            .into_iter()
            .map(|answer| answer.map(|finished| finished.transition))
            .collect();
    assert!(matches!(answers[0], Ok(Transition::Applied)));
    assert!(matches!(answers[1], Ok(Transition::Applied)));
    assert!(matches!(
        answers[2],
        Err(LedgerError::UnknownReservation(_))
    ));
    assert!(matches!(answers[3], Ok(Transition::Applied)));
    assert!(
        matches!(answers[4], Ok(Transition::Unchanged(_))),
        "a second finish of one reservation in the batch changes nothing: {:?}",
        answers[4]
    );
    assert!(matches!(answers[5], Ok(Transition::Applied)));
    let balance = |user| {
        let db = db.clone();
        async move { ledger::balance(&db, user, Utc::now()).await.unwrap() }
    };
    assert_eq!(balance(a).await.credits, 6, "a: 3 + 1 captured, 4 released");
    assert_eq!(balance(b).await.credits, 8);
    assert_eq!(count(&db, "images").await, 6, "images stored once");
    settle_all_and_audit(&db).await;
}

#[tokio::test]
async fn finishes_in_one_batch_sqlite() {
    let (_dir, db) = sqlite().await;
    finishes_in_one_batch(db).await;
}

#[tokio::test]
async fn finishes_in_one_batch_postgres() {
    if let Some(db) = postgres("finishes_in_one_batch_postgres").await {
        finishes_in_one_batch(db).await;
    }
}

/// Two users with three lots each (expiring in a different order than
/// they were granted) and nine generations between them: two settled
/// before, one past its TTL. Returns the users and the reservations.
async fn finish_scenario(db: &Db, tag: &str, now: Timestamp) -> ([Id; 2], Vec<Id>) {
    let mut users = [Id::random(); 2];
    for (user, lots) in users
        .iter_mut()
        .zip([[(5, 10), (3, 2), (12, 30)], [(4, 5), (4, 1), (6, 60)]])
    {
        let email = format!("{tag}-{}@example.com", Id::random());
        *user = user_with(db, &email, &lots, now).await;
    }
    let [x, y] = users;
    let mut batch: Vec<ReserveRequest> = [(x, 4), (x, 3), (x, 5), (x, 2), (x, 6)]
        .into_iter()
        .chain([(y, 4), (y, 5), (y, 2), (y, 3)])
        .enumerate()
        .map(|(n, (user, amount))| request(user, amount, &format!("{tag}-{n}")))
        .collect();
    batch[3].ttl = Duration::from_secs(60);
    let ids: Vec<Id> = ledger::reserve_batch(db, &batch, now)
        .await
        .unwrap()
        .iter()
        .map(new_id)
        .collect();
    ledger::finish_session(db, ids[4], &completed(6), now)
        .await
        .unwrap();
    ledger::finish_session(db, ids[7], &provider_failed(), now)
        .await
        .unwrap();
    (users, ids)
}

fn provider_failed() -> SessionOutcome {
    SessionOutcome::Failed {
        error_details: json!({"error": "provider failed", "status": 500}),
        duration_ms: 7,
    }
}

/// A ledger row as `settled_rows` reads it: amount, balance after,
/// reservation, lot, description.
type EntryRow = (i32, i32, Option<Id>, Option<Id>, Option<String>);

/// A session as `settled_rows` reads it: reservation, status, error
/// details, duration, completion, images stored.
type SessionRow = (
    Option<Id>,
    String,
    Option<String>,
    Option<i32>,
    Option<Timestamp>,
    i64,
);

/// Every row the finishes touch, with ids replaced by their place in the
/// scenario (users, reservations, lots by expiry), sorted.
async fn settled_rows(db: &Db, users: &[Id; 2], ids: &[Id]) -> Vec<String> {
    let place = |id: Id| ids.iter().position(|r| *r == id).map_or(-1, |n| n as i64);
    let mut rows = Vec::new();
    for (n, user) in users.iter().enumerate() {
        let (credits,): (i32,) = with_pool!(db, pool => sqlx::query_as(
            "SELECT credits FROM users WHERE id = $1",
        ).bind(*user).fetch_one(pool).await.unwrap());
        rows.push(format!("user {n}: {credits}"));
        let lots: Vec<(Id, i32, Option<Timestamp>)> = with_pool!(db, pool => sqlx::query_as(
            "SELECT id, remaining, closed_at FROM credit_lots WHERE user_id = $1 ORDER BY expires_at",
        ).bind(*user).fetch_all(pool).await.unwrap());
        for (k, (_, remaining, closed_at)) in lots.iter().enumerate() {
            rows.push(format!("user {n} lot {k}: {remaining} {closed_at:?}"));
        }
        let entries: Vec<EntryRow> = with_pool!(db, pool => sqlx::query_as(
            "SELECT amount, balance_after, reservation_id, lot_id, description FROM credit_transactions \
             WHERE user_id = $1 AND reservation_id IS NOT NULL",
        ).bind(*user).fetch_all(pool).await.unwrap());
        for (amount, balance, reservation, lot, description) in entries {
            let lot = lots.iter().position(|(id, _, _)| Some(*id) == lot);
            let reservation = reservation.map(place);
            rows.push(format!(
                "user {n} entry: {reservation:?} {lot:?} {amount} {balance} {description:?}"
            ));
        }
    }
    let reservations: Vec<(Id, String, Option<Timestamp>, Option<Timestamp>)> = with_pool!(db, pool => sqlx::query_as(
        "SELECT id, status, captured_at, released_at FROM credit_reservations",
    ).fetch_all(pool).await.unwrap());
    let sessions: Vec<SessionRow> = with_pool!(db, pool => sqlx::query_as(
        "SELECT s.reservation_id, s.status, CAST(s.error_details AS TEXT), s.duration_ms, s.completed_at, \
         (SELECT CAST(COUNT(*) AS BIGINT) FROM images i WHERE i.session_id = s.id) FROM generation_sessions s",
    ).fetch_all(pool).await.unwrap());
    for (id, status, captured, released) in reservations {
        if ids.contains(&id) {
            rows.push(format!(
                "reservation {}: {status} {captured:?} {released:?}",
                place(id)
            ));
        }
    }
    for (reservation, status, details, ms, completed, images) in sessions {
        if let Some(reservation) = reservation.filter(|r| ids.contains(r)) {
            let details: Option<serde_json::Value> =
                details.map(|d| serde_json::from_str(&d).unwrap());
            rows.push(format!(
                "session {}: {status} {details:?} {ms:?} {completed:?} {images} images",
                place(reservation)
            ));
        }
    }
    rows.sort();
    rows
}

async fn finish_batch_matches_one_at_a_time(db: Db) {
    let now = Utc::now();
    let later = now + chrono::Duration::seconds(120);
    let unknown = Id::random();
    let finishes = |r: &[Id]| {
        vec![
            (r[0], completed(4)),
            (r[5], completed(4)),
            (r[1], provider_failed()),
            (r[3], completed(2)),
            (r[6], completed(5)),
            (r[2], completed(5)),
            (r[3], provider_failed()),
            (r[4], completed(6)),
            (r[7], provider_failed()),
            (r[8], completed(3)),
            (r[5], completed(4)),
            (unknown, completed(1)),
        ]
    };
    let (batch_users, batch_ids) = finish_scenario(&db, "batch", now).await;
    let (single_users, single_ids) = finish_scenario(&db, "single", now).await;

    let batched: Vec<String> = ledger::finish_sessions(&db, &finishes(&batch_ids), later)
        .await
        .unwrap()
        .into_iter()
        .map(|answer| format!("{:?}", answer.map(|finished| finished.transition)))
        .collect();
    let mut single = Vec::new();
    for (reservation, outcome) in finishes(&single_ids) {
        let answer = ledger::finish_session(&db, reservation, &outcome, later).await;
        single.push(format!("{answer:?}"));
    }
    let place = |text: &str| {
        batch_ids
            .iter()
            .zip(&single_ids)
            .fold(text.to_string(), |t, (b, s)| {
                t.replace(&b.to_string(), &s.to_string())
            })
    };
    let batched: Vec<String> = batched.iter().map(|a| place(a)).collect();
    assert_eq!(batched, single, "the same answers, item by item");
    assert!(batched[0].starts_with("Ok(Applied)"), "{batched:?}");
    assert!(batched[3].contains("Expired"), "{batched:?}");
    assert!(batched[6].contains("Unchanged(Expired)"), "{batched:?}");
    assert!(batched[7].contains("Unchanged(Captured)"), "{batched:?}");
    assert!(batched[8].contains("Unchanged(Released)"), "{batched:?}");
    assert!(batched[10].contains("Unchanged(Captured)"), "{batched:?}");
    assert!(batched[11].contains("UnknownReservation"), "{batched:?}");

    let batch_rows = settled_rows(&db, &batch_users, &batch_ids).await;
    assert_eq!(
        batch_rows,
        settled_rows(&db, &single_users, &single_ids).await,
        "the same rows"
    );
    // X's captures (4, 5, and 6 before) took lot by lot, earliest expiry
    // first; Y's (4, 5, 3) emptied all three lots.
    assert!(
        batch_rows.contains(&"user 0: 5".to_string()),
        "{batch_rows:#?}"
    );
    assert!(
        batch_rows.contains(&"user 1: 2".to_string()),
        "{batch_rows:#?}"
    );
    let lots: Vec<&str> = batch_rows
        .iter()
        .filter(|row| row.contains(" lot "))
        .map(|row| {
            row.split(" None")
                .next()
                .unwrap()
                .split(" Some")
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(
        lots,
        [
            "user 0 lot 0: 0",
            "user 0 lot 1: 0",
            "user 0 lot 2: 5",
            "user 1 lot 0: 0",
            "user 1 lot 1: 0",
            "user 1 lot 2: 2"
        ],
        "{batch_rows:#?}"
    );
    settle_all_and_audit(&db).await;
}

#[tokio::test]
async fn finish_batch_matches_one_at_a_time_sqlite() {
    let (_dir, db) = sqlite().await;
    finish_batch_matches_one_at_a_time(db).await;
}

#[tokio::test]
async fn finish_batch_matches_one_at_a_time_postgres() {
    if let Some(db) = postgres("finish_batch_matches_one_at_a_time_postgres").await {
        finish_batch_matches_one_at_a_time(db).await;
    }
}
