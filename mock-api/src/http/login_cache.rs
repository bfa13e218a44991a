//! Password checks for login, with repeated logins kept off bcrypt.
//!
//! A password that bcrypt verified against a stored hash is remembered as
//! HMAC-SHA256(process key, stored hash ‖ password), the key drawn at random
//! when the process starts: the cache never holds the password, and its
//! entries mean nothing to another process or after a restart. The next
//! login with the same password against the same stored hash finds the
//! digest and skips bcrypt. A first login, a changed password (another
//! stored hash) and a wrong password (another digest) go through bcrypt;
//! only a verified password is ever stored. The cache holds at most
//! [`CAPACITY`] digests and, when full, forgets an arbitrary one.
//!
//! Single flight: logins that arrive with the same digest while its bcrypt
//! runs wait for that one verification instead of starting their own, so
//! an account's first burst of logins (a load test's ramp-up) pays bcrypt
//! once, not once per request. The verification runs to its end on the
//! blocking pool even if the request that started it goes away, and
//! records its outcome before it wakes the waiters. Its answer serves only
//! the logins that were waiting for it: a wrong password is refused to
//! each of them, is never stored, and the next login with it runs bcrypt
//! again.
//!
//! Turned off (`LOGIN_CACHE=false`) every login pays bcrypt, the real
//! backend's cost, without single flight.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use store::users;
use tokio::sync::watch;

/// Most digests kept at once.
pub const CAPACITY: usize = 10_000;

type Digest = [u8; 32];

/// A bcrypt verification in progress: `None` until it has an answer.
type Flight = watch::Receiver<Option<bool>>;

#[derive(Default)]
struct Entries {
    /// Digests of verified passwords.
    verified: HashSet<Digest>,
    /// Digests whose bcrypt runs now, with the channel of its answer.
    in_flight: HashMap<Digest, Flight>,
}

impl Entries {
    fn remember(&mut self, digest: Digest) {
        if self.verified.len() >= CAPACITY && !self.verified.contains(&digest) {
            let evicted = self.verified.iter().next().copied();
            if let Some(evicted) = evicted {
                self.verified.remove(&evicted);
            }
        }
        self.verified.insert(digest);
    }
}

/// What a login with a given digest does.
enum Step {
    /// The digest is verified: no bcrypt.
    Hit,
    /// Another login's bcrypt for this digest runs: wait for its answer.
    Wait(Flight),
    /// Run bcrypt, and publish its answer on this channel.
    Verify(watch::Sender<Option<bool>>),
}

pub struct LoginCache {
    enabled: bool,
    key: [u8; 32],
    entries: Arc<Mutex<Entries>>,
}

impl LoginCache {
    /// A cache with a fresh random key; `enabled: false` checks every
    /// password with bcrypt and stores nothing.
    pub fn new(enabled: bool) -> LoginCache {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        LoginCache {
            enabled,
            key,
            entries: Arc::default(),
        }
    }

    /// Whether `password` matches the stored `hash` (none: never). Counts
    /// `mock_login_bcrypt_total` for each bcrypt verification and
    /// `mock_login_cache_hits_total` for each answer from the cache (a
    /// login that waited for another's verification counts neither).
    pub async fn password_matches(&self, password: String, hash: Option<String>) -> bool {
        let Some(hash) = hash else { return false };
        if !self.enabled {
            return verify(password, hash).await;
        }
        let digest = self.digest(&hash, &password);
        match self.step(digest) {
            Step::Hit => {
                metrics::counter!("mock_login_cache_hits_total").increment(1);
                true
            }
            Step::Wait(flight) => answer_of(flight).await,
            Step::Verify(answer) => {
                let flight = answer.subscribe();
                let entries = Arc::clone(&self.entries);
                let outcome = InFlight {
                    entries,
                    digest,
                    answer,
                };
                metrics::counter!("mock_login_bcrypt_total").increment(1);
                // bcrypt is slow on purpose; it runs off the async workers
                // so a login storm does not stall every other request. The
                // blocking task owns the flight: it finishes and publishes
                // even when this request is dropped.
                tokio::task::spawn_blocking(move || {
                    outcome.finish(users::verify_password(&password, &hash))
                });
                answer_of(flight).await
            }
        }
    }

    /// Under one lock: a hit, a flight to join, or a new flight.
    fn step(&self, digest: Digest) -> Step {
        let mut entries = self.lock();
        if entries.verified.contains(&digest) {
            return Step::Hit;
        }
        if let Some(flight) = entries.in_flight.get(&digest) {
            return Step::Wait(flight.clone());
        }
        let (answer, flight) = watch::channel(None);
        entries.in_flight.insert(digest, flight);
        Step::Verify(answer)
    }

    fn digest(&self, hash: &str, password: &str) -> Digest {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        // The hash's length first, so no (hash, password) pair reads as another.
        mac.update(&(hash.len() as u64).to_be_bytes());
        mac.update(hash.as_bytes());
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        lock(&self.entries)
    }
}

/// The one bcrypt of a digest. Dropped without an answer (bcrypt
/// panicked), it still leaves the map, and its waiters read a refusal.
struct InFlight {
    entries: Arc<Mutex<Entries>>,
    digest: Digest,
    answer: watch::Sender<Option<bool>>,
}

impl InFlight {
    fn finish(self, matches: bool) {
        {
            // Stored and out of flight in one step: a login arriving now
            // finds either the flight or the verified digest.
            let mut entries = lock(&self.entries);
            if matches {
                entries.remember(self.digest);
            }
            entries.in_flight.remove(&self.digest);
        }
        self.answer.send_replace(Some(matches));
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.answer.borrow().is_none() {
            lock(&self.entries).in_flight.remove(&self.digest);
        }
    }
}

/// The flight's answer; a flight that ended without one refuses.
async fn answer_of(mut flight: Flight) -> bool {
    match flight.wait_for(Option::is_some).await {
        Ok(answer) => answer.unwrap_or(false),
        Err(_) => false,
    }
}

/// bcrypt alone, as every login pays it with the cache off.
async fn verify(password: String, hash: String) -> bool {
    metrics::counter!("mock_login_bcrypt_total").increment(1);
    tokio::task::spawn_blocking(move || users::verify_password(&password, &hash))
        .await
        .unwrap_or(false)
}

fn lock(entries: &Mutex<Entries>) -> MutexGuard<'_, Entries> {
    // A set of digests stays valid whatever panicked while holding it.
    entries.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "testpassword123";

    fn hash(password: &str) -> Option<String> {
        Some(users::hash_password(password, 4).unwrap())
    }

    fn stored(cache: &LoginCache) -> Vec<Digest> {
        cache.lock().verified.iter().copied().collect()
    }

    #[tokio::test]
    async fn holds_only_keyed_digests_never_the_password() {
        let hash = hash(PASSWORD);
        let (one, other) = (LoginCache::new(true), LoginCache::new(true));
        assert!(one.password_matches(PASSWORD.into(), hash.clone()).await);
        assert!(other.password_matches(PASSWORD.into(), hash.clone()).await);
        let (ours, theirs) = (stored(&one), stored(&other));
        assert_eq!(ours.len(), 1);
        assert_eq!(theirs.len(), 1);
        assert_ne!(ours, theirs, "two processes' keys give different digests");
        let hash = hash.unwrap();
        assert_eq!(ours, [one.digest(&hash, PASSWORD)]);
        for digest in ours.iter().chain(&theirs) {
            assert!(
                !digest
                    .windows(PASSWORD.len())
                    .any(|w| w == PASSWORD.as_bytes()),
                "a digest holds the password"
            );
        }
    }

    #[tokio::test]
    async fn a_wrong_password_is_never_stored() {
        let cache = LoginCache::new(true);
        let hash = hash(PASSWORD);
        assert!(!cache.password_matches("wrong".into(), hash.clone()).await);
        assert!(stored(&cache).is_empty());
        assert!(cache.password_matches(PASSWORD.into(), hash.clone()).await);
        assert!(!cache.password_matches("wrong".into(), hash.clone()).await);
        assert!(!cache.password_matches(PASSWORD.into(), None).await);
        assert_eq!(stored(&cache).len(), 1);
    }

    #[tokio::test]
    async fn turned_off_it_stores_nothing() {
        let cache = LoginCache::new(false);
        let hash = hash(PASSWORD);
        assert!(cache.password_matches(PASSWORD.into(), hash.clone()).await);
        assert!(cache.password_matches(PASSWORD.into(), hash).await);
        assert!(stored(&cache).is_empty());
    }

    #[tokio::test]
    async fn concurrent_logins_share_one_verification_and_leave_no_flight() {
        let cache = Arc::new(LoginCache::new(true));
        let hash = hash(PASSWORD);
        for (password, expected) in [("wrong", false), (PASSWORD, true), ("wrong", false)] {
            let logins: Vec<_> = (0..16)
                .map(|_| {
                    let (cache, hash) = (Arc::clone(&cache), hash.clone());
                    tokio::spawn(async move { cache.password_matches(password.into(), hash).await })
                })
                .collect();
            for login in logins {
                assert_eq!(login.await.unwrap(), expected, "{password}");
            }
            assert!(cache.lock().in_flight.is_empty());
        }
        assert_eq!(stored(&cache).len(), 1, "only the good password is stored");
    }

    #[tokio::test]
    async fn a_dropped_login_still_finishes_its_verification() {
        let cache = LoginCache::new(true);
        let hash = hash(PASSWORD);
        let first = cache.password_matches(PASSWORD.into(), hash.clone());
        // Polled once (the flight starts), then dropped.
        assert!(futures::poll!(Box::pin(first)).is_pending());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !cache.lock().in_flight.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the flight never ended"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(stored(&cache).len(), 1);
    }

    #[test]
    fn stays_within_its_capacity() {
        let cache = LoginCache::new(true);
        for i in 0..CAPACITY + 10 {
            let digest = cache.digest("hash", &i.to_string());
            cache.lock().remember(digest);
        }
        assert_eq!(stored(&cache).len(), CAPACITY);
    }
}
