//! Who may use the dashboard server: a bearer token, or loopback names only.
//!
//! With a [`Token`], every route except `/healthz` needs
//! `Authorization: Bearer <token>` or the session cookie that
//! `GET /?token=<token>` sets (HttpOnly, SameSite=Strict) before redirecting
//! to `/`, so a browser can use the dashboard after opening one link. The
//! cookie holds a random per-process session value, never the token.
//!
//! Without a token on a loopback address, requests must name a loopback host
//! (`localhost`, `*.localhost`, `127.0.0.1`, `[::1]`) in `Host`, which stops
//! DNS-rebinding pages from reading the panels through the victim's browser.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::error::{Error, Result};

/// Name of the session cookie set by `GET /?token=…`.
pub const SESSION_COOKIE: &str = "txpipe_session";

/// The shortest accepted token.
pub const MIN_TOKEN_LEN: usize = 16;

/// The longest accepted token (it travels in a header).
pub const MAX_TOKEN_LEN: usize = 512;

/// A bearer token. Its value is never shown: `Debug` prints `<redacted>` and
/// there is no `Display`.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Checks a token: 16 to 512 characters of visible ASCII (no spaces), so
    /// it fits an `Authorization` header and a URL query as is.
    ///
    /// # Errors
    /// [`Error::Config`] saying what is wrong, without the value.
    pub fn new(value: impl Into<String>) -> Result<Self> {
        let value = value.into();
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Config(
                "the serve token must be visible ASCII characters only (no spaces or control \
                 characters); e.g. generate one with `openssl rand -hex 32`"
                    .into(),
            ));
        }
        if value.len() < MIN_TOKEN_LEN || value.len() > MAX_TOKEN_LEN {
            return Err(Error::Config(format!(
                "the serve token must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} characters long \
                 (it has {}); e.g. generate one with `openssl rand -hex 32`",
                value.len()
            )));
        }
        Ok(Token(value))
    }

    /// Whether `candidate` is this token, in time independent of where they differ.
    pub fn matches(&self, candidate: &str) -> bool {
        ct_eq(self.0.as_bytes(), candidate.as_bytes())
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// The access policy of one server.
#[derive(Debug, Clone)]
pub enum Access {
    /// Everything but `/healthz` needs the token (header or session cookie).
    Token {
        /// The token.
        token: Token,
        /// The random value of the session cookie, fresh for each process.
        session: String,
    },
    /// No token, bound to loopback: only loopback `Host` names are answered.
    LoopbackOnly,
    /// No token, bound publicly on purpose (`--insecure-public`): anyone who
    /// can reach the port can read the lake's marts.
    Open,
}

impl Access {
    /// Token access with a fresh random session value.
    pub fn token(token: Token) -> Self {
        let session = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        Access::Token { token, session }
    }
}

/// Wraps `router` with `access` and defensive response headers
/// (`X-Content-Type-Options`, `X-Frame-Options`, `Referrer-Policy`).
pub fn protect(router: Router, access: Access) -> Router {
    router.layer(middleware::from_fn_with_state(Arc::new(access), guard))
}

async fn guard(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    let mut resp = match check(&access, &req) {
        Verdict::Pass => next.run(req).await,
        Verdict::Respond(r) => r,
    };
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

enum Verdict {
    Pass,
    Respond(Response),
}

fn check(access: &Access, req: &Request) -> Verdict {
    let path = req.uri().path();
    if path == "/healthz" {
        return Verdict::Pass;
    }
    match access {
        Access::Open => Verdict::Pass,
        Access::LoopbackOnly => match req.headers().get(header::HOST) {
            Some(h) if !h.to_str().map(loopback_host).unwrap_or(false) => {
                Verdict::Respond(
                    (
                        StatusCode::FORBIDDEN,
                        "this dashboard answers only to loopback host names (localhost, 127.0.0.1, [::1]); \
                         to serve it under another name, start it with --token\n",
                    )
                        .into_response(),
                )
            }
            _ => Verdict::Pass,
        },
        Access::Token { token, session } => {
            if bearer(req.headers()).is_some_and(|t| token.matches(t))
                || cookie(req.headers(), SESSION_COOKIE).is_some_and(|s| ct_eq(s.as_bytes(), session.as_bytes()))
            {
                return Verdict::Pass;
            }
            if path == "/" {
                if let Some(t) = query_token(req.uri().query()) {
                    if token.matches(&t) {
                        return Verdict::Respond(login(session));
                    }
                }
            }
            Verdict::Respond(unauthorized())
        }
    }
}

/// `303 See Other` to `/`, setting the session cookie.
fn login(session: &str) -> Response {
    let cookie = format!("{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict");
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static("/"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        h.insert(header::SET_COOKIE, v);
    }
    r
}

fn unauthorized() -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        "unauthorized: send `Authorization: Bearer <token>` (browsers: open /?token=<token> once)\n",
    )
        .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"txpipe\""),
    );
    r
}

/// The credentials of `Authorization: Bearer <credentials>` (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The value of cookie `name` in any `Cookie` header.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `token` query parameter, percent-decoded.
fn query_token(query: Option<&str>) -> Option<String> {
    let pairs: Vec<(String, String)> = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{}", query?).parse().ok()?,
    )
    .ok()?
    .0;
    pairs
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}

/// Whether a `Host` header value names a loopback host.
fn loopback_host(host: &str) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, _)) => ip,
            None => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_equality() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(!ct_eq(b"", b"a"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn tokens_are_checked_and_never_shown() {
        let t = Token::new("s3cr3t-TOKEN-xyz").unwrap();
        assert!(t.matches("s3cr3t-TOKEN-xyz"));
        assert!(!t.matches("s3cr3t-TOKEN-xy"));
        assert!(!format!("{t:?}").contains("s3cr3t"));
        for bad in [
            "short",
            "has a space in it ok",
            "tab\there-long-enough-token",
        ] {
            let e = Token::new(bad).unwrap_err().to_string();
            assert!(!e.contains(bad), "{e}");
        }
        assert!(Token::new("x".repeat(MAX_TOKEN_LEN + 1)).is_err());
    }

    #[test]
    fn headers_and_cookies() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(
            header::COOKIE,
            "a=1; txpipe_session=zz; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("zz"));
        assert_eq!(cookie(&h, "c"), None);
        assert_eq!(query_token(Some("x=1&token=a%2Bb")), Some("a+b".into()));
        assert_eq!(query_token(Some("x=1")), None);
    }

    #[test]
    fn loopback_host_names() {
        for ok in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.",
            "dash.localhost:1",
            "127.0.0.1:9",
            "[::1]:80",
            "127.1.2.3",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "10.0.0.1",
            "[::]:80",
            "localhost.evil.example",
            "[::1",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }
}
