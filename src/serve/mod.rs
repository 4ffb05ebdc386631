//! `serve`: a draw-a-digit page and a JSON API over one model, on HTTP/1
//! (axum on tokio).
//!
//! - `GET /`: the page ([`PAGE`], one file, no build step, nothing fetched
//!   from elsewhere): draw on a canvas or drop a picture, see the ten
//!   probabilities and the 28x28 image the model saw;
//! - `POST /api/predict`: `{"pixels": [784 values 0..1]}` (a 28x28 row as
//!   the model reads it), or a picture (`image/png`, `image/jpeg`, ...,
//!   raw or as a `multipart/form-data` file), which goes through
//!   [`crate::data::image`]'s MNIST preprocessing, the one the command
//!   line's `predict --image` uses. The page sends its canvas this way;
//! - `GET /api/model`: the model's shape, parameter count and metadata;
//! - `GET /healthz`: `{"status":"ok"}`.
//!
//! Every bad request gets a 4xx and `{"error": "...", "kind": "..."}`
//! (`ApiError`). Memory per request is bounded: bodies by
//! [`MAX_BODY`] (JSON by [`MAX_JSON`]), pictures by [`MAX_IMAGE_PIXELS`]
//! read from their header before decoding, and at most [`work_slots`]
//! requests decode or predict at once.

mod api;

use crate::engine::{Engine, EngineKind};
use crate::model::Mlp;
use api::ApiError;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The page: HTML, CSS and script in one file.
pub const PAGE: &str = include_str!("../../assets/serve.html");

/// Largest request body, in bytes (a phone photo fits); over it: 413.
pub const MAX_BODY: usize = 10 << 20;
/// Largest JSON body, in bytes: 784 numbers need about 20 KB.
pub const MAX_JSON: usize = 256 << 10;
/// Largest picture, width x height, checked from its header before
/// decoding (a 12-megapixel phone photo fits); over it: 422.
pub const MAX_IMAGE_PIXELS: u64 = 16_000_000;
/// How long a shutdown waits for requests still running.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the server could not start or stopped on an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the server: {0}")]
    Runtime(std::io::Error),
    #[error("the server stopped: {0}")]
    Serve(std::io::Error),
}

/// The model a server answers with, and what `GET /api/model` says of it.
pub struct Served {
    model: Mlp,
    engine: Box<dyn Engine>,
    file: PathBuf,
    meta: Option<String>,
}

impl Served {
    /// `model`, read from `file`, whose metadata (see [`Mlp::read_meta`])
    /// is `meta`.
    pub fn new(model: Mlp, file: &Path, meta: Option<String>) -> Served {
        Served {
            model,
            // One row at a time: the f32 product path, its workspace per
            // thread, so requests on several threads do not meet.
            engine: EngineKind::Blas.build(),
            file: file.to_path_buf(),
            meta,
        }
    }

    /// The model's answer for one 28x28 row.
    fn predict(&self, pixels: &[u8]) -> Vec<f32> {
        self.engine
            .probabilities(&self.model, pixels)
            .iter()
            .copied()
            .collect()
    }

    fn describe(&self) -> serde_json::Value {
        let shape = self.model.shape().to_string();
        let layers: Vec<usize> = shape.split('-').filter_map(|w| w.parse().ok()).collect();
        let meta = self.meta.as_ref().map(|m| {
            serde_json::from_str::<serde_json::Value>(m)
                .unwrap_or_else(|_| serde_json::Value::String(m.clone()))
        });
        serde_json::json!({
            "file": self.file.display().to_string(),
            "shape": shape,
            "layers": layers,
            "params": self.model.len(),
            "meta": meta,
            "limits": {
                "body_bytes": MAX_BODY,
                "json_bytes": MAX_JSON,
                "image_pixels": MAX_IMAGE_PIXELS,
            },
        })
    }
}

/// What the handlers share.
struct Shared {
    served: Served,
    /// Requests that may decode or predict at once.
    work: Semaphore,
}

/// Requests decoding a picture or predicting at once: one per core, times
/// two so a core never waits on a slow client's upload. Bounds the memory
/// that decoded pictures take.
pub fn work_slots() -> usize {
    2 * crate::threads::cores().max(1)
}

/// Bind `addr`, call `on_bound` with the address bound (port 0 picks a
/// free one), then answer requests until Ctrl-C or SIGTERM; requests
/// still running then get [`SHUTDOWN_GRACE`] to finish.
pub fn run(
    served: Served,
    addr: SocketAddr,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        on_bound(bound);
        let (stopping, mut stopped) = tokio::sync::watch::channel(false);
        let server = axum::serve(listener, router(served)).with_graceful_shutdown(async move {
            shutdown_signal().await;
            let _ = stopping.send(true);
        });
        tokio::select! {
            result = server => result.map_err(ServeError::Serve),
            _ = async {
                let _ = stopped.changed().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => Ok(()),
        }
    })
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

fn router(served: Served) -> Router {
    let shared = Arc::new(Shared {
        served,
        work: Semaphore::new(work_slots()),
    });
    Router::new()
        .route("/", get(page))
        .route("/api/predict", post(predict))
        .route("/api/model", get(model))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

async fn page() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Html(PAGE)).into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn model(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    Json(shared.served.describe())
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no such page: {} (the API is POST /api/predict, GET /api/model, GET /healthz)",
            req.uri().path()
        ),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

async fn predict(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    match api::predict(&shared, req).await {
        Ok(p) => Json(p).into_response(),
        Err(e) => e.into_response(),
    }
}
