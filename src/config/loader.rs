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
    AdminConfig, Config, ConfigError, CookieConfig, ENV_PREFIX, ENV_SEPARATOR, EtcdConfig,
    FeedConfig, JwtConfig, LogConfig, LogFormat, LoginConfig, MAX_ACCESS_TTL, MAX_LEEWAY,
    MfaConfig, PasswordConfig, ServerConfig, StorageBackend, StorageConfig,
};
use crate::auth::keys::KeyAlgorithm;

mod readers;
mod unknown;

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
            backend: self.storage_backend("storage.backend"),
            path: self.path("storage.path", "data"),
        };
        let etcd = EtcdConfig {
            endpoints: self.etcd_endpoints("etcd.endpoints"),
            prefix: self.etcd_prefix("etcd.prefix"),
            dial_timeout: self.duration(
                "etcd.dial_timeout",
                Duration::from_secs(2),
                Duration::from_millis(1),
            ),
            request_timeout: self.duration(
                "etcd.request_timeout",
                Duration::from_secs(5),
                Duration::from_millis(1),
            ),
            max_staleness: self.duration(
                "etcd.max_staleness",
                Duration::from_secs(5),
                Duration::from_millis(1),
            ),
            ca_file: self.optional_path("etcd.ca_file"),
            cert_file: self.optional_path("etcd.cert_file"),
            key_file: self.optional_path("etcd.key_file"),
            username: self.optional("etcd.username", |_| Ok(())),
            password_file: self.optional_path("etcd.password_file"),
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
        let feed = FeedConfig {
            enabled: self.boolean("feed.enabled", true),
            token_file: self.path("feed.token_file", "data/feed.token"),
            max_clients: self.int("feed.max_clients", 1024, 1..=100_000),
        };
        let mfa = MfaConfig {
            issuer: self.string("mfa.issuer", "authd", |issuer| {
                if issuer.is_empty() || issuer.len() > 64 || issuer.contains(':') {
                    Err("must be 1 to 64 bytes without a colon".to_string())
                } else {
                    Ok(())
                }
            }),
            required_roles: self.each("mfa.required_roles", |role| {
                if crate::auth::names::is_valid_role(role) {
                    Ok(role.to_string())
                } else {
                    Err(format!(
                        "invalid role {role:?}: 1-64 characters of a-z 0-9 . _ : -"
                    ))
                }
            }),
            key_file: self.path("mfa.key_file", "data/mfa.key"),
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
        self.check_files(&storage, &jwt, &admin, &feed, &mfa);
        self.check_etcd(&etcd);

        let mut problems = self.unknown_keys();
        problems.append(&mut self.problems);
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        Ok(Config {
            file: self.file,
            server,
            storage,
            etcd,
            jwt,
            password,
            login,
            admin,
            feed,
            mfa,
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
    fn check_files(
        &mut self,
        storage: &StorageConfig,
        jwt: &JwtConfig,
        admin: &AdminConfig,
        feed: &FeedConfig,
        mfa: &MfaConfig,
    ) {
        use crate::files::{FileProblem, check_private_dir, check_secret_file, read_token_file};
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
            (
                "feed.token_file",
                present(read_token_file(&feed.token_file)),
            ),
            ("mfa.key_file", present(check_secret_file(&mfa.key_file))),
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

    /// The `[etcd]` keys that only make sense together.
    ///
    /// A pair with one half missing is named by the half that is set: that is the key the
    /// file (or the environment) says something about.
    fn check_etcd(&mut self, etcd: &EtcdConfig) {
        if etcd.cert_file.is_some() != etcd.key_file.is_some()
            && !self.bad.contains("etcd.key_file")
        {
            self.problem(
                if etcd.cert_file.is_some() {
                    "etcd.cert_file"
                } else {
                    "etcd.key_file"
                },
                "etcd.cert_file and etcd.key_file go together: set both or neither",
            );
        }
        if etcd.username.is_some() != etcd.password_file.is_some() {
            self.problem(
                if etcd.username.is_some() {
                    "etcd.username"
                } else {
                    "etcd.password_file"
                },
                "etcd.username and etcd.password_file go together: set both or neither",
            );
        }
        if let Some(file) = &etcd.password_file
            && !self.bad.contains("etcd.password_file")
            && let Err(problem) = crate::files::check_secret_file(file)
            && !matches!(problem, crate::files::FileProblem::Io { .. })
        {
            self.problem("etcd.password_file", &problem.to_string());
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
