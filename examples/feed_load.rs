//! Load client of the revocation feed for `bench/run --only feed` (bench/README.md): many
//! Server-Sent Events clients at once, and a revoker making revocations at a fixed rate.
//!
//! ```sh
//! # 1,000 SSE clients; prints `connected 1000 failed 0` once every one has its `200`, then
//! # records when each client receives each event, until stdin says `finish N MS` (wait until
//! # every client has N events named PREFIX…, at most MS ms), stdin ends, SIGTERM, or
//! # --duration; then prints a JSON summary on stdout.
//! feed_load listen --url http://127.0.0.1:8080 --feed-token-file data/feed.token \
//!     --clients 1000 --prefix bench-
//! # 200 revocations/s for 10 s: admin POST /admin/v1/revocations {"jti": "<prefix><n>"} on a
//! # few keep-alive connections, open loop (request n is sent at start + n/rate); prints a JSON
//! # list of each request's send time and answer time on stdout.
//! feed_load revoke --admin-url http://127.0.0.1:8081 --admin-token-file data/admin.token \
//!     --rate 200 --duration 10 --prefix bench-
//! ```
//!
//! Times are wall-clock microseconds since the UNIX epoch (`SystemTime`), so the harness can
//! compare one process's receive times with the other's send times (same machine, same
//! clock). A receive time is taken when the read that completed the event returns: every
//! event of one read gets the same time.
//!
//! HTTP/1.1 is spoken by hand over tokio `TcpStream`s (the chunked body, the event stream):
//! a thousand reqwest streams would cost more than the daemon they measure. Only loopback
//! `http://host:port` URLs are supported.

// A load generator measures real time against a daemon on the system clock.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::io::BufRead as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};

#[derive(Parser)]
#[command(about = "Revocation-feed load client for bench/run")]
struct Args {
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2, global = true)]
    threads: usize,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Hold many SSE connections and record when each event reaches each of them.
    Listen(ListenArgs),
    /// Make revocations at a fixed rate through the admin API.
    Revoke(RevokeArgs),
}

#[derive(clap::Args)]
struct ListenArgs {
    /// authd's public listener, `http://host:port`.
    #[arg(long)]
    url: String,
    #[arg(long)]
    feed_token_file: PathBuf,
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Connections being opened at once (the others wait their turn).
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Only events whose id starts with this are recorded.
    #[arg(long, default_value = "bench-")]
    prefix: String,
    /// Stop after this many seconds (0: only on stdin's `finish`, its end, or SIGTERM).
    #[arg(long, default_value_t = 0.0)]
    duration: f64,
}

#[derive(clap::Args)]
struct RevokeArgs {
    /// authd's admin listener, `http://host:port`.
    #[arg(long)]
    admin_url: String,
    #[arg(long)]
    admin_token_file: PathBuf,
    /// Revocations per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Keep-alive connections the requests are spread over.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// The jtis revoked are `<prefix><n>`.
    #[arg(long, default_value = "bench-")]
    prefix: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("building the runtime")?;
    match args.mode {
        Mode::Listen(listen_args) => runtime.block_on(listen(listen_args)),
        Mode::Revoke(revoke_args) => runtime.block_on(revoke(revoke_args)),
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// `http://host:port[/]` → `host:port`.
fn authority(url: &str) -> anyhow::Result<String> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("only http:// URLs are supported: {url}");
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        bail!("the URL must be http://host:port: {url}");
    }
    Ok(authority.to_owned())
}

fn read_token(path: &PathBuf) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.trim().to_owned())
}

// ---------------------------------------------------------------------------------------
// HTTP/1.1 by hand

struct Head {
    status: u16,
    chunked: bool,
    content_length: Option<usize>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads until the end of a response head; what follows it stays in `buf`.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<Head> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let mut lines = text.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            let status = status_line
                .split(' ')
                .nth(1)
                .and_then(|code| code.parse().ok())
                .with_context(|| format!("bad status line {status_line:?}"))?;
            let mut head = Head {
                status,
                chunked: false,
                content_length: None,
            };
            for line in lines {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
                if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
                    head.chunked = true;
                } else if name == "content-length" {
                    head.content_length = value.parse().ok();
                }
            }
            return Ok(head);
        }
        if read_more(stream, buf).await? == 0 {
            bail!("connection closed before a response head");
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<usize> {
    let mut chunk = [0_u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Decodes a chunked body incrementally: complete chunks of `raw` move to `out`.
/// Returns true once the last (empty) chunk has been seen.
fn dechunk(raw: &mut Vec<u8>, out: &mut Vec<u8>) -> anyhow::Result<bool> {
    let mut at = 0;
    let done = loop {
        let Some(line_end) = find(&raw[at..], b"\r\n") else {
            break false;
        };
        let size_text = String::from_utf8_lossy(&raw[at..at + line_end]).into_owned();
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        let data = at + line_end + 2;
        if size == 0 {
            break true;
        }
        if raw.len() < data + size + 2 {
            break false;
        }
        out.extend_from_slice(&raw[data..data + size]);
        at = data + size + 2;
    };
    raw.drain(..at);
    Ok(done)
}

/// Reads a whole response (content-length or chunked body) from a keep-alive connection.
async fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let head = read_head(stream, buf).await?;
    let mut body = Vec::new();
    if head.chunked {
        while !dechunk(buf, &mut body)? {
            if read_more(stream, buf).await? == 0 {
                bail!("connection closed within a chunked body");
            }
        }
        // A complete last chunk is `0\r\n\r\n` (no trailers from authd).
        if let Some(end) = find(buf, b"\r\n\r\n") {
            buf.drain(..end + 4);
        }
    } else {
        let length = head.content_length.unwrap_or(0);
        while buf.len() < length {
            if read_more(stream, buf).await? == 0 {
                bail!("connection closed within a body");
            }
        }
        body = buf.drain(..length).collect();
    }
    Ok((head.status, body))
}

// ---------------------------------------------------------------------------------------
// listen

struct Shared {
    prefix: String,
    /// Event id → its index in `ids`.
    interner: Mutex<(HashMap<String, u32>, Vec<String>)>,
    /// Per client: events recorded (those with the prefix).
    counts: Vec<AtomicU32>,
    /// Per client: connected with 200 and not ended since.
    live: Vec<AtomicBool>,
    connected: AtomicUsize,
    attempted: AtomicUsize,
}

impl Shared {
    fn intern(&self, id: &str) -> u32 {
        let mut guard = self.interner.lock().unwrap_or_else(PoisonError::into_inner);
        let (map, ids) = &mut *guard;
        if let Some(&index) = map.get(id) {
            return index;
        }
        let index = u32::try_from(ids.len()).unwrap_or(u32::MAX);
        ids.push(id.to_owned());
        map.insert(id.to_owned(), index);
        index
    }
}

/// What one client saw.
#[derive(Default)]
struct ClientRecord {
    /// `None`: connected with 200; else why not.
    failure: Option<String>,
    /// The stream ended (or failed) before the listener stopped.
    dropped: Option<String>,
    /// (event index, receive time in µs).
    events: Vec<(u32, u64)>,
    keep_alives: u32,
}

async fn listen(args: ListenArgs) -> anyhow::Result<()> {
    let authority = authority(&args.url)?;
    let token = read_token(&args.feed_token_file)?;
    let request = format!(
        "GET /v1/revocations/feed HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\n\
         Accept: text/event-stream\r\n\r\n"
    );
    let shared = Arc::new(Shared {
        prefix: args.prefix.clone(),
        interner: Mutex::new((HashMap::new(), Vec::new())),
        counts: (0..args.clients).map(|_| AtomicU32::new(0)).collect(),
        live: (0..args.clients).map(|_| AtomicBool::new(false)).collect(),
        connected: AtomicUsize::new(0),
        attempted: AtomicUsize::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(args.clients.max(1));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for index in 0..args.clients {
        let client = Client {
            index,
            authority: authority.clone(),
            request: request.clone(),
            shared: shared.clone(),
            stop: stop_rx.clone(),
            gate: gate.clone(),
            ready: ready_tx.clone(),
        };
        tasks.push(tokio::spawn(client.run()));
    }
    drop(ready_tx);
    // Every client has either its 200 or its failure.
    for _ in 0..args.clients {
        if ready_rx.recv().await.is_none() {
            break;
        }
    }
    let connected = shared.connected.load(Ordering::SeqCst);
    let connect_s = started.elapsed().as_secs_f64();
    println!("connected {connected} failed {}", args.clients - connected);
    eprintln!(
        "feed_load: {connected} of {} clients connected in {connect_s:.2} s",
        args.clients
    );

    // Commands on stdin, read by a thread of its own (tokio's stdin needs a feature authd
    // does not enable).
    let (command_tx, mut commands) = mpsc::unbounded_channel::<Option<String>>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if command_tx.send(Some(line)).is_err() {
                return;
            }
        }
        let _ = command_tx.send(None);
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let deadline = (args.duration > 0.0)
        .then(|| tokio::time::Instant::now() + Duration::from_secs_f64(args.duration));
    let mut finish: Option<(u32, u64)> = None; // (events each client must have, waited ms)
    loop {
        let until = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            command = commands.recv() => match command.flatten() {
                None => break,
                Some(line) => {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    match words.as_slice() {
                        ["finish", count, timeout_ms] => {
                            let count: u32 = count.parse().context("finish COUNT TIMEOUT_MS")?;
                            let timeout_ms: u64 = timeout_ms.parse().context("finish COUNT TIMEOUT_MS")?;
                            finish = Some(wait_for(&shared, count, Duration::from_millis(timeout_ms)).await);
                            break;
                        }
                        [] => {}
                        _ => eprintln!("feed_load: unknown command {line:?}"),
                    }
                }
            },
            _ = term.recv() => break,
            () = until => break,
        }
    }
    let _ = stop_tx.send(true);
    let mut records = Vec::with_capacity(tasks.len());
    for task in tasks {
        records.push(task.await.unwrap_or_default());
    }
    print_summary(&args, &shared, &records, connect_s, finish);
    Ok(())
}

/// Waits until every connected client has `count` recorded events, at most `timeout`;
/// returns (count, the milliseconds waited).
async fn wait_for(shared: &Shared, count: u32, timeout: Duration) -> (u32, u64) {
    let started = Instant::now();
    loop {
        let behind = shared
            .counts
            .iter()
            .zip(&shared.live)
            .any(|(c, live)| live.load(Ordering::Relaxed) && c.load(Ordering::Relaxed) < count);
        if !behind || started.elapsed() >= timeout {
            return (
                count,
                u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn print_summary(
    args: &ListenArgs,
    shared: &Shared,
    records: &[ClientRecord],
    connect_s: f64,
    finish: Option<(u32, u64)>,
) {
    let ids = {
        let guard = shared
            .interner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        guard.1.clone()
    };
    // Per event: the receive time of every client that got it.
    let mut times: Vec<Vec<u64>> = vec![Vec::new(); ids.len()];
    for record in records {
        for &(index, at) in &record.events {
            if let Some(list) = times.get_mut(index as usize) {
                list.push(at);
            }
        }
    }
    let mut events = serde_json::Map::new();
    for (id, mut list) in ids.into_iter().zip(times) {
        list.sort_unstable();
        let first = list.first().copied().unwrap_or(0);
        let offsets: Vec<u64> = list.iter().map(|t| t - first).collect();
        events.insert(
            id,
            serde_json::json!({ "first_us": first, "count": list.len(), "offsets_us": offsets }),
        );
    }
    let mut failures: HashMap<String, usize> = HashMap::new();
    let mut dropped: HashMap<String, usize> = HashMap::new();
    for record in records {
        if let Some(why) = &record.failure {
            *failures.entry(why.clone()).or_default() += 1;
        }
        if let Some(why) = &record.dropped {
            *dropped.entry(why.clone()).or_default() += 1;
        }
    }
    let summary = serde_json::json!({
        "clients": args.clients,
        "connected": shared.connected.load(Ordering::SeqCst),
        "connect_s": connect_s,
        "failures": failures,
        "dropped": dropped,
        "keep_alives": records.iter().map(|r| u64::from(r.keep_alives)).sum::<u64>(),
        "finish": finish.map(|(count, waited_ms)| serde_json::json!({"count": count, "waited_ms": waited_ms})),
        "events": events,
    });
    println!("{summary}");
}

struct Client {
    index: usize,
    authority: String,
    request: String,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    gate: Arc<Semaphore>,
    ready: mpsc::Sender<()>,
}

impl Client {
    async fn run(mut self) -> ClientRecord {
        let mut record = ClientRecord::default();
        let mut buf = Vec::with_capacity(4096);
        let connected = {
            let _permit = self.gate.acquire().await;
            self.shared.attempted.fetch_add(1, Ordering::SeqCst);
            self.open(&mut buf).await
        };
        let (mut stream, chunked) = match connected {
            Ok(ok) => ok,
            Err(err) => {
                record.failure = Some(format!("{err:#}"));
                let _ = self.ready.send(()).await;
                return record;
            }
        };
        self.shared.connected.fetch_add(1, Ordering::SeqCst);
        self.shared.live[self.index].store(true, Ordering::SeqCst);
        let _ = self.ready.send(()).await;
        let mut body = Vec::with_capacity(4096);
        let mut chunk = vec![0_u8; 16 * 1024];
        let mut ended = false;
        loop {
            // Whatever is already buffered first (the head's read may have brought events).
            if chunked {
                match dechunk(&mut buf, &mut body) {
                    Ok(done) => ended |= done,
                    Err(err) => {
                        record.dropped = Some(format!("{err:#}"));
                        break;
                    }
                }
            } else {
                body.append(&mut buf);
            }
            if !body.is_empty() {
                self.events(&mut body, now_us(), &mut record);
            }
            if ended {
                record.dropped = Some("the stream ended".into());
                break;
            }
            tokio::select! {
                read = stream.read(&mut chunk) => match read {
                    Ok(0) => {
                        record.dropped = Some("connection closed".into());
                        break;
                    }
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(err) => {
                        record.dropped = Some(format!("read: {err}"));
                        break;
                    }
                },
                _ = self.stop.changed() => break,
            }
        }
        self.shared.live[self.index].store(false, Ordering::SeqCst);
        record
    }

    async fn open(&self, buf: &mut Vec<u8>) -> anyhow::Result<(TcpStream, bool)> {
        let mut stream = TcpStream::connect(&self.authority)
            .await
            .context("connect")?;
        stream.set_nodelay(true)?;
        stream
            .write_all(self.request.as_bytes())
            .await
            .context("write")?;
        let head = read_head(&mut stream, buf).await?;
        if head.status != 200 {
            bail!("status {}", head.status);
        }
        Ok((stream, head.chunked))
    }

    /// Takes the complete events out of `body`, each received at `at`.
    fn events(&self, body: &mut Vec<u8>, at: u64, record: &mut ClientRecord) {
        let mut at_byte = 0;
        while let Some(end) = find(&body[at_byte..], b"\n\n") {
            let block = &body[at_byte..at_byte + end];
            at_byte += end + 2;
            if block.starts_with(b":") {
                record.keep_alives += 1;
                continue;
            }
            let Some(data) = block
                .split(|&b| b == b'\n')
                .find_map(|line| line.strip_prefix(b"data: "))
            else {
                continue;
            };
            let Some(start) = find(data, b"\"id\":\"") else {
                continue;
            };
            let rest = &data[start + 6..];
            let Some(len) = rest.iter().position(|&b| b == b'"') else {
                continue;
            };
            let Ok(id) = std::str::from_utf8(&rest[..len]) else {
                continue;
            };
            if id.starts_with(self.shared.prefix.as_str()) {
                record.events.push((self.shared.intern(id), at));
                self.shared.counts[self.index].fetch_add(1, Ordering::Relaxed);
            }
        }
        body.drain(..at_byte);
    }
}

// ---------------------------------------------------------------------------------------
// revoke

async fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    if args.rate <= 0.0 || args.duration <= 0.0 {
        bail!("--rate and --duration must be positive");
    }
    let authority = authority(&args.admin_url)?;
    let token = read_token(&args.admin_token_file)?;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let total = (args.rate * args.duration).round() as usize;
    let next = Arc::new(AtomicUsize::new(0));
    // A little ahead, so every connection is open when the schedule starts.
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let mut tasks = Vec::new();
    for _ in 0..args.connections.max(1) {
        let mut stream = TcpStream::connect(&authority)
            .await
            .context("connect to the admin listener")?;
        stream.set_nodelay(true)?;
        let next = next.clone();
        let authority = authority.clone();
        let token = token.clone();
        let prefix = args.prefix.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut buf = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= total {
                    break;
                }
                let due = start + interval * u32::try_from(n).unwrap_or(u32::MAX);
                tokio::time::sleep_until(due).await;
                let jti = format!("{prefix}{n}");
                let body = format!("{{\"jti\":\"{jti}\"}}");
                let request = format!(
                    "POST /admin/v1/revocations HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let late_us = u64::try_from(tokio::time::Instant::now().saturating_duration_since(due).as_micros())
                    .unwrap_or(u64::MAX);
                let send_us = now_us();
                let answer = match stream.write_all(request.as_bytes()).await {
                    Ok(()) => read_response(&mut stream, &mut buf).await,
                    Err(err) => Err(err.into()),
                };
                let ok_us = now_us();
                let (status, error) = match answer {
                    Ok((status, _)) => (status, None),
                    Err(err) => (0, Some(format!("{err:#}"))),
                };
                out.push(serde_json::json!({
                    "jti": jti, "status": status, "send_us": send_us, "ok_us": ok_us,
                    "late_us": late_us, "error": error,
                }));
                if error.is_some() {
                    // A fresh connection for the rest of this task's share.
                    buf.clear();
                    match TcpStream::connect(&authority).await {
                        Ok(fresh) => stream = fresh,
                        Err(_) => break,
                    }
                    let _ = stream.set_nodelay(true);
                }
            }
            out
        }));
    }
    let began = now_us();
    let mut requests = Vec::with_capacity(total);
    for task in tasks {
        requests.extend(task.await.unwrap_or_default());
    }
    let summary = serde_json::json!({
        "rate": args.rate,
        "duration_s": args.duration,
        "requested": total,
        "wall_s": (now_us().saturating_sub(began)) as f64 / 1e6,
        "requests": requests,
    });
    println!("{summary}");
    Ok(())
}
