//! The one route table of each listener: every route's path template (also its metrics
//! label), the methods it answers (the `Allow` of its `405`) and the warp filter that serves
//! it, side by side. [`Routes`] serves a table: `/v1/verify` directly, the rest through the
//! filters, then the `404`/`405` fallback built from the same table.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tower_service::Service as _;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::error::ApiError;
use super::request::{PeerAddr, ctx, ctx_with_body, query};
use super::{account, account_page, admin, browser, feed, health, mfa, tokens, verify};
use crate::auth::Settings;
use crate::clock::Clock;
use crate::state::AppState;

/// A route of a listener.
pub struct Route {
    /// The path, with `{name}` for a segment parameter; also the route's metrics label.
    pub template: &'static str,
    /// The methods the route answers, as `Allow` lists them.
    pub allow: &'static str,
    serve: Serve,
}

/// How a route is answered.
enum Serve {
    /// Through warp: the route's filter (its path, methods, extractors and handlers).
    Filter(fn(&Arc<AppState>, &'static Route) -> BoxedFilter<(Response,)>),
    /// Before warp's filter chain, by [`Routes::answer_directly`].
    Direct,
}

impl Route {
    fn matches(&self, path: &str) -> bool {
        if !self.template.contains('{') {
            return self.template == path;
        }
        let mut want = self.template.split('/');
        let mut have = path.split('/');
        loop {
            match (want.next(), have.next()) {
                (None, None) => return true,
                (Some(w), Some(h)) if w == h || (w.starts_with('{') && !h.is_empty()) => {}
                _ => return false,
            }
        }
    }
}

const VERIFY_PATH: &str = "/v1/verify";

/// The routes of the public listener.
pub const PUBLIC_ROUTES: &[Route] = &[
    Route {
        template: "/v1/login",
        allow: "POST",
        serve: Serve::Filter(|s, _| {
            warp::path!("v1" / "login")
                .and(warp::post())
                .and(ctx_with_body(s.clone()))
                .then(|c, b| respond(tokens::login(c, b)))
                .boxed()
        }),
    },
    Route {
        template: "/v1/login/mfa",
        allow: "POST",
        serve: Serve::Filter(|s, _| {
            warp::path!("v1" / "login" / "mfa")
                .and(warp::post())
                .and(ctx_with_body(s.clone()))
                .then(|c, b| respond(tokens::login_second_step(c, b)))
                .boxed()
        }),
    },
    Route {
        template: "/v1/mfa/totp",
        allow: "POST, DELETE",
        serve: Serve::Filter(|s, _| {
            let begin = warp::path!("v1" / "mfa" / "totp")
                .and(warp::post())
                .and(ctx_with_body(s.clone()))
                .then(|c, b| respond(mfa::begin_totp(c, b)));
            let disable = warp::path!("v1" / "mfa" / "totp")
                .and(warp::delete())
                .and(ctx_with_body(s.clone()))
                .then(|c, b| respond(mfa::disable_totp(c, b)));
            begin.or(disable).unify().boxed()
        }),
    },
    Route {
        template: "/v1/mfa/totp/confirm",
        allow: "POST",
        serve: Serve::Filter(|s, _| {
            warp::path!("v1" / "mfa" / "totp" / "confirm")
                .and(warp::post())
                .and(ctx_with_body(s.clone()))
                .then(|c, b| respond(mfa::confirm_totp(c, b)))
                .boxed()
        }),
    },
    Route {
        template: "/v1/mfa/recovery-codes",
        allow: "POST",
        serve: Serve::Filter(|s, _| {
            warp::path!("v1" / "mfa" / "recovery-codes")
                .and(warp::post())
                .and(ctx_with_body(s.clone()))
                .then(|c, b| respond(mfa::new_recovery_codes(c, b)))
                .boxed()
        }),
    },
    Route {
        template: "/v1/token/refresh",
        allow: "POST",
        serve: Serve::Filter(|s, _| {
            warp::path!("v1" / "token" / "refresh")
                .and(warp::post())
                .and(ctx_with_body(s.clone()))
                .then(|c, b| respond(tokens::refresh(c, b)))
                .boxed()
        }),
    },
    // Any method: nginx `auth_request` keeps the client's.
    Route {
        template: VERIFY_PATH,
        allow: "GET, HEAD, POST, PUT, PATCH, DELETE",
        serve: Serve::Direct,
    },
    Route {
        template: "/v1/logout",
        allow: "POST",
        serve: Serve::Filter(|s, _| {
            warp::path!("v1" / "logout")
                .and(warp::post())
                .and(ctx_with_body(s.clone()))
                .then(|c, b| respond(tokens::logout(c, b)))
                .boxed()
        }),
    },
    Route {
        template: "/v1/me",
        allow: "GET",
        serve: Serve::Filter(|s, _| {
            warp::path!("v1" / "me")
                .and(warp::get())
                .and(ctx(s.clone()))
                .then(|c| respond(account::me(c)))
                .boxed()
        }),
    },
    Route {
        template: "/v1/sessions",
        allow: "GET",
        serve: Serve::Filter(|s, _| {
            warp::path!("v1" / "sessions")
                .and(warp::get())
                .and(ctx(s.clone()))
                .then(|c| respond(account::sessions(c)))
                .boxed()
        }),
    },
    Route {
        template: "/v1/sessions/{sid}",
        allow: "DELETE",
        serve: Serve::Filter(|s, _| {
            warp::path!("v1" / "sessions" / String)
                .and(warp::delete())
                .and(ctx(s.clone()))
                .then(|sid, c| respond(account::end_session(sid, c)))
                .boxed()
        }),
    },
    Route {
        template: "/v1/password",
        allow: "POST",
        serve: Serve::Filter(|s, _| {
            warp::path!("v1" / "password")
                .and(warp::post())
                .and(ctx_with_body(s.clone()))
                .then(|c, b| respond(account::change_password(c, b)))
                .boxed()
        }),
    },
    Route {
        template: "/v1/revocations/feed",
        allow: "GET",
        serve: Serve::Filter(|s, _| {
            warp::path!("v1" / "revocations" / "feed")
                .and(warp::get())
                .and(ctx(s.clone()))
                .and(query())
                .then(|c, q| respond(feed::feed(c, q)))
                .boxed()
        }),
    },
    Route {
        template: "/.well-known/jwks.json",
        allow: "GET",
        serve: Serve::Filter(|s, _| {
            warp::path!(".well-known" / "jwks.json")
                .and(warp::get())
                .and(ctx(s.clone()))
                .then(|c| respond(health::jwks(c)))
                .boxed()
        }),
    },
    Route {
        template: "/healthz",
        allow: "GET",
        serve: Serve::Filter(|_, _| {
            warp::path!("healthz")
                .and(warp::get())
                .then(|| respond(health::healthz()))
                .boxed()
        }),
    },
    Route {
        template: "/readyz",
        allow: "GET",
        serve: Serve::Filter(|s, _| {
            warp::path!("readyz")
                .and(warp::get())
                .and(ctx(s.clone()))
                .then(|c| respond(health::readyz(c)))
                .boxed()
        }),
    },
    // The browser routes take every method: their handlers answer `404` while cookies are
    // disabled, and their own `405` as a page.
    Route {
        template: "/login",
        allow: "GET, POST",
        serve: Serve::Filter(|s, route| {
            warp::path!("login")
                .and(ctx_with_body(s.clone()))
                .and(query())
                .then(move |c, b, q| browser::login(c, b, q, route.allow))
                .boxed()
        }),
    },
    Route {
        template: "/logout",
        allow: "POST",
        serve: Serve::Filter(|s, route| {
            warp::path!("logout")
                .and(ctx_with_body(s.clone()))
                .and(query())
                .then(move |c, b, q| browser::logout(c, b, q, route.allow))
                .boxed()
        }),
    },
    // The account page and its forms: like the browser routes, every method reaches the
    // handler (404 while cookies are disabled, its own 405 page).
    Route {
        template: "/account",
        allow: "GET",
        serve: Serve::Filter(|s, route| account_route(s, route, account_page::Action::Show)),
    },
    Route {
        template: "/account/password",
        allow: "POST",
        serve: Serve::Filter(|s, route| account_route(s, route, account_page::Action::Password)),
    },
    Route {
        template: "/account/sessions/end",
        allow: "POST",
        serve: Serve::Filter(|s, route| account_route(s, route, account_page::Action::EndSession)),
    },
    Route {
        template: "/account/totp",
        allow: "POST",
        serve: Serve::Filter(|s, route| account_route(s, route, account_page::Action::BeginTotp)),
    },
    Route {
        template: "/account/totp/confirm",
        allow: "POST",
        serve: Serve::Filter(|s, route| account_route(s, route, account_page::Action::ConfirmTotp)),
    },
    Route {
        template: "/account/totp/disable",
        allow: "POST",
        serve: Serve::Filter(|s, route| account_route(s, route, account_page::Action::DisableTotp)),
    },
    Route {
        template: "/account/recovery-codes",
        allow: "POST",
        serve: Serve::Filter(|s, route| {
            account_route(s, route, account_page::Action::RecoveryCodes)
        }),
    },
];

/// The routes of the admin listener.
pub const ADMIN_ROUTES: &[Route] = &[
    Route {
        template: "/admin/v1/users",
        allow: "GET, POST",
        serve: Serve::Filter(|s, _| {
            let create = warp::path!("admin" / "v1" / "users")
                .and(warp::post())
                .and(ctx_with_body(s.clone()))
                .then(|c, b| respond(admin::create_user(c, b)));
            let list = warp::path!("admin" / "v1" / "users")
                .and(warp::get())
                .and(ctx(s.clone()))
                .and(query())
                .then(|c, q| respond(admin::list_users(c, q)));
            create.or(list).unify().boxed()
        }),
    },
    Route {
        template: "/admin/v1/users/{username}",
        allow: "GET, PATCH, DELETE",
        serve: Serve::Filter(|s, _| {
            let get = warp::path!("admin" / "v1" / "users" / String)
                .and(warp::get())
                .and(ctx(s.clone()))
                .then(|u, c| respond(admin::get_user(u, c)));
            let update = warp::path!("admin" / "v1" / "users" / String)
                .and(warp::patch())
                .and(ctx_with_body(s.clone()))
                .then(|u, c, b| respond(admin::update_user(u, c, b)));
            let delete = warp::path!("admin" / "v1" / "users" / String)
                .and(warp::delete())
                .and(ctx(s.clone()))
                .then(|u, c| respond(admin::delete_user(u, c)));
            get.or(update).unify().or(delete).unify().boxed()
        }),
    },
    Route {
        template: "/admin/v1/users/{username}/sessions",
        allow: "GET",
        serve: Serve::Filter(|s, _| {
            warp::path!("admin" / "v1" / "users" / String / "sessions")
                .and(warp::get())
                .and(ctx(s.clone()))
                .then(|u, c| respond(admin::user_sessions(u, c)))
                .boxed()
        }),
    },
    Route {
        template: "/admin/v1/users/{username}/mfa",
        allow: "DELETE",
        serve: Serve::Filter(|s, _| {
            warp::path!("admin" / "v1" / "users" / String / "mfa")
                .and(warp::delete())
                .and(ctx(s.clone()))
                .then(|u, c| respond(admin::reset_mfa(u, c)))
                .boxed()
        }),
    },
    Route {
        template: "/admin/v1/revocations",
        allow: "GET, POST",
        serve: Serve::Filter(|s, _| {
            let revoke = warp::path!("admin" / "v1" / "revocations")
                .and(warp::post())
                .and(ctx_with_body(s.clone()))
                .then(|c, b| respond(admin::revoke(c, b)));
            let list = warp::path!("admin" / "v1" / "revocations")
                .and(warp::get())
                .and(ctx(s.clone()))
                .and(query())
                .then(|c, q| respond(admin::list_revocations(c, q)));
            revoke.or(list).unify().boxed()
        }),
    },
    Route {
        template: "/admin/v1/cluster",
        allow: "GET",
        serve: Serve::Filter(|s, _| {
            warp::path!("admin" / "v1" / "cluster")
                .and(warp::get())
                .and(ctx(s.clone()))
                .then(|c| respond(admin::cluster(c)))
                .boxed()
        }),
    },
    Route {
        template: "/admin/v1/backup",
        allow: "GET",
        serve: Serve::Filter(|s, _| {
            warp::path!("admin" / "v1" / "backup")
                .and(warp::get())
                .and(ctx(s.clone()))
                .then(|c| respond(admin::backup(c)))
                .boxed()
        }),
    },
    Route {
        template: "/metrics",
        allow: "GET",
        serve: Serve::Filter(|s, _| {
            warp::path!("metrics")
                .and(warp::get())
                .and(ctx(s.clone()))
                .then(|c| respond(admin::metrics(c)))
                .boxed()
        }),
    },
];

/// The filter of an account-page route: exactly its template's path, every method.
fn account_route(
    state: &Arc<AppState>,
    route: &'static Route,
    action: account_page::Action,
) -> BoxedFilter<(Response,)> {
    warp::path::full()
        .and_then(move |path: warp::path::FullPath| async move {
            if path.as_str() == route.template {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
        .and(ctx_with_body(state.clone()))
        .then(move |c, b| account_page::account(c, b, action, route.allow))
        .boxed()
}

async fn respond<F>(result: F) -> Response
where
    F: Future<Output = Result<Response, ApiError>>,
{
    result.await.unwrap_or_else(ApiError::into_response)
}

fn find_route(table: &'static [Route], path: &str) -> Option<&'static Route> {
    table.iter().find(|route| route.matches(path))
}

/// The filters of `table`'s routes, tried in order, then the fallback: `405` with `Allow`
/// for a path of the table, else `404`.
fn filter_chain(state: &Arc<AppState>, table: &'static [Route]) -> BoxedFilter<(Response,)> {
    let fallback = warp::path::full().map(move |path: warp::path::FullPath| {
        match find_route(table, path.as_str()) {
            Some(route) => ApiError::method_not_allowed(route.allow).into_response(),
            None => ApiError::not_found().into_response(),
        }
    });
    let mut chain: Option<BoxedFilter<(Response,)>> = None;
    for route in table {
        let Serve::Filter(build) = route.serve else {
            continue;
        };
        let filter = build(state, route);
        chain = Some(match chain {
            Some(chain) => chain.or(filter).unify().boxed(),
            None => filter,
        });
    }
    match chain {
        Some(chain) => chain.or(fallback).unify().boxed(),
        None => fallback.boxed(),
    }
}

/// What a listener answers: warp's filter chain, plus `/v1/verify` on the public listener,
/// dispatched before the chain because every protected request of every app behind authd
/// comes through it.
#[derive(Clone)]
pub struct Routes {
    filter: BoxedFilter<(Response,)>,
    verify: Option<Arc<AppState>>,
    /// Where the listener reads its per-connection limits (`None` for a bare filter).
    state: Option<Arc<AppState>>,
    table: &'static [Route],
    clock: Clock,
}

impl Routes {
    /// Any other warp filter served by [`super::server::serve`] (e.g. a test upstream): no
    /// direct routes, every request labelled `other`, the system clock.
    pub fn from_filter(filter: BoxedFilter<(Response,)>) -> Routes {
        Routes {
            filter,
            verify: None,
            state: None,
            table: &[],
            clock: Clock::system(),
        }
    }

    pub fn public(state: Arc<AppState>) -> Routes {
        Routes {
            filter: filter_chain(&state, PUBLIC_ROUTES),
            clock: state.clock().clone(),
            verify: Some(state.clone()),
            state: Some(state),
            table: PUBLIC_ROUTES,
        }
    }

    pub fn admin(state: Arc<AppState>) -> Routes {
        Routes {
            filter: filter_chain(&state, ADMIN_ROUTES),
            clock: state.clock().clone(),
            verify: None,
            state: Some(state),
            table: ADMIN_ROUTES,
        }
    }

    /// The clock the listener times its requests and connections with.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The daemon's current settings snapshot, which the listener takes once per accepted
    /// connection for its limits; `None` for [`Routes::from_filter`].
    pub fn settings(&self) -> Option<Arc<Settings>> {
        self.state.as_ref().map(|state| state.settings())
    }

    /// Whether `request` is for a route answered before the filter chain (`/v1/verify`):
    /// see [`Routes::answer_directly`].
    pub fn is_direct<B>(&self, request: &http::Request<B>) -> bool {
        self.verify.is_some() && request.uri().path() == VERIFY_PATH
    }

    /// Answers a request for which [`Routes::is_direct`] holds, synchronously. `Err` is an
    /// internal error, still to be answered (and logged).
    pub async fn answer_directly(
        &self,
        request: http::Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> Result<Response, ApiError> {
        match &self.verify {
            Some(state) => verify::answer(state.clone(), request, peer).await,
            None => Ok(ApiError::not_found().into_response()),
        }
    }

    /// Answers one request from `peer` through warp's filter chain.
    pub async fn answer(
        &self,
        mut request: http::Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> Response {
        request.extensions_mut().insert(PeerAddr(peer));
        match warp::service(self.filter.clone()).call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// The metrics label of a path: its route template, or `other`.
    pub fn label(&self, path: &str) -> &'static str {
        if self.verify.is_some() && path == VERIFY_PATH {
            return VERIFY_PATH;
        }
        find_route(self.table, path).map_or("other", |r| r.template)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER};
    use http::{Method, StatusCode};
    use hyper::body::Body as _;

    use super::*;
    use crate::http::reply::JSON_CONTENT_TYPE;
    use crate::http::testing::test_state;

    /// Sends `method path` through the routes' filter chain (no body, no peer).
    async fn send(
        routes: &Routes,
        method: Method,
        path: &str,
    ) -> (StatusCode, http::HeaderMap, String) {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .body(String::new())
            .unwrap();
        let response = warp::service(routes.filter.clone())
            .call(request)
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let mut body = Box::pin(body);
        let mut bytes = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            if let Ok(data) = frame.unwrap().into_data() {
                bytes.extend_from_slice(&data);
            }
        }
        (
            parts.status,
            parts.headers,
            String::from_utf8(bytes).unwrap(),
        )
    }

    fn error_code(body: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        value["error"].as_str().unwrap().to_owned()
    }

    /// A path the route's template matches: every `{param}` becomes `x`.
    fn sample_path(template: &str) -> String {
        template
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "x"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    #[tokio::test]
    async fn an_unknown_path_is_a_json_404() {
        let test = test_state(&[]).await;
        let routes = Routes::public(test.state.clone());

        let (status, headers, body) = send(&routes, Method::GET, "/v1/nothing-here").await;

        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers[CONTENT_TYPE], JSON_CONTENT_TYPE);
        assert_eq!(error_code(&body), "not_found");
        assert_eq!(routes.label("/v1/nothing-here"), "other");
    }

    #[tokio::test]
    async fn a_wrong_method_on_a_known_route_is_405_with_allow() {
        let test = test_state(&[]).await;
        let public = Routes::public(test.state.clone());
        let admin = Routes::admin(test.state.clone());

        let (status, headers, body) = send(&public, Method::GET, "/v1/login").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[ALLOW], "POST");
        assert_eq!(error_code(&body), "method_not_allowed");

        let (status, headers, _) = send(&admin, Method::PUT, "/admin/v1/users/alice").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[ALLOW], "GET, PATCH, DELETE");
    }

    #[tokio::test]
    async fn readyz_is_503_while_draining() {
        let test = test_state(&[]).await;
        let routes = Routes::public(test.state.clone());
        let (status, _, _) = send(&routes, Method::GET, "/readyz").await;
        assert_eq!(status, StatusCode::OK);

        test.state.set_draining();

        let (status, headers, body) = send(&routes, Method::GET, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[RETRY_AFTER], "1");
        assert_eq!(error_code(&body), "unavailable");
        let (status, _, _) = send(&routes, Method::GET, "/healthz").await;
        assert_eq!(status, StatusCode::OK, "healthz stays up while draining");
    }

    /// The table is the one list: each route's filter answers its `Allow` methods and its
    /// path carries its template as the label; other methods get the table's `405`.
    #[tokio::test]
    async fn every_route_answers_the_methods_its_table_entry_allows() {
        let test = test_state(&[("AUTHD__COOKIE__ENABLED", "true")]).await;
        let listeners = [
            (Routes::public(test.state.clone()), PUBLIC_ROUTES),
            (Routes::admin(test.state.clone()), ADMIN_ROUTES),
        ];
        for (routes, table) in &listeners {
            for route in *table {
                let path = sample_path(route.template);
                assert_eq!(routes.label(&path), route.template);
                if matches!(route.serve, Serve::Direct) {
                    assert_eq!(route.template, VERIFY_PATH, "only verify is direct");
                    continue;
                }
                let allowed: Vec<&str> = route.allow.split(", ").collect();
                for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
                    let method = Method::from_bytes(method.as_bytes()).unwrap();
                    let (status, headers, _) = send(routes, method.clone(), &path).await;
                    if allowed.contains(&method.as_str()) {
                        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                        assert!(
                            status != StatusCode::NOT_FOUND || path.contains("/users/"),
                            "{method} {path}: {status}"
                        );
                    } else {
                        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                        assert_eq!(headers[ALLOW], route.allow, "{method} {path}");
                    }
                }
            }
        }
    }
}
