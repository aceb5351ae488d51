//! `authd check-config`'s warnings (which `serve` also logs at start and on each reload):
//! settings that are valid but probably not what was meant — RS256 signing, browser
//! sessions whose cookies could never reach the apps, and a per-username login limit that
//! one address alone reaches.

use super::Config;
use crate::auth::keys::KeyAlgorithm;
use crate::auth::redirect::{host_within, url_host};

/// The warning for `jwt.algorithm = "RS256"`: it keeps working, but authd signs on demand
/// with the `rsa` crate, whose private-key operations are not constant-time (README
/// "Security").
pub const RS256_WARNING: &str = "jwt.algorithm is RS256: it works, but authd signs it with \
     the rsa crate, whose signing is not constant-time (RUSTSEC-2023-0071); use EdDSA (or \
     ES256): `authd keygen --alg EdDSA`, then jwt.algorithm = \"EdDSA\" and a reload";

impl Config {
    /// Settings that are valid but probably not what was meant, one sentence each, for
    /// `authd check-config`, and for `serve` to log as warnings at start and after every
    /// reload: RS256 signing, browser sessions whose cookies could not reach the apps, and
    /// login limits that let one address lock a user out everywhere.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.jwt.algorithm == KeyAlgorithm::RS256 {
            warnings.push(RS256_WARNING.to_owned());
        }
        warnings.extend(self.cookie_warnings());
        warnings
    }

    fn cookie_warnings(&self) -> Vec<String> {
        let cookie = &self.cookie;
        let mut warnings = self.login_warnings();
        if !cookie.enabled {
            return warnings;
        }
        if cookie.allowed_redirect_domains.is_empty() {
            warnings.push(
                "cookie.allowed_redirect_domains is empty: every rd is refused, so nobody returns to an app after logging in".to_owned(),
            );
        }
        let Some(login_url) = &cookie.login_url else {
            warnings.push(
                "cookie.login_url is empty: /v1/verify cannot send browsers to the login page"
                    .to_owned(),
            );
            return warnings;
        };
        if cookie.secure && login_url.to_ascii_lowercase().starts_with("http://") {
            warnings.push(format!(
                "cookie.secure is true but cookie.login_url ({login_url}) is plain http: browsers drop Secure cookies set over http"
            ));
        }
        let Some(login_host) = url_host(login_url) else {
            return warnings;
        };
        let trim = |d: &str| d.trim_start_matches('.').to_ascii_lowercase();
        let apps = cookie.allowed_redirect_domains.iter().map(|d| trim(d));
        match cookie.domain.as_deref().map(trim) {
            None => {
                let elsewhere: Vec<String> = apps.filter(|d| *d != login_host).collect();
                if !elsewhere.is_empty() {
                    warnings.push(format!(
                        "cookie.domain is empty, so the session cookies stay on {login_host} (cookie.login_url's host) and are never sent to {}: set cookie.domain to their common parent domain",
                        elsewhere.join(", ")
                    ));
                }
            }
            Some(domain) => {
                if !host_within(&login_host, &domain) {
                    warnings.push(format!(
                        "cookie.login_url's host {login_host} is not inside cookie.domain {domain}: browsers refuse the cookies it sets"
                    ));
                }
                let outside: Vec<String> = apps.filter(|d| !host_within(d, &domain)).collect();
                if !outside.is_empty() {
                    warnings.push(format!(
                        "cookie.allowed_redirect_domains {} are not inside cookie.domain {domain}: apps there never receive the session cookie",
                        outside.join(", ")
                    ));
                }
            }
        }
        warnings
    }

    /// The per-username limit exists for attacks spread over many addresses; at or below
    /// the pair limit, one address alone reaches it and locks the user out everywhere.
    fn login_warnings(&self) -> Vec<String> {
        let login = &self.login;
        if login.max_failures_per_user > login.max_failures {
            return Vec::new();
        }
        vec![format!(
            "login.max_failures_per_user ({}) is not above login.max_failures ({}): one address alone can lock a user out from every address",
            login.max_failures_per_user, login.max_failures
        )]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn config(domain: &str, login_url: &str, allowed: &[&str]) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "").unwrap();
        let env = [
            ("AUTHD__COOKIE__ENABLED", "true"),
            ("AUTHD__COOKIE__DOMAIN", domain),
            ("AUTHD__COOKIE__LOGIN_URL", login_url),
            (
                "AUTHD__COOKIE__ALLOWED_REDIRECT_DOMAINS",
                &allowed.join(","),
            ),
        ];
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::load_with_env(&file, env).unwrap()
    }

    #[test]
    fn a_shared_parent_domain_gives_no_warning() {
        let c = config(
            "example.com",
            "https://auth.example.com/login",
            &["example.com"],
        );
        assert_eq!(c.warnings(), Vec::<String>::new());
        let c = config("", "https://app.example.com/login", &["app.example.com"]);
        assert_eq!(c.warnings(), Vec::<String>::new());
    }

    #[test]
    fn hosts_without_a_shared_cookie_domain_are_warned_about() {
        let c = config("", "https://auth.example.com/login", &["example.com"]);
        let warnings = c.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("cookie.domain is empty"),
            "{warnings:?}"
        );

        let c = config(
            "example.com",
            "https://auth.example.com/login",
            &["example.org"],
        );
        assert!(
            c.warnings()[0].contains("example.org"),
            "{:?}",
            c.warnings()
        );

        let c = config(
            "example.org",
            "https://auth.example.com/login",
            &["example.org"],
        );
        assert!(
            c.warnings()[0].contains("auth.example.com"),
            "{:?}",
            c.warnings()
        );
    }

    #[test]
    fn plain_http_with_secure_cookies_is_warned_about() {
        let c = config(
            "example.com",
            "http://auth.example.com/login",
            &["example.com"],
        );
        assert!(c.warnings()[0].contains("Secure"), "{:?}", c.warnings());
    }

    #[test]
    fn a_per_user_limit_not_above_the_pair_limit_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(
            &file,
            "[login]\nmax_failures = 5\nmax_failures_per_user = 5\n",
        )
        .unwrap();
        let config = Config::load_with_env(&file, Default::default()).unwrap();
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("login.max_failures_per_user (5)"),
            "{warnings:?}"
        );

        std::fs::write(
            &file,
            "[login]\nmax_failures = 5\nmax_failures_per_user = 6\n",
        )
        .unwrap();
        let config = Config::load_with_env(&file, Default::default()).unwrap();
        assert_eq!(config.warnings(), Vec::<String>::new());
    }

    #[test]
    fn rs256_signing_is_warned_about_and_the_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "").unwrap();
        let with = |alg: &str| {
            let env = [("AUTHD__JWT__ALGORITHM".to_owned(), alg.to_owned())]
                .into_iter()
                .collect();
            Config::load_with_env(&file, env).unwrap().warnings()
        };

        assert_eq!(with("RS256"), [RS256_WARNING]);
        assert!(RS256_WARNING.contains("EdDSA"));
        for alg in ["HS256", "EdDSA", "ES256"] {
            assert_eq!(with(alg), Vec::<String>::new(), "{alg}");
        }
    }
}
