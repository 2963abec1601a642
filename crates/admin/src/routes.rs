//! The paths: `POST /RPC`, `GET /metrics`, `GET /health`, behind the
//! token check.

use crate::config::{Token, MAX_BODY};
use crate::server::{Health, Services};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use lograte::warn_limited;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, error};

/// The content type of the Prometheus text exposition format.
/// The `Content-Type` of `GET /metrics`: Prometheus text format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What every handler reads.
pub(crate) struct Shared {
    pub services: Services,
    pub health: Health,
    pub token: Token,
    pub body_timeout: Duration,
}

/// The address of the peer of this request's connection.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

pub(crate) fn router(shared: Shared) -> Router {
    let shared = Arc::new(shared);
    Router::new()
        .route("/RPC", post(rpc))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // Outermost: a request without the token learns nothing, not even
        // which paths or methods exist.
        .layer(middleware::from_fn_with_state(shared.clone(), auth))
        .with_state(shared)
}

/// The router as hyper's service for one connection from `peer`.
pub(crate) fn service(
    app: Router,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = Response,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        let mut app = app.clone();
        async move { tower_service::Service::call(&mut app, req).await }
    })
}

async fn auth(
    State(s): State<Arc<Shared>>,
    Extension(Peer(peer)): Extension<Peer>,
    req: Request,
    next: Next,
) -> Response {
    if s.token.is_empty() {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(|v| bearer(v));
    match given {
        Some(t) if s.token.matches(t) => next.run(req).await,
        given => {
            let (challenge, why) = match given {
                None => ("Bearer realm=\"evapi\"", "no bearer token"),
                Some(_) => (
                    "Bearer realm=\"evapi\", error=\"invalid_token\"",
                    "wrong bearer token",
                ),
            };
            warn_limited!(%peer, path = %req.uri().path(), "admin HTTP: 401: {why}");
            (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                )],
                format!(
                    "401 unauthorized: {why}; send the [http] token as \
                     Authorization: Bearer <token>\n"
                ),
            )
                .into_response()
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value (the scheme in
/// any case, as RFC 7235 says).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

async fn rpc(
    State(s): State<Arc<Shared>>,
    Extension(Peer(peer)): Extension<Peer>,
    req: Request,
) -> Response {
    let body = match tokio::time::timeout(s.body_timeout, Bytes::from_request(req, &())).await {
        Err(_) => {
            warn_limited!(
                %peer,
                "admin HTTP: 408: the request body did not arrive within [http] body_timeout_ms"
            );
            return (
                StatusCode::REQUEST_TIMEOUT,
                [(header::CONNECTION, "close")],
                "408 the request body did not arrive in time ([http] body_timeout_ms)\n",
            )
                .into_response();
        }
        // Too large (413) or broken off (400): axum's own answer.
        Ok(Err(rejection)) => {
            warn_limited!(%peer, status = %rejection.status(), "admin HTTP: {rejection}");
            return rejection.into_response();
        }
        Ok(Ok(body)) => body,
    };
    debug!(%peer, bytes = body.len(), "admin HTTP: POST /RPC");
    let registry = s.services.rpc.clone();
    // Methods may take locks and walk tables: never on an I/O thread.
    match tokio::task::spawn_blocking(move || registry.handle(&body)).await {
        Ok(Some(answer)) => json(StatusCode::OK, answer),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            error!(%peer, error = %e, "admin HTTP: an RPC method panicked");
            json(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({
                    "jsonrpc": "2.0",
                    "error": {"code": rpc::code::INTERNAL_ERROR, "message": "internal error: the method failed unexpectedly (see the server log)"},
                    "id": null,
                })
                .to_string(),
            )
        }
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let render = s.services.metrics.clone();
    match tokio::task::spawn_blocking(move || render()).await {
        Ok(text) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            error!(error = %e, "admin HTTP: rendering the metrics panicked");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn health(State(s): State<Arc<Shared>>) -> Response {
    let status = if s.health.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": s.health.status(),
        "uptime": s.services.started.elapsed().as_secs(),
        "version": s.services.version,
    });
    json(status, body.to_string())
}

async fn not_found(req: Request) -> Response {
    (
        StatusCode::NOT_FOUND,
        format!(
            "404 no such path: {} (the paths are POST /RPC, GET /metrics, GET /health)\n",
            req.uri().path()
        ),
    )
        .into_response()
}

fn json(status: StatusCode, text: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(text),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn bearer_values() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(b""), None);
    }
}
