//! The HTML of the browser routes: the login form and the small error pages, with the
//! security headers of API.md. Everything echoed into a page is escaped; the password never
//! is echoed.

use http::StatusCode;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use warp::reply::Response;

use super::error::ApiError;
use crate::auth::redirect::RedirectTarget;

/// The page's own inline style is the only thing it may load; it may not be framed, and
/// its form may post only back to authd.
const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d1f23}\
main{max-width:22rem;margin:12vh auto;padding:2rem;background:#fff;border-radius:8px;\
box-shadow:0 1px 4px rgba(0,0,0,.15)}h1{font-size:1.4rem;margin-top:0}\
label{display:block;font-weight:600;margin-bottom:.3rem}\
input{width:100%;box-sizing:border-box;padding:.55rem;font-size:1rem;border:1px solid #8a8f98;\
border-radius:4px}input:focus,button:focus{outline:3px solid #2d6cdf;outline-offset:1px}\
button{width:100%;padding:.6rem;font-size:1rem;border:0;border-radius:4px;background:#2d6cdf;\
color:#fff;cursor:pointer}.alert{padding:.6rem;border-radius:4px;background:#fdecea;\
color:#8a1c12;border:1px solid #f5c2bc}";

/// What the login form shows besides its fields.
#[derive(Debug, Default)]
pub struct LoginForm<'a> {
    /// The validated `rd`, carried through the form.
    pub rd: Option<&'a RedirectTarget>,
    /// The username to fill in again after a failed attempt.
    pub username: &'a str,
    /// Why the previous attempt failed.
    pub message: Option<&'a str>,
}

/// The login form with `status`.
pub fn login_page(status: StatusCode, form: &LoginForm<'_>) -> Response {
    let (message, rd) = (alert(form.message), hidden_rd(form.rd));
    // Focus where the user has to type next.
    let (user_focus, password_focus) = if form.username.is_empty() {
        (" autofocus", "")
    } else {
        ("", " autofocus")
    };
    let body = format!(
        "<main>\n<h1>Sign in</h1>\n{message}<form method=\"post\">\n{rd}\
<p><label for=\"username\">Username</label>\n\
<input id=\"username\" name=\"username\" type=\"text\" autocomplete=\"username\" \
autocapitalize=\"none\" spellcheck=\"false\" required{user_focus} value=\"{username}\"></p>\n\
<p><label for=\"password\">Password</label>\n\
<input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" \
required{password_focus}></p>\n\
<p><button type=\"submit\">Sign in</button></p>\n</form>\n</main>",
        username = escape(form.username),
    );
    let mut response = page(status, "Sign in", &body);
    allow_form_redirect(&mut response, form.rd);
    response
}

/// What the second step's form carries besides its code field.
#[derive(Debug)]
pub struct CodeForm<'a> {
    pub rd: Option<&'a RedirectTarget>,
    pub mfa_token: &'a str,
    /// Why the previous code was refused.
    pub message: Option<&'a str>,
}

/// The second step of a login for an account with TOTP on: a code field, with the
/// `mfa_token` and `rd` hidden (never the password).
pub fn code_page(status: StatusCode, form: &CodeForm<'_>) -> Response {
    let (message, rd) = (alert(form.message), hidden_rd(form.rd));
    let body = format!(
        "<main>\n<h1>Two-factor authentication</h1>\n{message}<form method=\"post\">\n{rd}\
<input type=\"hidden\" name=\"mfa_token\" value=\"{token}\">\n\
<p><label for=\"code\">Authentication code</label>\n\
<input id=\"code\" name=\"code\" type=\"text\" inputmode=\"numeric\" \
autocomplete=\"one-time-code\" autocapitalize=\"none\" spellcheck=\"false\" required autofocus \
aria-describedby=\"code-help\"></p>\n\
<p id=\"code-help\">Enter the 6-digit code from your authenticator app, or one of your \
recovery codes.</p>\n\
<p><button type=\"submit\">Verify</button></p>\n</form>\n</main>",
        token = escape(form.mfa_token),
    );
    let mut response = page(status, "Two-factor authentication", &body);
    allow_form_redirect(&mut response, form.rd);
    response
}

/// The alert paragraph of a form that failed, if it did.
fn alert(message: Option<&str>) -> String {
    message.map_or_else(String::new, |m| {
        format!("<p class=\"alert\" role=\"alert\">{}</p>\n", escape(m))
    })
}

/// The hidden `rd` field that carries the validated target through a form.
fn hidden_rd(rd: Option<&RedirectTarget>) -> String {
    rd.map_or_else(String::new, |rd| {
        format!(
            "<input type=\"hidden\" name=\"rd\" value=\"{}\">\n",
            escape(rd.as_str())
        )
    })
}

/// Chromium applies `form-action` to the redirects that follow a form submission too, so
/// the 303 to an app on another host needs that origin listed, or the browser stops on the
/// login page. Only `rd`'s origin is added.
fn allow_form_redirect(response: &mut Response, rd: Option<&RedirectTarget>) {
    let Some(rd) = rd else {
        return;
    };
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' {}; frame-ancestors 'none'",
        rd.origin()
    );
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        response.headers_mut().insert(CONTENT_SECURITY_POLICY, csp);
    }
}

/// An error of a browser route as a small page, keeping the error's status and headers
/// (`Allow`, `Retry-After`, `WWW-Authenticate`).
pub fn error_page(err: ApiError) -> Response {
    let status = err.status();
    let title = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "<main>\n<h1>{}</h1>\n<p>{}</p>\n</main>",
        escape(title),
        escape(err.description())
    );
    let mut response = page(status, title, &body);
    let json = err.into_response();
    for (name, value) in json.headers() {
        if name != CONTENT_TYPE {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    response
}

/// A complete HTML document with the page headers.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    styled_page(status, title, body, "")
}

/// [`page`] with more CSS after the shared style.
pub(super) fn styled_page(status: StatusCode, title: &str, body: &str, css: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<title>{} · authd</title>\n<style>{STYLE}{css}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n",
        escape(title)
    );
    let mut response = Response::new(html.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    add_page_headers(&mut response);
    response
}

/// The headers every answer of a browser route carries: never cached, never framed, no
/// referrer (the URL may hold `rd`), no external content.
pub fn add_page_headers(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
