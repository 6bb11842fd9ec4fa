//! Argon2id password hashing on a bounded pool of blocking threads.
//!
//! A hash takes tens of milliseconds of CPU and 19 MiB of memory, so hashing on the async runtime
//! would stall every socket, and hashing without a bound would let a login storm exhaust memory.
//! A semaphore bounds the hashes running at once, a counter bounds the ones waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::AuthError;

/// OWASP's Argon2id parameters: 19 MiB of memory, 2 iterations, 1 lane.
const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const LANES: u32 = 1;

pub(crate) struct Hasher {
    running: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    /// The hash of a random password, verified against when the username is unknown so that the
    /// answer takes as long as for a known one.
    dummy_hash: String,
}

fn argon2() -> Result<Argon2<'static>, AuthError> {
    let params =
        Params::new(MEMORY_KIB, ITERATIONS, LANES, None).map_err(|e| AuthError::Hashing(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

impl Hasher {
    pub(crate) async fn new(threads: usize, max_queued: usize) -> Result<Self, AuthError> {
        let mut hasher = Hasher {
            running: Arc::new(Semaphore::new(threads.max(1))),
            queued: Arc::default(),
            max_queued,
            dummy_hash: String::new(),
        };
        let random_password: [u8; 16] = rand::random();
        hasher.dummy_hash = hasher.hash(hex::encode(random_password)).await?;
        Ok(hasher)
    }

    pub(crate) async fn hash(&self, password: String) -> Result<String, AuthError> {
        self.run(move || {
            let hash = argon2()?
                .hash_password(password.as_bytes())
                .map_err(|e| AuthError::Hashing(e.to_string()))?;
            Ok(hash.to_string())
        })
        .await
    }

    pub(crate) async fn verify(&self, password: String, stored_hash: String) -> Result<bool, AuthError> {
        self.run(move || {
            let parsed = PasswordHash::new(&stored_hash).map_err(|e| AuthError::Hashing(e.to_string()))?;
            Ok(argon2()?.verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
    }

    pub(crate) async fn verify_dummy(&self, password: String) -> Result<bool, AuthError> {
        self.verify(password, self.dummy_hash.clone()).await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, AuthError> + Send + 'static,
    ) -> Result<T, AuthError> {
        let waiting = QueueSlot::take(&self.queued, self.max_queued)?;
        let permit = self.running.clone().acquire_owned().await.map_err(|_| AuthError::Busy)?;
        drop(waiting);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| AuthError::Hashing(e.to_string()))?
    }
}

/// A place in the hashing queue, given back when dropped (also when the caller gives up waiting).
struct QueueSlot(Arc<AtomicUsize>);

impl QueueSlot {
    fn take(queued: &Arc<AtomicUsize>, max_queued: usize) -> Result<QueueSlot, AuthError> {
        if queued.fetch_add(1, Ordering::SeqCst) >= max_queued {
            queued.fetch_sub(1, Ordering::SeqCst);
            return Err(AuthError::Busy);
        }
        Ok(QueueSlot(queued.clone()))
    }
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let hasher = Hasher::new(1, 8).await.expect("hasher");
        let hash = hasher.hash("correct horse".into()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(hasher.verify("correct horse".into(), hash.clone()).await.expect("verify"));
        assert!(!hasher.verify("wrong horse".into(), hash).await.expect("verify"));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_instead_of_growing() {
        let hasher = Hasher::new(1, 0).await;
        // With no room to wait, even the first hash (the dummy) is refused.
        assert!(matches!(hasher, Err(AuthError::Busy)));
    }
}
