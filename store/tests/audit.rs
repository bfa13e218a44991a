//! The ledger audit on real SQLite and PostgreSQL databases: a ledger-built
//! database is clean, and each invariant broken on purpose by raw SQL is
//! named with a sample id — including the real backend's capture defect.

use std::future::Future;

use chrono::Utc;
use serde_json::json;
use sqlx::types::Json;
use store::audit::{audit, fixture, AuditReport, INVARIANTS};
use store::db::{Db, Id};
use store::ledger::{self, GenerationParams, NewSession};
use store::with_pool;

/// Runs `case` on a fresh SQLite database and, when one can be had, on a
/// fresh PostgreSQL database.
async fn on_both<F, Fut>(case: F)
where
    F: Fn(Db) -> Fut,
    Fut: Future<Output = ()>,
{
    on_both_with(Schema::Migrated, case).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Schema {
    /// `Db::open`: our migrations, with our indexes.
    Migrated,
    /// Like a foreign (real backend) database: the same tables created by
    /// hand without any index, opened with `Db::connect` (no migration).
    Bare,
}

async fn open(url: &str, schema: Schema, migration: &str) -> Db {
    match schema {
        Schema::Migrated => Db::open(url).await.unwrap(),
        Schema::Bare => {
            let db = Db::connect(url).await.unwrap();
            for statement in migration.split(';') {
                let code: String = statement
                    .lines()
                    .filter(|line| !line.trim_start().starts_with("--"))
                    .collect::<Vec<_>>()
                    .join("\n");
                let code = code.trim();
                if code.is_empty() || code.contains("INDEX") {
                    continue;
                }
                with_pool!(&db, pool => sqlx::query(code).execute(pool).await.map(drop)).unwrap();
            }
            db
        }
    }
}

async fn on_both_with<F, Fut>(schema: Schema, case: F)
where
    F: Fn(Db) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let db = open(
        &store::testing::sqlite_url(dir.path()),
        schema,
        include_str!("../migrations/sqlite/0001_schema.sql"),
    )
    .await;
    case(db.clone()).await;
    db.close().await;
    match store::testing::postgres_url().await {
        Some(url) => {
            let db = open(
                &url,
                schema,
                include_str!("../migrations/postgres/0001_schema.sql"),
            )
            .await;
            case(db.clone()).await;
            db.close().await;
        }
        None => eprintln!("SKIP: the PostgreSQL half of this test (no PostgreSQL)"),
    }
}

/// Runs one statement binding one id.
async fn exec(db: &Db, sql: &str, id: Id) {
    with_pool!(db, pool => sqlx::query(sql).bind(id).execute(pool).await.map(drop)).unwrap();
}

fn assert_names(report: &AuditReport, invariant: &str, sample: &str) {
    let found: Vec<_> = report.violations_of(invariant).collect();
    assert!(!found.is_empty(), "{invariant} not reported: {report:#?}");
    assert!(
        found.iter().any(|v| v.samples.iter().any(|s| s == sample)),
        "{invariant} reported without sample {sample}: {report:#?}"
    );
    for v in &report.violations {
        assert!(v.count >= v.samples.len() as u64, "{v:?}");
        assert!(v.samples.len() <= 10, "{v:?}");
    }
}

#[tokio::test]
async fn invariants_are_listed_in_order() {
    let ids: Vec<_> = INVARIANTS.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, ["I1", "I2", "I3", "I4", "I5", "I6", "I7"]);
}

#[tokio::test]
async fn a_ledger_built_database_is_clean() {
    on_both(|db| async move {
        let f = fixture::clean(&db).await.unwrap();
        let report = audit(&db, None).await.unwrap();
        assert!(report.is_clean(), "{report:#?}");
        let c = &report.counts;
        assert_eq!(c.users, 1);
        assert_eq!((c.sessions, c.reservations, c.outbox_rows), (4, 4, 4));
        assert_eq!(c.reservations_with_session, 4);
        assert_eq!((c.completed, c.failed, c.processing), (2, 2, 0));
        assert_eq!(
            (c.captured, c.released, c.expired, c.reserved),
            (2, 1, 1, 0)
        );
        assert_eq!(c.images, 4);
        assert_eq!(c.captured_credits, 4);
        let balance = ledger::balance(&db, f.user, Utc::now()).await.unwrap();
        assert_eq!(balance.credits, 98);
        // A window after everything: nothing to look at, still clean.
        let later = audit(&db, Some(Utc::now() + chrono::Duration::hours(1)))
            .await
            .unwrap();
        assert!(later.is_clean(), "{later:#?}");
        assert_eq!(later.counts.sessions, 0);
    })
    .await;
}

#[tokio::test]
async fn an_empty_database_is_clean() {
    on_both(|db| async move {
        let report = audit(&db, None).await.unwrap();
        assert!(report.is_clean(), "{report:#?}");
        assert_eq!(report.counts.users, 0);
    })
    .await;
}

#[tokio::test]
async fn i1_reservation_amount_differs_from_credit_cost() {
    on_both(|db| async move {
        let f = fixture::clean(&db).await.unwrap();
        exec(
            &db,
            "UPDATE generation_sessions SET credit_cost = credit_cost + 1 WHERE id = $1",
            f.failed.session,
        )
        .await;
        let report = audit(&db, None).await.unwrap();
        assert_names(&report, "I1", &f.failed.session.to_string());
        // Nothing else is wrong.
        assert!(
            report.violations.iter().all(|v| v.invariant == "I1"),
            "{report:#?}"
        );
    })
    .await;
}

#[tokio::test]
async fn i1_session_without_reservation() {
    on_both(|db| async move {
        let f = fixture::clean(&db).await.unwrap();
        exec(
            &db,
            "UPDATE generation_sessions SET reservation_id = NULL WHERE id = $1",
            f.expired.session,
        )
        .await;
        let report = audit(&db, None).await.unwrap();
        assert_names(&report, "I1", &f.expired.session.to_string());
    })
    .await;
}

#[tokio::test]
async fn i2_session_left_processing_and_reservation_left_reserved() {
    on_both(|db| async move {
        let f = fixture::clean(&db).await.unwrap();
        exec(
            &db,
            "UPDATE generation_sessions SET status = 'processing' WHERE id = $1",
            f.failed.session,
        )
        .await;
        exec(
            &db,
            "UPDATE credit_reservations SET status = 'reserved' WHERE id = $1",
            f.expired.reservation,
        )
        .await;
        let report = audit(&db, None).await.unwrap();
        assert_names(&report, "I2", &f.failed.session.to_string());
        assert_names(&report, "I2", &f.expired.reservation.to_string());
        assert_eq!(report.counts.processing, 1);
        assert_eq!(report.counts.reserved, 1);
    })
    .await;
}

#[tokio::test]
async fn i2_completed_session_with_released_reservation() {
    on_both(|db| async move {
        let f = fixture::clean(&db).await.unwrap();
        exec(
            &db,
            "UPDATE generation_sessions SET status = 'completed' WHERE id = $1",
            f.failed.session,
        )
        .await;
        let report = audit(&db, None).await.unwrap();
        assert_names(&report, "I2", &f.failed.session.to_string());
        // It has no images either.
        assert_names(&report, "I4", &f.failed.session.to_string());
    })
    .await;
}

#[tokio::test]
async fn i3_payload_names_another_session() {
    on_both(|db| async move {
        let f = fixture::clean(&db).await.unwrap();
        let wrong = NewSession::for_generation(f.user, "other-key".into(), &GenerationParams::new("a cat", 3)).payload;
        with_pool!(&db, pool => sqlx::query("UPDATE outbox SET payload = $1 WHERE reservation_id = $2")
            .bind(Json(&wrong))
            .bind(f.completed.reservation)
            .execute(pool)
            .await
            .map(drop))
        .unwrap();
        let outbox_id: (String,) = with_pool!(&db, pool => sqlx::query_as(
            "SELECT CAST(id AS TEXT) FROM outbox WHERE reservation_id = $1")
            .bind(f.completed.reservation)
            .fetch_one(pool)
            .await)
        .unwrap();
        let report = audit(&db, None).await.unwrap();
        assert_names(&report, "I3", &outbox_id.0);
        let descriptions: Vec<_> = report.violations_of("I3").map(|v| v.description.as_str()).collect();
        assert_eq!(descriptions.len(), 2, "sessionId and clientKey: {report:#?}");
    })
    .await;
}

#[tokio::test]
async fn i3_session_without_outbox_row() {
    on_both(|db| async move {
        let f = fixture::clean(&db).await.unwrap();
        exec(
            &db,
            "DELETE FROM outbox WHERE reservation_id = $1",
            f.completed_single.reservation,
        )
        .await;
        let report = audit(&db, None).await.unwrap();
        assert_names(&report, "I3", &f.completed_single.session.to_string());
        assert_eq!(report.count_of("I5"), 1, "{report:#?}");
    })
    .await;
}

#[tokio::test]
async fn i4_completed_session_missing_an_image() {
    on_both(|db| async move {
        let f = fixture::clean(&db).await.unwrap();
        // Delete one of its three images.
        with_pool!(&db, pool => sqlx::query(
            "DELETE FROM images WHERE id = (SELECT id FROM images WHERE session_id = $1 ORDER BY url LIMIT 1)")
            .bind(f.completed.session)
            .execute(pool)
            .await
            .map(drop))
        .unwrap();
        let report = audit(&db, None).await.unwrap();
        assert_names(&report, "I4", &f.completed.session.to_string());
        assert!(report.violations.iter().all(|v| v.invariant == "I4"), "{report:#?}");
    })
    .await;
}

#[tokio::test]
async fn i5_extra_outbox_row_and_fewer_accepted() {
    on_both(|db| async move {
        fixture::clean(&db).await.unwrap();
        let orphan = Id::random();
        with_pool!(&db, pool => sqlx::query(
            "INSERT INTO outbox (event_type, reservation_id, payload, created_at) VALUES ($1, $2, $3, $4)")
            .bind(ledger::GENERATION_EVENT)
            .bind(orphan)
            .bind(Json(json!({"sessionId": Id::random().to_string()})))
            .bind(Utc::now())
            .execute(pool)
            .await
            .map(drop))
        .unwrap();
        let mut report = audit(&db, None).await.unwrap();
        assert_eq!(report.count_of("I5"), 1, "{report:#?}");
        let i5 = report.violations_of("I5").next().unwrap();
        assert!(i5.description.contains("outbox rows 5"), "{i5:?}");
        // The orphan row is named under I3.
        assert!(report.violations_of("I3").any(|v| v.description.contains("without a session")));
        // The loadgen's side: it saw 3 accepted generations, not 4.
        report.compare_accepted(3);
        assert_eq!(report.count_of("I5"), 2);
    })
    .await;
}

#[tokio::test]
async fn i6_credits_that_do_not_add_up() {
    on_both(|db| async move {
        let f = fixture::clean(&db).await.unwrap();
        exec(
            &db,
            "UPDATE users SET credits = credits + 5 WHERE id = $1",
            f.user,
        )
        .await;
        let report = audit(&db, None).await.unwrap();
        assert_names(&report, "I6", &f.user.to_string());
        assert_eq!(report.violations_of("I6").count(), 2, "{report:#?}");
        assert!(
            report.violations.iter().all(|v| v.invariant == "I6"),
            "{report:#?}"
        );
    })
    .await;
}

#[tokio::test]
async fn i6_ledger_rows_that_do_not_match_the_capture() {
    on_both(|db| async move {
        let f = fixture::clean(&db).await.unwrap();
        exec(
            &db,
            "UPDATE credit_transactions SET amount = amount - 1 WHERE reservation_id = $1",
            f.completed_single.reservation,
        )
        .await;
        let report = audit(&db, None).await.unwrap();
        assert_names(&report, "I6", &f.completed_single.reservation.to_string());
    })
    .await;
}

#[tokio::test]
async fn i7_negative_credits() {
    on_both(|db| async move {
        let f = fixture::clean(&db).await.unwrap();
        exec(&db, "UPDATE users SET credits = -3 WHERE id = $1", f.user).await;
        let report = audit(&db, None).await.unwrap();
        assert_names(&report, "I7", &f.user.to_string());
        let descriptions: Vec<_> = report
            .violations_of("I7")
            .map(|v| v.description.clone())
            .collect();
        assert!(
            descriptions.iter().any(|d| d.contains("negative credits")),
            "{descriptions:?}"
        );
        assert!(
            descriptions.iter().any(|d| d.contains("available")),
            "{descriptions:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn i7_negative_balance_in_the_ledger_history() {
    on_both(|db| async move {
        let f = fixture::clean(&db).await.unwrap();
        let row = Id::random();
        with_pool!(&db, pool => sqlx::query(
            "INSERT INTO credit_transactions (id, user_id, description, amount, balance_after, created_at) \
             VALUES ($1, $2, 'overdraft', 0, -1, $3)")
            .bind(row)
            .bind(f.user)
            .bind(Utc::now())
            .execute(pool)
            .await
            .map(drop))
        .unwrap();
        let report = audit(&db, None).await.unwrap();
        assert_names(&report, "I7", &row.to_string());
        assert!(report.violations.iter().all(|v| v.invariant == "I7"), "{report:#?}");
    })
    .await;
}

#[tokio::test]
async fn since_limits_the_per_row_checks() {
    on_both(|db| async move {
        let f = fixture::clean(&db).await.unwrap();
        exec(
            &db,
            "UPDATE generation_sessions SET status = 'processing' WHERE id = $1",
            f.failed.session,
        )
        .await;
        let later = audit(&db, Some(Utc::now() + chrono::Duration::seconds(5)))
            .await
            .unwrap();
        assert!(later.is_clean(), "{later:#?}");
        let all = audit(&db, None).await.unwrap();
        assert_names(&all, "I2", &f.failed.session.to_string());
    })
    .await;
}

/// The real backend's capture defect, written as it writes rows: a user
/// with two lots (1000 + 500 = 1500 credits) whose one-credit generation
/// emptied the whole first lot and left `users.credits` at 1500.
#[tokio::test]
async fn the_real_backends_capture_defect_is_an_i6_violation() {
    on_both_with(Schema::Bare, |db| async move {
        let now = Utc::now();
        let (user, lot_a, lot_b) = (Id::random(), Id::random(), Id::random());
        let generation = NewSession::for_generation(user, "k1".into(), &GenerationParams::new("a cat", 1));
        let (session, reservation) = (generation.id, generation.reservation_id);
        let soon = now + chrono::Duration::days(30);
        let later = now + chrono::Duration::days(365);
        with_pool!(&db, pool => {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("INSERT INTO users (id, email, password_hash, credits, created_at) VALUES ($1, 'defect@example.com', 'x', 1500, $2)")
                .bind(user).bind(now).execute(&mut *tx).await.unwrap();
            // Lot A expires first: the capture emptied it entirely.
            sqlx::query("INSERT INTO credit_lots (id, user_id, source, amount, remaining, expires_at, created_at) VALUES ($1, $2, 'subscription', 1000, 0, $3, $4)")
                .bind(lot_a).bind(user).bind(soon).bind(now).execute(&mut *tx).await.unwrap();
            sqlx::query("INSERT INTO credit_lots (id, user_id, source, amount, remaining, expires_at, created_at) VALUES ($1, $2, 'one_off', 500, 500, $3, $4)")
                .bind(lot_b).bind(user).bind(later).bind(now).execute(&mut *tx).await.unwrap();
            for (lot, amount, balance) in [(lot_a, 1000, 1000), (lot_b, 500, 1500)] {
                sqlx::query("INSERT INTO credit_transactions (id, user_id, description, amount, balance_after, lot_id, created_at) VALUES ($1, $2, 'grant', $3, $4, $5, $6)")
                    .bind(Id::random()).bind(user).bind(amount).bind(balance).bind(lot).bind(now)
                    .execute(&mut *tx).await.unwrap();
            }
            sqlx::query("INSERT INTO credit_reservations (id, user_id, amount, status, session_id, description, created_at, expires_at, captured_at) VALUES ($1, $2, 1, 'captured', $3, 'Image generation', $4, $5, $4)")
                .bind(reservation).bind(user).bind(session).bind(now).bind(now + chrono::Duration::minutes(10))
                .execute(&mut *tx).await.unwrap();
            // Its ledger row says −1 with the balance unchanged.
            sqlx::query("INSERT INTO credit_transactions (id, user_id, description, amount, balance_after, reservation_id, lot_id, created_at) VALUES ($1, $2, 'capture', -1, 1500, $3, $4, $5)")
                .bind(Id::random()).bind(user).bind(reservation).bind(lot_a).bind(now)
                .execute(&mut *tx).await.unwrap();
            sqlx::query("INSERT INTO generation_sessions (id, user_id, prompt, model, status, outputs, credit_cost, reservation_id, client_key, created_at, completed_at) VALUES ($1, $2, 'a cat', 'seedream-4', 'completed', 1, 1, $3, 'k1', $4, $4)")
                .bind(session).bind(user).bind(reservation).bind(now).execute(&mut *tx).await.unwrap();
            sqlx::query("INSERT INTO images (id, session_id, url, width, height, created_at) VALUES ($1, $2, 'https://x.test/1.png', 1024, 1024, $3)")
                .bind(Id::random()).bind(session).bind(now).execute(&mut *tx).await.unwrap();
            sqlx::query("INSERT INTO outbox (event_type, reservation_id, payload, created_at, dispatched_at) VALUES ('gen.seedream4', $1, $2, $3, $3)")
                .bind(reservation)
                .bind(Json(&generation.payload))
                .bind(now)
                .execute(&mut *tx).await.unwrap();
            tx.commit().await.unwrap();
        });
        let report = audit(&db, None).await.unwrap();
        assert_names(&report, "I6", &user.to_string());
        let i6: Vec<_> = report.violations_of("I6").map(|v| v.description.as_str()).collect();
        assert!(i6.iter().any(|d| d.contains("open lots")), "{i6:?}");
        assert!(i6.iter().any(|d| d.contains("granted")), "{i6:?}");
        // Everything else about the generation is in order.
        assert!(report.violations.iter().all(|v| v.invariant == "I6"), "{report:#?}");
        assert_eq!(report.counts.captured_credits, 1);
    })
    .await;
}

/// `audit::fixture` (used by the loadgen's tests) breaks what it says.
#[tokio::test]
async fn the_shared_fixture_breaks_each_invariant_in_turn() {
    on_both(|db| async move {
        let f = fixture::clean(&db).await.unwrap();
        let report = audit(&db, None).await.unwrap();
        assert!(report.is_clean(), "{report:#?}");
        for (id, _) in INVARIANTS {
            let sample = fixture::break_invariant(&db, &f, id).await.unwrap();
            let report = audit(&db, None).await.unwrap();
            match sample {
                Some(sample) => assert_names(&report, id, &sample),
                None => assert!(report.count_of(id) > 0, "{id}: {report:#?}"),
            }
        }
    })
    .await;
}

/// A foreign database (no index, never migrated by us) built by the ledger
/// audits clean, and the audit leaves it without our migrations table.
#[tokio::test]
async fn a_database_without_our_indexes_audits_clean() {
    on_both_with(Schema::Bare, |db| async move {
        fixture::clean(&db).await.unwrap();
        let report = audit(&db, None).await.unwrap();
        assert!(report.is_clean(), "{report:#?}");
        assert_eq!(report.counts.sessions, 4);
        let tables = match db.dialect() {
            store::db::Dialect::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE name = $1",
            store::db::Dialect::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = $1"
            }
        };
        let migrated: (i64,) = with_pool!(&db, pool => sqlx::query_as(tables)
            .bind("_sqlx_migrations")
            .fetch_one(pool)
            .await)
        .unwrap();
        assert_eq!(migrated.0, 0);
    })
    .await;
}
