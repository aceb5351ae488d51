//! The HTML of the account page: the user's sessions, the password form and two-factor
//! enrolment (a QR code of the `otpauth://` URI drawn on the server as inline SVG, the
//! secret as text, the recovery codes shown once). No script, no external asset; every
//! input has a label, every echoed value is escaped.

use http::StatusCode;
use warp::reply::Response;

use super::pages::{escape, styled_page};
use super::reply::rfc3339;
use crate::store::SessionRecord;

/// The account page's own style: wider than the login form, a table that stays readable
/// on a phone, and form rows.
const CSS: &str = "main.account{max-width:42rem;margin:2rem auto}\
section{margin-top:2rem;border-top:1px solid #d6d9de;padding-top:1rem}h2{font-size:1.15rem}\
table{width:100%;border-collapse:collapse}th,td{text-align:left;padding:.4rem;\
border-bottom:1px solid #e3e5e8;vertical-align:top}caption{text-align:left;font-weight:600}\
td form button,.inline button{width:auto;padding:.35rem .8rem}\
.notice{padding:.6rem;border-radius:4px;background:#e8f3ea;color:#17401f;border:1px solid #b9dcc0}\
.qr svg{width:14rem;height:14rem;max-width:100%;height:auto}\
.secret,.codes{font-family:ui-monospace,monospace;font-size:1.05rem;overflow-wrap:anywhere}\
.codes{columns:2;padding-left:1.2rem}.muted{color:#51565e}\
@media (max-width:30rem){main.account{margin:0;border-radius:0;padding:1rem}\
table,tbody,tr,td,caption{display:block}thead{display:none}td{border:0;padding:.2rem 0}\
tr{border-bottom:1px solid #e3e5e8;padding:.5rem 0}td[data-label]::before{content:attr(data-label);font-weight:600}}";

/// What a page shows about the account.
pub struct AccountView<'a> {
    pub username: &'a str,
    pub roles: &'a [String],
    pub sessions: &'a [SessionRecord],
    pub current_sid: &'a str,
    pub totp_on: bool,
    /// An enrolment waits for its first code (its key was shown when it began).
    pub pending: bool,
    /// `mfa.required_roles` holds this session to a second factor it lacks.
    pub must_enrol: bool,
    pub notice: Notice<'a>,
}

/// What the answer to the last form adds at the top of its section.
pub enum Notice<'a> {
    None,
    /// A refusal: the message says what to do, never which secret was wrong.
    Error(&'a str),
    Done(&'a str),
    /// An enrolment began: the QR code, the secret and the confirm form.
    Enrolment {
        secret: &'a str,
        otpauth_uri: &'a str,
    },
    /// A new set of recovery codes, shown this once.
    RecoveryCodes {
        codes: &'a [String],
        first: bool,
    },
}

/// The account page with `status`.
pub fn account_page(status: StatusCode, view: &AccountView<'_>) -> Response {
    let mut body = String::with_capacity(8 * 1024);
    body.push_str("<main class=\"account\">\n<h1>Your account</h1>\n");
    body.push_str(&format!(
        "<p>Signed in as <strong>{}</strong>{}.</p>\n",
        escape(view.username),
        if view.roles.is_empty() {
            String::new()
        } else {
            format!(" (roles: {})", escape(&view.roles.join(", ")))
        }
    ));
    if view.must_enrol {
        body.push_str(if view.totp_on {
            "<p class=\"alert\" role=\"alert\">Your role requires two-factor authentication: \
sign out and sign in again with a code.</p>\n"
        } else {
            "<p class=\"alert\" role=\"alert\">Your role requires two-factor authentication. \
Set it up below, then sign out and sign in again with a code.</p>\n"
        });
    }
    match &view.notice {
        Notice::Error(message) => body.push_str(&format!(
            "<p class=\"alert\" role=\"alert\">{}</p>\n",
            escape(message)
        )),
        Notice::Done(message) => body.push_str(&format!(
            "<p class=\"notice\" role=\"status\">{}</p>\n",
            escape(message)
        )),
        _ => {}
    }
    body.push_str(&two_factor_section(view));
    body.push_str(&sessions_section(view));
    body.push_str(&password_section());
    // Signing out ends this session through the page's own form (see
    // `cookies::check_own_form_origin` for why not `/logout`), which clears the cookies.
    body.push_str(&format!(
        "<section aria-labelledby=\"signout\">\n<h2 id=\"signout\">Sign out</h2>\n\
<form method=\"post\" action=\"/account/sessions/end\" id=\"sign-out\" class=\"inline\">\
<input type=\"hidden\" name=\"sid\" value=\"{}\"><button type=\"submit\">Sign out</button></form>\n\
</section>\n</main>",
        escape(view.current_sid)
    ));
    styled_page(status, "Your account", &body, CSS)
}

fn two_factor_section(view: &AccountView<'_>) -> String {
    let mut html = String::from(
        "<section aria-labelledby=\"twofactor\">\n<h2 id=\"twofactor\">Two-factor authentication</h2>\n",
    );
    match &view.notice {
        Notice::Enrolment {
            secret,
            otpauth_uri,
        } => {
            html.push_str(&confirm_form(&format!(
                "<p>Scan this code with your authenticator app, or type the key below into it.</p>\n\
<div class=\"qr\">{}</div>\n\
<p>Key: <span class=\"secret\" id=\"totp-secret\">{}</span></p>\n",
                qr_svg(otpauth_uri),
                escape(&spaced(secret)),
            )));
            return html + "</section>\n";
        }
        Notice::RecoveryCodes { codes, first } => {
            let intro = if *first {
                "Two-factor authentication is on. "
            } else {
                "Your old recovery codes no longer work. "
            };
            html.push_str(&format!(
                "<p class=\"notice\" role=\"status\">{intro}Keep these recovery codes somewhere safe: \
each signs you in once if you lose your app. They are shown only now.</p>\n<ul class=\"codes\" id=\"recovery-codes\">\n"
            ));
            for code in codes.iter() {
                html.push_str(&format!("<li>{}</li>\n", escape(code)));
            }
            html.push_str("</ul>\n");
        }
        _ => {}
    }
    if view.totp_on {
        html.push_str(
            "<p>On. Signing in asks for a code from your authenticator app.</p>\n\
<h3>New recovery codes</h3>\n<form method=\"post\" action=\"/account/recovery-codes\">\n\
<p><label for=\"codes-password\">Current password</label>\n\
<input id=\"codes-password\" name=\"current_password\" type=\"password\" autocomplete=\"current-password\" required></p>\n\
<p><label for=\"codes-code\">Code from the app</label>\n\
<input id=\"codes-code\" name=\"code\" type=\"text\" inputmode=\"numeric\" autocomplete=\"one-time-code\" required></p>\n\
<p><button type=\"submit\">Make new recovery codes</button></p>\n</form>\n\
<h3>Turn off</h3>\n<form method=\"post\" action=\"/account/totp/disable\">\n\
<p><label for=\"off-password\">Current password</label>\n\
<input id=\"off-password\" name=\"current_password\" type=\"password\" autocomplete=\"current-password\" required></p>\n\
<p><label for=\"off-code\">Code from the app</label>\n\
<input id=\"off-code\" name=\"code\" type=\"text\" inputmode=\"numeric\" autocomplete=\"one-time-code\" required></p>\n\
<p><button type=\"submit\">Turn off two-factor authentication</button></p>\n</form>\n",
        );
    } else {
        if view.pending {
            html.push_str(&confirm_form(
                "<p>Setup is under way: enter the code your authenticator app shows for the key \
you added, or start again below.</p>\n",
            ));
        }
        html.push_str(
            "<p>Off. Add a code from an authenticator app to your sign-in.</p>\n\
<form method=\"post\" action=\"/account/totp\">\n\
<p><label for=\"enrol-password\">Current password</label>\n\
<input id=\"enrol-password\" name=\"current_password\" type=\"password\" autocomplete=\"current-password\" required></p>\n\
<p><button type=\"submit\">Set up two-factor authentication</button></p>\n</form>\n",
        );
    }
    html + "</section>\n"
}

/// `intro`, then the form that confirms a pending enrolment with its first code.
fn confirm_form(intro: &str) -> String {
    format!(
        "{intro}<form method=\"post\" action=\"/account/totp/confirm\">\n\
<p><label for=\"confirm-code\">Code from the app</label>\n\
<input id=\"confirm-code\" name=\"code\" type=\"text\" inputmode=\"numeric\" autocomplete=\"one-time-code\" required autofocus></p>\n\
<p><button type=\"submit\">Turn on two-factor authentication</button></p>\n</form>\n"
    )
}

fn sessions_section(view: &AccountView<'_>) -> String {
    let mut html = String::from(
        "<section aria-labelledby=\"sessions\">\n<h2 id=\"sessions\">Sessions</h2>\n\
<table>\n<caption class=\"muted\">Where you are signed in</caption>\n\
<thead><tr><th scope=\"col\">Signed in</th><th scope=\"col\">Last active</th><th scope=\"col\">Action</th></tr></thead>\n<tbody>\n",
    );
    for session in view.sessions {
        let action = if session.sid == view.current_sid {
            "<strong>This session</strong>".to_owned()
        } else {
            format!(
                "<form method=\"post\" action=\"/account/sessions/end\">\
<input type=\"hidden\" name=\"sid\" value=\"{sid}\">\
<button type=\"submit\" aria-label=\"End the session signed in at {created}\">End</button></form>",
                sid = escape(&session.sid),
                created = rfc3339(session.created_at),
            )
        };
        html.push_str(&format!(
            "<tr><td data-label=\"Signed in \">{}</td><td data-label=\"Last active \">{}</td><td>{action}</td></tr>\n",
            rfc3339(session.created_at),
            rfc3339(session.last_refreshed_at),
        ));
    }
    html + "</tbody>\n</table>\n</section>\n"
}

fn password_section() -> String {
    "<section aria-labelledby=\"password\">\n<h2 id=\"password\">Password</h2>\n\
<form method=\"post\" action=\"/account/password\">\n\
<p><label for=\"pw-current\">Current password</label>\n\
<input id=\"pw-current\" name=\"current_password\" type=\"password\" autocomplete=\"current-password\" required></p>\n\
<p><label for=\"pw-new\">New password</label>\n\
<input id=\"pw-new\" name=\"new_password\" type=\"password\" autocomplete=\"new-password\" required></p>\n\
<p><label for=\"pw-again\">New password again</label>\n\
<input id=\"pw-again\" name=\"new_password_again\" type=\"password\" autocomplete=\"new-password\" required></p>\n\
<p class=\"muted\">Changing it signs you out everywhere else.</p>\n\
<p><button type=\"submit\">Change password</button></p>\n</form>\n</section>\n"
        .to_owned()
}

/// The QR code of `uri` as inline SVG (no XML prolog), labelled for screen readers.
fn qr_svg(uri: &str) -> String {
    let Ok(code) = qrcode::QrCode::new(uri.as_bytes()) else {
        // A URI too long for any QR code; the key below still works.
        return String::new();
    };
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    let svg = svg.find("<svg").map_or(svg.as_str(), |at| &svg[at..]);
    svg.replacen(
        "<svg ",
        "<svg role=\"img\" aria-label=\"QR code of the authenticator setup link\" ",
        1,
    )
}

/// The secret in groups of four, easier to type (apps ignore the spaces).
fn spaced(secret: &str) -> String {
    secret
        .as_bytes()
        .chunks(4)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_qr_code_is_inline_svg_with_a_label_and_no_prolog() {
        let svg = qr_svg("otpauth://totp/authd:alice?secret=JBSWY3DPEHPK3PXP&issuer=authd");
        assert!(svg.starts_with("<svg role=\"img\" aria-label="), "{svg}");
        assert!(svg.ends_with("</svg>"));
        assert!(!svg.contains("<?xml"));
    }

    #[test]
    fn the_secret_is_shown_in_groups_of_four() {
        assert_eq!(spaced("JBSWY3DPEHPK3PXP"), "JBSW Y3DP EHPK 3PXP");
    }
}
