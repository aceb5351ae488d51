//! Reading a configuration: the file and the environment merged by the `config` crate,
//! then every key read by a typed reader that records each problem with the key and its
//! source, unknown keys refused with a suggestion, and cross-key checks.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use ::config::{FileFormat, Map, Source, Value, ValueKind};

use super::{
    AdminConfig, Config, ConfigError, CookieConfig, ENV_PREFIX, ENV_SEPARATOR, JwtConfig,
    LogConfig, LogFormat, LoginConfig, MAX_ACCESS_TTL, MAX_LEEWAY, PasswordConfig, ServerConfig,
    StorageConfig,
};
use crate::auth::keys::KeyAlgorithm;

/// Reads `file` with the `AUTHD__…` entries of `env` over it.
pub(super) fn load(file: &Path, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
    let file = absolute(file);
    let text = read_file(&file).map_err(|problem| ConfigError {
        problems: vec![problem],
    })?;
    let file_source = ::config::File::from_str(&text, FileFormat::Toml);
    // Parsed on its own too, so a key can be told apart from a default, and a syntax
    // error can name the file (the crate's own error does not when given a string).
    let file_table = file_source.collect().map_err(|err| ConfigError {
        problems: vec![toml_problem(&file, &err)],
    })?;
    let merged = ::config::Config::builder()
        .add_source(file_source)
        .add_source(env_source(env))
        .build()
        .and_then(|merged| merged.collect())
        .map_err(|err| ConfigError {
            problems: vec![format!("{}: {err}", file.display())],
        })?;
    Loader::new(file, file_table, merged, env).load()
}

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: [&str; 2] = ["server.trusted_proxies", "cookie.allowed_redirect_domains"];
/// No duration may exceed this: tokens compute `now + ttl`, which must not overflow.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// The `AUTHD__SECTION__KEY` source. `try_parsing` is what makes the crate honour
/// `list_separator`; the typed readers below take environment values from the raw string
/// anyway, because that parsing turns `"007"` into `7` and `"1.50"` into `1.5`.
fn env_source(env: &HashMap<String, String>) -> ::config::Environment {
    let mut source = ::config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator(ENV_SEPARATOR)
        .separator(ENV_SEPARATOR)
        .try_parsing(true)
        .list_separator(",");
    for key in LIST_KEYS {
        source = source.with_list_parse_key(key);
    }
    source.source(Some(env.clone().into_iter().collect()))
}

/// `path` made absolute: canonical when it exists, else joined to the current directory.
fn absolute(path: &Path) -> PathBuf {
    if let Ok(canonical) = path.canonicalize() {
        return canonical;
    }
    let joined = match std::env::current_dir() {
        Ok(cwd) => cwd.join(path),
        Err(_) => path.to_path_buf(),
    };
    joined
        .components()
        .filter(|component| !matches!(component, Component::CurDir))
        .collect()
}

fn read_file(file: &Path) -> Result<String, String> {
    let bytes = std::fs::read(file)
        .map_err(|err| format!("cannot read config file {}: {err}", file.display()))?;
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
    String::from_utf8(bytes.to_vec())
        .map_err(|err| format!("config file {} is not valid UTF-8: {err}", file.display()))
}

/// One line for a TOML syntax error: the file, the position and the message, without the
/// source excerpt the TOML parser draws under it.
fn toml_problem(file: &Path, err: &::config::ConfigError) -> String {
    let text = match err {
        ::config::ConfigError::FileParse { cause, .. } => cause.to_string(),
        other => other.to_string(),
    };
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('|') && !is_excerpt_line(line))
        .collect();
    format!("{}: invalid TOML: {}", file.display(), parts.join(": "))
}

/// `12 | key = value`: a line of the excerpt in a TOML parse error.
fn is_excerpt_line(line: &str) -> bool {
    match line.split_once('|') {
        Some((number, _)) => {
            !number.trim().is_empty() && number.trim().bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Where a key's value came from.
enum Origin {
    Env(String),
    File,
    Default,
}

/// A key's value before conversion: an environment string is used as written.
enum Raw<'v> {
    Text(&'v str),
    Value(&'v Value),
}

/// Walks the merged table key by key, converting each known key and collecting every
/// problem instead of stopping at the first.
struct Loader<'e> {
    file: PathBuf,
    dir: PathBuf,
    file_table: Map<String, Value>,
    merged: Map<String, Value>,
    /// `(variable, config key, value)` of every `AUTHD__` variable, sorted by variable.
    env: Vec<(&'e str, String, &'e str)>,
    problems: Vec<String>,
    /// Keys read so far: everything else in the merged table is unknown.
    known: BTreeSet<&'static str>,
    /// Keys whose value was refused, so cross-key checks skip them.
    bad: HashSet<&'static str>,
}

impl<'e> Loader<'e> {
    fn new(
        file: PathBuf,
        file_table: Map<String, Value>,
        merged: Map<String, Value>,
        env: &'e HashMap<String, String>,
    ) -> Self {
        let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}").to_lowercase();
        // The same mapping the config crate applies: lowercase, strip the prefix,
        // separators become dots.
        let mut env: Vec<(&str, String, &str)> = env
            .iter()
            .filter_map(|(name, value)| {
                let lower = name.to_lowercase();
                let rest = lower.strip_prefix(&prefix)?;
                Some((
                    name.as_str(),
                    rest.replace(ENV_SEPARATOR, "."),
                    value.as_str(),
                ))
            })
            .collect();
        env.sort_unstable();
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        Loader {
            file,
            dir,
            file_table,
            merged,
            env,
            problems: Vec::new(),
            known: BTreeSet::new(),
            bad: HashSet::new(),
        }
    }

    fn load(mut self) -> Result<Config, ConfigError> {
        let defaults = Defaults::new();
        let server = ServerConfig {
            listen: self.socket_addr("server.listen", defaults.listen),
            admin_listen: self.socket_addr("server.admin_listen", defaults.admin_listen),
            max_body_bytes: self.int("server.max_body_bytes", 65_536, 1..=u64::MAX),
            shutdown_grace: self.duration(
                "server.shutdown_grace",
                Duration::from_secs(10),
                Duration::ZERO,
            ),
            trusted_proxies: self.cidrs("server.trusted_proxies"),
            max_connections_per_ip: self.int(
                "server.max_connections_per_ip",
                256,
                1..=defaults.max_usize,
            ),
        };
        let storage = StorageConfig {
            path: self.path("storage.path", "data"),
        };
        let jwt = JwtConfig {
            issuer: self.non_empty("jwt.issuer", "authd"),
            audience: self.non_empty("jwt.audience", "authd"),
            algorithm: self.algorithm("jwt.algorithm"),
            signing_kid: self.signing_kid("jwt.signing_kid"),
            access_ttl: self.bounded_duration(
                "jwt.access_ttl",
                Duration::from_secs(15 * 60),
                Duration::from_secs(1),
                MAX_ACCESS_TTL,
            ),
            refresh_ttl: self.duration(
                "jwt.refresh_ttl",
                Duration::from_secs(14 * 86_400),
                Duration::from_secs(1),
            ),
            leeway: self.bounded_duration(
                "jwt.leeway",
                Duration::from_secs(30),
                Duration::ZERO,
                MAX_LEEWAY,
            ),
            keys_dir: self.path("jwt.keys_dir", "data/keys"),
        };
        let password = PasswordConfig {
            min_length: self.int("password.min_length", 8, 1..=1024),
            argon2_memory_kib: self.int(
                "password.argon2_memory_kib",
                19_456,
                8..=u64::from(u32::MAX),
            ),
            argon2_iterations: self.int("password.argon2_iterations", 2, 1..=u64::from(u32::MAX)),
            argon2_parallelism: self.int("password.argon2_parallelism", 1, 1..=255),
        };
        let login = LoginConfig {
            max_failures: self.int("login.max_failures", 5, 1..=u64::from(u32::MAX)),
            max_failures_per_user: self.int(
                "login.max_failures_per_user",
                100,
                1..=u64::from(u32::MAX),
            ),
            max_failures_per_ip: self.int("login.max_failures_per_ip", 50, 1..=u64::from(u32::MAX)),
            known_for: self.duration(
                "login.known_for",
                Duration::from_secs(30 * 86_400),
                Duration::ZERO,
            ),
            window: self.duration(
                "login.window",
                Duration::from_secs(15 * 60),
                Duration::from_secs(1),
            ),
            max_tracked: self.int("login.max_tracked", 100_000, 1..=defaults.max_usize),
            max_sessions_per_user: self.int("login.max_sessions_per_user", 100, 1..=100_000),
        };
        let admin = AdminConfig {
            token_file: self.path("admin.token_file", "data/admin.token"),
        };
        let log = LogConfig {
            level: self.log_level("log.level"),
            format: self.log_format("log.format"),
        };
        let cookie = CookieConfig {
            enabled: self.boolean("cookie.enabled", false),
            name: self.cookie_name("cookie.name"),
            domain: self.domain("cookie.domain"),
            secure: self.boolean("cookie.secure", true),
            login_url: self.login_url("cookie.login_url"),
            allowed_redirect_domains: self.domains("cookie.allowed_redirect_domains"),
            refresh_grace: self.duration(
                "cookie.refresh_grace",
                Duration::from_secs(10),
                Duration::ZERO,
            ),
        };
        self.check_listeners(&server);
        self.check_argon2(&password);
        self.check_files(&storage, &jwt, &admin);

        let mut problems = self.unknown_keys();
        problems.append(&mut self.problems);
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        Ok(Config {
            file: self.file,
            server,
            storage,
            jwt,
            password,
            login,
            admin,
            log,
            cookie,
        })
    }

    // --- where values come from -------------------------------------------------------

    /// The environment variable that set `key`, or one that set something below it.
    fn env_var_for(&self, key: &str) -> Option<&'e str> {
        let below = format!("{key}.");
        let exact = self.env.iter().find(|(_, path, _)| path == key);
        exact
            .or_else(|| {
                self.env
                    .iter()
                    .find(|(_, path, _)| path.starts_with(&below))
            })
            .map(|(name, _, _)| *name)
    }

    fn in_file(&self, key: &str) -> bool {
        let mut parts = key.split('.');
        let Some(first) = parts.next() else {
            return false;
        };
        let mut value = self.file_table.get(first);
        for part in parts {
            value = match value.map(|value| &value.kind) {
                Some(ValueKind::Table(table)) => table.get(part),
                _ => None,
            };
        }
        value.is_some()
    }

    fn origin(&self, key: &str) -> Origin {
        if let Some(name) = self.env_var_for(key) {
            Origin::Env(name.to_string())
        } else if self.in_file(key) {
            Origin::File
        } else {
            Origin::Default
        }
    }

    /// `jwt.access_ttl in AUTHD__JWT__ACCESS_TTL`, `… in /etc/authd/config.toml`.
    fn describe(&self, key: &str) -> String {
        match self.origin(key) {
            Origin::Env(name) => format!("{key} in {name}"),
            Origin::File => format!("{key} in {}", self.file.display()),
            Origin::Default => format!("{key} (default)"),
        }
    }

    fn raw(&self, key: &str) -> Option<Raw<'_>> {
        if let Some((_, _, text)) = self.env.iter().find(|(_, path, _)| path == key) {
            return Some(Raw::Text(text));
        }
        let (section, name) = key.split_once('.')?;
        match &self.merged.get(section)?.kind {
            ValueKind::Table(table) => table.get(name).map(Raw::Value),
            _ => None,
        }
    }

    fn problem(&mut self, key: &'static str, message: &str) {
        self.bad.insert(key);
        let line = format!("{}: {message}", self.describe(key));
        self.problems.push(line);
    }

    /// Reads `key` with `convert`; a missing key is `default`, a refused one is recorded
    /// and replaced by `default` so that reading goes on.
    fn read<T>(
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

    fn string(
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

    fn non_empty(&mut self, key: &'static str, default: &str) -> String {
        self.string(key, default, |text| {
            if text.is_empty() {
                Err("must not be empty".to_string())
            } else {
                Ok(())
            }
        })
    }

    /// A string where `""` means "not set".
    fn optional(
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

    fn int<T: TryFrom<u64>>(
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

    fn boolean(&mut self, key: &'static str, default: bool) -> bool {
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

    fn duration(&mut self, key: &'static str, default: Duration, min: Duration) -> Duration {
        self.bounded_duration(key, default, min, MAX_DURATION)
    }

    fn bounded_duration(
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

    fn socket_addr(&mut self, key: &'static str, default: SocketAddr) -> SocketAddr {
        self.read(key, default, |raw| {
            let text = text_of(&raw)?;
            text.trim().parse().map_err(|_| {
                format!("invalid socket address {text:?}: expected an IP address and port like \"127.0.0.1:8080\" or \"[::1]:8080\"")
            })
        })
    }

    /// A list: a TOML array of strings, or a comma-separated environment value whose
    /// entries are trimmed and whose empty entries are skipped (so `""` is the empty list).
    fn list(&mut self, key: &'static str) -> Vec<String> {
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
    fn each<T>(
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

    fn cidrs(&mut self, key: &'static str) -> Vec<ipnet::IpNet> {
        self.each(key, |entry| {
            entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("invalid network {entry:?}: expected an IP address or a CIDR like \"10.0.0.0/8\""))
        })
    }

    fn domains(&mut self, key: &'static str) -> Vec<String> {
        self.each(key, |entry| {
            check_domain(entry)?;
            Ok(entry.to_string())
        })
    }

    /// A path, relative ones resolved against the configuration file's folder.
    fn path(&mut self, key: &'static str, default: &str) -> PathBuf {
        let text = self.non_empty(key, default);
        self.dir.join(text)
    }

    fn algorithm(&mut self, key: &'static str) -> KeyAlgorithm {
        self.read(key, KeyAlgorithm::HS256, |raw| {
            let text = text_of(&raw)?;
            parse_algorithm(&text).ok_or_else(|| {
                format!("unknown algorithm {text:?}: expected HS256, EdDSA, ES256 or RS256")
            })
        })
    }

    fn signing_kid(&mut self, key: &'static str) -> Option<String> {
        self.optional(key, |kid| {
            if kid == "." || kid == ".." || kid.contains(['/', '\\']) || kid.chars().any(char::is_control) {
                Err(format!("invalid key id {kid:?}: it names a file in jwt.keys_dir, so it cannot contain / or \\"))
            } else {
                Ok(())
            }
        })
    }

    fn log_level(&mut self, key: &'static str) -> String {
        self.string(key, "info", |text| {
            if text.trim().is_empty() {
                return Err("must not be empty (e.g. \"info\" or \"info,authd=debug\")".to_string());
            }
            tracing_subscriber::EnvFilter::try_new(text)
                .map(|_| ())
                .map_err(|err| format!("invalid log filter {text:?}: {err}"))
        })
    }

    fn log_format(&mut self, key: &'static str) -> LogFormat {
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

    fn cookie_name(&mut self, key: &'static str) -> String {
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

    fn domain(&mut self, key: &'static str) -> Option<String> {
        self.optional(key, check_domain)
    }

    fn login_url(&mut self, key: &'static str) -> Option<String> {
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

    // --- checks across keys -----------------------------------------------------------

    fn check_listeners(&mut self, server: &ServerConfig) {
        if self.bad.contains("server.listen") || self.bad.contains("server.admin_listen") {
            return;
        }
        if server.listen == server.admin_listen && server.listen.port() != 0 {
            let message = format!(
                "must differ from server.listen ({}), the public listener",
                server.listen
            );
            self.problem("server.admin_listen", &message);
        }
    }

    /// API.md "Keys" (rev 4): folders and secret files others could write or read, each
    /// problem naming the key and the path. Only what exists is checked (a first start
    /// creates them private); a file that cannot be read is left to the code that reads
    /// it, which names it too. Key files and links in the keys folder are checked where
    /// the keys are read (`KeySet::load`), which `check-config`, start-up and reload all
    /// do; being part of every load, these checks make a reload keep the old settings.
    fn check_files(&mut self, storage: &StorageConfig, jwt: &JwtConfig, admin: &AdminConfig) {
        use crate::files::{FileProblem, check_private_dir, read_token_file};
        fn present<T>(result: Result<T, FileProblem>) -> Result<(), FileProblem> {
            match result {
                Err(FileProblem::Io { .. }) | Ok(_) => Ok(()),
                Err(problem) => Err(problem),
            }
        }
        let checks = [
            ("storage.path", present(check_private_dir(&storage.path))),
            ("jwt.keys_dir", present(check_private_dir(&jwt.keys_dir))),
            (
                "admin.token_file",
                present(read_token_file(&admin.token_file)),
            ),
        ];
        for (key, result) in checks {
            if self.bad.contains(key) {
                continue;
            }
            if let Err(problem) = result {
                self.problem(key, &problem.to_string());
            }
        }
    }

    fn check_argon2(&mut self, password: &PasswordConfig) {
        let keys = [
            "password.argon2_memory_kib",
            "password.argon2_iterations",
            "password.argon2_parallelism",
        ];
        if keys.iter().any(|key| self.bad.contains(key)) {
            return;
        }
        let needed = u64::from(password.argon2_parallelism) * 8;
        if u64::from(password.argon2_memory_kib) < needed {
            let message = format!(
                "argon2id needs at least 8 KiB per lane: {} KiB is less than 8 × {} ({}) = {needed} KiB",
                password.argon2_memory_kib,
                password.argon2_parallelism,
                self.describe("password.argon2_parallelism"),
            );
            self.problem("password.argon2_memory_kib", &message);
            return;
        }
        if let Err(err) = argon2::Params::new(
            password.argon2_memory_kib,
            password.argon2_iterations,
            password.argon2_parallelism,
            None,
        ) {
            self.problem(
                "password.argon2_memory_kib",
                &format!("invalid argon2id parameters: {err}"),
            );
        }
    }

    /// Everything in the merged table that no reader asked for, once per place it was
    /// set (file and/or environment variable), sorted.
    fn unknown_keys(&self) -> Vec<String> {
        let sections: BTreeSet<&str> = self
            .known
            .iter()
            .filter_map(|key| key.split_once('.'))
            .map(|(section, _)| section)
            .collect();
        let mut unknown = BTreeSet::new();
        for (section, value) in &self.merged {
            if !sections.contains(section.as_str()) {
                // A key written outside its section gets its full name as the hint.
                let hint = suggestion(section, sections.iter().copied()).or_else(|| {
                    self.known
                        .iter()
                        .find(|key| key.split_once('.').is_some_and(|(_, name)| name == section))
                        .map(|key| (*key).to_string())
                });
                let kind = if matches!(value.kind, ValueKind::Table(_)) {
                    Unknown::Section
                } else {
                    Unknown::Key
                };
                unknown.insert((section.clone(), kind, hint));
                continue;
            }
            let ValueKind::Table(table) = &value.kind else {
                unknown.insert((section.clone(), Unknown::NotASection, None));
                continue;
            };
            for name in table.keys() {
                let key = format!("{section}.{name}");
                if !self.known.contains(key.as_str()) {
                    let hint = suggestion(&key, self.known.iter().copied());
                    unknown.insert((key, Unknown::Key, hint));
                }
            }
        }
        let mut problems = Vec::new();
        for (key, kind, hint) in unknown {
            let below = format!("{key}.");
            let mut places: Vec<String> = self
                .env
                .iter()
                .filter(|(_, path, _)| *path == key || path.starts_with(&below))
                .map(|(name, _, _)| (*name).to_string())
                .collect();
            if kind == Unknown::NotASection {
                // Only the environment can replace a whole section by one value; the
                // file would have failed as TOML or been a table.
                if places.is_empty() {
                    places.push(self.file.display().to_string());
                }
                for place in places {
                    problems.push(format!(
                        "{key} in {place}: expected a section of keys, not a single value"
                    ));
                }
                continue;
            }
            if self.in_file(&key) || places.is_empty() {
                places.push(self.file.display().to_string());
            }
            let what = if kind == Unknown::Section {
                "section"
            } else {
                "key"
            };
            let hint = hint
                .map(|hint| format!(" (did you mean {hint:?}?)"))
                .unwrap_or_default();
            for place in places {
                problems.push(format!("unknown {what} {key:?} in {place}{hint}"));
            }
        }
        problems
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Unknown {
    Section,
    NotASection,
    Key,
}

/// Defaults that are not literals.
struct Defaults {
    listen: SocketAddr,
    admin_listen: SocketAddr,
    max_usize: u64,
}

impl Defaults {
    fn new() -> Self {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        Defaults {
            listen: SocketAddr::new(loopback, 8080),
            // Never a non-loopback default: the admin routes must not be exposed by accident.
            admin_listen: SocketAddr::new(loopback, 8081),
            max_usize: u64::try_from(usize::MAX).unwrap_or(u64::MAX),
        }
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

/// The candidate closest to `unknown` when it is close enough to be a typo.
fn suggestion<'a>(unknown: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    let unknown = unknown.to_lowercase();
    candidates
        .map(|candidate| (edit_distance(&unknown, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 5))
        .min()
        .map(|(_, candidate)| candidate.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            let insert = current[j] + 1;
            let delete = previous[j + 1] + 1;
            current.push(substitute.min(insert).min(delete));
        }
        previous = current;
    }
    previous[b.len()]
}
