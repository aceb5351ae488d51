//! The configuration of every daemon a test starts: the shipped `config.toml`, changed only
//! where a test must differ (port 0, a private folder, cheap argon2), so that file cannot
//! rot. In-process daemons take `AUTHD__…` overrides; child processes get a rewritten file.
//!
//! Depends on `authd` and `std` alone: the fuzz targets include this file by path.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use authd::config::Config;

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
/// data, keys and admin token in `dir`, cheap argon2.
pub fn in_process_env(dir: &Path) -> HashMap<String, String> {
    let path = |name: &str| dir.join(name).display().to_string();
    [
        ("AUTHD__SERVER__LISTEN", "127.0.0.1:0".to_owned()),
        ("AUTHD__SERVER__ADMIN_LISTEN", "127.0.0.1:0".to_owned()),
        ("AUTHD__STORAGE__PATH", path("data")),
        ("AUTHD__JWT__KEYS_DIR", path("keys")),
        ("AUTHD__ADMIN__TOKEN_FILE", path("admin.token")),
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
    Config::load_with_env(&shipped_config(), env).expect("the shipped config.toml loads")
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

/// Writes the config file atomically, so a reload never reads half of it.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let file = dir.join("config.toml");
    let staging = dir.join("config.toml.new");
    std::fs::write(&staging, text).unwrap();
    std::fs::rename(&staging, &file).unwrap();
    file
}
