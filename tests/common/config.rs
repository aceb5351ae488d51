//! The configuration of every daemon a test starts: the shipped `config.toml`, changed only
//! where a test must differ (port 0, a private folder, cheap argon2), so that file cannot
//! rot. In-process daemons take `AUTHD__…` overrides; child processes get a rewritten file.
//!
//! In etcd mode ([`etcd_mode`]) every daemon stores in the shared test member
//! ([`SHARED_ETCD`]) under a prefix of its own folder's ([`etcd_prefix`]).
//!
//! Depends on `authd` and `std` alone: the fuzz targets include this file by path.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use authd::config::{Config, StorageBackend};

/// The client URL of the etcd member every test of an etcd-mode binary shares (net 1 of
/// `tests/common/etcd.rs`).
pub const SHARED_ETCD: &str = "http://127.0.1.1:2379";

/// Whether this binary's daemons store in etcd: the `api_etcd` test crate (this module's
/// path starts with the crate's name), or `AUTHD_TEST_STORE=etcd` for any binary — and etcd
/// is installed (without it they run on sled, with a note).
pub fn etcd_mode() -> bool {
    static MODE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MODE.get_or_init(|| {
        let wanted = module_path!().starts_with("api_etcd")
            || std::env::var("AUTHD_TEST_STORE").is_ok_and(|store| store == "etcd");
        let installed = || {
            [("etcd", "--version"), ("etcdctl", "version")]
                .iter()
                .all(|(tool, version)| {
                    std::process::Command::new(tool)
                        .arg(version)
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status()
                        .is_ok_and(|status| status.success())
                })
        };
        if wanted && !installed() {
            eprintln!("etcd not installed: skipped (these daemons run on sled)");
            return false;
        }
        wanted
    })
}

/// The etcd prefix of the daemon whose folder is `dir`: `/t/<random>/`, made once and kept
/// in `dir/.etcd-prefix`, so that a restart in the same folder finds the same data and no
/// two folders see each other's.
pub fn etcd_prefix(dir: &Path) -> String {
    let file = dir.join(".etcd-prefix");
    if let Ok(prefix) = std::fs::read_to_string(&file) {
        return prefix;
    }
    let prefix = format!("/t/{}/", authd::random::random_id(12));
    std::fs::write(&file, &prefix).unwrap();
    prefix
}

/// Sets `key` in `[section]` of a TOML text: replaces its line there, or adds it right
/// under the section's header, or adds the section at the end.
pub fn set_in_section(config: &str, section: &str, key: &str, value: &str) -> String {
    let header = format!("[{section}]");
    let prefix = format!("{key} = ");
    let mut lines: Vec<String> = config.lines().map(str::to_owned).collect();
    let Some(start) = lines.iter().position(|line| line.trim() == header) else {
        return format!("{config}\n\n{header}\n{prefix}{value}\n");
    };
    let end = lines[start + 1..]
        .iter()
        .position(|line| line.starts_with('['))
        .map_or(lines.len(), |offset| start + 1 + offset);
    match (start + 1..end).find(|&i| lines[i].starts_with(&prefix)) {
        Some(i) => lines[i] = format!("{prefix}{value}"),
        None => lines.insert(start + 1, format!("{prefix}{value}")),
    }
    lines.join("\n")
}

/// A config text switched to etcd: `storage.backend = "etcd"` and the `[etcd]` keys given
/// (key, TOML value).
pub fn etcd_config(config: &str, etcd: &[(&str, &str)]) -> String {
    etcd.iter().fold(
        set_in_section(config, "storage", "backend", "\"etcd\""),
        |config, (key, value)| set_in_section(&config, "etcd", key, value),
    )
}

/// In etcd mode, `config` switched to the shared member under `dir`'s prefix.
fn in_mode(config: &str, dir: &Path) -> String {
    if !etcd_mode() {
        return config.to_owned();
    }
    etcd_config(
        config,
        &[
            ("endpoints", &format!("[\"{SHARED_ETCD}\"]")),
            ("prefix", &format!("\"{}\"", etcd_prefix(dir))),
        ],
    )
}

/// The shipped `config.toml` at the repository root. Found from the manifest folder up, so
/// that the fuzz crate (one folder down) reads the same file.
pub fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("config.toml"))
        .find(|file| file.is_file())
        .expect("the shipped config.toml above the manifest folder")
}

/// The `AUTHD__…` overrides every in-process daemon gets: port 0 for both listeners, its
/// data, keys, admin and feed tokens in `dir`, cheap argon2.
pub fn in_process_env(dir: &Path) -> HashMap<String, String> {
    let path = |name: &str| dir.join(name).display().to_string();
    [
        ("AUTHD__SERVER__LISTEN", "127.0.0.1:0".to_owned()),
        ("AUTHD__SERVER__ADMIN_LISTEN", "127.0.0.1:0".to_owned()),
        ("AUTHD__STORAGE__PATH", path("data")),
        ("AUTHD__JWT__KEYS_DIR", path("keys")),
        ("AUTHD__ADMIN__TOKEN_FILE", path("admin.token")),
        ("AUTHD__FEED__TOKEN_FILE", path("feed.token")),
        ("AUTHD__MFA__KEY_FILE", path("mfa.key")),
        ("AUTHD__PASSWORD__ARGON2_MEMORY_KIB", "64".to_owned()),
        ("AUTHD__PASSWORD__ARGON2_ITERATIONS", "1".to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect()
}

/// The shipped configuration with [`in_process_env`] for `dir`, then `overrides`
/// (`AUTHD__…` name, value).
pub fn in_process_config(dir: &Path, overrides: &[(&str, &str)]) -> Config {
    let mut env = in_process_env(dir);
    for (key, value) in overrides {
        env.insert((*key).to_owned(), (*value).to_owned());
    }
    let mut config =
        Config::load_with_env(&shipped_config(), env).expect("the shipped config.toml loads");
    if etcd_mode() {
        config.storage.backend = StorageBackend::Etcd;
        config.etcd.endpoints = vec![SHARED_ETCD.to_owned()];
        config.etcd.prefix = etcd_prefix(dir);
    }
    config
}

/// Replaces the value of `key` (a `key = value` line at the start of a line) in a TOML
/// text; the key must occur exactly once, so the shipped file cannot drift unnoticed.
pub fn set(config: &str, key: &str, value: &str) -> String {
    let prefix = format!("{key} = ");
    let matches = config.lines().filter(|l| l.starts_with(&prefix)).count();
    assert_eq!(matches, 1, "{key} in the shipped config.toml");
    config
        .lines()
        .map(|line| {
            if line.starts_with(&prefix) {
                format!("{prefix}{value}")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The shipped `config.toml` with what every process test changes — port 0 for both
/// listeners, cheap argon2, JSON logs at `info` — and then `overrides` (key, TOML value).
/// Relative paths stay: they resolve against the test's folder.
pub fn config_with(overrides: &[(&str, &str)]) -> String {
    let shipped = std::fs::read_to_string(shipped_config()).unwrap();
    let defaults = [
        ("listen", "\"127.0.0.1:0\""),
        ("admin_listen", "\"127.0.0.1:0\""),
        ("argon2_memory_kib", "64"),
        ("argon2_iterations", "1"),
        ("level", "\"info\""),
        ("format", "\"json\""),
    ];
    defaults
        .iter()
        .chain(overrides)
        .fold(shipped, |config, (key, value)| set(&config, key, value))
}

/// [`config_with`] the given access token lifetime.
pub fn config_text(access_ttl: &str) -> String {
    config_with(&[("access_ttl", &format!("\"{access_ttl}\""))])
}

/// Writes the config file atomically, so a reload never reads half of it. In etcd mode the
/// file names the shared member and `dir`'s prefix.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let file = dir.join("config.toml");
    let staging = dir.join("config.toml.new");
    std::fs::write(&staging, in_mode(text, dir)).unwrap();
    std::fs::rename(&staging, &file).unwrap();
    file
}
