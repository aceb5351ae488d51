//! Benchmark helper, driven by `bench/run`: fills a store offline with users and revoked
//! jtis through authd's own [`Store`] API (a sled folder, or etcd under a prefix), and times
//! one argon2id hash.
//!
//! ```sh
//! # 100k users (password "bench-password", hashed once at m=64 KiB, t=1) + 1M revoked jtis
//! cargo run --release --example seed -- fill --data /tmp/authd-bench/data \
//!     --users 100000 --revocations 1000000 --memory-kib 64 --iterations 1
//! # the same in etcd, under the prefix authd's `etcd.prefix` names
//! cargo run --release --example seed -- fill --etcd http://127.0.0.31:2379 --prefix /bench/ \
//!     --users 100000 --revocations 1000000 --memory-kib 64 --iterations 1
//! # median time of one hash at the shipped defaults (m=19456 KiB, t=2, p=1), 10 runs
//! cargo run --release --example seed -- hash-time --runs 10
//! ```
//!
//! Both print one `key=value` line per result so that scripts can parse them.

// A benchmark tool: it times real work on the real clock.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use authd::auth::password::HashCost;
use authd::config::PasswordConfig;
use authd::store::etcd::ClientOptions;
use authd::store::{NewRevocation, RevocationKind, Store, Txn, UserRecord};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Seed an authd store for benchmarks, or time one argon2id hash")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create users and revoked jtis in the sled store at `--data` (authd must not be
    /// running), or in etcd at `--etcd` under `--prefix`.
    Fill(Fill),
    /// Print the median wall time of one argon2id hash with the given cost.
    HashTime(HashTime),
}

#[derive(Args)]
struct Cost {
    /// argon2id memory cost in KiB (default: authd's shipped default).
    #[arg(long, default_value_t = 19456)]
    memory_kib: u32,
    /// argon2id iterations.
    #[arg(long, default_value_t = 2)]
    iterations: u32,
    /// argon2id lanes.
    #[arg(long, default_value_t = 1)]
    parallelism: u32,
}

impl Cost {
    fn hash_cost(&self) -> anyhow::Result<HashCost> {
        Ok(HashCost::new(&PasswordConfig {
            min_length: 8,
            argon2_memory_kib: self.memory_kib,
            argon2_iterations: self.iterations,
            argon2_parallelism: self.parallelism,
        })?)
    }
}

#[derive(Args)]
struct Fill {
    /// The sled folder (authd's `storage.path`).
    #[arg(long, required_unless_present = "etcd", conflicts_with = "etcd")]
    data: Option<PathBuf>,
    /// etcd endpoints (comma-separated, or the option repeated): seed etcd instead of sled.
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// The key prefix in etcd (authd's `etcd.prefix`).
    #[arg(long, default_value = "/authd/", requires = "etcd")]
    prefix: String,
    /// Number of users, named `user000000`, `user000001`, ….
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// Number of revoked random jtis.
    #[arg(long, default_value_t = 1_000_000)]
    revocations: usize,
    /// Every user's password (hashed once; all users share the hash).
    #[arg(long, default_value = "bench-password")]
    password: String,
    /// How long the revocations are kept, in seconds from now.
    #[arg(long, default_value_t = 86_400)]
    revocation_ttl: i64,
    /// Threads writing to the store (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    cost: Cost,
}

#[derive(Args)]
struct HashTime {
    /// Number of hashes timed; the median is printed.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    #[command(flatten)]
    cost: Cost,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Fill(fill) => run_fill(&fill),
        Command::HashTime(hash_time) => run_hash_time(&hash_time),
    }
}

fn unix_now() -> anyhow::Result<i64> {
    Ok(i64::try_from(
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
    )?)
}

fn run_hash_time(args: &HashTime) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let cost = args.cost.hash_cost()?;
    // One untimed hash first: page faults of the first allocation are not the steady state.
    cost.hash_blocking("warm-up password")?;
    let mut times = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let start = Instant::now();
        cost.hash_blocking("bench-password")?;
        times.push(start.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    println!("hash_ms={:.3}", ms(median));
    println!("hash_min_ms={:.3}", ms(times[0]));
    println!("hash_max_ms={:.3}", ms(times[times.len() - 1]));
    Ok(())
}

fn run_fill(args: &Fill) -> anyhow::Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(fill(args, threads))
}

/// Writes per commit on sled: large batches make seeding a million entries take seconds.
const BATCH: usize = 1000;

/// Users per commit on etcd: one put each, within etcd's 128 operations per transaction
/// (the backend refuses a commit past that limit rather than split it).
const ETCD_USER_BATCH: usize = 120;

/// Revocations per commit on etcd: each is two puts (the entry and its place in the list)
/// and one precondition, plus the list counter's put: 2 × 60 + 1 = 121 operations. At
/// about 250 bytes a put, a commit stays far below etcd's 1.5 MiB request limit.
const ETCD_REVOCATION_BATCH: usize = 60;

/// Where the fill goes, and how it is cut into commits.
struct Target {
    store: Store,
    user_batch: usize,
    revocation_batch: usize,
    /// Concurrent committers of revocations. On etcd every commit of revocations
    /// compare-and-swaps the one list counter, so concurrent committers would only retry
    /// each other's conflicts: one at a time.
    revocation_writers: usize,
}

async fn open_target(args: &Fill, writers: usize) -> anyhow::Result<Target> {
    if let Some(data) = &args.data {
        let store = Store::open_sled(data)
            .await
            .with_context(|| format!("cannot open the store at {}", data.display()))?;
        return Ok(Target {
            store,
            user_batch: BATCH,
            revocation_batch: BATCH,
            revocation_writers: writers,
        });
    }
    if args.etcd.is_empty() {
        bail!("one of --data or --etcd is needed");
    }
    let options = ClientOptions {
        endpoints: args.etcd.clone(),
        dial_timeout: Duration::from_secs(5),
        // A commit of 121 operations on a busy 2-core machine: generous, so that a slow
        // fsync is not taken for an outage.
        request_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    Ok(Target {
        store: Store::etcd_writer(options, &args.prefix),
        user_batch: ETCD_USER_BATCH,
        revocation_batch: ETCD_REVOCATION_BATCH,
        revocation_writers: 1,
    })
}

async fn fill(args: &Fill, writers: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    let target = open_target(args, writers).await?;
    let store = &target.store;
    println!("open_s={:.3}", start.elapsed().as_secs_f64());

    let hash = args.cost.hash_cost()?.hash_blocking(&args.password)?;
    let now = unix_now()?;

    let start = Instant::now();
    let created = in_batches(store, writers, target.user_batch, args.users, |txn, i| {
        txn.put_user(UserRecord {
            // Seeded accounts are numbered above anything the store hands out later.
            account_id: u64::MAX / 2 + i as u64,
            username: format!("user{i:06}"),
            password_hash: hash.clone(),
            roles: Vec::new(),
            disabled: false,
            created_at: now,
            generation: 0,
            second_factor: None,
        });
    })
    .await?;
    let users_s = start.elapsed().as_secs_f64();
    println!("users={created}");
    println!("users_s={users_s:.3}");

    let start = Instant::now();
    let revoked = in_batches(
        store,
        target.revocation_writers,
        target.revocation_batch,
        args.revocations,
        |txn, _| {
            txn.revoke(&NewRevocation {
                kind: RevocationKind::Jti,
                id: authd::random::random_id(16),
                revoked_at: now,
                expires_at: now + args.revocation_ttl,
                reason: None,
                ended_sessions: Vec::new(),
                serial: None,
            });
        },
    )
    .await?;
    let revocations_s = start.elapsed().as_secs_f64();
    println!("revocations={revoked}");
    println!("revocations_s={revocations_s:.3}");
    if revocations_s > 0.0 {
        println!(
            "revocations_per_s={:.0}",
            revoked as f64 / revocations_s.max(1e-9)
        );
    }

    let start = Instant::now();
    store.close()?;
    println!("flush_s={:.3}", start.elapsed().as_secs_f64());
    Ok(())
}

/// Adds `write(txn, i)` for every `i` in `0..count`, committing `batch` at a time from
/// `writers` concurrent committers; returns how many were written.
async fn in_batches<F>(
    store: &Store,
    writers: usize,
    batch: usize,
    count: usize,
    write: F,
) -> anyhow::Result<usize>
where
    F: Fn(&mut Txn, usize) + Sync,
{
    let next = AtomicUsize::new(0);
    let committer = || async {
        let mut done = 0;
        loop {
            let first = next.fetch_add(batch, Ordering::Relaxed);
            if first >= count {
                return anyhow::Ok(done);
            }
            let mut txn = Txn::default();
            for i in first..(first + batch).min(count) {
                write(&mut txn, i);
            }
            let writes = txn.writes.len();
            store
                .commit(txn)
                .await
                .with_context(|| format!("committing entries {first}..{}", first + writes))?;
            done += writes;
        }
    };
    let results = futures_util::future::join_all((0..writers).map(|_| committer())).await;
    results.into_iter().sum()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
