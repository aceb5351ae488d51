//! Configuration: the TOML file plus `AUTHD__SECTION__KEY` overrides, turned into one
//! validated, typed [`Config`]. Every problem names the key and where it came from;
//! [`restart_required_changes`] knows which keys a reload cannot apply.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::keys::KeyAlgorithm;

/// The complete, validated configuration of one daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this configuration was read from (absolute).
    pub file: PathBuf,
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub etcd: EtcdConfig,
    pub jwt: JwtConfig,
    pub password: PasswordConfig,
    pub login: LoginConfig,
    pub admin: AdminConfig,
    pub feed: FeedConfig,
    pub mfa: MfaConfig,
    pub log: LogConfig,
    pub cookie: CookieConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub max_body_bytes: u64,
    pub shutdown_grace: Duration,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Open connections one TCP peer address may hold on each listener (at least 1);
    /// peers in `trusted_proxies` are exempt. Reloads: new connections use the new value.
    pub max_connections_per_ip: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    /// The sled folder (sled only).
    pub path: PathBuf,
}

/// Where the store lives: one process's sled folder, or an etcd cluster shared by N
/// instances (cluster mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageBackend {
    Sled,
    Etcd,
}

/// How to reach etcd (cluster mode; read only when `storage.backend = "etcd"`).
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdConfig {
    /// `http://host:port` or `https://host:port`, at least one.
    pub endpoints: Vec<String>,
    /// Every key authd writes starts with this.
    pub prefix: String,
    pub dial_timeout: Duration,
    /// A write that gets no quorum answers `503` by then.
    pub request_timeout: Duration,
    /// An instance whose view was last confirmed current longer ago than this refuses
    /// verify, bearer routes and `/readyz` (`503`).
    pub max_staleness: Duration,
    /// TLS: the CA that signed etcd's certificates (`None`: the system's roots for https).
    pub ca_file: Option<PathBuf>,
    /// TLS client certificate and key (both or neither).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// etcd authentication: the user, and the file holding its password.
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JwtConfig {
    pub issuer: String,
    pub audience: String,
    pub algorithm: KeyAlgorithm,
    /// `None` when the file says `""`.
    pub signing_kid: Option<String>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub leeway: Duration,
    pub keys_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PasswordConfig {
    pub min_length: usize,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoginConfig {
    /// Failures per (username, client address) pair within `window`.
    pub max_failures: u32,
    /// Failures per username, over all addresses, within `window`.
    pub max_failures_per_user: u32,
    /// Failures per client address (IPv6: per /64) within `window`.
    pub max_failures_per_ip: u32,
    /// A pair that logged in within this is exempt from the per-username limit; zero: none is.
    pub known_for: Duration,
    pub window: Duration,
    /// Bounds each throttle table: pairs, usernames, addresses and known pairs.
    pub max_tracked: usize,
    /// Live sessions per user; a login beyond it ends the least recently refreshed one.
    pub max_sessions_per_user: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub token_file: PathBuf,
}

/// `[feed]`: the revocation feed (API.md "Revocation feed").
#[derive(Debug, Clone, PartialEq)]
pub struct FeedConfig {
    pub enabled: bool,
    /// The secret feed clients present; created at first start like the admin token.
    pub token_file: PathBuf,
    /// Feed requests (streams and long-polls) one instance serves at once; one more: `503`.
    pub max_clients: usize,
}

/// `[mfa]`: the second factor (API.md "Second factor").
#[derive(Debug, Clone, PartialEq)]
pub struct MfaConfig {
    /// The otpauth issuer and label prefix authenticator apps show.
    pub issuer: String,
    /// Users holding one of these roles must use a second factor (sessions without one
    /// may only enrol).
    pub required_roles: Vec<String>,
    /// The key that encrypts TOTP secrets at rest; created at first start; a change needs a
    /// restart.
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive, validated at load.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CookieConfig {
    pub enabled: bool,
    pub name: String,
    /// `None` when the file says `""`.
    pub domain: Option<String>,
    pub secure: bool,
    /// `None` when the file says `""`.
    pub login_url: Option<String>,
    pub allowed_redirect_domains: Vec<String>,
    pub refresh_grace: Duration,
}

/// The longest `jwt.access_ttl` accepted (API.md rev 4). It also bounds what a verifier
/// accepts as a token's lifetime and how long an unknown jti or sid stays revoked.
pub const MAX_ACCESS_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The largest `jwt.leeway` accepted (API.md rev 4): no configuration, now or after any
/// reload or restart, accepts a token for longer than its `exp` plus this.
pub const MAX_LEEWAY: Duration = Duration::from_secs(5 * 60);

/// Everything wrong with a configuration, one line per problem.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl Config {
    /// Loads `file` with overrides from the process environment.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(file, std::env::vars().collect())
    }

    /// Loads `file` with overrides taken from `env` instead of the process environment
    /// (only its `AUTHD__…` entries are looked at), so tests can run side by side.
    pub fn load_with_env(file: &Path, env: HashMap<String, String>) -> Result<Config, ConfigError> {
        loader::load(file, &env)
    }
}

mod loader;
mod warnings;

pub use warnings::RS256_WARNING;

/// The keys that differ between `old` and `new` but only take effect after a restart.
pub fn restart_required_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.server.listen != new.server.listen {
        changed.push("server.listen");
    }
    if old.server.admin_listen != new.server.admin_listen {
        changed.push("server.admin_listen");
    }
    if old.storage.path != new.storage.path {
        changed.push("storage.path");
    }
    if old.storage.backend != new.storage.backend {
        changed.push("storage.backend");
    }
    if old.etcd.endpoints != new.etcd.endpoints {
        changed.push("etcd.endpoints");
    }
    if old.etcd.prefix != new.etcd.prefix {
        changed.push("etcd.prefix");
    }
    let connection = |etcd: &EtcdConfig| {
        (
            etcd.dial_timeout,
            etcd.ca_file.clone(),
            etcd.cert_file.clone(),
            etcd.key_file.clone(),
            etcd.username.clone(),
            etcd.password_file.clone(),
        )
    };
    if old.mfa.key_file != new.mfa.key_file {
        changed.push("mfa.key_file");
    }
    if connection(&old.etcd) != connection(&new.etcd) {
        changed.push("etcd (connection settings)");
    }
    // The level reloads (`logging::set_level`); switching the format under open spans
    // would leave them without the new format's fields.
    if old.log.format != new.log.format {
        changed.push("log.format");
    }
    changed
}

/// The name of the environment variable that overrides `key` (`jwt.access_ttl` →
/// `AUTHD__JWT__ACCESS_TTL`).
pub fn env_var_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{ENV_SEPARATOR}{}",
        key.replace('.', ENV_SEPARATOR)
    )
    .to_uppercase()
}

const ENV_PREFIX: &str = "AUTHD";
const ENV_SEPARATOR: &str = "__";
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A config file with `contents` in a fresh temporary folder.
    fn config_file(contents: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, contents).unwrap();
        (dir, file)
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(
        contents: &str,
        pairs: &[(&str, &str)],
    ) -> (tempfile::TempDir, Result<Config, ConfigError>) {
        let (dir, file) = config_file(contents);
        let result = Config::load_with_env(&file, env(pairs));
        (dir, result)
    }

    fn problems(contents: &str, pairs: &[(&str, &str)]) -> (tempfile::TempDir, Vec<String>) {
        let (dir, result) = load(contents, pairs);
        (
            dir,
            result
                .expect_err("configuration should be refused")
                .problems,
        )
    }

    fn file_name(dir: &tempfile::TempDir) -> String {
        dir.path()
            .canonicalize()
            .unwrap()
            .join("config.toml")
            .display()
            .to_string()
    }

    #[test]
    fn an_empty_file_loads_every_default() {
        let (dir, result) = load("", &[]);
        let config = result.unwrap();
        let base = dir.path().canonicalize().unwrap();

        assert_eq!(config.file, base.join("config.toml"));
        assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            config.server.admin_listen,
            "127.0.0.1:8081".parse().unwrap()
        );
        assert_eq!(config.server.max_body_bytes, 65_536);
        assert_eq!(config.server.shutdown_grace, Duration::from_secs(10));
        assert!(config.server.trusted_proxies.is_empty());
        assert_eq!(config.server.max_connections_per_ip, 256);
        assert_eq!(config.storage.path, base.join("data"));
        assert_eq!(config.jwt.issuer, "authd");
        assert_eq!(config.jwt.audience, "authd");
        assert_eq!(config.jwt.algorithm, KeyAlgorithm::HS256);
        assert_eq!(config.jwt.signing_kid, None);
        assert_eq!(config.jwt.access_ttl, Duration::from_secs(900));
        assert_eq!(config.jwt.refresh_ttl, Duration::from_secs(14 * 86_400));
        assert_eq!(config.jwt.leeway, Duration::from_secs(30));
        assert_eq!(config.jwt.keys_dir, base.join("data/keys"));
        assert_eq!(config.password.min_length, 8);
        assert_eq!(config.password.argon2_memory_kib, 19_456);
        assert_eq!(config.password.argon2_iterations, 2);
        assert_eq!(config.password.argon2_parallelism, 1);
        assert_eq!(config.login.max_failures, 5);
        assert_eq!(config.login.max_failures_per_user, 100);
        assert_eq!(config.login.max_failures_per_ip, 50);
        assert_eq!(config.login.known_for, Duration::from_secs(30 * 86_400));
        assert_eq!(config.login.window, Duration::from_secs(900));
        assert_eq!(config.login.max_tracked, 100_000);
        assert_eq!(config.admin.token_file, base.join("data/admin.token"));
        assert_eq!(config.log.level, "info");
        assert_eq!(config.log.format, LogFormat::Text);
        assert!(!config.cookie.enabled);
        assert_eq!(config.cookie.name, "authd");
        assert_eq!(config.cookie.domain, None);
        assert!(config.cookie.secure);
        assert_eq!(config.cookie.login_url, None);
        assert!(config.cookie.allowed_redirect_domains.is_empty());
        assert_eq!(config.cookie.refresh_grace, Duration::from_secs(10));
    }

    #[test]
    fn the_shipped_config_toml_says_exactly_the_defaults() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let (dir, file) = config_file(&std::fs::read_to_string(&shipped).unwrap());

        let from_shipped = Config::load_with_env(&file, HashMap::new()).unwrap();
        let (_dir, from_empty) = load("", &[]);
        let mut from_empty = from_empty.unwrap();
        // Same folder so the resolved paths compare equal.
        let base = dir.path().canonicalize().unwrap();
        from_empty.storage.path = base.join("data");
        from_empty.jwt.keys_dir = base.join("data/keys");
        from_empty.admin.token_file = base.join("data/admin.token");
        from_empty.feed.token_file = base.join("data/feed.token");
        from_empty.mfa.key_file = base.join("data/mfa.key");
        from_empty.file = base.join("config.toml");

        assert_eq!(from_shipped, from_empty);
    }

    #[test]
    fn values_from_the_file_are_used() {
        let (_dir, result) = load(
            "[jwt]\nissuer = \"https://auth.example.com\"\nalgorithm = \"EdDSA\"\nsigning_kid = \"k1\"\n\
             [log]\nformat = \"json\"\nlevel = \"info,authd=debug\"\n\
             [cookie]\nenabled = true\ndomain = \"example.com\"\nlogin_url = \"https://auth.example.com/login\"\n\
             allowed_redirect_domains = [\"example.com\"]\n\
             [server]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"::1\"]\n",
            &[],
        );
        let config = result.unwrap();

        assert_eq!(config.jwt.issuer, "https://auth.example.com");
        assert_eq!(config.jwt.algorithm, KeyAlgorithm::EdDSA);
        assert_eq!(config.jwt.signing_kid.as_deref(), Some("k1"));
        assert_eq!(config.log.format, LogFormat::Json);
        assert!(config.cookie.enabled);
        assert_eq!(config.cookie.domain.as_deref(), Some("example.com"));
        assert_eq!(
            config.cookie.login_url.as_deref(),
            Some("https://auth.example.com/login")
        );
        assert_eq!(
            config.cookie.allowed_redirect_domains,
            vec!["example.com".to_string()]
        );
        let proxies: Vec<String> = config
            .server
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(proxies, ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]);
    }

    #[test]
    fn environment_overrides_win_over_the_file() {
        let (_dir, result) = load(
            "[jwt]\naccess_ttl = \"15m\"\nissuer = \"file\"\n[cookie]\nsecure = true\n",
            &[
                ("AUTHD__JWT__ACCESS_TTL", "5m"),
                ("AUTHD__JWT__ISSUER", "007"),
                ("AUTHD__COOKIE__SECURE", "false"),
                ("AUTHD__PASSWORD__MIN_LENGTH", "12"),
                ("AUTHD_CONFIG", "/somewhere/else.toml"),
                ("PATH", "/usr/bin"),
            ],
        );
        let config = result.unwrap();

        assert_eq!(config.jwt.access_ttl, Duration::from_secs(300));
        // Taken as written, not parsed as the number 7.
        assert_eq!(config.jwt.issuer, "007");
        assert!(!config.cookie.secure);
        assert_eq!(config.password.min_length, 12);
    }

    #[test]
    fn a_bad_environment_value_names_the_variable() {
        let (dir, problems) = problems(
            "[jwt]\naccess_ttl = \"15m\"\n",
            &[("AUTHD__JWT__ACCESS_TTL", "fifteen")],
        );

        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "jwt.access_ttl in AUTHD__JWT__ACCESS_TTL: invalid duration \"fifteen\""
            ),
            "{problems:?}"
        );
        assert!(!problems[0].contains(&file_name(&dir)), "{problems:?}");
    }

    #[test]
    fn the_new_login_keys_are_read_and_checked_from_file_and_environment() {
        let (dir, problems) = problems(
            "[login]\nknown_for = \"a month\"\n",
            &[("AUTHD__LOGIN__MAX_FAILURES_PER_USER", "0")],
        );
        assert_eq!(
            problems,
            [
                "login.max_failures_per_user in AUTHD__LOGIN__MAX_FAILURES_PER_USER: must be at least 1, got 0".to_owned(),
                format!(
                    "login.known_for in {}: invalid duration \"a month\": expected number at 0 (use e.g. \"30s\", \"15m\", \"14d\")",
                    file_name(&dir)
                ),
            ]
        );
    }

    #[test]
    fn a_bad_duration_in_the_file_names_key_and_file() {
        let (dir, problems) = problems("[login]\nwindow = \"soon\"\n[jwt]\nleeway = 30\n", &[]);

        assert_eq!(
            problems,
            [
                format!(
                    "jwt.leeway in {}: expected a duration string like \"30s\", \"15m\" or \"14d\", found number 30",
                    file_name(&dir)
                ),
                format!(
                    "login.window in {}: invalid duration \"soon\": expected number at 0 (use e.g. \"30s\", \"15m\", \"14d\")",
                    file_name(&dir)
                ),
            ]
        );
    }

    #[test]
    fn an_unknown_key_in_the_file_names_key_and_file() {
        let (dir, problems) = problems("[jwt]\nacess_ttl = \"5m\"\n", &[]);

        assert_eq!(
            problems,
            [format!(
                "unknown key \"jwt.acess_ttl\" in {} (did you mean \"jwt.access_ttl\"?)",
                file_name(&dir)
            )]
        );
    }

    #[test]
    fn unknown_sections_and_environment_keys_are_errors_too() {
        let (dir, problems) = problems(
            "[srever]\nlisten = \"127.0.0.1:1\"\n",
            &[("AUTHD__LOG__LEVLE", "debug")],
        );

        assert_eq!(
            problems,
            [
                "unknown key \"log.levle\" in AUTHD__LOG__LEVLE (did you mean \"log.level\"?)"
                    .to_string(),
                format!(
                    "unknown section \"srever\" in {} (did you mean \"server\"?)",
                    file_name(&dir)
                ),
            ]
        );
    }

    #[test]
    fn a_key_outside_its_section_gets_a_hint() {
        let (dir, problems) = problems("listen = \"127.0.0.1:1\"\n", &[]);

        assert_eq!(
            problems,
            [format!(
                "unknown key \"listen\" in {} (did you mean \"server.listen\"?)",
                file_name(&dir)
            )]
        );
    }

    #[test]
    fn several_problems_are_reported_at_once() {
        let (dir, problems) = problems(
            "[server]\nlisten = \"localhost\"\nmax_body_bytes = 0\n\
             [jwt]\nalgorithm = \"none\"\nissuer = \"\"\naccess_ttl = \"0s\"\n\
             [password]\nmin_length = 2000\n\
             [log]\nformat = \"xml\"\n\
             [cookie]\nname = \"bad name\"\nlogin_url = \"/login\"\nbogus = 1\n",
            &[("AUTHD__LOGIN__MAX_FAILURES", "0")],
        );
        let file = file_name(&dir);

        let expected_starts = [
            format!("unknown key \"cookie.bogus\" in {file}"),
            format!("server.listen in {file}: invalid socket address \"localhost\""),
            format!("server.max_body_bytes in {file}: must be at least 1, got 0"),
            format!("jwt.issuer in {file}: must not be empty"),
            format!("jwt.algorithm in {file}: unknown algorithm \"none\""),
            format!("jwt.access_ttl in {file}: must be at least 1s"),
            format!("password.min_length in {file}: must be at most 1024, got 2000"),
            "login.max_failures in AUTHD__LOGIN__MAX_FAILURES: must be at least 1, got 0"
                .to_string(),
            format!("log.format in {file}: unknown log format \"xml\""),
            format!("cookie.name in {file}: invalid cookie name \"bad name\""),
            format!("cookie.login_url in {file}: invalid URL \"/login\""),
        ];
        assert_eq!(problems.len(), expected_starts.len(), "{problems:#?}");
        for (problem, start) in problems.iter().zip(&expected_starts) {
            assert!(
                problem.starts_with(start.as_str()),
                "{problem:?} should start with {start:?}"
            );
        }
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let (dir, result) = load(
            "[storage]\npath = \"state\"\n[admin]\ntoken_file = \"/abs/admin.token\"\n",
            &[("AUTHD__JWT__KEYS_DIR", "secrets/keys")],
        );
        let config = result.unwrap();
        let base = dir.path().canonicalize().unwrap();

        assert_eq!(config.storage.path, base.join("state"));
        assert_eq!(config.jwt.keys_dir, base.join("secrets/keys"));
        assert_eq!(config.admin.token_file, PathBuf::from("/abs/admin.token"));
        assert!(config.file.is_absolute());
    }

    #[test]
    fn lists_come_from_the_environment_comma_separated() {
        let (_dir, result) = load(
            "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[cookie]\nallowed_redirect_domains = [\"x.org\"]\n",
            &[
                (
                    "AUTHD__SERVER__TRUSTED_PROXIES",
                    "10.0.0.0/8, 192.168.1.1,fd00::/8",
                ),
                (
                    "AUTHD__COOKIE__ALLOWED_REDIRECT_DOMAINS",
                    "example.com,example.org",
                ),
            ],
        );
        let config = result.unwrap();
        let proxies: Vec<String> = config
            .server
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();

        assert_eq!(proxies, ["10.0.0.0/8", "192.168.1.1/32", "fd00::/8"]);
        assert_eq!(
            config.cookie.allowed_redirect_domains,
            ["example.com", "example.org"]
        );
    }

    #[test]
    fn an_empty_environment_list_is_the_empty_list() {
        let (_dir, result) = load(
            "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
            &[
                ("AUTHD__SERVER__TRUSTED_PROXIES", ""),
                ("AUTHD__JWT__SIGNING_KID", ""),
            ],
        );
        let config = result.unwrap();

        assert!(config.server.trusted_proxies.is_empty());
        assert_eq!(config.jwt.signing_kid, None);
    }

    #[test]
    fn every_bad_list_entry_is_reported() {
        let (_dir, problems) = problems(
            "",
            &[(
                "AUTHD__SERVER__TRUSTED_PROXIES",
                "nope,10.0.0.0/8,10.0.0.0/99",
            )],
        );

        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with(
            "server.trusted_proxies in AUTHD__SERVER__TRUSTED_PROXIES: invalid network \"nope\""
        ));
        assert!(problems[1].contains("\"10.0.0.0/99\""));
    }

    #[test]
    fn max_connections_per_ip_is_read_and_zero_is_refused() {
        let (_dir, result) = load("[server]\nmax_connections_per_ip = 50\n", &[]);
        assert_eq!(result.unwrap().server.max_connections_per_ip, 50);

        // 0 would refuse every connection: a mistake, not a setting.
        let (dir, in_file) = problems("[server]\nmax_connections_per_ip = 0\n", &[]);
        let (_env_dir, in_env) = problems("", &[("AUTHD__SERVER__MAX_CONNECTIONS_PER_IP", "0")]);

        assert_eq!(
            in_file,
            [format!(
                "server.max_connections_per_ip in {}: must be at least 1, got 0",
                file_name(&dir)
            )]
        );
        assert_eq!(
            in_env,
            [
                "server.max_connections_per_ip in AUTHD__SERVER__MAX_CONNECTIONS_PER_IP: must be at least 1, got 0"
            ]
        );
    }

    #[test]
    fn a_missing_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nope.toml");

        let problems = Config::load_with_env(&file, HashMap::new())
            .unwrap_err()
            .problems;

        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("cannot read config file "),
            "{problems:?}"
        );
        assert!(
            problems[0].contains(&file.display().to_string()),
            "{problems:?}"
        );
    }

    #[test]
    fn a_toml_syntax_error_names_the_file_and_line() {
        let (dir, problems) = problems("[server\nlisten = 1\n", &[]);

        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with(&format!("{}: invalid TOML: ", file_name(&dir))),
            "{problems:?}"
        );
        assert!(problems[0].contains("line 1"), "{problems:?}");
        assert!(!problems[0].contains('\n'), "{problems:?}");
    }

    #[test]
    fn wrong_types_in_the_file_are_named() {
        let (dir, problems) = problems(
            "[server]\nmax_body_bytes = \"64k\"\n[cookie]\nenabled = \"yes\"\nallowed_redirect_domains = \"a.com\"\n",
            &[],
        );
        let file = file_name(&dir);

        assert_eq!(
            problems,
            [
                format!(
                    "server.max_body_bytes in {file}: expected a whole number, found string \"64k\""
                ),
                format!("cookie.enabled in {file}: expected true or false, found string \"yes\""),
                format!(
                    "cookie.allowed_redirect_domains in {file}: expected a list of strings, found string \"a.com\""
                ),
            ]
        );
    }

    #[test]
    fn argon2_memory_must_cover_the_lanes() {
        let (dir, problems) = problems(
            "[password]\nargon2_memory_kib = 16\n",
            &[("AUTHD__PASSWORD__ARGON2_PARALLELISM", "4")],
        );

        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(&format!(
                "password.argon2_memory_kib in {}: argon2id needs",
                file_name(&dir)
            )),
            "{problems:?}"
        );
        assert!(
            problems[0].contains("AUTHD__PASSWORD__ARGON2_PARALLELISM"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_section_replaced_by_one_environment_value_is_refused() {
        let (_dir, problems) = problems("[jwt]\nissuer = \"x\"\n", &[("AUTHD__JWT", "1")]);

        assert_eq!(
            problems,
            ["jwt in AUTHD__JWT: expected a section of keys, not a single value"]
        );
    }

    #[test]
    fn the_admin_listener_may_not_share_the_public_address() {
        let (_dir, problems) = problems("", &[("AUTHD__SERVER__ADMIN_LISTEN", "127.0.0.1:8080")]);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .starts_with("server.admin_listen in AUTHD__SERVER__ADMIN_LISTEN: must differ")
        );

        // Port 0 on both (tests) is fine, and so is an explicit non-loopback admin address.
        let (_dir, result) = load(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n",
            &[("AUTHD__SERVER__ADMIN_LISTEN", "0.0.0.0:9000")],
        );
        assert_eq!(
            result.unwrap().server.admin_listen,
            "0.0.0.0:9000".parse().unwrap()
        );
    }

    #[test]
    fn restart_is_required_only_for_listeners_storage_and_log_format() {
        let (_dir, old) = load("", &[]);
        let old = old.unwrap();
        let mut new = old.clone();
        new.jwt.access_ttl = Duration::from_secs(60);
        new.log.level = "debug".to_owned();
        assert!(restart_required_changes(&old, &new).is_empty());

        new.server.admin_listen = "127.0.0.1:9999".parse().unwrap();
        new.storage.path = PathBuf::from("/elsewhere");
        new.log.format = LogFormat::Json;
        assert_eq!(
            restart_required_changes(&old, &new),
            ["server.admin_listen", "storage.path", "log.format"]
        );
    }

    #[test]
    fn env_var_names_follow_the_key() {
        assert_eq!(env_var_name("jwt.access_ttl"), "AUTHD__JWT__ACCESS_TTL");
    }

    #[test]
    fn access_ttl_over_24h_and_leeway_over_5m_are_refused_naming_key_and_source() {
        let (dir, problems) = problems(
            "[jwt]\naccess_ttl = \"25h\"\n",
            &[("AUTHD__JWT__LEEWAY", "6m")],
        );

        assert_eq!(
            problems,
            [
                format!(
                    "jwt.access_ttl in {}: must be at most 1day, got \"25h\"",
                    file_name(&dir)
                ),
                "jwt.leeway in AUTHD__JWT__LEEWAY: must be at most 5m, got \"6m\"".to_owned(),
            ]
        );

        let (_dir, result) = load("[jwt]\naccess_ttl = \"24h\"\nleeway = \"5m\"\n", &[]);
        let jwt = result.unwrap().jwt;
        assert_eq!((jwt.access_ttl, jwt.leeway), (MAX_ACCESS_TTL, MAX_LEEWAY));
    }

    #[cfg(unix)]
    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn folders_others_can_write_and_a_shared_or_short_admin_token_are_refused() {
        let (dir, file) = config_file("[storage]\npath = \"state\"\n");
        let state = dir.path().join("state");
        let keys = dir.path().join("keys");
        let token = dir.path().join("admin.token");
        std::fs::create_dir(&state).unwrap();
        std::fs::create_dir(&keys).unwrap();
        std::fs::write(&token, format!("{}\n", "t".repeat(40))).unwrap();
        set_mode(&state, 0o770);
        set_mode(&keys, 0o757);
        set_mode(&token, 0o640);
        let env = env(&[
            ("AUTHD__JWT__KEYS_DIR", "keys"),
            ("AUTHD__ADMIN__TOKEN_FILE", "admin.token"),
        ]);

        let problems = Config::load_with_env(&file, env.clone())
            .unwrap_err()
            .problems;

        let base = dir.path().canonicalize().unwrap();
        assert_eq!(problems.len(), 3, "{problems:#?}");
        let expected = [
            format!(
                "storage.path in {}: {}",
                file_name(&dir),
                base.join("state").display()
            ),
            format!(
                "jwt.keys_dir in AUTHD__JWT__KEYS_DIR: {}",
                base.join("keys").display()
            ),
            format!(
                "admin.token_file in AUTHD__ADMIN__TOKEN_FILE: {}",
                base.join("admin.token").display()
            ),
        ];
        for (problem, start) in problems.iter().zip(&expected) {
            assert!(
                problem.starts_with(start.as_str()),
                "{problem:?} / {start:?}"
            );
        }

        set_mode(&state, 0o755);
        set_mode(&keys, 0o700);
        set_mode(&token, 0o600);
        std::fs::write(&token, format!("  {}  \n", "t".repeat(31))).unwrap();
        let problems = Config::load_with_env(&file, env.clone())
            .unwrap_err()
            .problems;
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains("31 bytes"), "{problems:?}");

        std::fs::write(&token, "t".repeat(32)).unwrap();
        assert!(Config::load_with_env(&file, env).is_ok());
    }

    // ----- storage.backend and [etcd] (rev 4) -----

    #[test]
    fn the_etcd_keys_are_read_from_file_and_environment() {
        let (dir, file) = config_file(
            "[storage]\nbackend = \"etcd\"\n[etcd]\n\
             endpoints = [\"http://127.0.0.21:2379\", \"https://etcd.example:2379\"]\n\
             prefix = \"/site-a/\"\ndial_timeout = \"1s\"\nrequest_timeout = \"3s\"\n\
             ca_file = \"tls/ca.pem\"\ncert_file = \"tls/c.pem\"\nkey_file = \"tls/c.key\"\n\
             username = \"authd\"\npassword_file = \"etcd.password\"\n",
        );
        let base = dir.path().canonicalize().unwrap();
        // Checked like every secret file: it must exist and be its owner's alone.
        std::fs::write(base.join("etcd.password"), "pw\n").unwrap();
        set_mode(&base.join("etcd.password"), 0o600);

        let config = Config::load_with_env(
            &file,
            env(&[
                (
                    "AUTHD__ETCD__ENDPOINTS",
                    "http://10.0.0.1:2379,http://10.0.0.2:2379",
                ),
                ("AUTHD__ETCD__MAX_STALENESS", "750ms"),
            ]),
        )
        .unwrap();

        assert_eq!(config.storage.backend, StorageBackend::Etcd);
        assert_eq!(
            config.etcd.endpoints,
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"],
            "the environment wins"
        );
        assert_eq!(config.etcd.prefix, "/site-a/");
        assert_eq!(config.etcd.dial_timeout, Duration::from_secs(1));
        assert_eq!(config.etcd.request_timeout, Duration::from_secs(3));
        assert_eq!(config.etcd.max_staleness, Duration::from_millis(750));
        assert_eq!(config.etcd.ca_file, Some(base.join("tls/ca.pem")));
        assert_eq!(config.etcd.cert_file, Some(base.join("tls/c.pem")));
        assert_eq!(config.etcd.key_file, Some(base.join("tls/c.key")));
        assert_eq!(config.etcd.username.as_deref(), Some("authd"));
        assert_eq!(config.etcd.password_file, Some(base.join("etcd.password")));

        let (_dir, defaults) = load("", &[]);
        let defaults = defaults.unwrap();
        assert_eq!(defaults.storage.backend, StorageBackend::Sled);
        assert_eq!(defaults.etcd.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(defaults.etcd.prefix, "/authd/");
        assert_eq!(defaults.etcd.dial_timeout, Duration::from_secs(2));
        assert_eq!(defaults.etcd.request_timeout, Duration::from_secs(5));
        assert_eq!(defaults.etcd.max_staleness, Duration::from_secs(5));
        assert_eq!(
            (defaults.etcd.ca_file, defaults.etcd.cert_file),
            (None, None)
        );
        assert_eq!(
            (defaults.etcd.username, defaults.etcd.password_file),
            (None, None)
        );
    }

    #[test]
    fn bad_etcd_settings_are_refused_naming_key_and_file() {
        let cases = [
            ("[etcd]\nmax_staleness = \"0s\"\n", "etcd.max_staleness"),
            ("[etcd]\nendpoints = []\n", "etcd.endpoints"),
            ("[storage]\nbackend = \"mongo\"\n", "storage.backend"),
            (
                "[etcd]\nendpoints = [\"127.0.0.1:2379\"]\n",
                "etcd.endpoints",
            ),
            (
                "[etcd]\nendpoints = [\"http://10.0.0.1:2379/v3\"]\n",
                "etcd.endpoints",
            ),
            ("[etcd]\ncert_file = \"client.pem\"\n", "etcd.cert_file"),
            ("[etcd]\nkey_file = \"client.key\"\n", "etcd.key_file"),
            ("[etcd]\nusername = \"authd\"\n", "etcd.username"),
            ("[etcd]\nprefix = \"\"\n", "etcd.prefix"),
        ];
        for (contents, key) in cases {
            let (dir, problems) = problems(contents, &[]);

            assert_eq!(problems.len(), 1, "{contents}: {problems:?}");
            let prefix = format!("{key} in {}: ", file_name(&dir));
            assert!(problems[0].starts_with(&prefix), "{contents}: {problems:?}");
        }
        let (_dir, problems) = problems("", &[("AUTHD__ETCD__MAX_STALENESS", "0s")]);
        assert!(
            problems[0].starts_with("etcd.max_staleness in AUTHD__ETCD__MAX_STALENESS: "),
            "{problems:?}"
        );
    }

    #[test]
    fn backend_endpoints_and_prefix_need_a_restart_while_timeouts_and_staleness_reload() {
        let (_dir, old) = load("", &[]);
        let old = old.unwrap();
        let mut new = old.clone();
        new.etcd.request_timeout = Duration::from_secs(9);
        new.etcd.max_staleness = Duration::from_secs(1);
        assert!(restart_required_changes(&old, &new).is_empty());

        new.storage.backend = StorageBackend::Etcd;
        new.etcd.endpoints = vec!["http://127.0.0.22:2379".to_owned()];
        new.etcd.prefix = "/other/".to_owned();
        assert_eq!(
            restart_required_changes(&old, &new),
            ["storage.backend", "etcd.endpoints", "etcd.prefix"]
        );
    }
}
