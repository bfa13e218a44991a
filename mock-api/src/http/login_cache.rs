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
//! Turned off (`LOGIN_CACHE=false`) every login pays bcrypt, the real
//! backend's cost.

use std::collections::HashSet;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use store::users;

/// Most digests kept at once.
pub const CAPACITY: usize = 10_000;

type Digest = [u8; 32];

pub struct LoginCache {
    enabled: bool,
    key: [u8; 32],
    verified: Mutex<HashSet<Digest>>,
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
            verified: Mutex::new(HashSet::new()),
        }
    }

    /// Whether `password` matches the stored `hash` (none: never). Counts
    /// `mock_login_bcrypt_total` for each bcrypt verification and
    /// `mock_login_cache_hits_total` for each answer from the cache.
    pub async fn password_matches(&self, password: String, hash: Option<String>) -> bool {
        let Some(hash) = hash else { return false };
        let digest = self.enabled.then(|| self.digest(&hash, &password));
        if let Some(digest) = &digest {
            if self.lock().contains(digest) {
                metrics::counter!("mock_login_cache_hits_total").increment(1);
                return true;
            }
        }
        metrics::counter!("mock_login_bcrypt_total").increment(1);
        // bcrypt is slow on purpose; it runs off the async workers so a
        // login storm does not stall every other request.
        let matches = tokio::task::spawn_blocking(move || users::verify_password(&password, &hash))
            .await
            .unwrap_or(false);
        if let (true, Some(digest)) = (matches, digest) {
            self.remember(digest);
        }
        matches
    }

    fn digest(&self, hash: &str, password: &str) -> Digest {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        // The hash's length first, so no (hash, password) pair reads as another.
        mac.update(&(hash.len() as u64).to_be_bytes());
        mac.update(hash.as_bytes());
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn remember(&self, digest: Digest) {
        let mut verified = self.lock();
        if verified.len() >= CAPACITY && !verified.contains(&digest) {
            let evicted = verified.iter().next().copied();
            if let Some(evicted) = evicted {
                verified.remove(&evicted);
            }
        }
        verified.insert(digest);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Digest>> {
        // A set of digests stays valid whatever panicked while holding it.
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "testpassword123";

    fn hash(password: &str) -> Option<String> {
        Some(users::hash_password(password, 4).unwrap())
    }

    fn stored(cache: &LoginCache) -> Vec<Digest> {
        cache.lock().iter().copied().collect()
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

    #[test]
    fn stays_within_its_capacity() {
        let cache = LoginCache::new(true);
        for i in 0..CAPACITY + 10 {
            cache.remember(cache.digest("hash", &i.to_string()));
        }
        assert_eq!(stored(&cache).len(), CAPACITY);
    }
}
