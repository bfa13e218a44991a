//! The credit ledger of contract §3: the only code that moves credits.
//!
//! Every operation is one write transaction that first locks the user's row
//! (PostgreSQL `SELECT … FOR UPDATE`; SQLite `BEGIN IMMEDIATE`), so all
//! credit movements of one user are serialised and "available = credits −
//! live reservations" is read and acted on atomically. On PostgreSQL the
//! group-committed paths lock less and still decide exactly the same
//! ([`postgres`]): reservation batches serialise per user on an advisory
//! lock, finish batches on the reservations and lots they settle, and only
//! a capture's last statement locks the user's row. Operations are
//! idempotent: settling a reservation twice changes nothing the second time
//! and answers [`Transition::Unchanged`].
//!
//! A reservation may carry the generation session it pays for
//! ([`NewSession`]); the session and its outbox row are then inserted in the
//! reservation's transaction, so a session exists exactly when its
//! reservation does and a job is never lost between the two. Likewise
//! [`finish_session`] settles the reservation and records the session's
//! outcome (images, status) in one transaction.

use std::time::Duration;

use serde_json::Value;
use sqlx::types::Json;

use crate::db::{placeholders, BeginWrite, Db, Id, SqliteWrite, Timestamp};
use crate::with_pool;

mod postgres;

/// The outbox event (and BullMQ job name) of a seedream4 generation.
pub const GENERATION_EVENT: &str = "gen.seedream4";

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("Insufficient credits: {available} available, {requested} requested")]
    Insufficient { available: i64, requested: i32 },
    #[error("amount must be a positive number of credits, got {0}")]
    InvalidAmount(i64),
    #[error("no active user {0}")]
    UnknownUser(Id),
    #[error("no reservation {0}")]
    UnknownReservation(Id),
    #[error("reservation {id} is {status}, it cannot be {wanted}")]
    WrongState {
        id: Id,
        status: ReservationStatus,
        wanted: &'static str,
    },
    #[error("clientKey {0:?} belongs to a session without a reservation")]
    ClientKeyTaken(String),
    #[error("user {user} has {in_lots} credits in open lots but the capture needs {needed}")]
    LotsShort { user: Id, in_lots: i64, needed: i32 },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The shared transaction of a group commit failed; nothing of it was
    /// committed ([`crate::group_commit`]).
    #[error("database: {0}")]
    BatchFailed(std::sync::Arc<sqlx::Error>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReservationStatus {
    Reserved,
    Captured,
    Released,
    Expired,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Reserved => "reserved",
            ReservationStatus::Captured => "captured",
            ReservationStatus::Released => "released",
            ReservationStatus::Expired => "expired",
        }
    }

    fn parse(s: &str) -> Result<Self, sqlx::Error> {
        Ok(match s {
            "reserved" => ReservationStatus::Reserved,
            "captured" => ReservationStatus::Captured,
            "released" => ReservationStatus::Released,
            "expired" => ReservationStatus::Expired,
            other => {
                return Err(sqlx::Error::Decode(
                    format!("unknown reservation status {other:?}").into(),
                ))
            }
        })
    }
}

impl std::fmt::Display for ReservationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a settling operation changed anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Applied,
    /// Already in a state the operation asks for; nothing changed.
    Unchanged(ReservationStatus),
}

/// What [`finish_sessions`] did for one generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    pub transition: Transition,
    /// The reservation's credits: those captured or released when the
    /// transition is `Applied`.
    pub amount: i32,
}

/// Where a lot's credits came from (contract §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LotSource {
    Subscription,
    OneOff,
    Adjustment,
}

impl LotSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LotSource::Subscription => "subscription",
            LotSource::OneOff => "one_off",
            LotSource::Adjustment => "adjustment",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub id: Id,
    pub user_id: Id,
    pub amount: i32,
    pub session_id: Option<Id>,
    pub expires_at: Timestamp,
}

/// A user's credits as `GET /api/user/credits` reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Balance {
    pub credits: i64,
    pub reserved: i64,
    pub available: i64,
}

/// The generation a reservation pays for, inserted in its transaction.
#[derive(Clone, Debug)]
pub struct NewSession {
    pub id: Id,
    pub reservation_id: Id,
    pub prompt: String,
    pub model: String,
    pub outputs: i32,
    pub client_key: String,
    pub resolution: Option<String>,
    pub aspect_ratio: Option<String>,
    pub guidance_scale: Option<f64>,
    pub seed: Option<i64>,
    /// The outbox row's payload (contract §5).
    pub payload: Value,
    /// The direct path runs the generation itself: its outbox row is
    /// recorded as already dispatched so the relay never queues it too.
    pub dispatched: bool,
}

/// The real backend's defaults for a generate request that names none.
pub const DEFAULT_MODEL: &str = "seedream-4-0-250828";
pub const DEFAULT_SIZE: &str = "1024x1024";

/// What a generate request asks for (contract §2), as its job carries it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct GenerationParams {
    pub prompt: String,
    pub model: String,
    pub outputs: i32,
    pub size: String,
    pub guidance_scale: Option<f64>,
    pub negative_prompt: Option<String>,
    pub seed: Option<i64>,
    pub watermark: Option<bool>,
    pub aspect_ratio: Option<String>,
}

impl GenerationParams {
    /// A prompt and an output count, everything else at the defaults.
    pub fn new(prompt: impl Into<String>, outputs: i32) -> GenerationParams {
        GenerationParams {
            prompt: prompt.into(),
            model: DEFAULT_MODEL.into(),
            outputs,
            size: DEFAULT_SIZE.into(),
            guidance_scale: None,
            negative_prompt: None,
            seed: None,
            watermark: None,
            aspect_ratio: None,
        }
    }
}

impl NewSession {
    /// The session of a generation `user` asks for, with fresh ids and its
    /// outbox payload in the real backend's shape (contract §5), queued for
    /// the relay (`dispatched: false`).
    pub fn for_generation(user: Id, client_key: String, params: &GenerationParams) -> NewSession {
        let (id, reservation_id) = (Id::random(), Id::random());
        let payload = serde_json::json!({
            "payloadVersion": 1,
            "jobType": GENERATION_EVENT,
            "userId": user,
            "clientKey": client_key,
            "mock": true,
            "reservationId": reservation_id,
            "sessionId": id,
            "params": params,
        });
        NewSession {
            id,
            reservation_id,
            prompt: params.prompt.clone(),
            model: params.model.clone(),
            outputs: params.outputs,
            client_key,
            resolution: Some(params.size.clone()),
            aspect_ratio: params.aspect_ratio.clone(),
            guidance_scale: params.guidance_scale,
            seed: params.seed,
            payload,
            dispatched: false,
        }
    }
}

/// A generation's job as [`reserve_in`] hands it to a [`Dispatch`]: what
/// the relay would push for its outbox row.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxJob {
    /// The reservation id (the job id).
    pub id: Id,
    /// [`GENERATION_EVENT`].
    pub name: &'static str,
    /// The outbox row's payload.
    pub payload: Value,
}

/// Takes the jobs of generations accepted inside a transaction, before it
/// commits (the queue side of the relay; see [`reserve_in`]).
pub trait Dispatch: Send + Sync {
    /// Queues `jobs` in order and answers how many were taken; stops at
    /// the first one the queue refuses.
    fn dispatch(&self, jobs: Vec<OutboxJob>) -> futures::future::BoxFuture<'_, usize>;
}

/// What [`reserve_for_session`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accepted {
    New(Reservation),
    /// The user already sent this `clientKey`: the earlier generation's ids,
    /// and nothing was reserved.
    Replay {
        session_id: Id,
        reservation_id: Id,
    },
}

#[derive(Clone, Debug)]
pub struct NewImage {
    pub url: String,
    pub width: i32,
    pub height: i32,
    pub storage_provider: String,
    pub generation_tool: String,
    pub client_key: Option<String>,
}

/// How a generation ended, recorded by [`finish_session`].
#[derive(Clone, Debug)]
pub enum SessionOutcome {
    /// Captures the reservation and stores the images.
    Completed {
        images: Vec<NewImage>,
        duration_ms: i32,
    },
    /// Releases the reservation; nothing is charged.
    Failed {
        error_details: Value,
        duration_ms: i32,
    },
}

/// Reserves `amount` credits for `ttl`, or answers `Insufficient` when the
/// user's available credits are fewer.
pub async fn reserve(
    db: &Db,
    user: Id,
    amount: i32,
    ttl: Duration,
    description: &str,
    now: Timestamp,
) -> Result<Reservation, LedgerError> {
    match reserve_inner(db, user, amount, ttl, description, None, now).await? {
        Accepted::New(reservation) => Ok(reservation),
        Accepted::Replay { .. } => unreachable!("no session, so no clientKey to replay"),
    }
}

/// Reserves the session's cost and inserts the session (`processing`) and
/// its outbox row, all in one transaction; or, when the user already sent
/// this `clientKey`, returns the earlier ids without reserving anything.
pub async fn reserve_for_session(
    db: &Db,
    user: Id,
    amount: i32,
    ttl: Duration,
    session: &NewSession,
    now: Timestamp,
) -> Result<Accepted, LedgerError> {
    reserve_inner(
        db,
        user,
        amount,
        ttl,
        SESSION_DESCRIPTION,
        Some(session),
        now,
    )
    .await
}

async fn reserve_inner(
    db: &Db,
    user: Id,
    amount: i32,
    ttl: Duration,
    description: &str,
    session: Option<&NewSession>,
    now: Timestamp,
) -> Result<Accepted, LedgerError> {
    let request = ReserveRequest {
        user,
        amount,
        ttl,
        description: description.to_string(),
        session: session.cloned(),
    };
    let mut answers = reserve_batch(db, std::slice::from_ref(&request), now).await?;
    answers.pop().expect("one answer per request")
}

/// One reservation to make in a shared transaction ([`reserve_batch`]).
#[derive(Clone, Debug)]
pub struct ReserveRequest {
    pub user: Id,
    pub amount: i32,
    pub ttl: Duration,
    /// The reservation's description.
    pub description: String,
    /// The generation it pays for, inserted with it (and replayed by its
    /// `clientKey`).
    pub session: Option<NewSession>,
}

impl ReserveRequest {
    /// The reservation of a generate request, as the server makes it.
    pub fn for_session(
        user: Id,
        amount: i32,
        ttl: Duration,
        session: NewSession,
    ) -> ReserveRequest {
        ReserveRequest {
            user,
            amount,
            ttl,
            description: SESSION_DESCRIPTION.to_string(),
            session: Some(session),
        }
    }
}

const SESSION_DESCRIPTION: &str = "Image generation (seedream4)";

/// Rows per multi-row `INSERT`: 14 parameters a session row, well under
/// SQLite's and PostgreSQL's parameter limits.
const INSERT_CHUNK: usize = 256;

/// Group commit: decides every request of `requests` in one write
/// transaction and answers each, in order, once it has committed.
///
/// A constant number of statements per batch (up to [`INSERT_CHUNK`]
/// users or keys per statement): the users' rows locked with one (in id
/// order, so two batches never deadlock; on SQLite the write transaction is
/// the lock), their credits and live reservations read with one, their
/// `clientKey`s looked up with one; the requests are then decided in arrival order in memory, exactly as one transaction
/// each would have: `Insufficient` exactly when the credits still available
/// after the earlier requests of the batch are fewer than the cost, and a
/// `clientKey` the user already sent (in the database, or earlier in this
/// batch) is a [`Accepted::Replay`]. Reservations, sessions and outbox rows
/// go in with multi-row `INSERT`s.
///
/// `Err` means the transaction failed: nothing of the batch is committed
/// and every request failed with it.
pub async fn reserve_batch(
    db: &Db,
    requests: &[ReserveRequest],
    now: Timestamp,
) -> Result<Vec<Result<Accepted, LedgerError>>, sqlx::Error> {
    match db {
        Db::Postgres(pool) => match users_reserving(requests) {
            Ok(users) => postgres::reserve_batch(pool, requests, &users, now).await,
            Err(answers) => Ok(answers),
        },
        Db::Sqlite(pool) => {
            let mut tx = pool.begin_write().await?;
            let answers = reserve_in(&mut tx, requests, now, None).await?;
            tx.commit().await?;
            Ok(answers)
        }
    }
}

/// The users `requests` reserve for, sorted and each once; or, when no
/// request has a positive amount, every request's answer.
fn users_reserving(
    requests: &[ReserveRequest],
) -> Result<Vec<Id>, Vec<Result<Accepted, LedgerError>>> {
    let users: std::collections::BTreeSet<Id> = requests
        .iter()
        .filter(|r| r.amount > 0)
        .map(|r| r.user)
        .collect();
    if users.is_empty() {
        return Err(requests
            .iter()
            .map(|r| Err(LedgerError::InvalidAmount(r.amount.into())))
            .collect());
    }
    Ok(users.into_iter().collect())
}

/// [`reserve_batch`] on SQLite inside the caller's write transaction `tx`,
/// which the caller commits (the group committer's round). With
/// `dispatch`, the jobs of the generations it accepts (those not inserted
/// as already dispatched) are handed to it before their outbox rows are
/// written, and the rows it took go in marked dispatched (one attempt
/// counted, as the relay marks them); the others stay for the relay.
pub async fn reserve_in(
    tx: &mut SqliteWrite,
    requests: &[ReserveRequest],
    now: Timestamp,
    dispatch: Option<&dyn Dispatch>,
) -> Result<Vec<Result<Accepted, LedgerError>>, sqlx::Error> {
    use std::collections::{BTreeMap, HashMap};

    let users = match users_reserving(requests) {
        Ok(users) => users,
        Err(answers) => return Ok(answers),
    };
    {
        // What each user has left to reserve, or None for no active user.
        let mut available: BTreeMap<Id, Option<i64>> =
            users.iter().map(|user| (*user, None)).collect();
        for chunk in users.chunks(INSERT_CHUNK) {
            // SQLite's write transaction holds the only write lock, so the
            // one read below is final (PostgreSQL: see `postgres`).
            let sql = format!(
                "SELECT u.id, u.credits, CAST(COALESCE((SELECT SUM(r.amount) FROM credit_reservations r \
                 WHERE r.user_id = u.id AND r.status = 'reserved' AND r.expires_at > $1), 0) AS BIGINT) \
                 FROM users u WHERE u.id IN ({}) AND u.deleted_at IS NULL",
                placeholders(2, chunk.len())
            );
            let mut query = sqlx::query_as(&sql).bind(now);
            for user in chunk {
                query = query.bind(*user);
            }
            let rows: Vec<(Id, i32, i64)> = query.fetch_all(&mut **tx).await?;
            for (user, credits, reserved) in rows {
                available.insert(user, Some(i64::from(credits) - reserved));
            }
        }
        // (user, clientKey) -> (session, reservation) already accepted.
        let mut known: HashMap<(Id, &str), Option<(Id, Id)>> = HashMap::new();
        let asked = client_keys_asked(requests, |user| {
            matches!(available.get(&user), Some(Some(_)))
        });
        for chunk in asked.chunks(INSERT_CHUNK) {
            let users: Vec<Id> = chunk
                .iter()
                .map(|(user, _)| *user)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let sql = format!(
                "SELECT user_id, client_key, id, reservation_id FROM generation_sessions \
                 WHERE user_id IN ({}) AND client_key IN ({})",
                placeholders(1, users.len()),
                placeholders(users.len() + 1, chunk.len())
            );
            let mut query = sqlx::query_as(&sql);
            for user in &users {
                query = query.bind(*user);
            }
            for (_, key) in chunk {
                query = query.bind(*key);
            }
            let earlier: Vec<(Id, String, Id, Option<Id>)> = query.fetch_all(&mut **tx).await?;
            for (user, key, session, reservation) in earlier {
                // Another user's key of the same text was read too: skipped.
                if let Ok(n) = chunk.binary_search(&(user, key.as_str())) {
                    known.insert(chunk[n], reservation.map(|r| (session, r)));
                }
            }
        }
        let (answers, accepted) = decide_reservations(requests, &mut available, &mut known, now);
        for chunk in accepted.chunks(INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO credit_reservations (id, user_id, amount, session_id, description, created_at, expires_at, status) \
                 VALUES {}",
                value_rows(chunk.len(), 7, "'reserved'")
            );
            let mut query = sqlx::query(&sql);
            for (request, id, expires_at) in chunk {
                query = query
                    .bind(*id)
                    .bind(request.user)
                    .bind(request.amount)
                    .bind(request.session.as_ref().map(|s| s.id))
                    .bind(request.description.as_str())
                    .bind(now)
                    .bind(*expires_at);
            }
            query.execute(&mut **tx).await?;
        }
        let sessions: Vec<(&ReserveRequest, &NewSession, Id)> = accepted
            .iter()
            .filter_map(|(r, id, _)| r.session.as_ref().map(|s| (*r, s, *id)))
            .collect();
        // The jobs handed over here, in order: the first `taken` were taken,
        // the one after them refused (an attempt counted), the rest never
        // offered.
        let offered: Vec<(Id, &NewSession)> = sessions
            .iter()
            .filter(|(_, s, _)| !s.dispatched)
            .map(|(_, s, reservation_id)| (*reservation_id, *s))
            .collect();
        let taken = match dispatch {
            Some(dispatch) if !offered.is_empty() => {
                let jobs = offered
                    .iter()
                    .map(|(id, s)| OutboxJob {
                        id: *id,
                        name: GENERATION_EVENT,
                        payload: s.payload.clone(),
                    })
                    .collect();
                dispatch.dispatch(jobs).await.min(offered.len())
            }
            _ => 0,
        };
        let attempts: HashMap<Id, (bool, i32)> = offered
            .iter()
            .enumerate()
            .filter(|(n, _)| *n <= taken && dispatch.is_some())
            .map(|(n, (id, _))| (*id, (n < taken, 1)))
            .collect();
        for chunk in sessions.chunks(INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO generation_sessions (id, user_id, prompt, model, outputs, credit_cost, \
                 reservation_id, client_key, created_at, resolution, aspect_ratio, guidance_scale, seed, status) \
                 VALUES {}",
                value_rows(chunk.len(), 13, "'processing'")
            );
            let mut query = sqlx::query(&sql);
            for (request, s, reservation_id) in chunk {
                query = query
                    .bind(s.id)
                    .bind(request.user)
                    .bind(s.prompt.as_str())
                    .bind(s.model.as_str())
                    .bind(s.outputs)
                    .bind(request.amount)
                    .bind(*reservation_id)
                    .bind(s.client_key.as_str())
                    .bind(now)
                    .bind(s.resolution.as_deref())
                    .bind(s.aspect_ratio.as_deref())
                    .bind(s.guidance_scale)
                    .bind(s.seed);
            }
            query.execute(&mut **tx).await?;
            let sql = format!(
                "INSERT INTO outbox (reservation_id, payload, created_at, dispatched_at, dispatch_attempts, event_type) \
                 VALUES {}",
                value_rows(chunk.len(), 5, &format!("'{GENERATION_EVENT}'"))
            );
            let mut query = sqlx::query(&sql);
            for (_, s, reservation_id) in chunk {
                let (pushed, tries) = attempts.get(reservation_id).copied().unwrap_or((false, 0));
                query = query
                    .bind(*reservation_id)
                    .bind(Json(&s.payload))
                    .bind(now)
                    .bind((s.dispatched || pushed).then_some(now))
                    .bind(tries);
            }
            query.execute(&mut **tx).await?;
        }
        Ok(answers)
    }
}

/// The (user, `clientKey`) pairs of `requests` to look up, of the users
/// `asks` names, sorted and each once.
fn client_keys_asked(requests: &[ReserveRequest], asks: impl Fn(Id) -> bool) -> Vec<(Id, &str)> {
    requests
        .iter()
        .filter(|r| r.amount > 0 && asks(r.user))
        .filter_map(|r| r.session.as_ref().map(|s| (r.user, s.client_key.as_str())))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Where each accepted request goes: its reservation id and expiry.
pub(crate) type AcceptedRow<'a> = (&'a ReserveRequest, Id, Timestamp);

/// Decides `requests` in arrival order, in memory, exactly as one
/// transaction each would have, from what each user has left to reserve
/// (`available`, None for no active user) and the `clientKey`s already
/// accepted (`known`, updated with the new ones): the answers, and the
/// reservations to insert.
pub(crate) fn decide_reservations<'a>(
    requests: &'a [ReserveRequest],
    available: &mut std::collections::BTreeMap<Id, Option<i64>>,
    known: &mut std::collections::HashMap<(Id, &'a str), Option<(Id, Id)>>,
    now: Timestamp,
) -> (Vec<Result<Accepted, LedgerError>>, Vec<AcceptedRow<'a>>) {
    let mut answers = Vec::with_capacity(requests.len());
    let mut accepted: Vec<AcceptedRow<'a>> = Vec::new();
    for request in requests {
        if request.amount <= 0 {
            answers.push(Err(LedgerError::InvalidAmount(request.amount.into())));
            continue;
        }
        let Some(Some(left)) = available.get_mut(&request.user) else {
            answers.push(Err(LedgerError::UnknownUser(request.user)));
            continue;
        };
        if let Some(session) = &request.session {
            match known.get(&(request.user, session.client_key.as_str())) {
                Some(Some((session_id, reservation_id))) => {
                    answers.push(Ok(Accepted::Replay {
                        session_id: *session_id,
                        reservation_id: *reservation_id,
                    }));
                    continue;
                }
                Some(None) => {
                    answers.push(Err(LedgerError::ClientKeyTaken(session.client_key.clone())));
                    continue;
                }
                None => {}
            }
        }
        if *left < i64::from(request.amount) {
            answers.push(Err(LedgerError::Insufficient {
                available: *left,
                requested: request.amount,
            }));
            continue;
        }
        *left -= i64::from(request.amount);
        let expires_at =
            now + chrono::Duration::from_std(request.ttl).unwrap_or(chrono::Duration::MAX);
        let id = request
            .session
            .as_ref()
            .map_or_else(Id::random, |s| s.reservation_id);
        if let Some(session) = &request.session {
            known.insert(
                (request.user, session.client_key.as_str()),
                Some((session.id, id)),
            );
        }
        accepted.push((request, id, expires_at));
        answers.push(Ok(Accepted::New(Reservation {
            id,
            user_id: request.user,
            amount: request.amount,
            session_id: request.session.as_ref().map(|s| s.id),
            expires_at,
        })));
    }
    (answers, accepted)
}

/// `($1, …, $width, CONSTANT), ($width+1, …)`: `rows` rows of `width`
/// parameters each, with `constant` (SQL text, no user input) as the last
/// column of every row.
fn value_rows(rows: usize, width: usize, constant: &str) -> String {
    (0..rows)
        .map(|row| format!("({}, {constant})", placeholders(row * width + 1, width)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($first, …), (…)`: `rows` rows of `width` parameters each, numbered
/// from `first`.
fn param_rows(first: usize, rows: usize, width: usize) -> String {
    (0..rows)
        .map(|row| format!("({})", placeholders(first + row * width, width)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Deducts the reservation's amount from the user's lots, earliest expiry
/// first, with one ledger row per lot touched.
pub async fn capture(db: &Db, reservation: Id, now: Timestamp) -> Result<Transition, LedgerError> {
    settle(db, reservation, Settle::Capture, None, now).await
}

/// Gives the reservation's credits back to the available balance; no
/// credits move.
pub async fn release(db: &Db, reservation: Id, now: Timestamp) -> Result<Transition, LedgerError> {
    settle(db, reservation, Settle::Release, None, now).await
}

/// Settles a generation's reservation and records its outcome in the same
/// transaction: captured with its images, or released with the error.
/// The session is only updated while it is still `processing`.
pub async fn finish_session(
    db: &Db,
    reservation: Id,
    outcome: &SessionOutcome,
    now: Timestamp,
) -> Result<Transition, LedgerError> {
    let settle_as = match outcome {
        SessionOutcome::Completed { .. } => Settle::Capture,
        SessionOutcome::Failed { .. } => Settle::Release,
    };
    settle(db, reservation, settle_as, Some(outcome), now).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    Capture,
    Release,
}

async fn settle(
    db: &Db,
    reservation: Id,
    how: Settle,
    outcome: Option<&SessionOutcome>,
    now: Timestamp,
) -> Result<Transition, LedgerError> {
    let item = Settlement {
        reservation,
        how,
        outcome,
    };
    let mut answers = settle_batch(db, std::slice::from_ref(&item), now).await?;
    answers
        .pop()
        .expect("one answer per settlement")
        .map(|finished| finished.transition)
}

/// Records many generations' outcomes in one transaction, each as
/// [`finish_session`] would, and answers each in order, with the
/// reservation's amount. `Err` means the transaction failed and nothing of
/// the batch was committed.
pub async fn finish_sessions(
    db: &Db,
    finishes: &[(Id, SessionOutcome)],
    now: Timestamp,
) -> Result<Vec<Result<Finished, LedgerError>>, sqlx::Error> {
    settle_batch(db, &settlements(finishes), now).await
}

/// [`finish_sessions`] on SQLite inside the caller's write transaction
/// `tx`, which the caller commits (the group committer's round).
pub async fn finish_in(
    tx: &mut SqliteWrite,
    finishes: &[(Id, SessionOutcome)],
    now: Timestamp,
) -> Result<Vec<Result<Finished, LedgerError>>, sqlx::Error> {
    settle_in(tx, &settlements(finishes), now).await
}

fn settlements(finishes: &[(Id, SessionOutcome)]) -> Vec<Settlement<'_>> {
    finishes
        .iter()
        .map(|(reservation, outcome)| Settlement {
            reservation: *reservation,
            how: match outcome {
                SessionOutcome::Completed { .. } => Settle::Capture,
                SessionOutcome::Failed { .. } => Settle::Release,
            },
            outcome: Some(outcome),
        })
        .collect()
}

pub(crate) struct Settlement<'a> {
    reservation: Id,
    how: Settle,
    outcome: Option<&'a SessionOutcome>,
}

/// A reservation as a settle batch reads it.
pub(crate) struct Held {
    user: Id,
    status: ReservationStatus,
    amount: i32,
    expires_at: Timestamp,
}

/// An open lot of a user a settle batch captures from: what it had left
/// when locked, and what the batch takes from it.
pub(crate) struct OpenLot {
    id: Id,
    remaining: i32,
    taken: i32,
}

impl OpenLot {
    /// Files `rows` of `(lot, owner, remaining)`, read in spending order,
    /// under their owners.
    pub(crate) fn file(
        lots: &mut std::collections::HashMap<Id, Vec<OpenLot>>,
        rows: Vec<(Id, Id, i32)>,
    ) {
        for (id, user, remaining) in rows {
            lots.entry(user).or_default().push(OpenLot {
                id,
                remaining,
                taken: 0,
            });
        }
    }
}

/// The owners, in id order, of the batch's reservations still to capture:
/// those whose open lots the batch reads.
fn capturing_owners(
    items: &[Settlement<'_>],
    held: &std::collections::HashMap<Id, Held>,
    now: Timestamp,
) -> Vec<Id> {
    items
        .iter()
        .filter(|item| item.how == Settle::Capture)
        .filter_map(|item| held.get(&item.reservation))
        .filter(|h| h.status == ReservationStatus::Reserved && h.expires_at > now)
        .map(|h| h.user)
        .collect::<std::collections::BTreeSet<Id>>()
        .into_iter()
        .collect()
}

/// What [`decide_settlements`] decided for a settle batch.
pub(crate) struct Decided<'a> {
    pub answers: Vec<Result<Finished, LedgerError>>,
    /// The reservations whose status changes, with their new status.
    pub settled: std::collections::BTreeMap<Id, ReservationStatus>,
    /// The users whose credits the batch captured.
    pub charged: std::collections::BTreeSet<Id>,
    /// (user, amount, balance after, reservation, lot) per ledger row.
    pub entries: Vec<(Id, i32, i32, Id, Id)>,
    /// The first outcome recorded per reservation.
    pub outcomes: Vec<(Id, &'a SessionOutcome)>,
}

/// Decides every item in order, in memory, exactly as one transaction each
/// would have: running balances (`credits`, updated), lots deducted
/// earliest expiry first (`lots`, their `taken` updated), a reservation
/// settled earlier in the batch is `Unchanged`, one past its TTL expires.
pub(crate) fn decide_settlements<'a>(
    items: &[Settlement<'a>],
    held: &mut std::collections::HashMap<Id, Held>,
    lots: &mut std::collections::HashMap<Id, Vec<OpenLot>>,
    credits: &mut std::collections::BTreeMap<Id, i32>,
    now: Timestamp,
) -> Decided<'a> {
    use std::collections::{BTreeMap, BTreeSet, HashSet};

    let mut answers = Vec::with_capacity(items.len());
    let mut settled: BTreeMap<Id, ReservationStatus> = BTreeMap::new();
    let mut charged: BTreeSet<Id> = BTreeSet::new();
    // (user, amount, balance after, reservation, lot) per ledger row.
    let mut entries: Vec<(Id, i32, i32, Id, Id)> = Vec::new();
    // The first outcome recorded per reservation: a later one would find
    // its session no longer `processing`.
    let mut outcomes: Vec<(Id, &SessionOutcome)> = Vec::new();
    let mut with_outcome: HashSet<Id> = HashSet::new();
    for item in items {
        let reservation = item.reservation;
        let Some(h) = held.get_mut(&reservation) else {
            answers.push(Err(LedgerError::UnknownReservation(reservation)));
            continue;
        };
        // Past its TTL the credits are no longer held for it (they count
        // as available again), so it can only expire, even if the
        // sweeper has not run yet.
        if h.status == ReservationStatus::Reserved && h.expires_at <= now {
            h.status = ReservationStatus::Expired;
            settled.insert(reservation, ReservationStatus::Expired);
        }
        let transition = match (item.how, h.status) {
            (_, ReservationStatus::Reserved) => Transition::Applied,
            (Settle::Capture, ReservationStatus::Captured) => Transition::Unchanged(h.status),
            (Settle::Release, ReservationStatus::Released | ReservationStatus::Expired) => {
                Transition::Unchanged(h.status)
            }
            (Settle::Capture, _) | (Settle::Release, _) => {
                // The expiry recorded above stays: the batch commits it.
                answers.push(Err(LedgerError::WrongState {
                    id: reservation,
                    status: h.status,
                    wanted: match item.how {
                        Settle::Capture => "captured",
                        Settle::Release => "released",
                    },
                }));
                continue;
            }
        };
        if transition == Transition::Applied {
            match item.how {
                Settle::Release => h.status = ReservationStatus::Released,
                Settle::Capture => {
                    let open = lots.entry(h.user).or_default();
                    let in_lots: i64 = open.iter().map(|lot| i64::from(lot.remaining)).sum();
                    if in_lots < i64::from(h.amount) {
                        answers.push(Err(LedgerError::LotsShort {
                            user: h.user,
                            in_lots,
                            needed: h.amount,
                        }));
                        continue;
                    }
                    let balance = credits.get_mut(&h.user).expect("every owner is locked");
                    let mut owed = h.amount;
                    for lot in open.iter_mut().filter(|lot| lot.remaining > 0) {
                        if owed == 0 {
                            break;
                        }
                        let take = owed.min(lot.remaining);
                        owed -= take;
                        lot.remaining -= take;
                        lot.taken += take;
                        *balance -= take;
                        entries.push((h.user, -take, *balance, reservation, lot.id));
                    }
                    charged.insert(h.user);
                    h.status = ReservationStatus::Captured;
                }
            }
            settled.insert(reservation, h.status);
        }
        if let Some(outcome) = item.outcome {
            if with_outcome.insert(reservation) {
                outcomes.push((reservation, outcome));
            }
        }
        answers.push(Ok(Finished {
            transition,
            amount: h.amount,
        }));
    }
    Decided {
        answers,
        settled,
        charged,
        entries,
        outcomes,
    }
}

/// Settles every item in one write transaction with a constant number of
/// statements, whatever the batch's size (up to [`INSERT_CHUNK`] items per
/// statement): the batch's reservations read at once, their owners' rows
/// locked at once (in id order, so two batches never deadlock), the owners'
/// open lots read at once; then every item is decided in order in memory,
/// exactly as one transaction each would have (running balances, lots
/// deducted earliest expiry first, a reservation settled earlier in the
/// batch is `Unchanged`), and the changes are written with one multi-row
/// statement per table and kind of change.
async fn settle_batch(
    db: &Db,
    items: &[Settlement<'_>],
    now: Timestamp,
) -> Result<Vec<Result<Finished, LedgerError>>, sqlx::Error> {
    match db {
        Db::Postgres(pool) => {
            postgres::settle_batch(pool, items, &reservation_ids(items), now).await
        }
        Db::Sqlite(pool) => {
            let mut tx = pool.begin_write().await?;
            let answers = settle_in(&mut tx, items, now).await?;
            tx.commit().await?;
            Ok(answers)
        }
    }
}

/// The reservations `items` settle, sorted and each once.
fn reservation_ids(items: &[Settlement<'_>]) -> Vec<Id> {
    items
        .iter()
        .map(|item| item.reservation)
        .collect::<std::collections::BTreeSet<Id>>()
        .into_iter()
        .collect()
}

/// [`settle_batch`] on SQLite inside the caller's write transaction.
async fn settle_in(
    tx: &mut SqliteWrite,
    items: &[Settlement<'_>],
    now: Timestamp,
) -> Result<Vec<Result<Finished, LedgerError>>, sqlx::Error> {
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    let ids = reservation_ids(items);
    {
        let mut held: HashMap<Id, Held> = HashMap::new();
        let mut credits: BTreeMap<Id, i32> = BTreeMap::new();
        // SQLite's write transaction holds the database's only write lock
        // from the start, so what is read here is final (PostgreSQL: see
        // `postgres`).
        for chunk in ids.chunks(INSERT_CHUNK) {
            let sql = format!(
                "SELECT id, user_id, status, amount, expires_at FROM credit_reservations WHERE id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query_as(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            let rows: Vec<(Id, Id, String, i32, Timestamp)> = query.fetch_all(&mut **tx).await?;
            for (id, user, status, amount, expires_at) in rows {
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
        }
        let owners: Vec<Id> = held
            .values()
            .map(|h| h.user)
            .collect::<BTreeSet<Id>>()
            .into_iter()
            .collect();
        for chunk in owners.chunks(INSERT_CHUNK) {
            let sql = format!(
                "SELECT id, credits FROM users WHERE id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query_as(&sql);
            for user in chunk {
                query = query.bind(*user);
            }
            let rows: Vec<(Id, i32)> = query.fetch_all(&mut **tx).await?;
            credits.extend(rows);
        }
        // The open lots of every owner with a reservation to capture.
        let capturing = capturing_owners(items, &held, now);
        let mut lots: HashMap<Id, Vec<OpenLot>> = HashMap::new();
        for chunk in capturing.chunks(INSERT_CHUNK) {
            let sql = format!(
                "SELECT id, user_id, remaining FROM credit_lots \
                 WHERE user_id IN ({}) AND remaining > 0 AND closed_at IS NULL \
                 ORDER BY user_id, expires_at, created_at, id",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query_as(&sql);
            for user in chunk {
                query = query.bind(*user);
            }
            let rows: Vec<(Id, Id, i32)> = query.fetch_all(&mut **tx).await?;
            OpenLot::file(&mut lots, rows);
        }

        // Every item decided in order, in memory.
        let Decided {
            answers,
            settled,
            charged,
            entries,
            outcomes,
        } = decide_settlements(items, &mut held, &mut lots, &mut credits, now);

        // The changes, one multi-row statement per table and kind.
        for (status, column) in [
            (ReservationStatus::Captured, "captured_at"),
            (ReservationStatus::Released, "released_at"),
            (ReservationStatus::Expired, "released_at"),
        ] {
            let ids: Vec<Id> = settled
                .iter()
                .filter(|(_, s)| **s == status)
                .map(|(id, _)| *id)
                .collect();
            for chunk in ids.chunks(INSERT_CHUNK) {
                let sql = format!(
                    "UPDATE credit_reservations SET status = $1, {column} = $2 WHERE id IN ({})",
                    placeholders(3, chunk.len())
                );
                let mut query = sqlx::query(&sql).bind(status.as_str()).bind(now);
                for id in chunk {
                    query = query.bind(*id);
                }
                query.execute(&mut **tx).await?;
            }
        }
        let taken: Vec<(Id, i32)> = lots
            .values()
            .flatten()
            .filter(|lot| lot.taken > 0)
            .map(|lot| (lot.id, lot.taken))
            .collect();
        for chunk in taken.chunks(INSERT_CHUNK) {
            let sql = format!(
                "WITH taken (lot, credits) AS (VALUES {}) \
                 UPDATE credit_lots SET remaining = credit_lots.remaining - taken.credits, \
                 closed_at = CASE WHEN credit_lots.remaining - taken.credits = 0 THEN $1 ELSE credit_lots.closed_at END \
                 FROM taken WHERE credit_lots.id = taken.lot",
                param_rows(2, chunk.len(), 2)
            );
            let mut query = sqlx::query(&sql).bind(now);
            for (lot, credits) in chunk {
                query = query.bind(*lot).bind(*credits);
            }
            query.execute(&mut **tx).await?;
        }
        for chunk in entries.chunks(INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO credit_transactions (id, user_id, amount, balance_after, reservation_id, lot_id, created_at, description) \
                 VALUES {}",
                value_rows(chunk.len(), 7, "'Capture of reservation'")
            );
            let mut query = sqlx::query(&sql);
            for (user, amount, balance, reservation, lot) in chunk {
                query = query
                    .bind(Id::random())
                    .bind(*user)
                    .bind(*amount)
                    .bind(*balance)
                    .bind(*reservation)
                    .bind(*lot)
                    .bind(now);
            }
            query.execute(&mut **tx).await?;
        }
        let balances: Vec<(Id, i32)> = charged.iter().map(|user| (*user, credits[user])).collect();
        for chunk in balances.chunks(INSERT_CHUNK) {
            let sql = format!(
                "WITH charged (id, credits) AS (VALUES {}) \
                 UPDATE users SET credits = charged.credits FROM charged WHERE users.id = charged.id",
                param_rows(1, chunk.len(), 2)
            );
            let mut query = sqlx::query(&sql);
            for (user, balance) in chunk {
                query = query.bind(*user).bind(*balance);
            }
            query.execute(&mut **tx).await?;
        }
        // Sessions are only updated while still `processing`; images go to
        // the sessions this batch completed.
        let mut images_of: HashMap<Id, &[NewImage]> = HashMap::new();
        let completed: Vec<(Id, i32)> = outcomes
            .iter()
            .filter_map(|(reservation, outcome)| match outcome {
                SessionOutcome::Completed {
                    images,
                    duration_ms,
                } => {
                    images_of.insert(*reservation, images.as_slice());
                    Some((*reservation, *duration_ms))
                }
                SessionOutcome::Failed { .. } => None,
            })
            .collect();
        let mut images: Vec<(Id, &NewImage)> = Vec::new();
        for chunk in completed.chunks(INSERT_CHUNK) {
            let sql = format!(
                "WITH done (reservation, ms) AS (VALUES {}) \
                 UPDATE generation_sessions SET status = 'completed', completed_at = $1, duration_ms = done.ms \
                 FROM done WHERE generation_sessions.reservation_id = done.reservation \
                 AND generation_sessions.status = 'processing' RETURNING id, reservation_id",
                param_rows(2, chunk.len(), 2)
            );
            let mut query = sqlx::query_as(&sql).bind(now);
            for (reservation, duration_ms) in chunk {
                query = query.bind(*reservation).bind(*duration_ms);
            }
            let sessions: Vec<(Id, Id)> = query.fetch_all(&mut **tx).await?;
            for (session, reservation) in sessions {
                images.extend(images_of[&reservation].iter().map(|image| (session, image)));
            }
        }
        for chunk in images.chunks(INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO images (id, session_id, url, width, height, storage_provider, generation_tool, client_key, created_at, completed_at) \
                 VALUES {}",
                param_rows(1, chunk.len(), 10)
            );
            let mut query = sqlx::query(&sql);
            for (session, image) in chunk {
                query = query
                    .bind(Id::random())
                    .bind(*session)
                    .bind(&image.url)
                    .bind(image.width)
                    .bind(image.height)
                    .bind(&image.storage_provider)
                    .bind(&image.generation_tool)
                    .bind(&image.client_key)
                    .bind(now)
                    .bind(now);
            }
            query.execute(&mut **tx).await?;
        }
        let failed: Vec<(Id, &Value, i32)> = outcomes
            .iter()
            .filter_map(|(reservation, outcome)| match outcome {
                SessionOutcome::Failed {
                    error_details,
                    duration_ms,
                } => Some((*reservation, error_details, *duration_ms)),
                SessionOutcome::Completed { .. } => None,
            })
            .collect();
        for chunk in failed.chunks(INSERT_CHUNK) {
            let sql = format!(
                "WITH failed (reservation, details, ms) AS (VALUES {}) \
                 UPDATE generation_sessions SET status = 'failed', error_details = failed.details, duration_ms = failed.ms \
                 FROM failed WHERE generation_sessions.reservation_id = failed.reservation \
                 AND generation_sessions.status = 'processing'",
                param_rows(1, chunk.len(), 3)
            );
            let mut query = sqlx::query(&sql);
            for (reservation, details, duration_ms) in chunk {
                query = query
                    .bind(*reservation)
                    .bind(Json(*details))
                    .bind(*duration_ms);
            }
            query.execute(&mut **tx).await?;
        }
        Ok(answers)
    }
}

/// Expires every reservation past its TTL and fails the sessions still
/// waiting on one; no credits move. Returns the expired reservations.
pub async fn expire_overdue(db: &Db, now: Timestamp) -> Result<Vec<Id>, LedgerError> {
    with_pool!(db, pool => {
        let mut tx = pool.begin_write().await?;
        let expired: Vec<(Id,)> = sqlx::query_as(
            "UPDATE credit_reservations SET status = 'expired', released_at = $1 \
             WHERE status = 'reserved' AND expires_at <= $1 RETURNING id",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let ids: Vec<Id> = expired.into_iter().map(|(id,)| id).collect();
        for id in &ids {
            sqlx::query(
                "UPDATE generation_sessions SET status = 'failed', error_details = $2 \
                 WHERE reservation_id = $1 AND status = 'processing'",
            )
            .bind(*id)
            .bind(Json(serde_json::json!({"error": "reservation expired before the generation finished"})))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(ids)
    })
}

/// Grants `amount` credits as a new lot, with a ledger row, and returns the
/// user's new total.
pub async fn add_credits(
    db: &Db,
    user: Id,
    amount: i32,
    source: LotSource,
    expires_at: Timestamp,
    description: &str,
    now: Timestamp,
) -> Result<i32, LedgerError> {
    if amount <= 0 {
        return Err(LedgerError::InvalidAmount(amount.into()));
    }
    let dialect = db.dialect();
    with_pool!(db, pool => {
        let mut tx = pool.begin_write().await?;
        let credits: Option<(i32,)> = sqlx::query_as(&format!(
            "SELECT credits FROM users WHERE id = $1 AND deleted_at IS NULL{}",
            dialect.for_update()
        ))
        .bind(user)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((credits,)) = credits else {
            return Err(LedgerError::UnknownUser(user));
        };
        let total = credits
            .checked_add(amount)
            .ok_or(LedgerError::InvalidAmount(i64::from(credits) + i64::from(amount)))?;
        let lot = Id::random();
        sqlx::query(
            "INSERT INTO credit_lots (id, user_id, source, amount, remaining, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $4, $5, $6)",
        )
        .bind(lot)
        .bind(user)
        .bind(source.as_str())
        .bind(amount)
        .bind(expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO credit_transactions (id, user_id, description, amount, balance_after, lot_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(Id::random())
        .bind(user)
        .bind(description)
        .bind(amount)
        .bind(total)
        .bind(lot)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE users SET credits = $2 WHERE id = $1")
            .bind(user)
            .bind(total)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(total)
    })
}

/// The user's credits, live reservations and what is available now.
pub async fn balance(db: &Db, user: Id, now: Timestamp) -> Result<Balance, LedgerError> {
    with_pool!(db, pool => {
        let row: Option<(i32, i64)> = sqlx::query_as(
            "SELECT u.credits, CAST(COALESCE((SELECT SUM(r.amount) FROM credit_reservations r \
             WHERE r.user_id = u.id AND r.status = 'reserved' AND r.expires_at > $2), 0) AS BIGINT) \
             FROM users u WHERE u.id = $1 AND u.deleted_at IS NULL",
        )
        .bind(user)
        .bind(now)
        .fetch_optional(pool)
        .await?;
        let (credits, reserved) = row.ok_or(LedgerError::UnknownUser(user))?;
        Ok(Balance {
            credits: credits.into(),
            reserved,
            available: i64::from(credits) - reserved,
        })
    })
}
