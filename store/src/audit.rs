//! The ledger audit: invariants I1–I7 of contract §3, checked by SQL.
//!
//! A load test that only counts HTTP status codes cannot tell a backend
//! that loses or double-spends credits from a correct one; the database
//! can. The audit therefore reads nothing but the tables of contract §4, so
//! it runs unchanged on our SQLite or PostgreSQL store and on the real
//! backend's PostgreSQL database (which may lack our indexes and was not
//! migrated by us: every query joins on aggregated subqueries rather than
//! correlated ones, so it stays cheap without indexes).
//!
//! It is meant to run once the system has quiesced (queue drained, workers
//! idle): anything still `processing` or `reserved` is then a leak, not work
//! in flight, and is reported as such (I2).
//!
//! Each invariant is split into several independent checks, one
//! [`Violation`] per failing check, so a report says *what* broke (e.g. "Σ
//! remaining of open lots ≠ users.credits") and names up to
//! [`MAX_SAMPLES`] offending ids to look at.
//!
//! # The window (`since`)
//!
//! `since` restricts the per-row checks (sessions, reservations, outbox
//! rows, images, ledger rows) to rows created at or after it, so a run can
//! be audited on a database with older history. The per-user balance checks
//! (I6 per user, I7 on `users.credits`, lots and the available balance)
//! ignore it: a balance sums a user's whole history, which a window boundary
//! cannot split. Rows written just around `since` by a backend whose
//! session, reservation and outbox timestamps differ slightly may fall on
//! different sides of it; pick a `since` taken before the run started.
//!
//! # Expired lots (I6)
//!
//! Contract I6 compares `users.credits` with Σ `remaining` of *live* lots.
//! Nothing in the contract moves credits when a lot's `expires_at` passes
//! (there is no lot sweeper and no expiry ledger row), so `users.credits`
//! keeps counting an aged lot until it is closed. The audit therefore takes
//! "live" as "not closed" (`closed_at IS NULL`), whatever its expiry;
//! comparing with unexpired lots only would flag every user whose lot
//! merely aged. A closed lot holds nothing spendable, whatever its
//! `remaining` says.

use serde::Serialize;

use crate::db::{Db, Dialect, Timestamp};
use crate::with_pool;

/// Sample ids per violation.
pub const MAX_SAMPLES: usize = 10;

/// The invariants of contract §3: (id, one-line statement).
pub const INVARIANTS: [(&str, &str); 7] = [
    (
        "I1",
        "each session has one reservation, of the session's credit_cost",
    ),
    (
        "I2",
        "completed ⇒ captured, failed ⇒ released/expired, nothing left reserved or processing",
    ),
    (
        "I3",
        "one outbox row per accepted generation, payload sessionId/clientKey match",
    ),
    ("I4", "each completed session has exactly `outputs` images"),
    (
        "I5",
        "202 responses = sessions = reservations with a session = outbox rows",
    ),
    (
        "I6",
        "granted − captured = users.credits = Σ remaining of open lots; Σ ledger per reservation = −amount",
    ),
    (
        "I7",
        "no negative remaining, credits, available balance or balance_after",
    ),
];

/// What the audit found.
#[derive(Clone, Debug, Serialize)]
pub struct AuditReport {
    /// Every failing check, in invariant order; empty when the ledger is
    /// consistent.
    pub violations: Vec<Violation>,
    pub counts: AuditCounts,
}

/// One failing check of one invariant.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    /// "I1" … "I7".
    pub invariant: &'static str,
    pub description: String,
    /// How many rows (sessions, reservations, users, …) break it; for the
    /// I5 count comparisons, the difference between the counts.
    pub count: u64,
    /// Up to [`MAX_SAMPLES`] ids of those rows.
    pub samples: Vec<String>,
}

/// Row counts in the audited window, for the report and for I5.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AuditCounts {
    /// All users (not windowed).
    pub users: u64,
    pub sessions: u64,
    /// All reservations, with or without a session.
    pub reservations: u64,
    /// Reservations some session points at.
    pub reservations_with_session: u64,
    pub outbox_rows: u64,
    /// Sessions by status.
    pub completed: u64,
    pub failed: u64,
    pub processing: u64,
    /// Reservations by status.
    pub captured: u64,
    pub released: u64,
    pub expired: u64,
    pub reserved: u64,
    /// Images of the window's sessions.
    pub images: u64,
    /// Σ amount of captured reservations.
    pub captured_credits: i64,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// The violations of one invariant ("I1" … "I7").
    pub fn violations_of<'a>(&'a self, invariant: &'a str) -> impl Iterator<Item = &'a Violation> {
        self.violations
            .iter()
            .filter(move |v| v.invariant == invariant)
    }

    /// Σ counts of the invariant's violations (0 when it holds).
    pub fn count_of(&self, invariant: &str) -> u64 {
        self.violations_of(invariant).map(|v| v.count).sum()
    }

    /// Adds the loadgen's side of I5: the 202 answers it saw must equal the
    /// sessions the database holds for the window.
    pub fn compare_accepted(&mut self, accepted: u64) {
        let sessions = self.counts.sessions;
        if accepted != sessions {
            self.insert(Violation {
                invariant: "I5",
                description: format!(
                    "202 responses ({accepted}) ≠ sessions in the database ({sessions})"
                ),
                count: accepted.abs_diff(sessions),
                samples: Vec::new(),
            });
        }
    }

    /// Inserts after the violations of the same or earlier invariants.
    fn insert(&mut self, violation: Violation) {
        let at = self
            .violations
            .iter()
            .position(|v| v.invariant > violation.invariant)
            .unwrap_or(self.violations.len());
        self.violations.insert(at, violation);
    }
}

/// A bound parameter of a check, in `$n` order.
#[derive(Clone, Copy)]
enum Param {
    Since,
    Now,
}

/// One check: `sql` selects the offending ids as one text column `id`.
struct Check {
    invariant: &'static str,
    description: &'static str,
    sql: String,
    params: &'static [Param],
}

const SINCE: &[Param] = &[Param::Since];
const NOW: &[Param] = &[Param::Now];
const NONE: &[Param] = &[];

/// `column ->> key` as text in either dialect; NULL when absent, and on
/// SQLite also when the payload is not JSON (which would otherwise fail the
/// whole query).
fn json_text(dialect: Dialect, column: &str, key: &'static str) -> String {
    match dialect {
        Dialect::Postgres => format!("({column}->>'{key}')"),
        Dialect::Sqlite => format!(
            "(CASE WHEN json_valid({column}) THEN CAST(json_extract({column}, '$.{key}') AS TEXT) END)"
        ),
    }
}

fn checks(dialect: Dialect) -> Vec<Check> {
    let session_id = json_text(dialect, "o.payload", "sessionId");
    let client_key = json_text(dialect, "o.payload", "clientKey");
    vec![
        // I1: each session has one reservation of its credit_cost.
        Check {
            invariant: "I1",
            description: "session without a reservation (reservation_id null or dangling)",
            sql: "SELECT CAST(s.id AS TEXT) AS id FROM generation_sessions s \
                  LEFT JOIN credit_reservations r ON r.id = s.reservation_id \
                  WHERE s.created_at >= $1 AND r.id IS NULL"
                .into(),
            params: SINCE,
        },
        Check {
            invariant: "I1",
            description: "reservation amount ≠ session credit_cost",
            sql: "SELECT CAST(s.id AS TEXT) AS id FROM generation_sessions s \
                  JOIN credit_reservations r ON r.id = s.reservation_id \
                  WHERE s.created_at >= $1 AND r.amount <> s.credit_cost"
                .into(),
            params: SINCE,
        },
        Check {
            invariant: "I1",
            description: "reservation paying for several sessions",
            sql: "SELECT CAST(s.reservation_id AS TEXT) AS id FROM generation_sessions s \
                  WHERE s.created_at >= $1 AND s.reservation_id IS NOT NULL \
                  GROUP BY s.reservation_id HAVING COUNT(*) > 1"
                .into(),
            params: SINCE,
        },
        Check {
            invariant: "I1",
            description: "reservation of another user, or whose session_id names another session",
            sql: "SELECT CAST(s.id AS TEXT) AS id FROM generation_sessions s \
                  JOIN credit_reservations r ON r.id = s.reservation_id \
                  WHERE s.created_at >= $1 AND (r.user_id <> s.user_id \
                  OR (r.session_id IS NOT NULL AND r.session_id <> s.id))"
                .into(),
            params: SINCE,
        },
        // I2: outcomes and reservation states agree; nothing left in flight.
        Check {
            invariant: "I2",
            description: "completed session whose reservation is not captured",
            sql: "SELECT CAST(s.id AS TEXT) AS id FROM generation_sessions s \
                  JOIN credit_reservations r ON r.id = s.reservation_id \
                  WHERE s.created_at >= $1 AND s.status = 'completed' AND r.status <> 'captured'"
                .into(),
            params: SINCE,
        },
        Check {
            invariant: "I2",
            description: "failed session whose reservation is not released/expired",
            sql: "SELECT CAST(s.id AS TEXT) AS id FROM generation_sessions s \
                  JOIN credit_reservations r ON r.id = s.reservation_id \
                  WHERE s.created_at >= $1 AND s.status = 'failed' \
                  AND r.status NOT IN ('released', 'expired')"
                .into(),
            params: SINCE,
        },
        Check {
            invariant: "I2",
            description: "session not finished (neither completed nor failed) after quiescing",
            sql: "SELECT CAST(s.id AS TEXT) AS id FROM generation_sessions s \
                  WHERE s.created_at >= $1 AND s.status NOT IN ('completed', 'failed')"
                .into(),
            params: SINCE,
        },
        Check {
            invariant: "I2",
            description: "reservation still reserved after quiescing",
            sql: "SELECT CAST(r.id AS TEXT) AS id FROM credit_reservations r \
                  WHERE r.created_at >= $1 AND r.status = 'reserved'"
                .into(),
            params: SINCE,
        },
        Check {
            invariant: "I2",
            description: "captured reservation without a completed session",
            sql: "SELECT CAST(r.id AS TEXT) AS id FROM credit_reservations r \
                  LEFT JOIN (SELECT reservation_id FROM generation_sessions \
                  WHERE status = 'completed' GROUP BY reservation_id) c ON c.reservation_id = r.id \
                  WHERE r.created_at >= $1 AND r.status = 'captured' AND c.reservation_id IS NULL"
                .into(),
            params: SINCE,
        },
        // I3: one outbox row per generation, its payload naming it.
        Check {
            invariant: "I3",
            description: "session without an outbox row",
            sql: "SELECT CAST(s.id AS TEXT) AS id FROM generation_sessions s \
                  LEFT JOIN outbox o ON o.reservation_id = s.reservation_id \
                  WHERE s.created_at >= $1 AND o.id IS NULL"
                .into(),
            params: SINCE,
        },
        Check {
            invariant: "I3",
            description: "session with several outbox rows",
            sql: "SELECT CAST(s.id AS TEXT) AS id FROM generation_sessions s \
                  JOIN outbox o ON o.reservation_id = s.reservation_id \
                  WHERE s.created_at >= $1 GROUP BY s.id HAVING COUNT(*) > 1"
                .into(),
            params: SINCE,
        },
        Check {
            invariant: "I3",
            description: "outbox row without a session",
            sql: "SELECT CAST(o.id AS TEXT) AS id FROM outbox o \
                  LEFT JOIN generation_sessions s ON s.reservation_id = o.reservation_id \
                  WHERE o.created_at >= $1 AND s.id IS NULL"
                .into(),
            params: SINCE,
        },
        Check {
            invariant: "I3",
            description: "outbox payload sessionId ≠ its session's id",
            sql: format!(
                "SELECT CAST(o.id AS TEXT) AS id FROM outbox o \
                 JOIN generation_sessions s ON s.reservation_id = o.reservation_id \
                 WHERE o.created_at >= $1 \
                 AND COALESCE(LOWER({session_id}), '') <> LOWER(CAST(s.id AS TEXT))"
            ),
            params: SINCE,
        },
        Check {
            invariant: "I3",
            description: "outbox payload clientKey ≠ its session's client_key",
            sql: format!(
                "SELECT CAST(o.id AS TEXT) AS id FROM outbox o \
                 JOIN generation_sessions s ON s.reservation_id = o.reservation_id \
                 WHERE o.created_at >= $1 \
                 AND COALESCE({client_key}, '') <> COALESCE(s.client_key, '')"
            ),
            params: SINCE,
        },
        // I4: completed sessions carry their images.
        Check {
            invariant: "I4",
            description: "completed session whose image count ≠ outputs",
            sql: "SELECT CAST(s.id AS TEXT) AS id FROM generation_sessions s \
                  LEFT JOIN (SELECT session_id, COUNT(*) AS n FROM images GROUP BY session_id) i \
                  ON i.session_id = s.id \
                  WHERE s.created_at >= $1 AND s.status = 'completed' \
                  AND COALESCE(i.n, 0) <> s.outputs"
                .into(),
            params: SINCE,
        },
        // I5 compares counts: see `i5_violation`.
        // I6: credits add up, per user and per reservation.
        Check {
            invariant: "I6",
            description: "users.credits ≠ Σ lot amounts granted − Σ captured reservations",
            sql: "SELECT CAST(u.id AS TEXT) AS id FROM users u \
                  LEFT JOIN (SELECT user_id, SUM(amount) AS granted FROM credit_lots \
                  GROUP BY user_id) l ON l.user_id = u.id \
                  LEFT JOIN (SELECT user_id, SUM(amount) AS captured FROM credit_reservations \
                  WHERE status = 'captured' GROUP BY user_id) c ON c.user_id = u.id \
                  WHERE u.credits <> COALESCE(l.granted, 0) - COALESCE(c.captured, 0)"
                .into(),
            params: NONE,
        },
        Check {
            invariant: "I6",
            description: "users.credits ≠ Σ remaining of open lots",
            sql: "SELECT CAST(u.id AS TEXT) AS id FROM users u \
                  LEFT JOIN (SELECT user_id, SUM(remaining) AS open_remaining FROM credit_lots \
                  WHERE closed_at IS NULL GROUP BY user_id) l ON l.user_id = u.id \
                  WHERE u.credits <> COALESCE(l.open_remaining, 0)"
                .into(),
            params: NONE,
        },
        Check {
            invariant: "I6",
            description: "captured reservation whose ledger rows do not sum to −amount",
            sql: "SELECT CAST(r.id AS TEXT) AS id FROM credit_reservations r \
                  LEFT JOIN (SELECT reservation_id, SUM(amount) AS moved FROM credit_transactions \
                  WHERE reservation_id IS NOT NULL GROUP BY reservation_id) t \
                  ON t.reservation_id = r.id \
                  WHERE r.created_at >= $1 AND r.status = 'captured' \
                  AND COALESCE(t.moved, 0) <> -r.amount"
                .into(),
            params: SINCE,
        },
        Check {
            invariant: "I6",
            description: "credits moved for a reservation that was not captured",
            sql: "SELECT CAST(r.id AS TEXT) AS id FROM credit_reservations r \
                  JOIN (SELECT reservation_id, SUM(amount) AS moved FROM credit_transactions \
                  WHERE reservation_id IS NOT NULL GROUP BY reservation_id) t \
                  ON t.reservation_id = r.id \
                  WHERE r.created_at >= $1 AND r.status <> 'captured' AND t.moved <> 0"
                .into(),
            params: SINCE,
        },
        Check {
            invariant: "I6",
            description: "lot with remaining > amount",
            sql: "SELECT CAST(l.id AS TEXT) AS id FROM credit_lots l WHERE l.remaining > l.amount"
                .into(),
            params: NONE,
        },
        // I7: nothing negative, ever.
        Check {
            invariant: "I7",
            description: "lot with negative remaining",
            sql: "SELECT CAST(l.id AS TEXT) AS id FROM credit_lots l WHERE l.remaining < 0".into(),
            params: NONE,
        },
        Check {
            invariant: "I7",
            description: "user with negative credits",
            sql: "SELECT CAST(u.id AS TEXT) AS id FROM users u WHERE u.credits < 0".into(),
            params: NONE,
        },
        Check {
            invariant: "I7",
            description: "user with negative available balance (credits − live reservations)",
            sql: "SELECT CAST(u.id AS TEXT) AS id FROM users u \
                  LEFT JOIN (SELECT user_id, SUM(amount) AS held FROM credit_reservations \
                  WHERE status = 'reserved' AND expires_at > $1 GROUP BY user_id) h \
                  ON h.user_id = u.id \
                  WHERE u.credits - COALESCE(h.held, 0) < 0"
                .into(),
            params: NOW,
        },
        Check {
            invariant: "I7",
            description: "ledger row with negative balance_after",
            sql: "SELECT CAST(t.id AS TEXT) AS id FROM credit_transactions t \
                  WHERE t.created_at >= $1 AND t.balance_after < 0"
                .into(),
            params: SINCE,
        },
    ]
}

/// Checks I1–I7 on `db` and returns every violation. `since` limits the
/// per-row checks to rows created at or after it (see the module doc).
pub async fn audit(db: &Db, since: Option<Timestamp>) -> Result<AuditReport, sqlx::Error> {
    let since = since.unwrap_or(chrono::DateTime::UNIX_EPOCH);
    let now = chrono::Utc::now();
    let value = |param: Param| match param {
        Param::Since => since,
        Param::Now => now,
    };
    let counts = counts(db, since).await?;
    let mut report = AuditReport {
        violations: Vec::new(),
        counts,
    };
    for check in checks(db.dialect()) {
        let count_sql = format!("SELECT COUNT(*) FROM ({}) v", check.sql);
        let sample_sql = format!("{} ORDER BY 1 LIMIT {MAX_SAMPLES}", check.sql);
        let (count, samples): (i64, Vec<(String,)>) = with_pool!(db, pool => {
            let mut query = sqlx::query_as::<_, (i64,)>(&count_sql);
            for param in check.params {
                query = query.bind(value(*param));
            }
            let (count,) = query.fetch_one(pool).await?;
            let mut samples = Vec::new();
            if count > 0 {
                let mut query = sqlx::query_as::<_, (String,)>(&sample_sql);
                for param in check.params {
                    query = query.bind(value(*param));
                }
                samples = query.fetch_all(pool).await?;
            }
            (count, samples)
        });
        if count > 0 {
            report.violations.push(Violation {
                invariant: check.invariant,
                description: check.description.to_string(),
                count: count.unsigned_abs(),
                samples: samples.into_iter().map(|(id,)| id).collect(),
            });
        }
    }
    if let Some(i5) = i5_violation(&report.counts) {
        report.insert(i5);
    }
    Ok(report)
}

/// I5 by SQL: sessions = reservations with a session = outbox rows.
fn i5_violation(counts: &AuditCounts) -> Option<Violation> {
    let values = [
        counts.sessions,
        counts.reservations_with_session,
        counts.outbox_rows,
    ];
    let max = values.iter().copied().max().unwrap_or(0);
    let min = values.iter().copied().min().unwrap_or(0);
    (max != min).then(|| Violation {
        invariant: "I5",
        description: format!(
            "counts differ: sessions {}, reservations with a session {}, outbox rows {}",
            counts.sessions, counts.reservations_with_session, counts.outbox_rows
        ),
        count: max - min,
        samples: Vec::new(),
    })
}

async fn counts(db: &Db, since: Timestamp) -> Result<AuditCounts, sqlx::Error> {
    const SQL: &str = "SELECT \
        (SELECT COUNT(*) FROM users), \
        (SELECT COUNT(*) FROM generation_sessions WHERE created_at >= $1), \
        (SELECT COUNT(*) FROM credit_reservations WHERE created_at >= $1), \
        (SELECT COUNT(*) FROM credit_reservations r WHERE r.created_at >= $1 AND r.id IN \
            (SELECT reservation_id FROM generation_sessions WHERE reservation_id IS NOT NULL)), \
        (SELECT COUNT(*) FROM outbox WHERE created_at >= $1), \
        (SELECT COUNT(*) FROM generation_sessions WHERE created_at >= $1 AND status = 'completed'), \
        (SELECT COUNT(*) FROM generation_sessions WHERE created_at >= $1 AND status = 'failed'), \
        (SELECT COUNT(*) FROM generation_sessions WHERE created_at >= $1 AND status = 'processing'), \
        (SELECT COUNT(*) FROM credit_reservations WHERE created_at >= $1 AND status = 'captured'), \
        (SELECT COUNT(*) FROM credit_reservations WHERE created_at >= $1 AND status = 'released'), \
        (SELECT COUNT(*) FROM credit_reservations WHERE created_at >= $1 AND status = 'expired'), \
        (SELECT COUNT(*) FROM credit_reservations WHERE created_at >= $1 AND status = 'reserved'), \
        (SELECT COUNT(*) FROM images i JOIN generation_sessions s ON s.id = i.session_id \
            WHERE s.created_at >= $1), \
        (SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM credit_reservations \
            WHERE created_at >= $1 AND status = 'captured')";
    type Row = (
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
    );
    let row: Row = with_pool!(db, pool => sqlx::query_as(SQL).bind(since).fetch_one(pool).await)?;
    let n = |v: i64| v.unsigned_abs();
    Ok(AuditCounts {
        users: n(row.0),
        sessions: n(row.1),
        reservations: n(row.2),
        reservations_with_session: n(row.3),
        outbox_rows: n(row.4),
        completed: n(row.5),
        failed: n(row.6),
        processing: n(row.7),
        captured: n(row.8),
        released: n(row.9),
        expired: n(row.10),
        reserved: n(row.11),
        images: n(row.12),
        captured_credits: row.13,
    })
}

/// Ledger-built databases for the audit's tests and the loadgen's
/// (feature `testing`): a clean one, and one statement per invariant that
/// breaks it, the way a faulty backend would.
#[cfg(feature = "testing")]
pub mod fixture {
    use std::time::Duration;

    use serde_json::json;
    use sqlx::types::Json;

    use crate::db::{Db, Id};
    use crate::ledger::{
        self, GenerationParams, LedgerError, LotSource, NewImage, NewSession, SessionOutcome,
    };
    use crate::with_pool;

    /// A generation: its session and reservation.
    #[derive(Clone, Copy, Debug)]
    pub struct Generation {
        pub session: Id,
        pub reservation: Id,
    }

    /// What [`clean`] wrote.
    #[derive(Clone, Debug)]
    pub struct Fixture {
        pub user: Id,
        /// Completed with 3 images, paid from both lots.
        pub completed: Generation,
        /// Completed with 1 image.
        pub completed_single: Generation,
        /// Failed: its reservation released.
        pub failed: Generation,
        /// Its reservation expired by the sweeper, the session failed.
        pub expired: Generation,
    }

    async fn accept(
        db: &Db,
        user: Id,
        outputs: i32,
        now: crate::db::Timestamp,
    ) -> Result<Generation, LedgerError> {
        let session = NewSession::for_generation(
            user,
            format!("key-{}", Id::random()),
            &GenerationParams::new("a cat", outputs),
        );
        ledger::reserve_for_session(db, user, outputs, Duration::from_secs(600), &session, now)
            .await?;
        Ok(Generation {
            session: session.id,
            reservation: session.reservation_id,
        })
    }

    /// Records `generation` completed with `outputs` images.
    async fn complete(
        db: &Db,
        generation: Generation,
        outputs: i32,
        now: crate::db::Timestamp,
    ) -> Result<(), LedgerError> {
        let images = (0..outputs)
            .map(|n| NewImage {
                url: format!("https://example.test/{}/{n}.png", generation.session),
                width: 1024,
                height: 1024,
                storage_provider: "mock".into(),
                generation_tool: "seedream4".into(),
                client_key: None,
            })
            .collect();
        let outcome = SessionOutcome::Completed {
            images,
            duration_ms: 5,
        };
        ledger::finish_session(db, generation.reservation, &outcome, now).await?;
        Ok(())
    }

    /// One user with two lots (2 and 100 credits), completed generations
    /// of 3 and 1 outputs, a failed one and an expired one: a database the
    /// audit finds clean.
    pub async fn clean(db: &Db) -> Result<Fixture, LedgerError> {
        let now = chrono::Utc::now();
        let email = format!("audit-{}@example.com", Id::random());
        let user = crate::users::create(db, &email, "x", "user", now)
            .await
            .map_err(|e| match e {
                crate::users::UserError::Db(e) => LedgerError::Db(e),
                other => LedgerError::Db(sqlx::Error::Protocol(other.to_string())),
            })?
            .id;
        let day = chrono::Duration::days(1);
        ledger::add_credits(
            db,
            user,
            2,
            LotSource::Subscription,
            now + day,
            "subscription",
            now,
        )
        .await?;
        ledger::add_credits(
            db,
            user,
            100,
            LotSource::Adjustment,
            now + day * 365,
            "adjustment",
            now,
        )
        .await?;
        let completed = accept(db, user, 3, now).await?;
        let completed_single = accept(db, user, 1, now).await?;
        let failed = accept(db, user, 1, now).await?;
        complete(db, completed, 3, now).await?;
        complete(db, completed_single, 1, now).await?;
        ledger::finish_session(
            db,
            failed.reservation,
            &SessionOutcome::Failed {
                error_details: json!({"error": "provider failed"}),
                duration_ms: 5,
            },
            now,
        )
        .await?;
        let expired = accept(db, user, 1, now).await?;
        ledger::expire_overdue(db, now + chrono::Duration::seconds(601)).await?;
        Ok(Fixture {
            user,
            completed,
            completed_single,
            failed,
            expired,
        })
    }

    /// Breaks `invariant` ("I1" … "I7") with raw SQL; returns an id the
    /// audit should name among the samples (none for I5's count mismatch).
    pub async fn break_invariant(
        db: &Db,
        f: &Fixture,
        invariant: &str,
    ) -> Result<Option<String>, sqlx::Error> {
        let now = chrono::Utc::now();
        with_pool!(db, pool => {
            Ok(match invariant {
                "I1" => {
                    sqlx::query("UPDATE generation_sessions SET credit_cost = credit_cost + 1 WHERE id = $1")
                        .bind(f.failed.session).execute(pool).await?;
                    Some(f.failed.session.to_string())
                }
                "I2" => {
                    sqlx::query("UPDATE generation_sessions SET status = 'processing' WHERE id = $1")
                        .bind(f.expired.session).execute(pool).await?;
                    sqlx::query("UPDATE credit_reservations SET status = 'reserved' WHERE id = $1")
                        .bind(f.expired.reservation).execute(pool).await?;
                    Some(f.expired.session.to_string())
                }
                "I3" => {
                    sqlx::query("UPDATE outbox SET payload = $1 WHERE reservation_id = $2")
                        .bind(Json(json!({"sessionId": Id::random().to_string()})))
                        .bind(f.completed.reservation).execute(pool).await?;
                    let (id,): (String,) = sqlx::query_as("SELECT CAST(id AS TEXT) FROM outbox WHERE reservation_id = $1")
                        .bind(f.completed.reservation).fetch_one(pool).await?;
                    Some(id)
                }
                "I4" => {
                    sqlx::query("DELETE FROM images WHERE session_id = $1")
                        .bind(f.completed.session).execute(pool).await?;
                    Some(f.completed.session.to_string())
                }
                "I5" => {
                    sqlx::query("INSERT INTO outbox (event_type, reservation_id, payload, created_at) VALUES ($1, $2, $3, $4)")
                        .bind(ledger::GENERATION_EVENT).bind(Id::random()).bind(Json(json!({}))).bind(now)
                        .execute(pool).await?;
                    None
                }
                "I6" => {
                    sqlx::query("UPDATE users SET credits = credits + 5 WHERE id = $1")
                        .bind(f.user).execute(pool).await?;
                    Some(f.user.to_string())
                }
                "I7" => {
                    let row = Id::random();
                    sqlx::query("INSERT INTO credit_transactions (id, user_id, description, amount, balance_after, created_at) \
                                 VALUES ($1, $2, 'overdraft', 0, -1, $3)")
                        .bind(row).bind(f.user).bind(now).execute(pool).await?;
                    Some(row.to_string())
                }
                other => return Err(sqlx::Error::Protocol(format!("no invariant {other}"))),
            })
        })
    }
}
