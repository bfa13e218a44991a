//! Three mock-api replicas on one throwaway PostgreSQL database and one
//! Redis queue, under one loadgen run spread over them (`--api-base`
//! a,b,c): relays, workers and sweepers of every replica work together.
//! The ledger audit is clean, each completed session has `outputs` images,
//! no job ran twice, no outbox row was left behind, and a JWT one replica
//! signed is accepted by another with the shared `JWT_SECRET`.

mod common;

use std::time::Duration;

use common::child::{expect_exit, loadgen_run, output_within};
use mock_api::testing::{postgres_and_redis_config, Api};
use store::db::Db;
use store::drain::{wait_for_drain, Drain};
use store::seeding::{DEFAULT_EMAIL, DEFAULT_PASSWORD};

const OUTPUTS: i64 = 2;

async fn one(db: &Db, sql: &str) -> i64 {
    let (n,): (i64,) = store::with_pool!(db, pool => sqlx::query_as(sql).fetch_one(pool).await)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_database_and_queue() {
    let Some(shared) = postgres_and_redis_config("replicas").await else {
        return;
    };
    let database_url = shared.database_url.clone();
    let secret = format!("shared-{}", uuid::Uuid::new_v4());
    let mut replicas = Vec::new();
    // One at a time: the first migrates and seeds, the others find both done.
    for _ in 0..3 {
        let mut config = shared.clone();
        config.jwt_secret = Some(secret.clone());
        replicas.push(Api::start(config).await);
    }

    // A token from replica 0 is good on replica 1.
    let token = replicas[0].login(DEFAULT_EMAIL, DEFAULT_PASSWORD).await;
    let body = serde_json::json!({
        "prompt": "a lighthouse", "model": "seedream-4-0-t2i-250415",
        "outputs": OUTPUTS, "clientKey": uuid::Uuid::new_v4().to_string(),
    });
    let answer = replicas[1].generate(&token, body).await;
    assert_eq!(answer.status().as_u16(), 202, "{:?}", answer.text().await);

    let bases: Vec<String> = replicas.iter().map(|r| r.server.base.clone()).collect();
    let out = tokio::task::spawn_blocking(move || {
        let mut command = loadgen_run(&bases.join(","));
        command.args([
            "--vus",
            "6",
            "--iterations",
            "30",
            "--outputs",
            &OUTPUTS.to_string(),
            "--track-sessions",
            "--poll-interval",
            "50ms",
            "--session-deadline",
            "30s",
            "--no-thresholds",
        ]);
        output_within(&mut command, Duration::from_secs(90))
    })
    .await
    .unwrap();
    let stdout = expect_exit(&out, 0);
    assert!(stdout.contains("30 complete"), "{stdout}");

    let db = Db::open(&database_url).await.unwrap();
    assert_eq!(
        wait_for_drain(&db, Duration::from_secs(60)).await.unwrap(),
        Drain::Drained
    );
    let report = store::audit::audit(&db, None).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    // Every session of the run and of the cross-replica call: 31.
    assert_eq!(
        one(&db, "SELECT COUNT(*) FROM generation_sessions").await,
        31
    );
    assert_eq!(
        one(
            &db,
            "SELECT COUNT(*) FROM generation_sessions WHERE status NOT IN ('completed', 'failed')"
        )
        .await,
        0
    );
    // Images per completed session = outputs.
    assert!(
        one(
            &db,
            "SELECT COUNT(*) FROM generation_sessions WHERE status = 'completed'"
        )
        .await
            > 0
    );
    assert_eq!(
        one(
            &db,
            "SELECT COUNT(*) FROM generation_sessions s WHERE status = 'completed' \
             AND (SELECT COUNT(*) FROM images i WHERE i.session_id = s.id) <> s.outputs"
        )
        .await,
        0
    );
    // No job ran twice: no reservation captured twice from a lot.
    assert_eq!(
        one(
            &db,
            "SELECT COUNT(*) FROM (SELECT reservation_id, lot_id FROM credit_transactions \
             WHERE reservation_id IS NOT NULL GROUP BY reservation_id, lot_id \
             HAVING COUNT(*) > 1) twice"
        )
        .await,
        0
    );
    // No outbox row skipped: every one dispatched, one per session.
    assert_eq!(
        one(
            &db,
            "SELECT COUNT(*) FROM outbox WHERE dispatched_at IS NULL"
        )
        .await,
        0
    );
    assert_eq!(one(&db, "SELECT COUNT(*) FROM outbox").await, 31);
    db.close().await;
    for replica in replicas {
        replica.server.stop().await.unwrap();
    }
}
