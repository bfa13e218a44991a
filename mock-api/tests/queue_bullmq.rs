//! The Redis queue against a real redis-server: BullMQ's key layout, retries
//! with backoff, stalled-job recovery and hand-backs.

use std::collections::HashMap;
use std::time::Duration;

use mock_api::queue::bullmq::{BullOptions, BullQueue};
use mock_api::queue::{AfterFailure, Depth, NewJob, Queue, QueueError, MAX_ATTEMPTS};
use mock_api::testing::redis_url;
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use store::db::Id;
use store::testing::unique_name;

/// Long enough for any take that is expected to find a job; the test fails
/// rather than hangs if it does not.
const PATIENCE: Duration = Duration::from_secs(10);

struct Fixture {
    url: String,
    name: String,
    redis: MultiplexedConnection,
}

impl Fixture {
    async fn new() -> Option<Fixture> {
        let url = redis_url().await?;
        let redis = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        Some(Fixture {
            url,
            name: unique_name("q"),
            redis,
        })
    }

    async fn queue(&self, options: BullOptions) -> BullQueue {
        BullQueue::connect_with(&self.url, &self.name, "bull", options)
            .await
            .unwrap()
    }

    fn key(&self, suffix: &str) -> String {
        format!("bull:{}:{suffix}", self.name)
    }

    async fn llen(&self, list: &str) -> u64 {
        self.redis.clone().llen(self.key(list)).await.unwrap()
    }

    async fn zscore(&self, set: &str, id: Id) -> Option<u64> {
        self.redis
            .clone()
            .zscore(self.key(set), id.to_string())
            .await
            .unwrap()
    }

    async fn job_hash(&self, id: Id) -> HashMap<String, String> {
        self.redis
            .clone()
            .hgetall(self.key(&id.to_string()))
            .await
            .unwrap()
    }
}

fn fast() -> BullOptions {
    BullOptions {
        lock_ttl: Duration::from_millis(300),
        backoff_base: Duration::from_millis(10),
    }
}

fn new_job() -> NewJob {
    let id = Id::random();
    NewJob {
        id,
        name: "gen.seedream4".into(),
        payload: serde_json::json!({"payloadVersion": 1, "reservationId": id.to_string()}),
    }
}

#[tokio::test]
async fn pushing_a_known_id_queues_it_once() {
    let Some(fx) = Fixture::new().await else {
        return;
    };
    let queue = fx.queue(BullOptions::default()).await;
    let job = new_job();
    queue.push(job.clone()).await.unwrap();
    queue.push(job.clone()).await.unwrap();

    assert_eq!(fx.llen("wait").await, 1);
    let hash = fx.job_hash(job.id).await;
    assert_eq!(hash["name"], "gen.seedream4");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&hash["data"]).unwrap(),
        job.payload
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&hash["opts"]).unwrap(),
        serde_json::json!({"attempts": 5, "backoff": {"type": "exponential", "delay": 1000}})
    );
    assert_eq!(hash["attemptsMade"], "0");
    assert!(hash["timestamp"].parse::<u64>().unwrap() > 0);
}

/// A relay round's jobs go in with one script: in order, each known id
/// once, each hash as `push` writes it.
#[tokio::test]
async fn pushing_many_queues_them_in_order_and_known_ids_once() {
    let Some(fx) = Fixture::new().await else {
        return;
    };
    let queue = fx.queue(fast()).await;
    let known = new_job();
    queue.push(known.clone()).await.unwrap();
    let jobs: Vec<NewJob> = (0..5).map(|_| new_job()).collect();
    let mut round = vec![known.clone()];
    round.extend(jobs.iter().cloned());
    round.push(jobs[1].clone());
    let (pushed, outcome) = queue.push_all(round.clone()).await;
    outcome.unwrap();
    assert_eq!(pushed, round.len());
    assert_eq!(fx.llen("wait").await, 6);
    let hash = fx.job_hash(jobs[3].id).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&hash["data"]).unwrap(),
        jobs[3].payload
    );
    assert_eq!(hash["attemptsMade"], "0");
    let mut taken = Vec::new();
    for _ in 0..6 {
        let job = queue.take(PATIENCE).await.unwrap().unwrap();
        taken.push(job.id);
    }
    let mut expected = vec![known.id];
    expected.extend(jobs.iter().map(|job| job.id));
    assert_eq!(taken, expected);
}

#[tokio::test]
async fn a_taken_job_moves_from_wait_to_active_under_a_lock() {
    let Some(fx) = Fixture::new().await else {
        return;
    };
    let queue = fx.queue(BullOptions::default()).await;
    let job = new_job();
    queue.push(job.clone()).await.unwrap();
    assert_eq!((fx.llen("wait").await, fx.llen("active").await), (1, 0));

    let taken = queue.take(PATIENCE).await.unwrap().unwrap();
    assert_eq!(
        (taken.id, &taken.name, &taken.payload, taken.attempt),
        (job.id, &job.name, &job.payload, 1)
    );
    assert_eq!((fx.llen("wait").await, fx.llen("active").await), (0, 1));
    assert_eq!(
        queue.depth().await.unwrap(),
        Depth {
            wait: 0,
            active: 1,
            delayed: 0
        }
    );
    let lock_ttl: i64 = fx
        .redis
        .clone()
        .pttl(fx.key(&format!("{}:lock", job.id)))
        .await
        .unwrap();
    assert!(lock_ttl > 0, "the lock has an expiry, got PTTL {lock_ttl}");
    assert!(fx.job_hash(job.id).await.contains_key("processedOn"));
    assert!(queue.ping().await);
}

#[tokio::test]
async fn a_completed_job_lands_in_the_completed_set() {
    let Some(fx) = Fixture::new().await else {
        return;
    };
    let queue = fx.queue(BullOptions::default()).await;
    let job = new_job();
    queue.push(job.clone()).await.unwrap();
    let taken = queue.take(PATIENCE).await.unwrap().unwrap();
    queue.complete(&taken).await.unwrap();

    let hash = fx.job_hash(job.id).await;
    let finished_on: u64 = hash["finishedOn"].parse().unwrap();
    assert_eq!(fx.zscore("completed", job.id).await, Some(finished_on));
    assert_eq!(hash["attemptsMade"], "1");
    assert_eq!((fx.llen("wait").await, fx.llen("active").await), (0, 0));
    let lock_exists: bool = fx
        .redis
        .clone()
        .exists(fx.key(&format!("{}:lock", job.id)))
        .await
        .unwrap();
    assert!(!lock_exists);
    // Pushing a finished job again does not revive it.
    queue.push(job).await.unwrap();
    assert_eq!(queue.take(Duration::from_millis(50)).await.unwrap(), None);
}

#[tokio::test]
async fn a_failing_job_is_retried_with_backoff_then_lands_in_the_failed_set() {
    let Some(fx) = Fixture::new().await else {
        return;
    };
    let queue = fx.queue(fast()).await;
    let job = new_job();
    queue.push(job.clone()).await.unwrap();

    let mut outcomes = Vec::new();
    let mut last = None;
    for attempt in 1..=MAX_ATTEMPTS {
        let taken = queue.take(PATIENCE).await.unwrap().unwrap();
        assert_eq!((taken.id, taken.attempt), (job.id, attempt));
        let outcome = queue.fail(&taken, "provider said no").await.unwrap();
        if attempt == 1 {
            assert!(fx.zscore("delayed", job.id).await.is_some());
            assert_eq!(queue.depth().await.unwrap().delayed, 1);
        }
        outcomes.push(outcome);
        last = Some(taken);
    }

    let ms = |n| AfterFailure::RetryIn(Duration::from_millis(n));
    assert_eq!(
        outcomes,
        vec![ms(10), ms(20), ms(40), ms(80), AfterFailure::Exhausted]
    );
    let hash = fx.job_hash(job.id).await;
    assert_eq!(hash["failedReason"], "provider said no");
    assert_eq!(hash["attemptsMade"], "5");
    assert_eq!(
        fx.zscore("failed", job.id).await,
        Some(hash["finishedOn"].parse().unwrap())
    );
    assert_eq!(queue.depth().await.unwrap(), Depth::default());
    // A worker that completes the job after recording its failure does not
    // move it out of `failed`.
    queue.complete(&last.unwrap()).await.unwrap();
    assert_eq!(fx.zscore("completed", job.id).await, None);
    assert!(fx.zscore("failed", job.id).await.is_some());
}

#[tokio::test]
async fn the_job_of_a_dead_worker_is_recovered_and_completed_once() {
    let Some(fx) = Fixture::new().await else {
        return;
    };
    let job = new_job();
    let dying = fx.queue(fast()).await;
    dying.push(job.clone()).await.unwrap();
    let held = dying.take(PATIENCE).await.unwrap().unwrap();
    assert_eq!(held.id, job.id);
    // The worker's process dies: nothing renews its lock any more.
    drop(dying);

    let survivor = fx.queue(fast()).await;
    let recovered = survivor.take(PATIENCE).await.unwrap().unwrap();
    assert_eq!((recovered.id, recovered.attempt), (job.id, 1));
    survivor.complete(&recovered).await.unwrap();

    assert!(fx.zscore("completed", job.id).await.is_some());
    assert_eq!(fx.job_hash(job.id).await["attemptsMade"], "1");
    assert_eq!(
        survivor.take(Duration::from_millis(50)).await.unwrap(),
        None
    );
    assert_eq!(survivor.depth().await.unwrap(), Depth::default());
}

#[tokio::test]
async fn a_held_job_is_not_recovered_while_its_worker_lives() {
    let Some(fx) = Fixture::new().await else {
        return;
    };
    let options = fast();
    let worker = fx.queue(options).await;
    let other = fx.queue(options).await;
    let job = new_job();
    worker.push(job.clone()).await.unwrap();
    let held = worker.take(PATIENCE).await.unwrap().unwrap();

    // The other instance keeps looking for work while the worker renews its
    // lock: each time the lock's remaining life goes up is a renewal. Eight
    // renewals span several lock lifetimes; the lock never lapses and the
    // job is never taken from its worker.
    let lock = fx.key(&format!("{}:lock", job.id));
    let mut redis = fx.redis.clone();
    let mut renewals = 0;
    let mut last_ttl: i64 = redis.pttl(&lock).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while renewals < 8 {
        assert_eq!(other.take(Duration::from_millis(20)).await.unwrap(), None);
        let ttl: i64 = redis.pttl(&lock).await.unwrap();
        assert!(ttl > 0, "the held job's lock lapsed ({ttl})");
        if ttl > last_ttl {
            renewals += 1;
        }
        last_ttl = ttl;
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {renewals} lock renewals within {PATIENCE:?}"
        );
    }
    worker.complete(&held).await.unwrap();
    assert!(fx.zscore("completed", job.id).await.is_some());
}

#[tokio::test]
async fn a_job_recovered_while_its_worker_still_ran_it_is_completed_once() {
    let Some(fx) = Fixture::new().await else {
        return;
    };
    let worker = fx.queue(fast()).await;
    let (job, behind) = (new_job(), new_job());
    worker.push(job.clone()).await.unwrap();
    let held = worker.take(PATIENCE).await.unwrap().unwrap();
    worker.push(behind.clone()).await.unwrap();
    // The lock lapses (as when renewals stall): the stalled check puts the
    // job back on `wait`, behind nothing, while its worker still runs it.
    let mut redis = fx.redis.clone();
    let _: () = redis
        .del(fx.key(&format!("{}:lock", job.id)))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while fx.llen("active").await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled job was not recovered"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(fx.llen("wait").await, 2);

    // Its worker completes it: it leaves `wait` too and never runs again;
    // the job behind it is untouched.
    worker.complete(&held).await.unwrap();
    assert!(fx.zscore("completed", job.id).await.is_some());
    let next = worker.take(PATIENCE).await.unwrap().unwrap();
    assert_eq!(next.id, behind.id);
    assert_eq!(worker.take(Duration::from_millis(50)).await.unwrap(), None);
}

#[tokio::test]
async fn a_given_back_job_runs_next() {
    let Some(fx) = Fixture::new().await else {
        return;
    };
    let queue = fx.queue(BullOptions::default()).await;
    let (first, second) = (new_job(), new_job());
    queue.push(first.clone()).await.unwrap();
    queue.push(second.clone()).await.unwrap();

    let taken = queue.take(PATIENCE).await.unwrap().unwrap();
    assert_eq!(taken.id, first.id);
    queue.give_back(&taken).await.unwrap();
    assert_eq!((fx.llen("wait").await, fx.llen("active").await), (2, 0));

    let again = queue.take(PATIENCE).await.unwrap().unwrap();
    assert_eq!((again.id, again.attempt), (first.id, 1));
    let next = queue.take(PATIENCE).await.unwrap().unwrap();
    assert_eq!(next.id, second.id);
}

#[tokio::test]
async fn a_waiting_take_wakes_up_on_push() {
    let Some(fx) = Fixture::new().await else {
        return;
    };
    let queue = std::sync::Arc::new(fx.queue(BullOptions::default()).await);
    let taker = tokio::spawn({
        let queue = std::sync::Arc::clone(&queue);
        async move { queue.take(PATIENCE).await }
    });
    let job = new_job();
    queue.push(job.clone()).await.unwrap();
    let taken = taker.await.unwrap().unwrap().unwrap();
    assert_eq!(taken.id, job.id);
}

#[tokio::test]
async fn a_job_with_unreadable_data_fails_for_good() {
    let Some(fx) = Fixture::new().await else {
        return;
    };
    let queue = fx.queue(BullOptions::default()).await;
    let id = Id::random();
    let mut redis = fx.redis.clone();
    let () = redis
        .hset_multiple(
            fx.key(&id.to_string()),
            &[
                ("name", "gen.seedream4"),
                ("data", "{not json"),
                ("attemptsMade", "0"),
            ],
        )
        .await
        .unwrap();
    let () = redis.lpush(fx.key("wait"), id.to_string()).await.unwrap();

    let error = queue.take(PATIENCE).await.unwrap_err();
    assert!(
        matches!(&error, QueueError::Malformed { id: bad, .. } if *bad == id.to_string()),
        "{error}"
    );
    assert!(fx.zscore("failed", id).await.is_some());
    assert_eq!(queue.depth().await.unwrap(), Depth::default());
}

#[tokio::test]
async fn connecting_to_no_server_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let error = BullQueue::connect(&url, "main", "bull")
        .await
        .err()
        .unwrap();
    assert!(matches!(error, QueueError::Unavailable(_)), "{error}");
    let error = BullQueue::connect("http://nope", "main", "bull")
        .await
        .err()
        .unwrap();
    assert!(error.to_string().contains("invalid Redis URL"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_take_each_job_once() {
    let Some(fx) = Fixture::new().await else {
        return;
    };
    let instances = [
        std::sync::Arc::new(fx.queue(BullOptions::default()).await),
        std::sync::Arc::new(fx.queue(BullOptions::default()).await),
    ];
    let jobs: Vec<NewJob> = (0..200).map(|_| new_job()).collect();
    for job in &jobs {
        instances[0].push(job.clone()).await.unwrap();
    }
    let workers: Vec<_> = (0..8)
        .map(|n| {
            let queue = std::sync::Arc::clone(&instances[n % 2]);
            tokio::spawn(async move {
                let mut done = Vec::new();
                while let Some(job) = queue.take(Duration::from_millis(100)).await.unwrap() {
                    queue.complete(&job).await.unwrap();
                    done.push(job.id);
                }
                done
            })
        })
        .collect();
    let mut done = Vec::new();
    for worker in workers {
        done.extend(worker.await.unwrap());
    }
    done.sort_by_key(|id| id.0);
    let mut expected: Vec<Id> = jobs.iter().map(|job| job.id).collect();
    expected.sort_by_key(|id| id.0);
    assert_eq!(done, expected);
    let completed: u64 = fx.redis.clone().zcard(fx.key("completed")).await.unwrap();
    assert_eq!(completed, 200);
}

/// The reconciler's `revive`: a finished job and a job whose hash is gone
/// (Redis restarted empty) are queued again with fresh attempts; waiting
/// and held jobs are left alone.
#[tokio::test]
async fn revive_queues_finished_and_lost_jobs_but_not_live_ones() {
    let Some(fx) = Fixture::new().await else {
        return;
    };
    let queue = fx.queue(BullOptions::default()).await;
    let (finished, lost, held, waiting) = (new_job(), new_job(), new_job(), new_job());
    queue.push(finished.clone()).await.unwrap();
    let taken = queue.take(PATIENCE).await.unwrap().unwrap();
    queue.complete(&taken).await.unwrap();
    queue.push(held.clone()).await.unwrap();
    let holding = queue.take(PATIENCE).await.unwrap().unwrap();
    assert_eq!(holding.id, held.id);
    queue.push(waiting.clone()).await.unwrap();

    let revived = queue
        .revive(vec![
            finished.clone(),
            lost.clone(),
            held.clone(),
            waiting.clone(),
        ])
        .await
        .unwrap();
    assert_eq!(revived, 2);
    assert_eq!(fx.zscore("completed", finished.id).await, None);
    assert_eq!((fx.llen("wait").await, fx.llen("active").await), (3, 1));
    let hash = fx.job_hash(finished.id).await;
    assert_eq!(hash["attemptsMade"], "0");
    assert!(!hash.contains_key("finishedOn"));
    let mut ids = Vec::new();
    for _ in 0..3 {
        let job = queue.take(PATIENCE).await.unwrap().unwrap();
        assert_eq!(job.attempt, 1);
        ids.push(job.id);
    }
    assert_eq!(ids, vec![waiting.id, finished.id, lost.id]);
    assert_eq!(queue.revive(Vec::new()).await.unwrap(), 0);
}
