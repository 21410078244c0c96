//! HTTP rate limiting: each route's class (auth, message send, general), the client's
//! address behind trusted proxies, the middleware that checks a class's budget before the
//! handler runs, and the `X-RateLimit-*` headers. The limiter itself and the rules are
//! `crate::ratelimit`; message sends spend their budget in `messaging::send`, for every
//! transport.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use concord_proto::ratelimit::Decision;
use ipnet::IpNet;

use super::error::ApiError;
use crate::app::App;
use crate::ratelimit::rule;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Per client IP.
    Auth,
    /// Per account.
    MessageSend,
    /// Per account, or per IP when anonymous.
    General,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Auth => "auth",
            Class::MessageSend => "message_send",
            Class::General => "general",
        }
    }
}

pub fn set_headers(headers: &mut HeaderMap, d: &Decision) {
    headers.insert("x-ratelimit-limit", HeaderValue::from(d.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(d.remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(d.reset_secs()));
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the rightmost
/// untrusted address of `X-Forwarded-For`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

/// The client's address as `enforce` worked it out (behind trusted proxies too).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

pub fn peer_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip())
}

/// Which limit a route falls under; `None` for routes outside the API (health, metrics) and
/// for the gateway, which limits frames per connection instead.
pub fn class_for(method: &axum::http::Method, route: &str) -> Option<Class> {
    if route.starts_with("/api/v1/auth/") {
        Some(Class::Auth)
    } else if method == axum::http::Method::POST
        && route == "/api/v1/channels/{channel_id}/messages"
    {
        Some(Class::MessageSend)
    } else if route == "/api/v1/gateway"
        || route == "/api/v1/openapi.json"
        || !route.starts_with("/api/v1/")
    {
        None
    } else {
        Some(Class::General)
    }
}

/// Middleware: checks the route class's limit before the handler runs and adds the headers
/// to every response of a limited route.
pub async fn enforce(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let Some(class) = route.and_then(|r| class_for(req.method(), &r)) else {
        return next.run(req).await;
    };
    // Another instance of the cluster forwarded it after counting it there.
    if super::voice_forward::is_forwarded(&app, req.headers()) {
        return next.run(req).await;
    }
    let limits = &app.config.rate_limits;
    let ip = client_ip(peer_ip(&req), req.headers(), &app.config.trusted_proxies);
    // Handlers that limit something finer (sign-ups per IP) read it from here.
    req.extensions_mut().insert(ClientIp(ip));
    let (limit, subject) = match class {
        Class::Auth => (limits.auth, format!("ip:{ip}")),
        Class::MessageSend | Class::General => {
            let limit = if class == Class::MessageSend {
                limits.message_send
            } else {
                limits.general
            };
            // Key by account when the token verifies; the verified caller is handed on to
            // the handler, which still rejects missing or bad tokens itself.
            let token = crate::auth::bearer_token(req.headers()).map(str::to_owned);
            let account = match token {
                Some(t) => app.authenticate(&t).await.ok(),
                None => None,
            };
            match account {
                // A verified sender spends the account's message budget in the send itself
                // (`messaging::send`, one budget for every transport), which reports it.
                Some(caller) if class == Class::MessageSend => {
                    req.extensions_mut().insert(caller);
                    return next.run(req).await;
                }
                Some(caller) => {
                    let key = format!("user:{}", caller.user_id);
                    req.extensions_mut().insert(caller);
                    (limit, key)
                }
                None => (limit, format!("ip:{ip}")),
            }
        }
    };
    let decision = app
        .limiter
        .check(&format!("{}:{subject}", class.as_str()), rule(limit))
        .await;
    if !decision.allowed {
        crate::metrics::rate_limited(class.as_str());
        return ApiError::RateLimited(decision).into_response();
    }
    let mut response = next.run(req).await;
    set_headers(response.headers_mut(), &decision);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.7, 10.1.1.1"),
        );
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(stranger, &h, &trusted), stranger);
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
    }
}
