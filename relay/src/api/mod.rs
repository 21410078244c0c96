//! The HTTP API: every route is registered through utoipa-axum's `OpenApiRouter`, so the
//! OpenAPI document and the route table come from the same list (the authorization matrix
//! test reads it). One file per resource; each handler carries `#[utoipa::path]` and is one
//! line in `routes()`.

pub mod admin;
pub mod auth;
pub mod channels;
pub mod deletion;
pub mod error;
pub mod extract;
pub mod guilds;
pub mod invites;
pub mod members;
pub mod messages;
pub mod moderation;
pub mod ops;
pub mod ratelimit;
pub mod read_your_writes;
pub mod reports;
pub mod users;
pub mod voice;
pub mod voice_forward;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware;
use tower_http::compression::predicate::{DefaultPredicate, Predicate, SizeAbove};
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;

/// Responses smaller than this go out uncompressed (most JSON answers of the API are).
const MIN_COMPRESSED_BYTES: u64 = 1024;

fn routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
        .routes(routes!(ops::well_known))
        .routes(routes!(crate::gateway::upgrade))
        .routes(routes!(auth::challenge))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(users::me, users::delete_me))
        .routes(routes!(users::get_user))
        .routes(routes!(users::devices, users::add_device))
        .routes(routes!(users::revoke_device))
        .routes(routes!(users::export))
        .routes(routes!(admin::stats))
        .routes(routes!(admin::users))
        .routes(routes!(admin::user))
        .routes(routes!(admin::suspend, admin::unsuspend))
        .routes(routes!(admin::revoke_sessions))
        .routes(routes!(admin::audit_log))
        .routes(routes!(admin::claim_setup))
        .routes(routes!(admin::user_devices))
        .routes(routes!(admin::revoke_user_device))
        .routes(routes!(
            admin::instance_invites,
            admin::create_instance_invite
        ))
        .routes(routes!(admin::revoke_instance_invite))
        .routes(routes!(admin::delete_user))
        .routes(routes!(admin::delete_guild))
        .routes(routes!(reports::admin_reports))
        .routes(routes!(reports::handle_admin_report))
        .routes(routes!(reports::report_to_admins))
        .routes(routes!(users::guilds))
        .routes(routes!(users::leave_guild))
        .routes(routes!(users::dms, users::open_dm))
        .routes(routes!(users::read_states))
        .routes(routes!(voice::ice_servers))
        .routes(routes!(voice::join))
        .routes(routes!(voice::leave))
        .routes(routes!(voice::update_state))
        .routes(routes!(voice::participants))
        .routes(routes!(voice::server_mute))
        .routes(routes!(voice::sfu_offer))
        .routes(routes!(voice::sfu_watch))
        .routes(routes!(voice::sfu_answer))
        .routes(routes!(voice::sfu_stats))
        .routes(routes!(guilds::create_guild))
        .routes(routes!(
            guilds::get_guild,
            guilds::update_guild,
            guilds::delete_guild
        ))
        .routes(routes!(guilds::list_channels, guilds::create_channel))
        .routes(routes!(guilds::list_roles, guilds::create_role))
        .routes(routes!(guilds::update_role, guilds::delete_role))
        .routes(routes!(guilds::list_invites, guilds::create_invite))
        .routes(routes!(guilds::revoke_invite))
        .routes(routes!(guilds::search))
        .routes(routes!(members::list_members))
        .routes(routes!(members::get_member, members::kick))
        .routes(routes!(members::add_role, members::remove_role))
        .routes(routes!(members::list_bans))
        .routes(routes!(members::ban, members::unban))
        .routes(routes!(moderation::audit_log))
        .routes(routes!(moderation::timeout, moderation::end_timeout))
        .routes(routes!(moderation::bulk_delete))
        .routes(routes!(reports::report_to_guild, reports::guild_reports))
        .routes(routes!(reports::handle_guild_report))
        .routes(routes!(invites::preview))
        .routes(routes!(invites::accept))
        .routes(routes!(
            channels::get_channel,
            channels::update_channel,
            channels::delete_channel
        ))
        .routes(routes!(channels::put_overwrite, channels::delete_overwrite))
        .routes(routes!(channels::typing))
        .routes(routes!(channels::ack))
        .routes(routes!(channels::events))
        .routes(routes!(messages::history, messages::send))
        .routes(routes!(
            messages::get_message,
            messages::edit,
            messages::delete
        ))
        .routes(routes!(messages::add_reaction, messages::remove_reaction))
}

/// The OpenAPI 3 document for every route.
pub fn openapi() -> OpenApi {
    let mut api = routes().into_openapi();
    api.info.title = "Concord relay API".into();
    api.info.version = env!("CARGO_PKG_VERSION").into();
    api.info.description = Some(
        "Concord relay HTTP API. Ids are 64-bit decimal strings, timestamps unix milliseconds, \
         errors JSON {\"code\",\"message\"}. The gateway protocol is in docs/protocols/gateway.md."
            .into(),
    );
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    api
}

pub fn openapi_json() -> String {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serialises")
    })
    .clone()
}

/// `default-src 'self'; connect-src 'self' <public origins as ws/wss>; frame-ancestors 'none'`
pub fn content_security_policy(audiences: &[String]) -> String {
    let sockets: Vec<String> = audiences
        .iter()
        .map(|a| {
            a.replacen("https://", "wss://", 1)
                .replacen("http://", "ws://", 1)
        })
        .collect();
    format!(
        "default-src 'self'; connect-src 'self' {}; frame-ancestors 'none'",
        sockets.join(" ")
    )
}

/// The full HTTP service of one relay instance.
pub fn router(app: Arc<App>) -> Router {
    let (router, _) = routes().split_for_parts();
    let csp = HeaderValue::from_str(&content_security_policy(&app.audiences))
        .expect("CSP is a valid header value");
    let cors = if app.config.cors_origins.is_empty() {
        CorsLayer::new()
    } else {
        let origins: Vec<HeaderValue> = app
            .config
            .cors_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .expose_headers([
                HeaderName::from_static("x-ratelimit-limit"),
                HeaderName::from_static("x-ratelimit-remaining"),
                HeaderName::from_static("x-ratelimit-reset"),
                header::RETRY_AFTER,
                HeaderName::from_static(messages::ARCHIVED_BEFORE),
                HeaderName::from_static(messages::CHANNEL_SEQ),
            ])
    };
    let mut router = router
        // Outside the API: the embedded web client (unknown paths stay a JSON 404).
        .fallback(crate::web::serve);
    if !app.config.database.read_urls.is_empty() {
        router = router.layer(middleware::from_fn_with_state(
            app.clone(),
            read_your_writes::route,
        ));
    }
    router
        // Inside the rate limit: a forwarded request counts once, where it arrived.
        .layer(middleware::from_fn_with_state(
            app.clone(),
            voice_forward::route,
        ))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            ratelimit::enforce,
        ))
        .layer(DefaultBodyLimit::max(app.config.max_body_bytes))
        .layer(middleware::from_fn(crate::metrics::track_http))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            csp,
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(cors)
        .layer(
            // Small answers (a sent message, an ack) are not worth a compressor's setup (brotli
            // at its default quality 11 was 4.5 % of the relay's CPU under chat load); level 4
            // is the usual choice for dynamic responses.
            CompressionLayer::new()
                .quality(CompressionLevel::Precise(4))
                .compress_when(DefaultPredicate::new().and(SizeAbove::new(MIN_COMPRESSED_BYTES))),
        )
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::extract::Request| {
                let route = req
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map_or("", |p| p.as_str());
                tracing::info_span!("http", method = %req.method(), route)
            }),
        )
        .with_state(app)
}
