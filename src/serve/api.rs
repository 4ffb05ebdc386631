//! `POST /api/predict`: reading and checking a request, answering it, and
//! the JSON errors of bad ones.

use super::{Shared, MAX_BODY, MAX_IMAGE_PIXELS, MAX_JSON};
use crate::data::image::{digit_from_bytes, ImageError, FORMATS};
use crate::data::FEATURES;
use crate::engine::argmax;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A bad request's answer: a 4xx (a 5xx only for a fault of the server)
/// and `{"error": "<one line naming the problem>", "kind": "<kind>"}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, kind: &'static str, message: String) -> ApiError {
        ApiError {
            status,
            kind,
            message,
        }
    }

    fn unprocessable(kind: &'static str, message: String) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, kind, message)
    }

    fn too_large(what: &str, limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the {what} is over the limit of {} bytes ({})",
                crate::text::thousands(limit),
                mib(limit)
            ),
        )
    }

    fn unsupported(message: String) -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "kind": self.kind });
        (self.status, Json(body)).into_response()
    }
}

fn mib(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// The answer to a good request.
#[derive(Debug, Serialize)]
pub(crate) struct Prediction {
    /// The most probable digit (the lower one on a tie).
    label: usize,
    /// Each digit's probability, 0 to 9.
    probabilities: Vec<f32>,
    /// The 28x28 the model saw, row-major, 0 (background) to 1 (ink):
    /// each value is a multiple of 1/255, as the model reads bytes.
    pixels: Vec<f32>,
    /// For a picture: whether it was dark ink on light and was inverted.
    #[serde(skip_serializing_if = "Option::is_none")]
    inverted: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PixelsBody {
    pixels: Vec<f64>,
}

/// `POST /api/predict`, by the body's content type: JSON pixels, a
/// picture, or a picture in a multipart form.
pub(super) async fn predict(shared: &Arc<Shared>, req: Request) -> Result<Prediction, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase())
        .unwrap_or_default();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    match essence.as_str() {
        "multipart/form-data" => {
            let form = Multipart::from_request(req, &())
                .await
                .map_err(|e| multipart_error(e.status(), e.body_text()))?;
            let bytes = file_of(form).await?;
            from_image(shared, bytes).await
        }
        "application/json" => from_pixels(shared, &body(req).await?).await,
        "" => {
            // No content type: JSON if it looks like JSON, else a picture.
            let bytes = body(req).await?;
            if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
                from_pixels(shared, &bytes).await
            } else {
                from_image(shared, bytes).await
            }
        }
        t if t.starts_with("image/") || t == "application/octet-stream" => {
            from_image(shared, body(req).await?).await
        }
        other => Err(ApiError::unsupported(format!(
            "unsupported content type {other:?}: send application/json \
             {{\"pixels\": [784 values 0..1]}}, a picture ({FORMATS}) as image/* \
             or as a multipart/form-data file"
        ))),
    }
}

/// The whole body, up to [`MAX_BODY`].
async fn body(req: Request) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, &()).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large("body", MAX_BODY)
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("cannot read the body: {}", e.body_text()),
            )
        }
    })
}

fn multipart_error(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large("body", MAX_BODY)
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_multipart",
            format!("cannot read the multipart form: {text}"),
        )
    }
}

/// The picture of a multipart form: its field `image` or `file`, or its
/// first field that carries a file name.
async fn file_of(mut form: Multipart) -> Result<Bytes, ApiError> {
    loop {
        let field = form
            .next_field()
            .await
            .map_err(|e| multipart_error(e.status(), e.body_text()))?;
        let Some(field) = field else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "no_file",
                "the multipart form has no file: send the picture as a field \
                 named `image` (or `file`)"
                    .into(),
            ));
        };
        if matches!(field.name(), Some("image" | "file")) || field.file_name().is_some() {
            return field
                .bytes()
                .await
                .map_err(|e| multipart_error(e.status(), e.body_text()));
        }
    }
}

/// A JSON body `{"pixels": [...]}`: 784 values from 0 to 1, row-major.
async fn from_pixels(shared: &Arc<Shared>, json: &[u8]) -> Result<Prediction, ApiError> {
    if json.len() > MAX_JSON {
        return Err(ApiError::too_large("JSON body", MAX_JSON));
    }
    let parsed: PixelsBody = serde_json::from_slice(json).map_err(|e| {
        let (kind, what) = match e.classify() {
            serde_json::error::Category::Data => ("bad_field", "unexpected JSON"),
            _ => ("malformed_json", "malformed JSON"),
        };
        ApiError::new(
            StatusCode::BAD_REQUEST,
            kind,
            format!("{what}: {e}; expected {{\"pixels\": [784 values 0..1]}}"),
        )
    })?;
    let pixels = parsed.pixels;
    if pixels.len() != FEATURES {
        return Err(ApiError::unprocessable(
            "wrong_length",
            format!(
                "pixels has {} values; expected {FEATURES} (28x28, row by row)",
                pixels.len()
            ),
        ));
    }
    if let Some((i, v)) = pixels.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(ApiError::unprocessable(
            "not_finite",
            format!("pixels[{i}] is {v}; values must be finite numbers from 0 to 1"),
        ));
    }
    if let Some((i, v)) = pixels
        .iter()
        .enumerate()
        .find(|(_, v)| !(0.0..=1.0).contains(*v))
    {
        return Err(ApiError::unprocessable(
            "out_of_range",
            format!("pixels[{i}] is {v}; values must be from 0 (background) to 1 (ink)"),
        ));
    }
    let bytes: Vec<u8> = pixels.iter().map(|&v| (v * 255.0).round() as u8).collect();
    if bytes.iter().all(|&b| b == 0) {
        return Err(blank("every pixel is 0 (after rounding to 1/255)"));
    }
    let model = Arc::clone(shared);
    work(shared, move || Ok(answer(&model, bytes, None))).await
}

fn blank(why: &str) -> ApiError {
    ApiError::unprocessable("blank", format!("no digit: the drawing is blank ({why})"))
}

/// A picture in any supported format: its size checked from its header,
/// then decoded and preprocessed as MNIST was made.
async fn from_image(shared: &Arc<Shared>, bytes: Bytes) -> Result<Prediction, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::unprocessable(
            "bad_image",
            "the body is empty: expected a picture or {\"pixels\": [...]}".into(),
        ));
    }
    check_header(&bytes)?;
    let model = Arc::clone(shared);
    work(shared, move || {
        let digit = digit_from_bytes(&bytes).map_err(image_error)?;
        Ok(answer(&model, digit.to_bytes(), Some(digit.inverted)))
    })
    .await
}

/// Refuse a picture of an unknown format, or one over
/// [`MAX_IMAGE_PIXELS`], from its header alone.
fn check_header(bytes: &[u8]) -> Result<(), ApiError> {
    let reader = ::image::io::Reader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ApiError::unprocessable("bad_image", format!("cannot read the image: {e}")))?;
    if reader.format().is_none() {
        return Err(ApiError::unsupported(format!(
            "not a picture this server reads ({FORMATS})"
        )));
    }
    let mut reader = reader;
    reader.no_limits();
    let (width, height) = reader.into_dimensions().map_err(|e| match e {
        ::image::ImageError::Unsupported(u) => {
            ApiError::unsupported(format!("unsupported picture: {u} ({FORMATS})"))
        }
        e => ApiError::unprocessable("bad_image", format!("cannot decode the image: {e}")),
    })?;
    if u64::from(width) * u64::from(height) > MAX_IMAGE_PIXELS {
        return Err(ApiError::unprocessable(
            "image_too_large",
            format!(
                "the image is {width}x{height} pixels, over the limit of {} pixels",
                crate::text::thousands(MAX_IMAGE_PIXELS as usize)
            ),
        ));
    }
    Ok(())
}

fn image_error(e: ImageError) -> ApiError {
    match e {
        ImageError::Unsupported(m) => ApiError::unsupported(m),
        ImageError::NoInk => blank("nothing stands out from the background"),
        ImageError::TooLarge { .. } => ApiError::unprocessable("image_too_large", e.to_string()),
        e => ApiError::unprocessable("bad_image", e.to_string()),
    }
}

/// Run `job` on a blocking thread once one of the server's work slots is
/// free: decoding and predicting never hold up the threads that read
/// requests, and at most that many run at once.
async fn work(
    shared: &Arc<Shared>,
    job: impl FnOnce() -> Result<Prediction, ApiError> + Send + 'static,
) -> Result<Prediction, ApiError> {
    let internal =
        |what: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", what);
    let _slot = shared
        .work
        .acquire()
        .await
        .map_err(|e| internal(format!("the server is stopping: {e}")))?;
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| internal(format!("the prediction failed: {e}")))?
}

/// The model's answer for the 28x28 `bytes` it sees.
fn answer(shared: &Shared, bytes: Vec<u8>, inverted: Option<bool>) -> Prediction {
    let probabilities = shared.served.predict(&bytes);
    Prediction {
        label: argmax(&probabilities),
        probabilities,
        pixels: bytes.iter().map(|&b| f32::from(b) / 255.0).collect(),
        inverted,
    }
}
