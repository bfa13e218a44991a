//! The Redis queue, in BullMQ's key layout (contract §5), so the load-test
//! README's `LLEN bull:main:wait` / `LLEN bull:main:active` and BullMQ
//! dashboards see the jobs where they expect them.
//!
//! # Key layout
//!
//! Every key starts with `<prefix>:<queue>:` (`bull:main:` by default):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `wait` | list | job ids ready to run; pushed on the left, taken from the right (FIFO) |
//! | `active` | list | job ids a worker holds |
//! | `delayed` | sorted set | job ids waiting for a retry, scored by the due time (ms since the epoch) |
//! | `completed` | sorted set | finished job ids, scored by `finishedOn` |
//! | `failed` | sorted set | job ids out of attempts, scored by `finishedOn` |
//! | `<jobId>` | hash | BullMQ's job fields: `name`, `data` (JSON), `opts` (JSON: `attempts`, `backoff`), `timestamp`, `delay`, `priority`, `attemptsMade`, `processedOn`, `finishedOn`, `failedReason`, `returnvalue` |
//! | `<jobId>:lock` | string | the holder's token, with an expiry (`PX`) |
//!
//! The job id is the reservation id, given by the caller, so BullMQ's `id`
//! counter key is never used. Unlike BullMQ, `delayed` scores are plain
//! millisecond timestamps.
//!
//! # Life of a job
//!
//! - `push` creates the hash and queues the id unless the hash exists;
//!   `push_all` does so for many jobs in one script (a relay round).
//! - `revive` (the reconciler's) queues again a job whose hash is gone (a
//!   Redis restarted empty) or finished (its outcome could not be
//!   recorded), with a fresh hash.
//! - `take` first promotes due `delayed` jobs to `wait`, then moves one id
//!   from `wait` to `active` and locks it; with nothing ready it blocks in
//!   `BLMOVE` until a job arrives, a delayed job falls due or the wait ends.
//! - While a job is held, a background task of this [`BullQueue`] keeps its
//!   lock alive. The same task puts back on `wait` every `active` job whose
//!   lock expired — its worker's process died ("stalled" recovery).
//! - `complete` moves the job to `completed`; `fail` counts the attempt and
//!   schedules a retry in `delayed` or, after [`MAX_ATTEMPTS`], moves it to
//!   `failed`; `give_back` returns it to the head of `wait`.
//!
//! # Known down
//!
//! [`Queue::accepting`] answers from a flag, without a round trip: a push
//! that fails lowers it at once, and a task of this [`BullQueue`] pings
//! Redis every [`HEALTH_EVERY`] (at most [`PING_TIMEOUT`] each) and sets
//! it to the answer, so generate turns to 503 within about a second of
//! Redis going away and back to 202 within [`HEALTH_EVERY`] of its return.
//!
//! Each step touching several keys is one Lua script, so it is atomic.
//! A worker only loses its job if its locks stop being renewed, which in
//! one process means the whole [`BullQueue`] was dropped: dropping it is
//! how a test simulates a worker process dying.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncCommands, AsyncConnectionConfig, Direction, Script};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use super::{
    backoff, AfterFailure, Depth, Job, NewJob, Queue, QueueError, BACKOFF_BASE, MAX_ATTEMPTS,
};

/// Per-command bounds, so a hung Redis surfaces as an error instead of a
/// stuck worker.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnection attempts per failure and the most they wait between
/// each other, so an absent Redis is reported within about a second (the
/// client's defaults wait minutes).
const CONNECT_RETRIES: usize = 2;
const CONNECT_RETRY_DELAY_MS: u64 = 500;
/// How often the health task pings Redis, and the longest a ping may take
/// before Redis counts as down.
pub const HEALTH_EVERY: Duration = Duration::from_millis(250);
pub const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// `BLMOVE` treats a zero timeout as "forever"; never ask for less.
const MIN_BLOCK: Duration = Duration::from_millis(10);

/// The shortest lock TTL accepted; shorter ones are raised to it.
pub const MIN_LOCK_TTL: Duration = Duration::from_millis(30);

/// Tunables; the defaults are BullMQ's.
#[derive(Clone, Copy, Debug)]
pub struct BullOptions {
    /// How long a lock outlives its last renewal (at least [`MIN_LOCK_TTL`]).
    /// Locks are renewed every third of it, and stalled jobs are looked for
    /// as often.
    pub lock_ttl: Duration,
    /// The first retry delay; later ones double (see [`backoff`]).
    pub backoff_base: Duration,
}

impl Default for BullOptions {
    fn default() -> Self {
        BullOptions {
            lock_ttl: Duration::from_secs(30),
            backoff_base: BACKOFF_BASE,
        }
    }
}

/// A BullMQ-layout queue on Redis. Dropping it stops renewing the locks of
/// the jobs it holds, so other instances recover them once the locks expire.
pub struct BullQueue {
    shared: Arc<Shared>,
    _keeper: AbortOnDropHandle<()>,
    _health: AbortOnDropHandle<()>,
}

struct Shared {
    client: redis::Client,
    conn: ConnectionManager,
    /// Connections for `BLMOVE`, which blocks the connection it runs on.
    idle_blocking: Mutex<Vec<MultiplexedConnection>>,
    keys: Keys,
    options: BullOptions,
    /// Identifies this instance's locks.
    token: String,
    /// Ids of the jobs this instance holds, whose locks it renews.
    held: Mutex<HashSet<String>>,
    scripts: Scripts,
    /// Whether Redis answered the last ping and no push failed since.
    up: AtomicBool,
}

struct Keys {
    base: String,
    wait: String,
    active: String,
    delayed: String,
    completed: String,
    failed: String,
}

impl Keys {
    fn new(prefix: &str, queue: &str) -> Keys {
        let base = format!("{prefix}:{queue}:");
        Keys {
            wait: format!("{base}wait"),
            active: format!("{base}active"),
            delayed: format!("{base}delayed"),
            completed: format!("{base}completed"),
            failed: format!("{base}failed"),
            base,
        }
    }

    fn job(&self, id: &str) -> String {
        format!("{}{id}", self.base)
    }

    fn lock(&self, id: &str) -> String {
        format!("{}{id}:lock", self.base)
    }
}

struct Scripts {
    push_all: Script,
    take: Script,
    complete: Script,
    fail: Script,
    give_back: Script,
    extend_locks: Script,
    recover_stalled: Script,
    revive: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            push_all: Script::new(PUSH_ALL_LUA),
            take: Script::new(TAKE_LUA),
            complete: Script::new(COMPLETE_LUA),
            fail: Script::new(FAIL_LUA),
            give_back: Script::new(GIVE_BACK_LUA),
            extend_locks: Script::new(EXTEND_LOCKS_LUA),
            recover_stalled: Script::new(RECOVER_STALLED_LUA),
            revive: Script::new(REVIVE_LUA),
        }
    }
}

/// KEYS: wait. ARGV: key base, opts, timestamp, then (id, name, data) per
/// job: in order, each job's hash created and its id queued on `wait`
/// unless its hash exists. Returns how many were new.
const PUSH_ALL_LUA: &str = r#"
local created = 0
for i = 4, #ARGV, 3 do
  local key = ARGV[1] .. ARGV[i]
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'name', ARGV[i + 1], 'data', ARGV[i + 2], 'opts', ARGV[2],
      'timestamp', ARGV[3], 'delay', '0', 'priority', '0', 'attemptsMade', '0')
    redis.call('LPUSH', KEYS[1], ARGV[i])
    created = created + 1
  end
end
return created
"#;

/// KEYS: wait, active, delayed. ARGV: key base, now (ms), lock ttl (ms),
/// token, the id `BLMOVE` already moved to `active` or ''.
/// Returns {'job', id, name, data, attemptsMade} | {'none', next due (ms)
/// or ''} | {'gone'} (the moved id was recovered meanwhile) |
/// {'missing', id} (no hash: the id is dropped).
const TAKE_LUA: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[2], 'LIMIT', 0, 1000)
for _, due_id in ipairs(due) do
  redis.call('ZREM', KEYS[3], due_id)
  redis.call('LPUSH', KEYS[1], due_id)
end
local id = ARGV[5]
if id == '' then
  id = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not id then
    local next = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    return {'none', next[2] or ''}
  end
elseif not redis.call('LPOS', KEYS[2], id) then
  return {'gone'}
end
local fields = redis.call('HMGET', ARGV[1] .. id, 'name', 'data', 'attemptsMade')
if not fields[1] then
  redis.call('LREM', KEYS[2], 0, id)
  return {'missing', id}
end
redis.call('SET', ARGV[1] .. id .. ':lock', ARGV[4], 'PX', ARGV[3])
redis.call('HSET', ARGV[1] .. id, 'processedOn', ARGV[2])
return {'job', id, fields[1], fields[2] or '', fields[3] or '0'}
"#;

/// KEYS: active, wait, delayed, completed, job hash, lock, failed.
/// ARGV: id, token, now (ms).
/// A job already in `failed` (completed after its last failed attempt)
/// stays there. A job is on one list at a time, so `wait` (which `LREM`
/// walks whole: O(backlog)) is searched only for a job that is no longer
/// `active`, i.e. recovered as stalled while its worker ran it.
const COMPLETE_LUA: &str = r#"
if redis.call('LREM', KEYS[1], 0, ARGV[1]) == 0 then
  redis.call('LREM', KEYS[2], 0, ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
end
if redis.call('GET', KEYS[6]) == ARGV[2] then redis.call('DEL', KEYS[6]) end
if redis.call('EXISTS', KEYS[5]) == 0 then return 0 end
if redis.call('ZSCORE', KEYS[7], ARGV[1]) then return 0 end
if not redis.call('ZSCORE', KEYS[4], ARGV[1]) then
  redis.call('HINCRBY', KEYS[5], 'attemptsMade', 1)
end
redis.call('HSET', KEYS[5], 'finishedOn', ARGV[3], 'returnvalue', 'null')
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return 1
"#;

/// KEYS: active, wait, delayed, failed, job hash, lock.
/// ARGV: id, token, now (ms), reason, max attempts, retry due time (ms).
/// Returns -1 when another worker holds the job, 0 when it is scheduled
/// for a retry, 1 when it is out of attempts. `wait` is searched only for
/// a job no longer `active` (as in the complete script).
const FAIL_LUA: &str = r#"
local owner = redis.call('GET', KEYS[6])
if owner and owner ~= ARGV[2] then return -1 end
if owner then redis.call('DEL', KEYS[6]) end
if redis.call('LREM', KEYS[1], 0, ARGV[1]) == 0 then
  redis.call('LREM', KEYS[2], 0, ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
end
local attempts = redis.call('HINCRBY', KEYS[5], 'attemptsMade', 1)
redis.call('HSET', KEYS[5], 'failedReason', ARGV[4])
if attempts < tonumber(ARGV[5]) then
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
  return 0
end
redis.call('HSET', KEYS[5], 'finishedOn', ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return 1
"#;

/// KEYS: active, wait, lock. ARGV: id, token.
/// Returns 0 when another worker holds the job.
const GIVE_BACK_LUA: &str = r#"
local owner = redis.call('GET', KEYS[3])
if owner and owner ~= ARGV[2] then return 0 end
if owner then redis.call('DEL', KEYS[3]) end
redis.call('LREM', KEYS[1], 0, ARGV[1])
redis.call('LREM', KEYS[2], 0, ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
"#;

/// KEYS: lock keys. ARGV: token, ttl (ms). Returns how many were renewed.
const EXTEND_LOCKS_LUA: &str = r#"
local renewed = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    renewed = renewed + 1
  end
end
return renewed
"#;

/// KEYS: active, wait. ARGV: key base. Moves every active job without a
/// lock to the head of `wait`; returns their ids.
const RECOVER_STALLED_LUA: &str = r#"
local recovered = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if redis.call('EXISTS', ARGV[1] .. id .. ':lock') == 0 then
    redis.call('LREM', KEYS[1], 0, id)
    redis.call('RPUSH', KEYS[2], id)
    table.insert(recovered, id)
  end
end
return recovered
"#;

/// KEYS: wait, completed, failed. ARGV: key base, opts, timestamp, then
/// (id, name, data) per job. A job is live while its hash exists without
/// `finishedOn` (waiting, delayed or active; an active one whose holder
/// died is the stalled recovery's). Every other job gets a fresh hash
/// (no attempts made) and goes to `wait`. Returns how many were queued.
const REVIVE_LUA: &str = r#"
local queued = 0
for i = 4, #ARGV, 3 do
  local id = ARGV[i]
  local key = ARGV[1] .. id
  if redis.call('EXISTS', key) == 0 or redis.call('HEXISTS', key, 'finishedOn') == 1 then
    redis.call('DEL', key, key .. ':lock')
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('HSET', key, 'name', ARGV[i + 1], 'data', ARGV[i + 2], 'opts', ARGV[2],
      'timestamp', ARGV[3], 'delay', '0', 'priority', '0', 'attemptsMade', '0')
    redis.call('LPUSH', KEYS[1], id)
    queued = queued + 1
  end
end
return queued
"#;

/// What one run of the take script found.
enum Taken {
    Job(Job),
    /// Nothing ready; the earliest delayed job falls due at this time (ms).
    Nothing {
        next_due_ms: Option<u64>,
    },
    /// The id `BLMOVE` moved was recovered before it could be locked.
    Gone,
}

impl BullQueue {
    /// Connects with the default [`BullOptions`].
    pub async fn connect(
        redis_url: &str,
        queue_name: &str,
        prefix: &str,
    ) -> Result<BullQueue, QueueError> {
        BullQueue::connect_with(redis_url, queue_name, prefix, BullOptions::default()).await
    }

    pub async fn connect_with(
        redis_url: &str,
        queue_name: &str,
        prefix: &str,
        mut options: BullOptions,
    ) -> Result<BullQueue, QueueError> {
        options.lock_ttl = options.lock_ttl.max(MIN_LOCK_TTL);
        let client = redis::Client::open(redis_url)
            .map_err(|e| QueueError::Unavailable(format!("invalid Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT)
            .set_number_of_retries(CONNECT_RETRIES)
            .set_factor(2)
            .set_max_delay(CONNECT_RETRY_DELAY_MS);
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(unavailable)?;
        let shared = Arc::new(Shared {
            client,
            conn,
            idle_blocking: Mutex::new(Vec::new()),
            keys: Keys::new(prefix, queue_name),
            options,
            token: uuid::Uuid::new_v4().to_string(),
            held: Mutex::new(HashSet::new()),
            scripts: Scripts::new(),
            up: AtomicBool::new(true),
        });
        let keeper = AbortOnDropHandle::new(tokio::spawn(keep_locks(Arc::clone(&shared))));
        let health = AbortOnDropHandle::new(tokio::spawn(watch_health(Arc::clone(&shared))));
        Ok(BullQueue {
            shared,
            _keeper: keeper,
            _health: health,
        })
    }
}

/// Renews this instance's locks and recovers stalled jobs, every third of
/// the lock TTL, until the queue is dropped.
async fn keep_locks(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(shared.options.lock_ttl / 3);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(e) = shared.extend_locks().await {
            tracing::warn!(error = %e, "cannot renew job locks");
        }
        match shared.recover_stalled().await {
            Ok(recovered) if !recovered.is_empty() => {
                tracing::warn!(jobs = ?recovered, "stalled jobs returned to the queue");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot look for stalled jobs"),
        }
    }
}

/// Keeps [`Shared::up`] to Redis's answers, every [`HEALTH_EVERY`], until
/// the queue is dropped.
async fn watch_health(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(HEALTH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let up = shared.ping().await;
        shared.set_up(up);
    }
}

impl Shared {
    async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        matches!(
            tokio::time::timeout(
                PING_TIMEOUT,
                redis::cmd("PING").query_async::<String>(&mut conn)
            )
            .await,
            Ok(Ok(_))
        )
    }

    /// Records Redis's state (`mock_queue_up`); logs each change.
    fn set_up(&self, up: bool) {
        metrics::gauge!("mock_queue_up", "queue" => self.keys.base.clone()).set(if up {
            1.0
        } else {
            0.0
        });
        if self.up.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!("Redis answers again; generate accepts jobs");
            } else {
                tracing::warn!("Redis does not answer; generate answers 503 until it does");
            }
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn extend_locks(&self) -> Result<(), QueueError> {
        let ids: Vec<String> = self.held().iter().cloned().collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut invocation = self.scripts.extend_locks.prepare_invoke();
        for id in &ids {
            invocation.key(self.keys.lock(id));
        }
        let renewed: usize = invocation
            .arg(&self.token)
            .arg(millis(self.options.lock_ttl))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        if renewed < ids.len() {
            tracing::warn!(
                lost = ids.len() - renewed,
                "job locks expired before renewal; those jobs may run twice"
            );
        }
        Ok(())
    }

    async fn recover_stalled(&self) -> Result<Vec<String>, QueueError> {
        self.scripts
            .recover_stalled
            .key(&self.keys.active)
            .key(&self.keys.wait)
            .arg(&self.keys.base)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// Promotes due delayed jobs, then takes `moved` (already in `active`)
    /// or the next waiting job, and locks it.
    async fn run_take(&self, moved: Option<&str>) -> Result<Taken, QueueError> {
        let reply: Vec<String> = self
            .scripts
            .take
            .key(&self.keys.wait)
            .key(&self.keys.active)
            .key(&self.keys.delayed)
            .arg(&self.keys.base)
            .arg(now_ms())
            .arg(millis(self.options.lock_ttl))
            .arg(&self.token)
            .arg(moved.unwrap_or(""))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        match reply.as_slice() {
            [tag, id, name, data, attempts_made] if tag == "job" => {
                self.held().insert(id.clone());
                self.parse_job(id, name, data, attempts_made)
                    .await
                    .map(Taken::Job)
            }
            [tag, next_due] if tag == "none" => Ok(Taken::Nothing {
                next_due_ms: next_due.parse::<f64>().ok().map(|ms| ms as u64),
            }),
            [tag] if tag == "gone" => Ok(Taken::Gone),
            [tag, id] if tag == "missing" => Err(QueueError::Malformed {
                id: id.clone(),
                why: "no job hash; dropped from the queue".into(),
            }),
            other => Err(QueueError::Unavailable(format!(
                "unexpected reply from the take script: {other:?}"
            ))),
        }
    }

    /// A job whose id or data cannot be read is moved to `failed` at once:
    /// retrying cannot fix it.
    async fn parse_job(
        &self,
        id: &str,
        name: &str,
        data: &str,
        attempts_made: &str,
    ) -> Result<Job, QueueError> {
        let parsed = (|| -> Result<Job, String> {
            Ok(Job {
                id: id.parse().map_err(|e| format!("id is not a UUID: {e}"))?,
                name: name.to_string(),
                payload: serde_json::from_str(data)
                    .map_err(|e| format!("data is not JSON: {e}"))?,
                attempt: attempts_made
                    .parse::<u32>()
                    .map_err(|e| format!("attemptsMade is not a count: {e}"))?
                    + 1,
            })
        })();
        match parsed {
            Ok(job) => Ok(job),
            Err(why) => {
                self.run_fail(id, &why, 1, Duration::ZERO).await?;
                Err(QueueError::Malformed {
                    id: id.to_string(),
                    why,
                })
            }
        }
    }

    /// Waits up to `block` for a job to arrive on `wait` and moves it to
    /// `active` (unlocked: the take script locks it next, and the stalled
    /// recovery returns it if this task dies in between).
    async fn block_for_job(&self, block: Duration) -> Result<Option<String>, QueueError> {
        let idle = self
            .idle_blocking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => self
                .client
                .get_multiplexed_async_connection_with_config(
                    &AsyncConnectionConfig::new().set_connection_timeout(CONNECT_TIMEOUT),
                )
                .await
                .map_err(unavailable)?,
        };
        let moved = tokio::time::timeout(
            block + RESPONSE_TIMEOUT,
            conn.blmove::<_, _, Option<String>>(
                &self.keys.wait,
                &self.keys.active,
                Direction::Right,
                Direction::Left,
                block.as_secs_f64(),
            ),
        )
        .await
        .map_err(|_| QueueError::Unavailable("Redis did not answer BLMOVE".into()))?
        .map_err(unavailable)?;
        self.idle_blocking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
        Ok(moved)
    }

    async fn run_fail(
        &self,
        id: &str,
        reason: &str,
        max_attempts: u32,
        retry_delay: Duration,
    ) -> Result<i64, QueueError> {
        self.held().remove(id);
        let now = now_ms();
        self.scripts
            .fail
            .key(&self.keys.active)
            .key(&self.keys.wait)
            .key(&self.keys.delayed)
            .key(&self.keys.failed)
            .key(self.keys.job(id))
            .key(self.keys.lock(id))
            .arg(id)
            .arg(&self.token)
            .arg(now)
            .arg(reason)
            .arg(max_attempts)
            .arg(now.saturating_add(millis(retry_delay)))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// A job hash's `opts`: the real backend's attempts and backoff.
    fn job_opts(&self) -> String {
        serde_json::json!({
            "attempts": MAX_ATTEMPTS,
            "backoff": { "type": "exponential", "delay": millis(self.options.backoff_base) },
        })
        .to_string()
    }

    /// The delay before the run after `attempt`, scaled to this queue's base.
    fn retry_delay(&self, attempt: u32) -> Duration {
        self.options
            .backoff_base
            .mul_f64(backoff(attempt).div_duration_f64(BACKOFF_BASE))
    }
}

#[async_trait::async_trait]
impl Queue for BullQueue {
    async fn push(&self, job: NewJob) -> Result<(), QueueError> {
        self.push_all(vec![job]).await.1
    }

    async fn push_all(&self, jobs: Vec<NewJob>) -> (usize, Result<(), QueueError>) {
        if jobs.is_empty() {
            return (0, Ok(()));
        }
        let shared = &self.shared;
        let count = jobs.len();
        let mut invocation = shared.scripts.push_all.prepare_invoke();
        invocation
            .key(&shared.keys.wait)
            .arg(&shared.keys.base)
            .arg(shared.job_opts())
            .arg(now_ms());
        job_args(&mut invocation, jobs);
        match invocation
            .invoke_async::<i64>(&mut shared.conn.clone())
            .await
        {
            Ok(_created) => (count, Ok(())),
            Err(e) => {
                shared.set_up(false);
                (0, Err(unavailable(e)))
            }
        }
    }

    async fn revive(&self, jobs: Vec<NewJob>) -> Result<usize, QueueError> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let shared = &self.shared;
        let mut invocation = shared.scripts.revive.prepare_invoke();
        invocation
            .key(&shared.keys.wait)
            .key(&shared.keys.completed)
            .key(&shared.keys.failed)
            .arg(&shared.keys.base)
            .arg(shared.job_opts())
            .arg(now_ms());
        job_args(&mut invocation, jobs);
        invocation
            .invoke_async(&mut shared.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn take(&self, wait: Duration) -> Result<Option<Job>, QueueError> {
        let shared = &self.shared;
        let deadline = Instant::now() + wait;
        let mut moved = None;
        loop {
            let next_due_ms = match shared.run_take(moved.as_deref()).await? {
                Taken::Job(job) => return Ok(Some(job)),
                Taken::Nothing { next_due_ms } => next_due_ms,
                Taken::Gone => None,
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let mut block = deadline - now;
            if let Some(due) = next_due_ms {
                block = block.min(Duration::from_millis(due.saturating_sub(now_ms())));
            }
            moved = shared.block_for_job(block.max(MIN_BLOCK)).await?;
        }
    }

    async fn complete(&self, job: &Job) -> Result<(), QueueError> {
        let shared = &self.shared;
        let id = job.id.to_string();
        shared.held().remove(&id);
        let _recorded: i64 = shared
            .scripts
            .complete
            .key(&shared.keys.active)
            .key(&shared.keys.wait)
            .key(&shared.keys.delayed)
            .key(&shared.keys.completed)
            .key(shared.keys.job(&id))
            .key(shared.keys.lock(&id))
            .key(&shared.keys.failed)
            .arg(&id)
            .arg(&shared.token)
            .arg(now_ms())
            .invoke_async(&mut shared.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn fail(&self, job: &Job, error: &str) -> Result<AfterFailure, QueueError> {
        let shared = &self.shared;
        let id = job.id.to_string();
        let delay = shared.retry_delay(job.attempt);
        match shared.run_fail(&id, error, MAX_ATTEMPTS, delay).await? {
            0 => Ok(AfterFailure::RetryIn(delay)),
            1 => Ok(AfterFailure::Exhausted),
            _ => {
                // Its lock expired and another worker took it: that run
                // decides the job's fate.
                tracing::warn!(job = %id, "failed job is held by another worker");
                Ok(AfterFailure::RetryIn(Duration::ZERO))
            }
        }
    }

    async fn give_back(&self, job: &Job) -> Result<(), QueueError> {
        let shared = &self.shared;
        let id = job.id.to_string();
        shared.held().remove(&id);
        let returned: i64 = shared
            .scripts
            .give_back
            .key(&shared.keys.active)
            .key(&shared.keys.wait)
            .key(shared.keys.lock(&id))
            .arg(&id)
            .arg(&shared.token)
            .invoke_async(&mut shared.conn.clone())
            .await
            .map_err(unavailable)?;
        if returned == 0 {
            tracing::warn!(job = %id, "returned job is held by another worker");
        }
        Ok(())
    }

    async fn depth(&self) -> Result<Depth, QueueError> {
        let keys = &self.shared.keys;
        let (wait, active, delayed): (u64, u64, u64) = redis::pipe()
            .llen(&keys.wait)
            .llen(&keys.active)
            .zcard(&keys.delayed)
            .query_async(&mut self.shared.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(Depth {
            wait,
            active,
            delayed,
        })
    }

    async fn ping(&self) -> bool {
        self.shared.ping().await
    }

    fn accepting(&self) -> bool {
        self.shared.up.load(Ordering::Relaxed)
    }
}

/// The push and revive scripts' arguments per job: id, name, payload.
fn job_args(invocation: &mut redis::ScriptInvocation<'_>, jobs: Vec<NewJob>) {
    for job in jobs {
        invocation
            .arg(job.id.to_string())
            .arg(job.name)
            .arg(job.payload.to_string());
    }
}

fn unavailable(e: redis::RedisError) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}
