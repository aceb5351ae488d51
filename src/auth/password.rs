//! Password hashing: argon2id PHC strings with the configured cost, computed on the blocking
//! pool behind a semaphore so a burst of logins queues instead of allocating argon2 memory
//! without bound. Unknown users are checked against a dummy hash of the same cost.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::config::PasswordConfig;

/// A password as typed by a user; never printed.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn new(password: String) -> Password {
        Password(password)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// The argon2id cost parameters of one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashCost {
    params: Params,
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("invalid argon2 parameters: {0}")]
    Params(argon2::Error),
    #[error("password hashing failed: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("the hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the hashing pool is closed")]
    Closed,
}

/// The result of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The password matches; `needs_rehash` when the hash used other parameters.
    Match {
        needs_rehash: bool,
    },
    Mismatch,
}

impl HashCost {
    pub fn new(config: &PasswordConfig) -> Result<HashCost, PasswordError> {
        let params = Params::new(
            config.argon2_memory_kib,
            config.argon2_iterations,
            config.argon2_parallelism,
            None,
        )
        .map_err(PasswordError::Params)?;
        Ok(HashCost { params })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Hashes on the calling thread (blocking); see [`Hasher`] for async callers.
    pub fn hash_blocking(&self, password: &str) -> Result<String, PasswordError> {
        let salt = SaltString::generate(&mut OsRng);
        self.argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(PasswordError::Hash)
    }

    /// Verifies on the calling thread (blocking). A stored hash that does not parse never
    /// matches.
    pub fn verify_blocking(&self, password: &str, stored: &str) -> Verification {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return Verification::Mismatch;
        };
        // The stored hash carries its own parameters; verify with those.
        if Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_err()
        {
            return Verification::Mismatch;
        }
        let same_cost = parsed.algorithm.as_str() == "argon2id"
            && Params::try_from(&parsed).is_ok_and(|params| {
                params.m_cost() == self.params.m_cost()
                    && params.t_cost() == self.params.t_cost()
                    && params.p_cost() == self.params.p_cost()
            });
        Verification::Match {
            needs_rehash: !same_cost,
        }
    }
}

/// Runs argon2 off the async workers, at most `permits` at a time.
#[derive(Debug, Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// Hashes waiting for a permit or running.
    in_queue: Arc<AtomicUsize>,
}

impl Hasher {
    pub fn new(concurrency: usize) -> Hasher {
        Hasher {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            in_queue: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Number of hashes waiting for a permit or running.
    pub fn queue_depth(&self) -> usize {
        self.in_queue.load(Ordering::Relaxed)
    }

    pub async fn hash(
        &self,
        cost: &HashCost,
        password: &Password,
    ) -> Result<String, PasswordError> {
        let cost = cost.clone();
        let password = password.clone();
        self.run(move || cost.hash_blocking(password.expose()))
            .await?
    }

    pub async fn verify(
        &self,
        cost: &HashCost,
        password: &Password,
        stored: &str,
    ) -> Result<Verification, PasswordError> {
        let cost = cost.clone();
        let password = password.clone();
        let stored = stored.to_owned();
        self.run(move || cost.verify_blocking(password.expose(), &stored))
            .await
    }

    async fn run<T, F>(&self, work: F) -> Result<T, PasswordError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.in_queue.fetch_add(1, Ordering::Relaxed);
        let _leave_queue = LeaveQueue(&self.in_queue);
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PasswordError::Closed)?;
        let result = tokio::task::spawn_blocking(move || {
            let result = work();
            drop(permit);
            result
        })
        .await?;
        Ok(result)
    }
}

/// Decrements the queue depth when a hash finishes or its caller gives up.
struct LeaveQueue<'a>(&'a AtomicUsize);

impl Drop for LeaveQueue<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn cost(memory_kib: u32) -> HashCost {
        HashCost::new(&PasswordConfig {
            min_length: 8,
            argon2_memory_kib: memory_kib,
            argon2_iterations: 1,
            argon2_parallelism: 1,
        })
        .unwrap()
    }

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let hash = cost(64).hash_blocking("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert_eq!(
            cost(64).verify_blocking("correct horse", &hash),
            Verification::Match {
                needs_rehash: false
            }
        );
        assert_eq!(
            cost(64).verify_blocking("wrong horse", &hash),
            Verification::Mismatch
        );
    }

    #[test]
    fn a_changed_cost_asks_for_a_rehash() {
        let hash = cost(64).hash_blocking("correct horse").unwrap();
        assert_eq!(
            cost(128).verify_blocking("correct horse", &hash),
            Verification::Match { needs_rehash: true }
        );
    }

    #[test]
    fn an_unparsable_stored_hash_never_matches() {
        assert_eq!(
            cost(64).verify_blocking("x", "not a hash"),
            Verification::Mismatch
        );
    }
}
