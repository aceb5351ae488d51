//! Where a browser may be sent (API.md "Browser sessions and forward-auth"): the `rd` rules
//! that keep authd from being an open redirect, the host-in-domain test they share with the
//! cross-site check, and the login URL that `/v1/verify` hands to proxies. Pure functions.
//!
//! The parser is deliberately stricter than a browser's: anything a browser might read
//! differently from us (backslashes, percent-encoded or non-ASCII hosts, user-info, IP
//! spellings) is refused rather than normalised.

/// The longest `rd` accepted, in bytes.
const MAX_REDIRECT_LEN: usize = 4096;

/// An absolute `http(s)` URL on an allowed host, safe to put in a `Location` header
/// (printable ASCII only). Scheme and host are lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectTarget(String);

impl RedirectTarget {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `scheme://host[:port]`.
    pub fn origin(&self) -> &str {
        let authority_start = self.0.find("://").map_or(0, |i| i + 3);
        let end = self.0[authority_start..]
            .find(['/', '?', '#'])
            .map_or(self.0.len(), |i| authority_start + i);
        &self.0[..end]
    }
}

/// Why an `rd` was refused; the message names the rule, never echoes the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    #[error("the redirect target must be an absolute http:// or https:// URL")]
    NotAbsoluteHttp,
    #[error("the redirect target contains characters that are not allowed")]
    BadCharacters,
    #[error("the redirect target must not contain user information")]
    UserInfo,
    #[error("the redirect target has an invalid host or port")]
    BadHost,
    #[error("the redirect target's host is not an allowed redirect domain")]
    HostNotAllowed,
}

/// Checks `raw` against the `rd` rules: an absolute `http(s)` URL without user-info whose
/// host is one of `allowed` or a sub-domain of one (at a label boundary).
pub fn check_redirect(raw: &str, allowed: &[String]) -> Result<RedirectTarget, RedirectError> {
    if raw.is_empty() || raw.len() > MAX_REDIRECT_LEN {
        return Err(RedirectError::NotAbsoluteHttp);
    }
    // Printable ASCII only: no whitespace or control characters (browsers strip some of
    // them, changing the URL), nothing that needs encoding in a header.
    if !raw.bytes().all(|b| b.is_ascii_graphic()) || raw.contains('\\') {
        return Err(RedirectError::BadCharacters);
    }
    let (scheme, rest) = raw
        .split_once("://")
        .ok_or(RedirectError::NotAbsoluteHttp)?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(RedirectError::NotAbsoluteHttp);
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return Err(RedirectError::UserInfo);
    }
    let (host, port) = split_host_port(authority).ok_or(RedirectError::BadHost)?;
    if !is_allowed_host(&host, allowed) {
        return Err(RedirectError::HostNotAllowed);
    }
    let port = port.map_or_else(String::new, |p| format!(":{p}"));
    Ok(RedirectTarget(format!("{scheme}://{host}{port}{tail}")))
}

/// `host[:port]` → the lower-cased host and the port, when both are plain: a DNS name of
/// letters, digits and hyphens (or a dotted-quad IPv4 address) and a decimal port.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => {
            let valid =
                !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
            (host, Some(port.parse::<u16>().ok().filter(|_| valid)?))
        }
        None => (authority, None),
    };
    let host = host.to_ascii_lowercase();
    let labels_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    labels_ok.then_some((host, port))
}

/// Whether `host` (lower-case) is one of `domains` or a sub-domain of one. Hosts that a
/// browser reads as an IPv4 address (last label numeric) match only an identical entry,
/// and only when written as a canonical dotted quad.
pub fn is_allowed_host(host: &str, domains: &[String]) -> bool {
    let host = host.to_ascii_lowercase();
    let numeric = host
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x"));
    if numeric {
        let canonical = host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.to_string() == host);
        return canonical && domains.iter().any(|d| normalise_domain(d) == host);
    }
    domains
        .iter()
        .any(|domain| host_within(&host, &normalise_domain(domain)))
}

/// `host` equals `domain` or ends with `.domain`: `a.example.com` is inside `example.com`,
/// `evil-example.com` and `example.com.evil.io` are not.
pub fn host_within(host: &str, domain: &str) -> bool {
    !domain.is_empty()
        && (host == domain
            || host
                .strip_suffix(domain)
                .is_some_and(|prefix| prefix.ends_with('.')))
}

fn normalise_domain(domain: &str) -> String {
    domain
        .strip_prefix('.')
        .unwrap_or(domain)
        .to_ascii_lowercase()
}

/// The host (without port, lower-cased) of an `http(s)://host[:port]` origin or URL, or
/// `None` when it is not plainly one.
pub fn url_host(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains('@') {
        return None;
    }
    split_host_port(authority).map(|(host, _)| host)
}

/// The host (without port, lower-cased) of a `Host`-style `host[:port]` value.
pub fn authority_host(authority: &str) -> Option<String> {
    split_host_port(authority.trim()).map(|(host, _)| host)
}

/// Percent-encodes `value` for a URL query component: everything but RFC 3986's
/// unreserved characters.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `login_url` with `rd=<target>` appended (`?` or `&`, before any fragment), or
/// `login_url` itself without a target.
pub fn login_url_with_rd(login_url: &str, rd: Option<&RedirectTarget>) -> String {
    let Some(rd) = rd else {
        return login_url.to_owned();
    };
    let (base, fragment) = match login_url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (login_url, None),
    };
    let separator = if !base.contains('?') {
        "?"
    } else if base.ends_with('?') || base.ends_with('&') {
        ""
    } else {
        "&"
    };
    let mut url = format!("{base}{separator}rd={}", percent_encode(rd.as_str()));
    if let Some(fragment) = fragment {
        url.push('#');
        url.push_str(fragment);
    }
    url
}

/// The URL a proxy is asking about, from the headers it sets: `X-Original-URL` (nginx), or
/// `X-Forwarded-Proto` + `X-Forwarded-Host` + `X-Forwarded-Uri` (Caddy, Traefik).
pub fn original_url(
    original: Option<&str>,
    proto: Option<&str>,
    host: Option<&str>,
    uri: Option<&str>,
) -> Option<String> {
    if let Some(url) = original.map(str::trim).filter(|u| !u.is_empty()) {
        return Some(url.to_owned());
    }
    let (proto, host, uri) = (proto?.trim(), host?.trim(), uri?.trim());
    if host.is_empty() || !uri.starts_with('/') {
        return None;
    }
    Some(format!("{proto}://{host}{uri}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn allowed() -> Vec<String> {
        vec!["example.com".to_owned()]
    }

    fn check(raw: &str) -> Result<String, RedirectError> {
        check_redirect(raw, &allowed()).map(|t| t.as_str().to_owned())
    }

    #[test]
    fn allowed_hosts_and_sub_domains_are_followed() {
        assert_eq!(
            check("https://example.com/").unwrap(),
            "https://example.com/"
        );
        assert_eq!(
            check("https://app.example.com/a/b?c=d&e=%2F#frag").unwrap(),
            "https://app.example.com/a/b?c=d&e=%2F#frag"
        );
        assert_eq!(
            check("http://x.y.example.com:8443").unwrap(),
            "http://x.y.example.com:8443"
        );
        assert_eq!(
            check("HTTPS://App.Example.COM/Path").unwrap(),
            "https://app.example.com/Path"
        );
        assert!(check_redirect("https://example.com/", &[".example.com".to_owned()]).is_ok());
    }

    #[test]
    fn a_target_knows_its_origin() {
        let origin = |raw| check_redirect(raw, &allowed()).unwrap().origin().to_owned();
        assert_eq!(
            origin("https://a.example.com:8443/x?y#z"),
            "https://a.example.com:8443"
        );
        assert_eq!(origin("http://example.com?q"), "http://example.com");
        assert_eq!(origin("http://example.com"), "http://example.com");
    }

    #[test]
    fn foreign_and_look_alike_hosts_are_refused() {
        for raw in [
            "https://evil.com/",
            "https://evil-example.com/",
            "https://example.com.evil.io/",
            "https://notexample.com/",
            "https://example.co/",
            "https://evil.com/#https://example.com/",
            "https://evil.com?https://example.com",
        ] {
            assert_eq!(check(raw), Err(RedirectError::HostNotAllowed), "{raw}");
        }
    }

    #[test]
    fn relative_scheme_relative_and_other_schemes_are_refused() {
        for raw in [
            "",
            "/",
            "/path",
            "//evil.com",
            "//example.com/",
            "javascript:alert(1)",
            "javascript://example.com/%0aalert(1)",
            "data:text/html,x",
            "ftp://example.com/",
            "https:example.com",
            "https:/example.com",
            "example.com",
        ] {
            assert!(check(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn user_info_backslashes_and_odd_characters_are_refused() {
        assert_eq!(
            check("https://evil.com@example.com/"),
            Err(RedirectError::UserInfo)
        );
        assert_eq!(
            check("https://example.com@evil.com/"),
            Err(RedirectError::UserInfo)
        );
        assert_eq!(
            check("https://u:p@app.example.com/"),
            Err(RedirectError::UserInfo)
        );
        for raw in [
            "https://example.com\\@evil.com/",
            "https:\\\\evil.com",
            "https://exa mple.com/",
            "https://example.com/\n",
            "https://example.com/\t",
            "https://exämple.com/",
            " https://example.com/",
        ] {
            assert_eq!(check(raw), Err(RedirectError::BadCharacters), "{raw:?}");
        }
        for raw in [
            "https:///example.com",
            "https://example%2Ecom/",
            "https://[::1]/",
            "https://example.com:/",
            "https://example.com:99999/",
            "https://example.com./",
            "https://-a.example.com/",
        ] {
            assert_eq!(check(raw), Err(RedirectError::BadHost), "{raw}");
        }
    }

    #[test]
    fn ip_hosts_match_only_an_identical_canonical_entry() {
        let ips = vec!["127.0.0.1".to_owned(), "0.1".to_owned()];
        assert!(check_redirect("http://127.0.0.1:8080/", &ips).is_ok());
        assert!(check_redirect("http://10.127.0.0.1/", &ips).is_err());
        assert!(check_redirect("http://0127.0.0.1/", &ips).is_err());
        assert!(check_redirect("http://0x7f.0.0.1/", &ips).is_err());
        assert!(!is_allowed_host("1.0.1", &ips));
    }

    #[test]
    fn host_within_respects_label_boundaries() {
        assert!(host_within("example.com", "example.com"));
        assert!(host_within("a.example.com", "example.com"));
        assert!(!host_within("evil-example.com", "example.com"));
        assert!(!host_within("aexample.com", "example.com"));
        assert!(!host_within("example.com.evil.io", "example.com"));
        assert!(!host_within("example.com", ""));
    }

    #[test]
    fn login_url_gets_rd_with_the_right_separator() {
        let rd = check_redirect("https://app.example.com/a b?x=1&y=2", &allowed());
        assert!(rd.is_err(), "a space is refused");
        let rd = check_redirect("https://app.example.com/a?x=1&y=%2F", &allowed()).unwrap();
        let encoded = "https%3A%2F%2Fapp.example.com%2Fa%3Fx%3D1%26y%3D%252F";
        assert_eq!(
            login_url_with_rd("https://auth.example.com/login", Some(&rd)),
            format!("https://auth.example.com/login?rd={encoded}")
        );
        assert_eq!(
            login_url_with_rd("https://auth.example.com/login?theme=dark", Some(&rd)),
            format!("https://auth.example.com/login?theme=dark&rd={encoded}")
        );
        assert_eq!(
            login_url_with_rd("https://auth.example.com/login?", Some(&rd)),
            format!("https://auth.example.com/login?rd={encoded}")
        );
        assert_eq!(
            login_url_with_rd("https://auth.example.com/login#top", Some(&rd)),
            format!("https://auth.example.com/login?rd={encoded}#top")
        );
        assert_eq!(
            login_url_with_rd("https://auth.example.com/login", None),
            "https://auth.example.com/login"
        );
    }

    #[test]
    fn original_url_prefers_nginx_then_forwarded_parts() {
        assert_eq!(
            original_url(
                Some("https://a.example.com/x"),
                Some("http"),
                Some("b"),
                Some("/y")
            ),
            Some("https://a.example.com/x".to_owned())
        );
        assert_eq!(
            original_url(
                None,
                Some("https"),
                Some("b.example.com:8443"),
                Some("/y?z=1")
            ),
            Some("https://b.example.com:8443/y?z=1".to_owned())
        );
        assert_eq!(
            original_url(None, Some("https"), Some("b.example.com"), None),
            None
        );
        assert_eq!(original_url(None, Some("https"), None, Some("/")), None);
        assert_eq!(
            original_url(None, Some("https"), Some("b"), Some("y")),
            None
        );
    }

    #[test]
    fn hosts_of_origins_and_authorities() {
        assert_eq!(
            url_host("https://App.Example.com:8443"),
            Some("app.example.com".into())
        );
        assert_eq!(url_host("null"), None);
        assert_eq!(url_host("https://u@example.com"), None);
        assert_eq!(
            authority_host("example.com:8080"),
            Some("example.com".into())
        );
        assert_eq!(authority_host("bad host"), None);
    }
}
