//! The HTTP side of the admin commands: where the admin listener is, the admin token, one
//! request at a time (or a paged list followed to its end), and every failure turned into
//! a sentence a person can act on.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::Config;

/// How long to wait for the TCP connection; the listener is normally on this host.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Page size asked for when following a list to its end (the server's maximum).
const PAGE_LIMIT: u32 = 1000;
/// How long one request may take: generous, because setting a password hashes it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a download (a backup of millions of records) may take.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// The admin API token. Its `Debug` never shows it.
struct AdminToken(String);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken([redacted])")
    }
}

/// A client of one daemon's admin listener, authenticated with the admin API token.
#[derive(Debug)]
pub struct AdminClient {
    http: reqwest::Client,
    addr: SocketAddr,
    token: AdminToken,
    token_file: PathBuf,
}

/// What a failed request was about, so a `404` or a `409` can be said precisely.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// A user named on the command line.
    User(&'a str),
    /// Anything else (lists, jti/sid revocations).
    Other,
}

/// An error body of the API: `{"error", "error_description"}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    error_description: Option<String>,
}

impl AdminClient {
    /// Reads the admin token from `admin.token_file` and aims at `server.admin_listen`.
    pub fn new(config: &Config) -> anyhow::Result<AdminClient> {
        let addr = connect_addr(config.server.admin_listen)?;
        let token_file = config.admin.token_file.clone();
        let token = read_token(&token_file)?;
        let http = reqwest::Client::builder()
            // The admin listener is reached directly, never through an HTTP_PROXY.
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("authd-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(AdminClient {
            http,
            addr,
            token,
            token_file,
        })
    }

    /// Sends one request and decodes a successful JSON answer (`None` for `204`).
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        action: &str,
        subject: Subject<'_>,
    ) -> anyhow::Result<Option<T>> {
        let url = format!("http://{}{path}", self.addr);
        let mut request = self.http.request(method, url).bearer_auth(&self.token.0);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|err| self.transport_error(&err))?;
        let status = response.status();
        if status.is_success() {
            if status == StatusCode::NO_CONTENT {
                return Ok(None);
            }
            let value = response
                .json::<T>()
                .await
                .with_context(|| format!("cannot {action}: unexpected answer from authd"))?;
            return Ok(Some(value));
        }
        let text = response.text().await.unwrap_or_default();
        Err(self.api_error(status, &text, action, subject))
    }

    /// Like [`call`](Self::call) for routes that always answer with a body.
    pub async fn fetch<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        action: &str,
        subject: Subject<'_>,
    ) -> anyhow::Result<T> {
        self.call(method, path, body, action, subject)
            .await?
            .ok_or_else(|| anyhow!("cannot {action}: authd answered without a body"))
    }

    /// Writes the body of `GET path` to `out` as it arrives; answers how many bytes.
    pub async fn download(
        &self,
        path: &str,
        out: &mut dyn std::io::Write,
        action: &str,
    ) -> anyhow::Result<u64> {
        let url = format!("http://{}{path}", self.addr);
        let mut response = self
            .http
            .get(url)
            .bearer_auth(&self.token.0)
            .timeout(DOWNLOAD_TIMEOUT)
            .send()
            .await
            .map_err(|err| self.transport_error(&err))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(self.api_error(status, &text, action, Subject::Other));
        }
        let mut written = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(|err| {
            anyhow!(
                "cannot {action}: the transfer broke off ({})",
                root_cause(&err)
            )
        })? {
            out.write_all(&chunk)
                .with_context(|| format!("cannot {action}: cannot write"))?;
            written += chunk.len() as u64;
        }
        Ok(written)
    }

    /// Every item of a paged list (`{key: [...], "next": cursor | null}`), following `next`.
    pub async fn all_pages(
        &self,
        path: &str,
        key: &str,
        action: &str,
    ) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let url = match &after {
                Some(cursor) => format!("{path}?limit={PAGE_LIMIT}&after={}", encode(cursor)),
                None => format!("{path}?limit={PAGE_LIMIT}"),
            };
            let mut page: Value = self
                .fetch(Method::GET, &url, None, action, Subject::Other)
                .await?;
            match page.get_mut(key).map(Value::take) {
                Some(Value::Array(page_items)) => items.extend(page_items),
                _ => bail!("cannot {action}: unexpected answer from authd (no {key:?} list)"),
            }
            let next = match page.get("next") {
                Some(Value::String(next)) => next.clone(),
                Some(Value::Null) | None => return Ok(items),
                Some(_) => bail!("cannot {action}: unexpected answer from authd (bad \"next\")"),
            };
            // A cursor that does not move would loop forever.
            if after.as_deref() == Some(next.as_str()) {
                bail!("cannot {action}: authd returned the same page cursor twice");
            }
            after = Some(next);
        }
    }

    fn transport_error(&self, err: &reqwest::Error) -> anyhow::Error {
        let addr = self.addr;
        let cause = root_cause(err);
        if err.is_connect() {
            anyhow!(
                "cannot reach authd's admin listener at {addr} ({cause}): is the daemon running?"
            )
        } else if err.is_timeout() {
            anyhow!("authd's admin listener at {addr} did not answer in time ({cause})")
        } else {
            anyhow!("request to authd's admin listener at {addr} failed: {cause}")
        }
    }

    fn api_error(
        &self,
        status: StatusCode,
        text: &str,
        action: &str,
        subject: Subject<'_>,
    ) -> anyhow::Error {
        let body = serde_json::from_str::<ErrorBody>(text).ok();
        let code = body.as_ref().map_or("", |b| b.error.as_str());
        let description = body
            .as_ref()
            .and_then(|b| b.error_description.clone())
            .unwrap_or_else(|| status.to_string());
        match (status, subject) {
            // The 401 description is about bearer tokens in general ("token is malformed"),
            // which would mislead about an admin token; a 403 says what is missing.
            (StatusCode::UNAUTHORIZED, _) => anyhow!(
                "the admin token in {} was refused by authd at {} (HTTP 401)",
                self.token_file.display(),
                self.addr,
            ),
            (StatusCode::FORBIDDEN, _) => anyhow!(
                "the admin token in {} was refused by authd at {} (HTTP 403: {description})",
                self.token_file.display(),
                self.addr,
            ),
            (StatusCode::NOT_FOUND, Subject::User(name)) if code == "not_found" => {
                anyhow!("user {name} not found")
            }
            (StatusCode::CONFLICT, Subject::User(name)) => {
                anyhow!("cannot {action}: user {name} already exists")
            }
            (StatusCode::SERVICE_UNAVAILABLE, _) => {
                anyhow!("cannot {action}: authd is not ready or shutting down ({description})")
            }
            (status, _) if status.is_client_error() => anyhow!("cannot {action}: {description}"),
            (status, _) => anyhow!(
                "cannot {action}: authd answered {} ({description})",
                status.as_u16()
            ),
        }
    }
}

/// Where to connect for a listen address: an unspecified address (`0.0.0.0`, `[::]`)
/// means "every interface", so the loopback of the same family is one of them.
fn connect_addr(listen: SocketAddr) -> anyhow::Result<SocketAddr> {
    if listen.port() == 0 {
        bail!(
            "server.admin_listen is {listen}: with port 0 the daemon picks a port at random, \
             so the command cannot know where to connect"
        );
    }
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(SocketAddr::new(ip, listen.port()))
}

fn read_token(file: &Path) -> anyhow::Result<AdminToken> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the admin token file {}", file.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("the admin token file {} is empty", file.display());
    }
    Ok(AdminToken(token.to_owned()))
}

/// The innermost cause (e.g. "Connection refused (os error 111)"), without reqwest's
/// layers that repeat the URL.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// Percent-encodes one path segment or query value: everything but `A-Z a-z 0-9 - . _ ~`.
pub fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn encode_escapes_everything_outside_the_unreserved_set() {
        assert_eq!(encode("alice@example.com"), "alice%40example.com");
        assert_eq!(encode("a b/c?d%"), "a%20b%2Fc%3Fd%25");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(encode("x-y_z.~9"), "x-y_z.~9");
    }

    #[test]
    fn unspecified_listen_addresses_connect_to_loopback_of_the_same_family() {
        let v4 = connect_addr("0.0.0.0:8081".parse().unwrap()).unwrap();
        assert_eq!(v4, "127.0.0.1:8081".parse().unwrap());
        let v6 = connect_addr("[::]:8081".parse().unwrap()).unwrap();
        assert_eq!(v6, "[::1]:8081".parse().unwrap());
        let fixed = connect_addr("10.0.0.1:9000".parse().unwrap()).unwrap();
        assert_eq!(fixed, "10.0.0.1:9000".parse().unwrap());
        assert!(connect_addr("127.0.0.1:0".parse().unwrap()).is_err());
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let token = AdminToken("s3cret".into());
        assert!(!format!("{token:?}").contains("s3cret"));
    }
}
