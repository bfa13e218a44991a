//! The PostgreSQL statements of the group-committed ledger paths
//! ([`super::reserve_batch`], [`super::finish_sessions`]): the same
//! decisions as the SQLite path ([`super::decide_reservations`],
//! [`super::decide_settlements`]), in fewer round trips and with one
//! user-row lock per generation instead of two.
//!
//! Every statement binds whole columns as arrays (`UNNEST`), so its text
//! does not depend on the batch's size: each is parsed and planned once
//! per connection, not once per batch size.
//!
//! # Reserve: 4 round trips a batch
//!
//! `BEGIN`; the batch's users' reservation locks; one read of the users'
//! credits, live reservations and the batch's `clientKey`s; one statement
//! inserting the reservations, sessions and outbox rows; `COMMIT`.
//!
//! Reservations of one user are serialised by a transaction-scoped
//! advisory lock on the user ([`RESERVE_LOCK`], taken in key order so two
//! batches never deadlock), not by the user's row lock: a capture (which
//! updates `users.credits`) never waits for a reservation batch, nor a
//! reservation batch for a capture. That is exact because the read after
//! the lock is one statement, so it sees a capture (credits − amount,
//! reservation no longer `reserved`) or a release entirely or not at all;
//! neither lowers what is available, and credits granted meanwhile
//! (`add_credits`, which locks the user's row) only raise it. So the batch
//! decides as if it ran just before them, and `available` never goes
//! negative.
//!
//! # Finish: 4 round trips a batch
//!
//! `BEGIN`; the batch's reservations locked (`FOR UPDATE`, in id order:
//! their status is then final, even against the sweeper); the owners' open
//! lots locked (earliest expiry first, as captures take them); one
//! statement writing every change (reservations, lots, sessions, images,
//! `users.credits` by difference and the ledger rows with their
//! `balance_after` from the updated credits); `COMMIT`. Two finish batches
//! of one user are serialised by its lots; the user's row is locked only
//! by that last statement, until the commit right after it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    decide_reservations, decide_settlements, Accepted, Decided, Finished, Held, LedgerError,
    OpenLot, ReservationStatus, ReserveRequest, SessionOutcome, Settlement, GENERATION_EVENT,
};
use crate::db::{Id, Timestamp};

/// The first key of the advisory lock serialising one user's
/// reservations (`pg_advisory_xact_lock(RESERVE_LOCK, user)`); the second
/// is the low 32 bits of the user's id.
pub const RESERVE_LOCK: i32 = 0x6c65_6467;

/// The advisory lock key of `user`'s reservations (ids are random, so their
/// low bits are; two users sharing a key only wait for each other).
fn reserve_key(user: Id) -> i32 {
    user.0.as_u128() as u32 as i32
}

/// A row of the reservation batch's read: a user (id, credits, reserved),
/// or a session holding one of the batch's `clientKey`s (user id, key,
/// session, reservation).
type BatchRead = (
    Id,
    Option<i32>,
    Option<i64>,
    Option<String>,
    Option<Id>,
    Option<Id>,
);

/// A row of the finish batch's reservation read: id, owner, status,
/// amount, expiry, session.
type HeldRead = (Id, Id, String, i32, Timestamp, Option<Id>);

/// A session's move in a finish batch.
struct SessionRow<'a> {
    reservation: Uuid,
    session: Uuid,
    status: &'static str,
    details: Option<Json<&'a Value>>,
    ms: i32,
}

fn uuids(ids: impl IntoIterator<Item = Id>) -> Vec<Uuid> {
    ids.into_iter().map(|id| id.0).collect()
}

/// [`super::reserve_batch`] on PostgreSQL, for `users` (the batch's users,
/// in id order).
pub(super) async fn reserve_batch(
    pool: &PgPool,
    requests: &[ReserveRequest],
    users: &[Id],
    now: Timestamp,
) -> Result<Vec<Result<Accepted, LedgerError>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let keys: Vec<i32> = users
        .iter()
        .map(|user| reserve_key(*user))
        .collect::<BTreeSet<i32>>()
        .into_iter()
        .collect();
    sqlx::query("SELECT pg_advisory_xact_lock($1, k) FROM UNNEST($2::int4[]) AS k")
        .bind(RESERVE_LOCK)
        .bind(&keys)
        .execute(&mut *tx)
        .await?;
    // What each user has left to reserve, or None for no active user.
    let mut available: BTreeMap<Id, Option<i64>> = users.iter().map(|user| (*user, None)).collect();
    let asked = super::client_keys_asked(requests, |_| true);
    let (key_users, key_texts): (Vec<Uuid>, Vec<&str>) =
        asked.iter().map(|(user, key)| (user.0, *key)).unzip();
    // One statement, so one snapshot: the users' rows, then the sessions
    // already holding one of the batch's (user, clientKey) pairs. Each pair
    // is looked up on its own, behind `LIMIT 1` so the planner cannot fold
    // the lookups into one join: equality on both columns of the unique
    // index is the plan whatever the statistics say. (`= ANY` on each
    // column let a cached generic plan, made while the table was small,
    // walk every session of the user through `(user_id, created_at)`: 10k
    // rows and 9 ms per batch after 8 s of load.)
    let rows: Vec<BatchRead> =
        sqlx::query_as(
            "SELECT u.id, u.credits, CAST(COALESCE((SELECT SUM(r.amount) FROM credit_reservations r \
             WHERE r.user_id = u.id AND r.status = 'reserved' AND r.expires_at > $1), 0) AS BIGINT), \
             NULL::text, NULL::uuid, NULL::uuid \
             FROM users u WHERE u.id = ANY($2) AND u.deleted_at IS NULL \
             UNION ALL \
             SELECT k.user_id, NULL, NULL, s.client_key, s.id, s.reservation_id \
             FROM UNNEST($3::uuid[], $4::text[]) AS k(user_id, client_key) \
             CROSS JOIN LATERAL (SELECT s.client_key, s.id, s.reservation_id FROM generation_sessions s \
             WHERE s.user_id = k.user_id AND s.client_key = k.client_key LIMIT 1) s",
        )
        .bind(now)
        .bind(uuids(users.iter().copied()))
        .bind(&key_users)
        .bind(&key_texts)
        .fetch_all(&mut *tx)
        .await?;
    let mut known: HashMap<(Id, &str), Option<(Id, Id)>> = HashMap::new();
    for (user, credits, reserved, key, session, reservation) in rows {
        match (credits, key, session) {
            (Some(credits), None, _) => {
                available.insert(user, Some(i64::from(credits) - reserved.unwrap_or(0)));
            }
            (None, Some(key), Some(session)) => {
                if let Ok(n) = asked.binary_search(&(user, key.as_str())) {
                    known.insert(asked[n], reservation.map(|r| (session, r)));
                }
            }
            _ => {}
        }
    }
    let (answers, accepted) = decide_reservations(requests, &mut available, &mut known, now);
    if !accepted.is_empty() {
        let sessions: Vec<_> = accepted
            .iter()
            .filter_map(|(r, id, _)| r.session.as_ref().map(|s| (*r, s, *id)))
            .collect();
        sqlx::query(
            "WITH reservations AS ( \
               INSERT INTO credit_reservations (id, user_id, amount, session_id, description, created_at, expires_at, status) \
               SELECT id, user_id, amount, session_id, description, $1, expires_at, 'reserved' \
               FROM UNNEST($2::uuid[], $3::uuid[], $4::int4[], $5::uuid[], $6::text[], $7::timestamptz[]) \
               AS r(id, user_id, amount, session_id, description, expires_at) \
             ), sessions AS ( \
               INSERT INTO generation_sessions (id, user_id, prompt, model, outputs, credit_cost, \
               reservation_id, client_key, created_at, resolution, aspect_ratio, guidance_scale, seed, status) \
               SELECT id, user_id, prompt, model, outputs, credit_cost, reservation_id, client_key, $1, \
               resolution, aspect_ratio, guidance_scale, seed, 'processing' \
               FROM UNNEST($8::uuid[], $9::uuid[], $10::text[], $11::text[], $12::int4[], $13::int4[], \
               $14::uuid[], $15::text[], $16::text[], $17::text[], $18::float8[], $19::int8[]) \
               AS s(id, user_id, prompt, model, outputs, credit_cost, reservation_id, client_key, \
               resolution, aspect_ratio, guidance_scale, seed) \
             ) \
             INSERT INTO outbox (reservation_id, payload, created_at, dispatched_at, event_type) \
             SELECT reservation_id, payload, $1, dispatched_at, $20 \
             FROM UNNEST($14::uuid[], $21::jsonb[], $22::timestamptz[]) AS o(reservation_id, payload, dispatched_at)",
        )
        .bind(now)
        .bind(uuids(accepted.iter().map(|(_, id, _)| *id)))
        .bind(uuids(accepted.iter().map(|(r, _, _)| r.user)))
        .bind(accepted.iter().map(|(r, _, _)| r.amount).collect::<Vec<i32>>())
        .bind(
            accepted
                .iter()
                .map(|(r, _, _)| r.session.as_ref().map(|s| s.id.0))
                .collect::<Vec<Option<Uuid>>>(),
        )
        .bind(accepted.iter().map(|(r, _, _)| r.description.as_str()).collect::<Vec<&str>>())
        .bind(accepted.iter().map(|(_, _, expires_at)| *expires_at).collect::<Vec<Timestamp>>())
        .bind(uuids(sessions.iter().map(|(_, s, _)| s.id)))
        .bind(uuids(sessions.iter().map(|(r, _, _)| r.user)))
        .bind(sessions.iter().map(|(_, s, _)| s.prompt.as_str()).collect::<Vec<&str>>())
        .bind(sessions.iter().map(|(_, s, _)| s.model.as_str()).collect::<Vec<&str>>())
        .bind(sessions.iter().map(|(_, s, _)| s.outputs).collect::<Vec<i32>>())
        .bind(sessions.iter().map(|(r, _, _)| r.amount).collect::<Vec<i32>>())
        .bind(uuids(sessions.iter().map(|(_, _, id)| *id)))
        .bind(sessions.iter().map(|(_, s, _)| s.client_key.as_str()).collect::<Vec<&str>>())
        .bind(sessions.iter().map(|(_, s, _)| s.resolution.as_deref()).collect::<Vec<Option<&str>>>())
        .bind(sessions.iter().map(|(_, s, _)| s.aspect_ratio.as_deref()).collect::<Vec<Option<&str>>>())
        .bind(sessions.iter().map(|(_, s, _)| s.guidance_scale).collect::<Vec<Option<f64>>>())
        .bind(sessions.iter().map(|(_, s, _)| s.seed).collect::<Vec<Option<i64>>>())
        .bind(GENERATION_EVENT)
        .bind(sessions.iter().map(|(_, s, _)| Json(&s.payload)).collect::<Vec<Json<&Value>>>())
        .bind(
            sessions
                .iter()
                .map(|(_, s, _)| s.dispatched.then_some(now))
                .collect::<Vec<Option<Timestamp>>>(),
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(answers)
}

/// [`super::settle_batch`] on PostgreSQL, for `ids` (the batch's
/// reservations, in id order).
pub(super) async fn settle_batch(
    pool: &PgPool,
    items: &[Settlement<'_>],
    ids: &[Id],
    now: Timestamp,
) -> Result<Vec<Result<Finished, LedgerError>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let rows: Vec<HeldRead> = sqlx::query_as(
        "SELECT id, user_id, status, amount, expires_at, session_id FROM credit_reservations \
         WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(uuids(ids.iter().copied()))
    .fetch_all(&mut *tx)
    .await?;
    let mut held: HashMap<Id, Held> = HashMap::with_capacity(rows.len());
    // Each reservation's session, looked up by its primary key below.
    let mut session_of: HashMap<Id, Uuid> = HashMap::with_capacity(rows.len());
    for (id, user, status, amount, expires_at, session) in rows {
        if let Some(session) = session {
            session_of.insert(id, session.0);
        }
        let status = ReservationStatus::parse(&status)?;
        held.insert(
            id,
            Held {
                user,
                status,
                amount,
                expires_at,
            },
        );
    }
    // Credits are changed by difference: every owner starts at 0 here and
    // ends at minus what the batch captured from it.
    let mut credits: BTreeMap<Id, i32> = held.values().map(|h| (h.user, 0)).collect();
    let capturing: Vec<Id> = super::capturing_owners(items, &held, now);
    let mut lots: HashMap<Id, Vec<OpenLot>> = HashMap::new();
    if !capturing.is_empty() {
        let rows: Vec<(Id, Id, i32)> = sqlx::query_as(
            "SELECT id, user_id, remaining FROM credit_lots \
             WHERE user_id = ANY($1) AND remaining > 0 AND closed_at IS NULL \
             ORDER BY user_id, expires_at, created_at, id FOR UPDATE",
        )
        .bind(uuids(capturing))
        .fetch_all(&mut *tx)
        .await?;
        OpenLot::file(&mut lots, rows);
    }
    let Decided {
        answers,
        settled,
        charged,
        entries,
        outcomes,
    } = decide_settlements(items, &mut held, &mut lots, &mut credits, now);
    if settled.is_empty() && outcomes.is_empty() {
        tx.commit().await?;
        return Ok(answers);
    }

    let taken: Vec<(Uuid, i32)> = lots
        .values()
        .flatten()
        .filter(|lot| lot.taken > 0)
        .map(|lot| (lot.id.0, lot.taken))
        .collect();
    // Sessions move only while `processing`; images go to the completed.
    // Reservations, lots and users are also named by `= ANY` on their
    // primary key, so their plans look them up by index even while the
    // tables' statistics lag behind their growth. Sessions are joined by
    // primary key alone (their reservation's `session_id`): with `= ANY`
    // the planner expected one row and rescanned the batch's arrays per
    // session, and by the non-unique `reservation_id` index it seq-scanned
    // the table before its first analyze. Their filter is written
    // `(status = 'processing') IS TRUE` so that no plan walks the status
    // index: under load thousands of sessions are `processing`.
    let mut session_rows: Vec<SessionRow> = Vec::new();
    let mut images: Vec<(Uuid, Uuid, &super::NewImage)> = Vec::new();
    for (reservation, outcome) in &outcomes {
        // A reservation without a session (not a generation's) has no
        // session to move nor images to store.
        let Some(&session) = session_of.get(reservation) else {
            continue;
        };
        match outcome {
            SessionOutcome::Completed {
                images: made,
                duration_ms,
            } => {
                session_rows.push(SessionRow {
                    reservation: reservation.0,
                    session,
                    status: "completed",
                    details: None,
                    ms: *duration_ms,
                });
                images.extend(
                    made.iter()
                        .map(|image| (Uuid::new_v4(), reservation.0, image)),
                );
            }
            SessionOutcome::Failed {
                error_details,
                duration_ms,
            } => session_rows.push(SessionRow {
                reservation: reservation.0,
                session,
                status: "failed",
                details: Some(Json(error_details)),
                ms: *duration_ms,
            }),
        }
    }
    // The users' final credits come back from the update; each ledger
    // row's balance_after is that plus what the batch captured after it.
    let after_offset: Vec<i32> = entries
        .iter()
        .map(|(user, _, running, _, _)| running - credits[user])
        .collect();
    sqlx::query(
        "WITH settled AS ( \
           UPDATE credit_reservations r SET status = v.status, \
           captured_at = CASE WHEN v.status = 'captured' THEN $1 ELSE r.captured_at END, \
           released_at = CASE WHEN v.status = 'captured' THEN r.released_at ELSE $1 END \
           FROM UNNEST($2::uuid[], $3::text[]) AS v(id, status) WHERE r.id = ANY($2) AND r.id = v.id \
         ), lots AS ( \
           UPDATE credit_lots l SET remaining = l.remaining - t.credits, \
           closed_at = CASE WHEN l.remaining - t.credits = 0 THEN $1 ELSE l.closed_at END \
           FROM UNNEST($4::uuid[], $5::int4[]) AS t(lot, credits) WHERE l.id = ANY($4) AND l.id = t.lot \
         ), outcomes AS ( \
           UPDATE generation_sessions g SET status = o.status, \
           completed_at = CASE WHEN o.status = 'completed' THEN $1 ELSE g.completed_at END, \
           error_details = CASE WHEN o.status = 'failed' THEN o.details ELSE g.error_details END, \
           duration_ms = o.ms \
           FROM UNNEST($6::uuid[], $7::text[], $8::jsonb[], $9::int4[], $26::uuid[]) \
           AS o(reservation, status, details, ms, session) \
           WHERE g.id = o.session AND g.reservation_id = o.reservation \
           AND (g.status = 'processing') IS TRUE \
           RETURNING g.id, g.reservation_id, g.status \
         ), stored AS ( \
           INSERT INTO images (id, session_id, url, width, height, storage_provider, generation_tool, \
           client_key, created_at, completed_at) \
           SELECT i.id, outcomes.id, i.url, i.width, i.height, i.provider, i.tool, i.client_key, $1, $1 \
           FROM UNNEST($10::uuid[], $11::uuid[], $12::text[], $13::int4[], $14::int4[], $15::text[], \
           $16::text[], $17::text[]) AS i(id, reservation, url, width, height, provider, tool, client_key) \
           JOIN outcomes ON outcomes.reservation_id = i.reservation AND outcomes.status = 'completed' \
         ), charged AS ( \
           UPDATE users u SET credits = u.credits + c.delta \
           FROM UNNEST($18::uuid[], $19::int4[]) AS c(id, delta) WHERE u.id = ANY($18) AND u.id = c.id \
           RETURNING u.id, u.credits \
         ) \
         INSERT INTO credit_transactions (id, user_id, amount, balance_after, reservation_id, lot_id, \
         created_at, description) \
         SELECT e.id, e.user_id, e.amount, charged.credits + e.after_offset, e.reservation, e.lot, $1, \
         'Capture of reservation' \
         FROM UNNEST($20::uuid[], $21::uuid[], $22::int4[], $23::int4[], $24::uuid[], $25::uuid[]) \
         AS e(id, user_id, amount, after_offset, reservation, lot) \
         JOIN charged ON charged.id = e.user_id",
    )
    .bind(now)
    .bind(uuids(settled.keys().copied()))
    .bind(settled.values().map(|s| s.as_str()).collect::<Vec<&str>>())
    .bind(taken.iter().map(|(lot, _)| *lot).collect::<Vec<Uuid>>())
    .bind(taken.iter().map(|(_, credits)| *credits).collect::<Vec<i32>>())
    .bind(session_rows.iter().map(|row| row.reservation).collect::<Vec<Uuid>>())
    .bind(session_rows.iter().map(|row| row.status).collect::<Vec<&str>>())
    .bind(session_rows.iter().map(|row| row.details).collect::<Vec<Option<Json<&Value>>>>())
    .bind(session_rows.iter().map(|row| row.ms).collect::<Vec<i32>>())
    .bind(images.iter().map(|(id, _, _)| *id).collect::<Vec<Uuid>>())
    .bind(images.iter().map(|(_, reservation, _)| *reservation).collect::<Vec<Uuid>>())
    .bind(images.iter().map(|(_, _, i)| i.url.as_str()).collect::<Vec<&str>>())
    .bind(images.iter().map(|(_, _, i)| i.width).collect::<Vec<i32>>())
    .bind(images.iter().map(|(_, _, i)| i.height).collect::<Vec<i32>>())
    .bind(images.iter().map(|(_, _, i)| i.storage_provider.as_str()).collect::<Vec<&str>>())
    .bind(images.iter().map(|(_, _, i)| i.generation_tool.as_str()).collect::<Vec<&str>>())
    .bind(images.iter().map(|(_, _, i)| i.client_key.as_deref()).collect::<Vec<Option<&str>>>())
    .bind(uuids(charged.iter().copied()))
    .bind(charged.iter().map(|user| credits[user]).collect::<Vec<i32>>())
    .bind(entries.iter().map(|_| Uuid::new_v4()).collect::<Vec<Uuid>>())
    .bind(uuids(entries.iter().map(|e| e.0)))
    .bind(entries.iter().map(|e| e.1).collect::<Vec<i32>>())
    .bind(after_offset)
    .bind(uuids(entries.iter().map(|e| e.3)))
    .bind(uuids(entries.iter().map(|e| e.4)))
    .bind(session_rows.iter().map(|row| row.session).collect::<Vec<Uuid>>())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(answers)
}
