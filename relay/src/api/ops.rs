//! Operational endpoints: liveness, readiness, metrics and the OpenAPI document.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::app::App;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    pub database: &'static str,
    /// `ok`, `down` (the instance still serves its own clients: degraded) or `none` (a
    /// single instance without Redis).
    pub redis: &'static str,
    /// How other instances' events reach this one's clients: `redis` (live, pub/sub),
    /// `store` (Redis is down: channel events are read from the database every 0.5 s;
    /// presence, typing and cache invalidations do not cross until it is back) or `local`
    /// (a single instance).
    pub fanout: &'static str,
    /// `ok`, `low` (the disk is under its free-space floor: new content is refused with 507
    /// `storage_full`, reads go on; not ready) or `none` (PostgreSQL: its disk is its own).
    pub storage: &'static str,
    pub draining: bool,
}

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Answers from the background checks' cached results, so probes never hit the database.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(app): State<Arc<App>>) -> (StatusCode, Json<Readiness>) {
    let ready = app.is_ready();
    let redis = match (&app.config.redis.url, app.redis_ok()) {
        (None, _) => "none",
        (Some(_), true) => "ok",
        (Some(_), false) => "down",
    };
    let body = Readiness {
        status: match (ready, redis) {
            (false, _) => "not_ready",
            (true, "down") => "degraded",
            (true, _) => "ready",
        },
        database: if app.db_ok() { "ok" } else { "down" },
        redis,
        fanout: match redis {
            "none" => "local",
            "ok" => "redis",
            _ => "store",
        },
        storage: match &app.space {
            None => "none",
            Some(_) if app.storage_low() => "low",
            Some(_) => "ok",
        },
        draining: app.is_draining(),
    };
    (
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(body),
    )
}

#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
        .into_response()
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "ops", responses((status = 200, description = "This OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi_json(),
    )
        .into_response()
}

use concord_proto::api::WellKnown;

#[utoipa::path(get, path = "/.well-known/concord", tag = "ops", responses((status = 200, body = WellKnown)))]
pub async fn well_known(State(app): State<Arc<App>>) -> Json<WellKnown> {
    let p2p = app.p2p.get();
    Json(WellKnown {
        api_version: 1,
        public_url: app.audiences[0].clone(),
        relay_peer_id: p2p.map(|p| p.peer_id.to_string()),
        relay_key: p2p.map(|p| p.public_key()),
        multiaddrs: p2p.map(|p| p.addrs()).unwrap_or_default(),
        bootstrap_peers: app.config.p2p.bootstrap_peers.clone(),
        stun_urls: app.config.voice.stun_urls.clone(),
        turn_urls: app.config.voice.turn_urls.clone(),
    })
}
