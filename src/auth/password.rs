//! Password hashing: argon2id PHC strings with the configured cost, computed on a fixed set
//! of low-priority threads that keep their argon2 memory between hashes, so a burst of
//! logins queues (bounded) instead of allocating memory without bound or starving token
//! verification. Unknown users are checked against a dummy hash of the same cost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{Semaphore, oneshot};

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

    /// Hashes on the calling thread (blocking); see [`Hasher`] for async callers.
    pub fn hash_blocking(&self, password: &str) -> Result<String, PasswordError> {
        self.hash_with(password, &mut Vec::new())
    }

    /// Verifies on the calling thread (blocking). A stored hash that does not parse never
    /// matches.
    pub fn verify_blocking(&self, password: &str, stored: &str) -> Verification {
        self.verify_with(password, stored, &mut Vec::new())
    }

    /// Hashes with `memory` as argon2's working memory (grown as needed, then reused).
    fn hash_with(&self, password: &str, memory: &mut Vec<Block>) -> Result<String, PasswordError> {
        let salt = SaltString::generate(&mut OsRng);
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt
            .as_salt()
            .decode_b64(&mut salt_bytes)
            .map_err(PasswordError::Hash)?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone());
        let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
            argon2
                .hash_password_into_with_memory(
                    password.as_bytes(),
                    salt_bytes,
                    out,
                    working_memory(memory, &self.params),
                )
                .map_err(argon2::password_hash::Error::from)
        })
        .map_err(PasswordError::Hash)?;
        let hash = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(PasswordError::Hash)?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        };
        Ok(hash.to_string())
    }

    /// Verifies with the stored hash's own parameters, using `memory` as working memory.
    fn verify_with(&self, password: &str, stored: &str, memory: &mut Vec<Block>) -> Verification {
        let Some((matches, stored_params, is_argon2id)) = (|| {
            let parsed = PasswordHash::new(stored).ok()?;
            let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
            let version = parsed
                .version
                .map_or(Some(Version::V0x13), |v| Version::try_from(v).ok())?;
            let params = Params::try_from(&parsed).ok()?;
            let expected = parsed.hash?;
            let mut salt_bytes = [0u8; 64];
            let salt_bytes = parsed.salt?.decode_b64(&mut salt_bytes).ok()?;
            let argon2 = Argon2::new(algorithm, version, params.clone());
            let computed = Output::init_with(expected.len(), |out| {
                argon2
                    .hash_password_into_with_memory(
                        password.as_bytes(),
                        salt_bytes,
                        out,
                        working_memory(memory, &params),
                    )
                    .map_err(argon2::password_hash::Error::from)
            })
            .ok()?;
            // `Output` compares in constant time.
            Some((
                computed == expected,
                params,
                algorithm == Algorithm::Argon2id,
            ))
        })() else {
            return Verification::Mismatch;
        };
        if !matches {
            return Verification::Mismatch;
        }
        let same_cost = is_argon2id
            && stored_params.m_cost() == self.params.m_cost()
            && stored_params.t_cost() == self.params.t_cost()
            && stored_params.p_cost() == self.params.p_cost();
        Verification::Match {
            needs_rehash: !same_cost,
        }
    }
}

/// The first `params.block_count()` blocks of `memory`, growing it if needed. The blocks
/// are overwritten by argon2 before they are read, so stale contents do not matter.
fn working_memory<'a>(memory: &'a mut Vec<Block>, params: &Params) -> &'a mut [Block] {
    let needed = params.block_count();
    if memory.len() < needed {
        memory.resize(needed, Block::default());
    }
    &mut memory[..needed]
}

/// Work for a hashing thread.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// Niceness of the hashing threads: under a login storm the async workers (and with them
/// `/v1/verify`) win the CPU.
const HASH_THREAD_NICENESS: i32 = 10;

/// Runs argon2 on `concurrency` dedicated threads; at most that many hashes run or wait in
/// the queue, later callers wait for a permit.
#[derive(Debug, Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// Hashes waiting for a permit or running.
    in_queue: Arc<AtomicUsize>,
    jobs: mpsc::SyncSender<Job>,
}

impl Hasher {
    pub fn new(concurrency: usize) -> Hasher {
        let concurrency = concurrency.max(1);
        let (jobs, queue) = mpsc::sync_channel::<Job>(concurrency);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..concurrency {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("authd-hash-{n}"))
                .spawn(move || hashing_thread(&queue));
            if let Err(err) = spawned {
                tracing::error!(error = %err, "cannot start a hashing thread");
            }
        }
        Hasher {
            permits: Arc::new(Semaphore::new(concurrency)),
            in_queue: Arc::new(AtomicUsize::new(0)),
            jobs,
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
        self.run(move |memory| cost.hash_with(password.expose(), memory))
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
        self.run(move |memory| cost.verify_with(password.expose(), &stored, memory))
            .await
    }

    async fn run<T, F>(&self, work: F) -> Result<T, PasswordError>
    where
        F: FnOnce(&mut Vec<Block>) -> T + Send + 'static,
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
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _ = reply.send(work(memory));
            drop(permit);
        });
        // A permit guarantees a free slot in the channel, so this does not block.
        self.jobs.send(job).map_err(|_| PasswordError::Closed)?;
        answer.await.map_err(|_| PasswordError::Closed)
    }
}

fn hashing_thread(queue: &Mutex<mpsc::Receiver<Job>>) {
    let tid = rustix::thread::gettid();
    if let Err(err) = rustix::process::setpriority_process(Some(tid), HASH_THREAD_NICENESS) {
        tracing::debug!(error = %err, "cannot lower the hashing thread's priority");
    }
    let mut memory = Vec::new();
    loop {
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else {
            return;
        };
        // A panicking hash must not take the thread (and a share of the pool) with it.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut memory))).is_err() {
            tracing::error!("a password hash panicked");
            memory = Vec::new();
        }
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
