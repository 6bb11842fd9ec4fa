//! Argon2id password hashing on a fixed set of dedicated threads.
//!
//! A hash takes tens of milliseconds of CPU and 19 MiB of memory, so hashing on the async runtime
//! would stall every socket, and hashing without a bound would let a login storm exhaust memory.
//! A few long-lived threads do all the hashing: each reuses the memory of its previous hash (on
//! Tokio's blocking pool, every fresh thread would keep 19 MiB of its own, and the gateway grew
//! by gigabytes under a login storm). A counter bounds the hashes waiting for a thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::oneshot;

use crate::AuthError;

/// OWASP's Argon2id parameters: 19 MiB of memory, 2 iterations, 1 lane.
const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const LANES: u32 = 1;

type Job = Box<dyn FnOnce() + Send>;

pub(crate) struct Hasher {
    jobs: Mutex<mpsc::Sender<Job>>,
    /// Hashes submitted and not finished; at most `threads + max_queued`.
    in_flight: Arc<AtomicUsize>,
    capacity: usize,
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
    /// Starts `threads` hashing threads; they end when the hasher is dropped.
    pub(crate) async fn new(threads: usize, max_queued: usize) -> Result<Self, AuthError> {
        let (jobs, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let threads = threads.max(1);
        for n in 0..threads {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job, never while hashing.
                        let job = match receiver.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| AuthError::Hashing(format!("cannot start a hashing thread: {e}")))?;
        }
        let mut hasher = Hasher {
            jobs: Mutex::new(jobs),
            in_flight: Arc::default(),
            capacity: threads + max_queued,
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
        let slot = Slot::take(&self.in_flight, self.capacity)?;
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let result = work();
            // Given back before the caller hears of the result, so its next hash finds the place.
            drop(slot);
            // The caller may have gone (its connection closed); the result is then dropped.
            let _ = done.send(result);
        });
        let sent = self.jobs.lock().map_err(|_| AuthError::Hashing("hasher poisoned".into()))?.send(job);
        sent.map_err(|_| AuthError::Hashing("the hashing threads have stopped".into()))?;
        result.await.map_err(|_| AuthError::Hashing("a hashing thread died".into()))?
    }
}

/// A place among the hashes in flight, given back when the job that holds it ends.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(in_flight: &Arc<AtomicUsize>, capacity: usize) -> Result<Slot, AuthError> {
        if in_flight.fetch_add(1, Ordering::SeqCst) >= capacity {
            in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(AuthError::Busy);
        }
        Ok(Slot(in_flight.clone()))
    }
}

impl Drop for Slot {
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

    #[test]
    fn a_full_queue_refuses_instead_of_growing() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let first = Slot::take(&in_flight, 2).expect("room");
        let _second = Slot::take(&in_flight, 2).expect("room");
        assert!(matches!(Slot::take(&in_flight, 2), Err(AuthError::Busy)));
        drop(first);
        assert!(Slot::take(&in_flight, 2).is_ok(), "a finished hash frees its place");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_finished_hash_has_given_back_its_place_when_its_caller_hears_of_it() {
        // Room for one hash: each caller waits for its own, so none is ever refused as busy.
        let hasher = Hasher::new(1, 0).await.expect("hasher");
        for n in 0..200 {
            hasher.verify_dummy(format!("password {n}")).await.expect("a hash after the last one finished");
        }
    }

    #[tokio::test]
    async fn many_concurrent_hashes_all_complete_on_few_threads() {
        let hasher = Arc::new(Hasher::new(2, 64).await.expect("hasher"));
        let hashes = (0..8).map(|n| {
            let hasher = hasher.clone();
            tokio::spawn(async move { hasher.hash(format!("password {n}")).await })
        });
        for hash in hashes {
            assert!(hash.await.expect("task").is_ok());
        }
    }
}
