//! The admin HTTP listener: one port (`[http] listen`, default
//! 127.0.0.1:9060) where operators and their tools reach a running
//! program.
//!
//! - `POST /RPC`: JSON-RPC 2.0, single requests and batches, answered by
//!   [`rpc::Registry::handle`] off the I/O threads; only notifications:
//!   204; bodies over 1 MB: 413.
//! - `GET /metrics`: Prometheus text, from a function the program gives.
//! - `GET /health`: 200 and `{"status":"ok",...}` once the program says it
//!   is ready; 503 with `"starting"` or `"stopping"` otherwise.
//!
//! Who may connect: loopback always, other peers only from
//! `allow_networks` (refused right after accept, before any byte is read);
//! with a `token`, every request needs `Authorization: Bearer <token>`.
//! Bounds: `header_timeout_ms` for a request head (slow or idle
//! connections are closed), `body_timeout_ms` for its body,
//! `max_connections` at once.
//!
//! Built on hyper 1 (HTTP/1.1) with axum's router, on the caller's tokio
//! runtime. Of our crates it uses only `rpc` (the methods), `hostaddr`
//! (the listen and network rules) and `lograte`; the metrics text and the
//! version come from the program.

mod config;
mod routes;
mod server;

pub use config::{ConfigError, HttpConfig, Token, MAX_BODY, MAX_CONNECTIONS_LIMIT, MAX_TIMEOUT_MS};
pub use routes::METRICS_CONTENT_TYPE;
pub use server::{Health, HttpServer, MetricsFn, Services, StartError};
