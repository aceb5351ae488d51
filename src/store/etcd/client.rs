//! The connection to etcd: made on first use (so `serve` starts while etcd is down), every
//! call bounded by `etcd.request_timeout` (reloadable), and etcd's errors turned into what
//! failed. Requests carry etcd's require-leader flag: a member cut off from its leader
//! answers "no leader" at once instead of serving stale data or hanging.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, GetResponse, Identity, TlsOptions, Txn,
    TxnResponse,
};

use crate::store::StoreError;

/// How to reach etcd: the `[etcd]` settings, with the files already read.
#[derive(Clone, Default)]
pub struct ClientOptions {
    pub endpoints: Vec<String>,
    pub dial_timeout: Duration,
    pub request_timeout: Duration,
    /// PEM of the CA that signed etcd's certificates.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM of the client certificate and its key.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// etcd user and password.
    pub user: Option<(String, String)>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password or the key.
        f.debug_struct("ClientOptions")
            .field("endpoints", &self.endpoints)
            .field("tls", &self.ca_pem.is_some())
            .field("user", &self.user.as_ref().map(|(name, _)| name))
            .finish_non_exhaustive()
    }
}

/// Why an etcd call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach etcd: {0}")]
    Connect(String),
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
}

impl CallError {
    /// The member never acted on the request (it could not be reached, or refused it with
    /// "unavailable", e.g. for want of a leader): another member may take it as is.
    fn was_not_sent(&self) -> bool {
        match self {
            CallError::Etcd(etcd_client::Error::TransportError(_)) => true,
            CallError::Etcd(etcd_client::Error::GRpcStatus(status)) => status.code() as i32 == 14,
            CallError::Connect(_) => true,
            _ => false,
        }
    }

    /// The member did not answer as a member of a working cluster should (unreachable, cut
    /// off from its leader, timed out): the next call tries the next endpoint.
    fn is_member_failure(&self) -> bool {
        match self {
            CallError::Timeout(_) | CallError::Connect(_) => true,
            CallError::Etcd(
                etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_),
            ) => true,
            // gRPC codes: Cancelled 1, Unknown 2, DeadlineExceeded 4, Internal 13,
            // Unavailable 14 (tonic's enum, which authd does not name directly).
            CallError::Etcd(etcd_client::Error::GRpcStatus(status)) => {
                matches!(status.code() as i32, 1 | 2 | 4 | 13 | 14)
            }
            CallError::Etcd(_) => false,
        }
    }

    /// The lease a put named has expired (a cached bucket lease outlived by its TTL).
    pub fn is_lease_gone(&self) -> bool {
        matches!(self, CallError::Etcd(err) if err.to_string().contains("requested lease not found"))
    }
}

impl From<CallError> for StoreError {
    fn from(err: CallError) -> StoreError {
        StoreError::Unavailable(err.to_string())
    }
}

/// A lazily connected etcd client.
pub struct EtcdClient {
    options: ClientOptions,
    client: tokio::sync::Mutex<Option<Client>>,
    request_timeout_ms: AtomicU64,
    /// The endpoint the next connection goes to: one member at a time, the next one after
    /// a failure (etcd's own balancing keeps sending to a dead member).
    next_endpoint: AtomicUsize,
}

impl EtcdClient {
    pub fn new(options: ClientOptions) -> EtcdClient {
        let timeout = millis(options.request_timeout);
        EtcdClient {
            options,
            client: tokio::sync::Mutex::new(None),
            request_timeout_ms: AtomicU64::new(timeout),
            next_endpoint: AtomicUsize::new(0),
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.load(Ordering::Relaxed))
    }

    pub fn set_request_timeout(&self, timeout: Duration) {
        self.request_timeout_ms
            .store(millis(timeout), Ordering::Relaxed);
    }

    /// The connected client (connecting now if need be, within `etcd.dial_timeout`).
    pub async fn connected(&self) -> Result<Client, CallError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let dial = self.options.dial_timeout;
        let count = self.options.endpoints.len().max(1);
        let index = self.next_endpoint.load(Ordering::Relaxed) % count;
        let endpoint = self
            .options
            .endpoints
            .get(index)
            .cloned()
            .unwrap_or_default();
        let connected = tokio::time::timeout(
            dial,
            Client::connect([endpoint], Some(self.connect_options()?)),
        )
        .await;
        let client = match connected {
            Ok(Ok(client)) => client,
            Ok(Err(err)) => {
                self.next_endpoint.fetch_add(1, Ordering::Relaxed);
                return Err(CallError::Etcd(err));
            }
            Err(_) => {
                self.next_endpoint.fetch_add(1, Ordering::Relaxed);
                return Err(CallError::Timeout(dial));
            }
        };
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Forgets the connection after a member failure: the next call connects to the next
    /// endpoint.
    pub async fn member_failed(&self) {
        let mut slot = self.client.lock().await;
        if slot.take().is_some() {
            self.next_endpoint.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn connect_options(&self) -> Result<ConnectOptions, CallError> {
        let options = &self.options;
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.dial_timeout)
            .with_keep_alive(Duration::from_secs(2), options.dial_timeout)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let Some((name, password)) = &options.user {
            connect = connect.with_user(name.clone(), password.clone());
        }
        let secure = options
            .endpoints
            .iter()
            .any(|endpoint| endpoint.starts_with("https://"));
        if secure || options.ca_pem.is_some() || options.identity_pem.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &options.ca_pem {
                tls = tls.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &options.identity_pem {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            connect = connect.with_tls(tls);
        }
        Ok(connect)
    }

    async fn within<T>(
        &self,
        timeout: Duration,
        call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, CallError> {
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(result) => result.map_err(CallError::from),
            Err(_) => Err(CallError::Timeout(timeout)),
        };
        if let Err(err) = &result
            && err.is_member_failure()
        {
            self.member_failed().await;
        }
        result
    }

    /// A transaction that may safely run twice (reads, compare-and-swaps whose loser
    /// re-reads, plain deletions): on a member failure it goes to the next member at once.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, CallError> {
        self.idempotent(|mut client| {
            let txn = txn.clone();
            async move { client.txn(txn).await }
        })
        .await
    }

    /// A commit's transaction, given `timeout` (the commit keeps the rest of its budget to
    /// read an uncertain outcome back). Sent again only where the member refused it before
    /// acting on it: anything else may have applied, and only a read-back can tell.
    pub async fn commit_within(
        &self,
        txn: Txn,
        timeout: Duration,
    ) -> Result<TxnResponse, CallError> {
        let mut tries = self.tries();
        loop {
            let result = match self.connected().await {
                Ok(mut client) => self.within(timeout, client.txn(txn.clone())).await,
                Err(err) => Err(err),
            };
            match result {
                Err(err) if err.was_not_sent() && tries > 1 => tries -= 1,
                other => return other,
            }
        }
    }

    pub async fn get(
        &self,
        key: Vec<u8>,
        options: Option<GetOptions>,
    ) -> Result<GetResponse, CallError> {
        self.idempotent(|mut client| {
            let (key, options) = (key.clone(), options.clone());
            async move { client.get(key, options).await }
        })
        .await
    }

    /// Runs `call`, which may safely run twice, on the next member after a member failure,
    /// once per endpoint; all tries together bounded by the request timeout.
    async fn idempotent<T, Call, Answer>(&self, call: Call) -> Result<T, CallError>
    where
        Call: Fn(Client) -> Answer,
        Answer: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let timeout = self.request_timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tries = self.tries();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let result = match self.connected().await {
                Ok(client) => self.within(left, call(client)).await,
                Err(err) => Err(err),
            };
            match result {
                Err(err) if err.is_member_failure() && tries > 1 && !left.is_zero() => {
                    tries -= 1;
                }
                Err(CallError::Timeout(_)) => return Err(CallError::Timeout(timeout)),
                other => return other,
            }
        }
    }

    /// One try per endpoint for a call that failed on its member.
    fn tries(&self) -> usize {
        self.options.endpoints.len().max(1)
    }

    /// Ends the lease `id` (its keys go with it).
    pub async fn lease_revoke(&self, id: i64) -> Result<(), CallError> {
        let mut client = self.connected().await?;
        self.within(Duration::from_secs(1), client.lease_revoke(id))
            .await
            .map(|_| ())
    }

    /// A new lease of `ttl` seconds; its id.
    pub async fn lease_grant(&self, ttl: i64) -> Result<i64, CallError> {
        // Granting twice only leaves a lease unused until its TTL.
        let response = self
            .idempotent(|mut client| async move { client.lease_grant(ttl, None).await })
            .await?;
        Ok(response.id())
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
