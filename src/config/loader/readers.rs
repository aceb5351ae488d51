//! The typed readers of [`Loader`]: each reads one key (string, number, duration, address,
//! list, path, …), records a refused value with its key and source, and goes on with the
//! default so that every problem is reported at once.

use super::*;

impl Loader<'_> {
    /// Reads `key` with `convert`; a missing key is `default`, a refused one is recorded
    /// and replaced by `default` so that reading goes on.
    pub(super) fn read<T>(
        &mut self,
        key: &'static str,
        default: T,
        convert: impl FnOnce(Raw<'_>) -> Result<T, String>,
    ) -> T {
        self.known.insert(key);
        let result = match self.raw(key) {
            Some(raw) => convert(raw),
            None => return default,
        };
        result.unwrap_or_else(|message| {
            self.problem(key, &message);
            default
        })
    }

    // --- typed readers ------------------------------------------------------------------

    pub(super) fn string(
        &mut self,
        key: &'static str,
        default: &str,
        check: impl FnOnce(&str) -> Result<(), String>,
    ) -> String {
        self.read(key, default.to_string(), |raw| {
            let text = text_of(&raw)?;
            check(&text)?;
            Ok(text)
        })
    }

    pub(super) fn non_empty(&mut self, key: &'static str, default: &str) -> String {
        self.string(key, default, |text| {
            if text.is_empty() {
                Err("must not be empty".to_string())
            } else {
                Ok(())
            }
        })
    }

    /// A string where `""` means "not set".
    pub(super) fn optional(
        &mut self,
        key: &'static str,
        check: impl FnOnce(&str) -> Result<(), String>,
    ) -> Option<String> {
        let text = self.string(
            key,
            "",
            |text| if text.is_empty() { Ok(()) } else { check(text) },
        );
        Some(text).filter(|text| !text.is_empty())
    }

    pub(super) fn int<T: TryFrom<u64>>(
        &mut self,
        key: &'static str,
        default: T,
        range: RangeInclusive<u64>,
    ) -> T {
        self.read(key, default, |raw| {
            let number = match raw {
                Raw::Text(text) => text
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("invalid number {text:?}: expected a whole number"))?,
                Raw::Value(Value {
                    kind: ValueKind::I64(number),
                    ..
                }) => u64::try_from(*number)
                    .map_err(|_| format!("must be at least {}, got {number}", range.start()))?,
                Raw::Value(value) => {
                    return Err(format!(
                        "expected a whole number, found {}",
                        describe_value(value)
                    ));
                }
            };
            if number < *range.start() {
                return Err(format!("must be at least {}, got {number}", range.start()));
            }
            if number > *range.end() {
                return Err(format!("must be at most {}, got {number}", range.end()));
            }
            T::try_from(number).map_err(|_| format!("{number} is out of range"))
        })
    }

    pub(super) fn boolean(&mut self, key: &'static str, default: bool) -> bool {
        self.read(key, default, |raw| match raw {
            Raw::Text(text) => match text.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(format!("invalid boolean {text:?}: expected true or false")),
            },
            Raw::Value(Value {
                kind: ValueKind::Boolean(value),
                ..
            }) => Ok(*value),
            Raw::Value(value) => Err(format!(
                "expected true or false, found {}",
                describe_value(value)
            )),
        })
    }

    pub(super) fn duration(
        &mut self,
        key: &'static str,
        default: Duration,
        min: Duration,
    ) -> Duration {
        self.bounded_duration(key, default, min, MAX_DURATION)
    }

    pub(super) fn bounded_duration(
        &mut self,
        key: &'static str,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Duration {
        self.read(key, default, |raw| {
            let text = match raw {
                Raw::Text(text) => text.to_string(),
                Raw::Value(Value {
                    kind: ValueKind::String(text),
                    ..
                }) => text.clone(),
                Raw::Value(value) => {
                    return Err(format!(
                        "expected a duration string like \"30s\", \"15m\" or \"14d\", found {}",
                        describe_value(value)
                    ));
                }
            };
            let duration = humantime::parse_duration(text.trim()).map_err(|err| {
                format!("invalid duration {text:?}: {err} (use e.g. \"30s\", \"15m\", \"14d\")")
            })?;
            if duration < min {
                return Err(format!(
                    "must be at least {}, got {text:?}",
                    humantime::format_duration(min)
                ));
            }
            if duration > max {
                return Err(format!(
                    "must be at most {}, got {text:?}",
                    humantime::format_duration(max)
                ));
            }
            Ok(duration)
        })
    }

    pub(super) fn socket_addr(&mut self, key: &'static str, default: SocketAddr) -> SocketAddr {
        self.read(key, default, |raw| {
            let text = text_of(&raw)?;
            text.trim().parse().map_err(|_| {
                format!("invalid socket address {text:?}: expected an IP address and port like \"127.0.0.1:8080\" or \"[::1]:8080\"")
            })
        })
    }

    /// A list: a TOML array of strings, or a comma-separated environment value whose
    /// entries are trimmed and whose empty entries are skipped (so `""` is the empty list).
    pub(super) fn list(&mut self, key: &'static str) -> Vec<String> {
        self.read(key, Vec::new(), |raw| match raw {
            Raw::Text(text) => Ok(text
                .split(',')
                .map(str::trim)
                .filter(|entry| !entry.is_empty())
                .map(str::to_string)
                .collect()),
            Raw::Value(Value {
                kind: ValueKind::Array(values),
                ..
            }) => values
                .iter()
                .enumerate()
                .map(|(index, value)| match &value.kind {
                    ValueKind::String(text) => Ok(text.clone()),
                    _ => Err(format!(
                        "entry {}: expected a string, found {}",
                        index + 1,
                        describe_value(value)
                    )),
                })
                .collect(),
            Raw::Value(value) => Err(format!(
                "expected a list of strings, found {}",
                describe_value(value)
            )),
        })
    }

    /// Converts each entry of a list, reporting every bad entry.
    pub(super) fn each<T>(
        &mut self,
        key: &'static str,
        convert: impl Fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        let entries = self.list(key);
        let mut converted = Vec::with_capacity(entries.len());
        for entry in &entries {
            match convert(entry) {
                Ok(value) => converted.push(value),
                Err(message) => self.problem(key, &message),
            }
        }
        converted
    }

    pub(super) fn cidrs(&mut self, key: &'static str) -> Vec<ipnet::IpNet> {
        self.each(key, |entry| {
            entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("invalid network {entry:?}: expected an IP address or a CIDR like \"10.0.0.0/8\""))
        })
    }

    pub(super) fn domains(&mut self, key: &'static str) -> Vec<String> {
        self.each(key, |entry| {
            check_domain(entry)?;
            Ok(entry.to_string())
        })
    }

    /// A path, relative ones resolved against the configuration file's folder.
    pub(super) fn path(&mut self, key: &'static str, default: &str) -> PathBuf {
        let text = self.non_empty(key, default);
        self.dir.join(text)
    }

    pub(super) fn algorithm(&mut self, key: &'static str) -> KeyAlgorithm {
        self.read(key, KeyAlgorithm::HS256, |raw| {
            let text = text_of(&raw)?;
            parse_algorithm(&text).ok_or_else(|| {
                format!("unknown algorithm {text:?}: expected HS256, EdDSA, ES256 or RS256")
            })
        })
    }

    pub(super) fn signing_kid(&mut self, key: &'static str) -> Option<String> {
        self.optional(key, |kid| {
            if kid == "." || kid == ".." || kid.contains(['/', '\\']) || kid.chars().any(char::is_control) {
                Err(format!("invalid key id {kid:?}: it names a file in jwt.keys_dir, so it cannot contain / or \\"))
            } else {
                Ok(())
            }
        })
    }

    pub(super) fn log_level(&mut self, key: &'static str) -> String {
        self.string(key, "info", |text| {
            if text.trim().is_empty() {
                return Err("must not be empty (e.g. \"info\" or \"info,authd=debug\")".to_string());
            }
            tracing_subscriber::EnvFilter::try_new(text)
                .map(|_| ())
                .map_err(|err| format!("invalid log filter {text:?}: {err}"))
        })
    }

    pub(super) fn storage_backend(&mut self, key: &'static str) -> StorageBackend {
        self.read(key, StorageBackend::Sled, |raw| {
            let text = text_of(&raw)?;
            match text.as_str() {
                "sled" => Ok(StorageBackend::Sled),
                "etcd" => Ok(StorageBackend::Etcd),
                _ => Err(format!("unknown backend {text:?}: expected sled or etcd")),
            }
        })
    }

    pub(super) fn etcd_endpoints(&mut self, key: &'static str) -> Vec<String> {
        let set = self.raw(key).is_some();
        let mut endpoints = self.each(key, |entry| {
            let rest = entry
                .strip_prefix("http://")
                .or_else(|| entry.strip_prefix("https://"))
                .ok_or_else(|| {
                    format!(
                        "invalid endpoint {entry:?}: expected http://host:port or https://host:port"
                    )
                })?;
            if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
                return Err(format!(
                    "invalid endpoint {entry:?}: expected http://host:port or https://host:port"
                ));
            }
            Ok(entry.to_string())
        });
        if !set {
            endpoints = vec!["http://127.0.0.1:2379".to_string()];
        } else if endpoints.is_empty() && !self.bad.contains(key) {
            self.problem(key, "must name at least one etcd endpoint");
        }
        endpoints
    }

    pub(super) fn etcd_prefix(&mut self, key: &'static str) -> String {
        self.string(key, "/authd/", |prefix| {
            if prefix.is_empty() {
                Err("must not be empty (e.g. \"/authd/\")".to_string())
            } else if prefix.chars().any(char::is_control) {
                Err("must not contain control characters".to_string())
            } else {
                Ok(())
            }
        })
    }

    /// A path where `""` means "not set"; relative ones resolved against the file's folder.
    pub(super) fn optional_path(&mut self, key: &'static str) -> Option<PathBuf> {
        self.optional(key, |_| Ok(()))
            .map(|text| self.dir.join(text))
    }

    pub(super) fn log_format(&mut self, key: &'static str) -> LogFormat {
        self.read(key, LogFormat::Text, |raw| {
            let text = text_of(&raw)?;
            match text.to_ascii_lowercase().as_str() {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err(format!(
                    "unknown log format {text:?}: expected text or json"
                )),
            }
        })
    }

    pub(super) fn cookie_name(&mut self, key: &'static str) -> String {
        self.string(key, "authd", |name| {
            if name.is_empty() {
                return Err("must not be empty".to_string());
            }
            match name.chars().find(|c| !is_token_char(*c)) {
                Some(c) => Err(format!(
                    "invalid cookie name {name:?}: {c:?} is not allowed (use letters, digits and !#$%&'*+-.^_`|~)"
                )),
                None => Ok(()),
            }
        })
    }

    pub(super) fn domain(&mut self, key: &'static str) -> Option<String> {
        self.optional(key, check_domain)
    }

    pub(super) fn login_url(&mut self, key: &'static str) -> Option<String> {
        self.optional(key, |url| {
            let lower = url.to_ascii_lowercase();
            let rest = ["https://", "http://"]
                .iter()
                .find_map(|scheme| lower.strip_prefix(scheme))
                .ok_or_else(|| {
                    format!("invalid URL {url:?}: expected an absolute http:// or https:// URL")
                })?;
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            let host = authority.rsplit('@').next().unwrap_or_default();
            if host.is_empty() || host.starts_with(':') {
                return Err(format!("invalid URL {url:?}: it has no host"));
            }
            if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("invalid URL {url:?}: it contains whitespace"));
            }
            Ok(())
        })
    }
}

/// The text of a string value (environment values are always text).
fn text_of(raw: &Raw<'_>) -> Result<String, String> {
    match raw {
        Raw::Text(text) => Ok((*text).to_string()),
        Raw::Value(Value {
            kind: ValueKind::String(text),
            ..
        }) => Ok(text.clone()),
        Raw::Value(value) => Err(format!(
            "expected a string, found {}",
            describe_value(value)
        )),
    }
}

fn describe_value(value: &Value) -> String {
    match &value.kind {
        ValueKind::Nil => "nothing".to_string(),
        ValueKind::Boolean(b) => format!("boolean {b}"),
        ValueKind::I64(n) => format!("number {n}"),
        ValueKind::I128(n) => format!("number {n}"),
        ValueKind::U64(n) => format!("number {n}"),
        ValueKind::U128(n) => format!("number {n}"),
        ValueKind::Float(n) => format!("number {n}"),
        ValueKind::String(s) => format!("string {s:?}"),
        ValueKind::Table(_) => "a table".to_string(),
        ValueKind::Array(_) => "a list".to_string(),
    }
}

fn parse_algorithm(text: &str) -> Option<KeyAlgorithm> {
    match text.to_ascii_uppercase().as_str() {
        "HS256" => Some(KeyAlgorithm::HS256),
        "EDDSA" => Some(KeyAlgorithm::EdDSA),
        "ES256" => Some(KeyAlgorithm::ES256),
        "RS256" => Some(KeyAlgorithm::RS256),
        _ => None,
    }
}

/// RFC 6265 cookie-name: an RFC 7230 token.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// A bare host name such as `example.com` (a leading dot is tolerated, as browsers do).
fn check_domain(domain: &str) -> Result<(), String> {
    let name = domain.strip_prefix('.').unwrap_or(domain);
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid domain {domain:?}: expected a host name like \"example.com\" (no scheme, port or path)"
        ))
    }
}
