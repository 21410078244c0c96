//! With read replicas, HTTP reads go to them, but a client must still see its own writes: a
//! request that writes runs on the primary, and so do that client's reads for a while after
//! (`database.read_your_writes_secs`, longer than replica lag ever should be). Clients are
//! told apart by a hash of their Authorization header (an access token). Catch-up reads
//! (`after=`) stay on the primary too: they resume a live stream, and a lagging replica
//! would leave a gap. Only installed when replicas exist.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::app::App;
use crate::store::consistency::on_replica;

pub async fn route(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let key = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| app.recent_writers.key(v.as_bytes()));
    let now = Instant::now();
    let catch_up = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p.starts_with("after=")));
    let primary =
        writes || catch_up || key.is_some_and(|k| app.recent_writers.wrote_recently(k, now));
    if !primary {
        return on_replica(next.run(req)).await;
    }
    let response = next.run(req).await;
    if writes
        && response.status().is_success()
        && let Some(key) = key
    {
        app.recent_writers.mark(key, Instant::now());
    }
    response
}
