//! The browser-session cookies of API.md: reading them from `Cookie` (where two of one name
//! count as none), writing and clearing them with the configured attributes, expiring the
//! refresh cookie of rev 3, and the cross-site check that every cookie-authenticated state
//! change must pass.

use http::Method;
use http::header::{COOKIE, HOST, HeaderMap, HeaderValue, ORIGIN};

use super::error::ApiError;
use crate::auth::redirect::{authority_host, host_within, is_allowed_host, url_host};
use crate::config::CookieConfig;

const SEC_FETCH_SITE: &str = "sec-fetch-site";
const X_FORWARDED_METHOD: &str = "x-forwarded-method";
const X_FORWARDED_HOST: &str = "x-forwarded-host";
const X_ORIGINAL_URL: &str = "x-original-url";

/// The name of the refresh cookie: `__Host-<cookie.name>_refresh` under `Secure`, so that
/// browsers refuse it from anyone but authd's own host over HTTPS without a `Domain`
/// (sibling sub-domains can neither read nor plant it); else `<cookie.name>_refresh`.
pub fn refresh_cookie_name(config: &CookieConfig) -> String {
    if config.secure {
        format!("__Host-{}_refresh", config.name)
    } else {
        rev3_refresh_cookie_name(config)
    }
}

/// The refresh cookie's name before rev 4, when it carried the access cookie's `Domain`.
fn rev3_refresh_cookie_name(config: &CookieConfig) -> String {
    format!("{}_refresh", config.name)
}

/// What a request's `Cookie` headers hold under one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'h> {
    Absent,
    One(&'h str),
    /// Two or more: a browser holding ours and one a sibling sub-domain planted under the
    /// parent domain (cookie tossing) sends both, in an order the sibling can influence
    /// (a longer `Path` goes first), so neither can be trusted.
    Several,
}

/// The cookies called `name` in the request's `Cookie` headers.
pub fn presented<'h>(headers: &'h HeaderMap, name: &str) -> Presented<'h> {
    let mut values = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(key, _)| key.trim() == name)
        .map(|(_, value)| {
            let value = value.trim();
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value)
        });
    match (values.next(), values.next()) {
        (None, _) => Presented::Absent,
        (Some(value), None) => Presented::One(value),
        (Some(_), Some(_)) => Presented::Several,
    }
}

/// The value of the cookie called `name`, when the request carries exactly one, not empty.
/// Two of one name count as none (see [`Presented::Several`]); every reader of the session
/// cookies goes through here, `/v1/verify` and the bearer routes included.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    match presented(headers, name) {
        Presented::One(value) if !value.is_empty() => Some(value),
        _ => None,
    }
}

/// Whether the request carries two cookies of the access or of the refresh cookie's name:
/// the browser routes then refuse to act on either.
pub fn tossed(headers: &HeaderMap, config: &CookieConfig) -> bool {
    [config.name.clone(), refresh_cookie_name(config)]
        .iter()
        .any(|name| presented(headers, name) == Presented::Several)
}

/// The `Set-Cookie` of the access cookie: `Domain` when configured, so that the apps on
/// sibling sub-domains receive it.
pub fn set_access_cookie(config: &CookieConfig, value: &str, max_age: i64) -> HeaderValue {
    set_cookie(
        config,
        &config.name,
        value,
        max_age,
        config.domain.as_deref(),
    )
}

/// The `Set-Cookie` of the refresh cookie: host-only, never a `Domain`, so that no app on a
/// sibling sub-domain ever receives it.
pub fn set_refresh_cookie(config: &CookieConfig, value: &str, max_age: i64) -> HeaderValue {
    set_cookie(config, &refresh_cookie_name(config), value, max_age, None)
}

/// A `Set-Cookie` that removes the access cookie (same `Domain` and `Path` as when set).
pub fn clear_access_cookie(config: &CookieConfig) -> HeaderValue {
    set_access_cookie(config, "", 0)
}

/// A `Set-Cookie` that removes the refresh cookie.
pub fn clear_refresh_cookie(config: &CookieConfig) -> HeaderValue {
    set_refresh_cookie(config, "", 0)
}

/// The refresh cookie of rev 3, when a request carries one that [`rev3_refresh_expiry`]
/// would remove: `<cookie.name>_refresh`.
pub fn carries_rev3_refresh_cookie(headers: &HeaderMap, config: &CookieConfig) -> bool {
    presented(headers, &rev3_refresh_cookie_name(config)) != Presented::Absent
}

/// A `Set-Cookie` that removes a refresh cookie of rev 3 — `<cookie.name>_refresh` with the
/// access cookie's attributes, `Domain` included — so that browsers stop sending it to the
/// siblings. `None` when that cookie is the current refresh cookie (no `Secure`, no
/// `Domain`: same name, same attributes).
pub fn rev3_refresh_expiry(config: &CookieConfig) -> Option<HeaderValue> {
    if !config.secure && config.domain.is_none() {
        return None;
    }
    let name = rev3_refresh_cookie_name(config);
    Some(set_cookie(config, &name, "", 0, config.domain.as_deref()))
}

/// A `Set-Cookie` value for `name=value` that lives `max_age` seconds, with the attributes
/// of API.md: `HttpOnly`, `Path=/`, `SameSite=Lax`, `Secure` unless turned off, and
/// `domain` when given.
fn set_cookie(
    config: &CookieConfig,
    name: &str,
    value: &str,
    max_age: i64,
    domain: Option<&str>,
) -> HeaderValue {
    let mut cookie = format!("{name}={value}; Max-Age={}; Path=/", max_age.max(0));
    if let Some(domain) = domain {
        cookie.push_str("; Domain=");
        cookie.push_str(domain.strip_prefix('.').unwrap_or(domain));
    }
    cookie.push_str("; HttpOnly");
    if config.secure {
        cookie.push_str("; Secure");
    }
    cookie.push_str("; SameSite=Lax");
    // Token characters (base64url, JWS dots) and RFC 6265 names only: always valid.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether a request changes state for the purpose of the cross-site check: its method, or
/// the method of the request a proxy is asking `/v1/verify` about (`X-Forwarded-Method`),
/// is neither `GET` nor `HEAD`. Either one being unsafe is enough, so a client cannot talk
/// its way past the check with a forged header.
pub fn is_state_change(method: &Method, headers: &HeaderMap) -> bool {
    let unsafe_method = |m: &str| !m.eq_ignore_ascii_case("GET") && !m.eq_ignore_ascii_case("HEAD");
    unsafe_method(method.as_str())
        || headers
            .get(X_FORWARDED_METHOD)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| unsafe_method(m.trim()))
}

/// The cross-site check of API.md: a browser request is refused when `Sec-Fetch-Site` is
/// `cross-site`, when `Origin` is `null` (or unreadable), or when `Origin`'s host is
/// neither the request's host nor inside `cookie.domain` / `cookie.allowed_redirect_domains`.
/// A request with neither header (not a browser) passes.
///
/// "The request's host" is `Host`, or the original host a proxy names (`X-Forwarded-Host`,
/// `X-Original-URL`) when `/v1/verify` is asked about another site's request.
///
/// Every cookie-authenticated state change uses this strict form, except the forms of
/// authd's own pages ([`check_own_form_origin`]).
pub fn check_same_site(headers: &HeaderMap, config: &CookieConfig) -> Result<(), ApiError> {
    same_site(headers, config, NullOrigin::Refuse)
}

/// The cross-site check of the forms on authd's own pages — `POST /login` and the account
/// page's `POST /account/…`: as [`check_same_site`], except that `Origin: null` with
/// `Sec-Fetch-Site: same-origin` passes.
///
/// Those pages must be served with `Referrer-Policy: no-referrer`, which makes browsers
/// send `Origin: null` with the pages' own forms; `Sec-Fetch-Site: same-origin` is the
/// browser vouching that this is such a post (no other site can send it: it is a header
/// scripts cannot set). This deliberate deviation from API.md's letter is for these routes
/// only, and only for that pair of headers; every other cookie-authenticated state change
/// (`POST /logout`, password change and session revocation through the API, forward-auth
/// of a state change) gets the strict check. The account page signs out through its own
/// `POST /account/sessions/end` for that reason.
pub fn check_own_form_origin(headers: &HeaderMap, config: &CookieConfig) -> Result<(), ApiError> {
    same_site(headers, config, NullOrigin::AllowOwnForm)
}

/// What [`same_site`] makes of `Origin: null`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NullOrigin {
    /// Always refused.
    Refuse,
    /// Accepted together with `Sec-Fetch-Site: same-origin` (a form of authd's own pages).
    AllowOwnForm,
}

fn same_site(headers: &HeaderMap, config: &CookieConfig, null: NullOrigin) -> Result<(), ApiError> {
    let refuse = || Err(ApiError::forbidden("cross-site request refused"));
    let fetch_site = headers
        .get(SEC_FETCH_SITE)
        .map(|v| v.to_str().unwrap_or(""));
    if fetch_site.is_some_and(|site| site.trim().eq_ignore_ascii_case("cross-site")) {
        return refuse();
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let Some(origin_host) = origin.to_str().ok().and_then(url_host) else {
        // `null` (sandboxed frames, some redirects, privacy modes) or garbage.
        let same_origin = fetch_site.is_some_and(|s| s.trim().eq_ignore_ascii_case("same-origin"));
        let own_login_form =
            null == NullOrigin::AllowOwnForm && same_origin && origin.as_bytes() == b"null";
        return if own_login_form { Ok(()) } else { refuse() };
    };
    let header_host = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let request_hosts = [
        header_host(HOST.as_str()).and_then(|h| authority_host(&h)),
        header_host(X_FORWARDED_HOST).and_then(|h| authority_host(&h)),
        header_host(X_ORIGINAL_URL).and_then(|u| url_host(&u)),
    ];
    let same_host = request_hosts.iter().flatten().any(|h| *h == origin_host);
    let in_cookie_domain = config
        .domain
        .as_deref()
        .map(|d| d.strip_prefix('.').unwrap_or(d).to_ascii_lowercase())
        .is_some_and(|d| host_within(&origin_host, &d));
    if same_host
        || in_cookie_domain
        || is_allowed_host(&origin_host, &config.allowed_redirect_domains)
    {
        Ok(())
    } else {
        refuse()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    fn config() -> CookieConfig {
        CookieConfig {
            enabled: true,
            name: "authd".into(),
            domain: Some("example.com".into()),
            secure: true,
            login_url: None,
            allowed_redirect_domains: vec!["example.org".into()],
            refresh_grace: Duration::from_secs(10),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn reads_the_named_cookie_from_any_cookie_header() {
        let h = headers(&[
            ("cookie", "a=1; authd_refresh=r"),
            ("cookie", "authd=\"t\"; b=2"),
        ]);
        assert_eq!(cookie(&h, "authd"), Some("t"));
        assert_eq!(cookie(&h, "authd_refresh"), Some("r"));
        assert_eq!(cookie(&h, "auth"), None);
        assert_eq!(cookie(&headers(&[("cookie", "authd=")]), "authd"), None);
    }

    #[test]
    fn two_cookies_of_one_name_count_as_none() {
        for pairs in [
            vec![("cookie", "authd=mine; authd=planted")],
            vec![("cookie", "authd=mine"), ("cookie", "x=1; authd=planted")],
            vec![("cookie", "authd=; authd=planted")],
        ] {
            let h = headers(&pairs);
            assert_eq!(presented(&h, "authd"), Presented::Several, "{pairs:?}");
            assert_eq!(cookie(&h, "authd"), None, "{pairs:?}");
            assert!(tossed(&h, &config()), "{pairs:?}");
        }
        let refresh = headers(&[("cookie", "__Host-authd_refresh=a; __Host-authd_refresh=b")]);
        assert!(tossed(&refresh, &config()));
        // One of each name is no tossing; neither is a cookie that merely ends alike.
        let fine = headers(&[("cookie", "authd=a; __Host-authd_refresh=b; xauthd=c")]);
        assert!(!tossed(&fine, &config()));
    }

    #[test]
    fn the_access_cookie_carries_the_domain_and_the_refresh_cookie_never() {
        let mut c = config();
        assert_eq!(
            set_access_cookie(&c, "tok", 900),
            "authd=tok; Max-Age=900; Path=/; Domain=example.com; HttpOnly; Secure; SameSite=Lax"
        );
        assert_eq!(
            set_refresh_cookie(&c, "r", 60),
            "__Host-authd_refresh=r; Max-Age=60; Path=/; HttpOnly; Secure; SameSite=Lax"
        );
        c.domain = None;
        c.secure = false;
        assert_eq!(
            clear_refresh_cookie(&c),
            "authd_refresh=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            clear_access_cookie(&c),
            "authd=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn the_rev3_refresh_cookie_is_expired_with_its_own_domain() {
        let mut c = config();
        assert_eq!(
            rev3_refresh_expiry(&c).unwrap(),
            "authd_refresh=; Max-Age=0; Path=/; Domain=example.com; HttpOnly; Secure; SameSite=Lax"
        );
        assert!(carries_rev3_refresh_cookie(
            &headers(&[("cookie", "authd_refresh=old")]),
            &c
        ));
        assert!(!carries_rev3_refresh_cookie(
            &headers(&[("cookie", "__Host-authd_refresh=new")]),
            &c
        ));
        c.secure = false;
        assert_eq!(
            rev3_refresh_expiry(&c).unwrap(),
            "authd_refresh=; Max-Age=0; Path=/; Domain=example.com; HttpOnly; SameSite=Lax"
        );
        // Without `Secure` and `Domain` the rev-3 cookie is the current one.
        c.domain = None;
        assert_eq!(rev3_refresh_expiry(&c), None);
    }

    #[test]
    fn state_changes_are_told_by_method_or_forwarded_method() {
        assert!(!is_state_change(&Method::GET, &HeaderMap::new()));
        assert!(!is_state_change(&Method::HEAD, &HeaderMap::new()));
        assert!(is_state_change(&Method::POST, &HeaderMap::new()));
        assert!(is_state_change(
            &Method::GET,
            &headers(&[("x-forwarded-method", "DELETE")])
        ));
        assert!(is_state_change(
            &Method::POST,
            &headers(&[("x-forwarded-method", "GET")])
        ));
    }

    #[test]
    fn same_site_and_non_browser_requests_pass() {
        let c = config();
        for pairs in [
            vec![],
            vec![("sec-fetch-site", "same-origin")],
            vec![
                ("sec-fetch-site", "same-site"),
                ("origin", "https://app.example.com"),
            ],
            vec![("origin", "https://example.com:8443")],
            vec![("origin", "https://www.example.org")],
            vec![
                ("host", "authd.internal:8080"),
                ("origin", "http://authd.internal:8080"),
            ],
            vec![
                ("x-forwarded-host", "app.other.net"),
                ("origin", "https://app.other.net"),
            ],
            vec![
                ("x-original-url", "https://app.other.net/x"),
                ("origin", "https://app.other.net"),
            ],
        ] {
            assert!(check_same_site(&headers(&pairs), &c).is_ok(), "{pairs:?}");
            assert!(
                check_own_form_origin(&headers(&pairs), &c).is_ok(),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn only_the_login_form_may_post_with_origin_null() {
        let c = config();
        // The login page's own form under `Referrer-Policy: no-referrer`.
        let own_form = headers(&[("origin", "null"), ("sec-fetch-site", "same-origin")]);
        assert!(check_own_form_origin(&own_form, &c).is_ok());
        let err = check_same_site(&own_form, &c).unwrap_err();
        assert_eq!(err.code(), "forbidden");
    }

    #[test]
    fn cross_site_requests_are_refused() {
        let c = config();
        for pairs in [
            vec![("sec-fetch-site", "cross-site")],
            vec![
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://app.example.com"),
            ],
            vec![("origin", "null")],
            vec![("origin", "null"), ("sec-fetch-site", "same-site")],
            vec![("origin", "garbage"), ("sec-fetch-site", "same-origin")],
            vec![("origin", "https://evil.com")],
            vec![("origin", "https://evil-example.com")],
            vec![("origin", "https://example.com.evil.io")],
            vec![
                ("host", "auth.example.net"),
                ("origin", "https://evil.example.net"),
            ],
        ] {
            let err = check_same_site(&headers(&pairs), &c).unwrap_err();
            assert_eq!(err.code(), "forbidden", "{pairs:?}");
            let err = check_own_form_origin(&headers(&pairs), &c).unwrap_err();
            assert_eq!(err.code(), "forbidden", "{pairs:?}");
        }
    }
}
