//! `mnist-blas serve`: the draw-a-digit page and the JSON API (src/serve).

use super::check_exists;
use crate::model::Mlp;
use crate::serve::{Served, MAX_BODY, MAX_IMAGE_PIXELS};
use anyhow::Result;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = format!("Examples:\n  \
    mnist-blas serve                       # runs/latest's model on 127.0.0.1:8080\n  \
    mnist-blas serve --model runs/first --addr 0.0.0.0:8080\n  \
    mnist-blas serve --addr 127.0.0.1:0    # any free port; the address is printed\n\n\
    Open the printed address to draw a digit or drop a picture. The API:\n  \
    POST /api/predict  {{\"pixels\": [784 values 0..1]}} or a picture (PNG, JPEG,\n                     \
    GIF, BMP, WebP; raw or a multipart file); answers\n                     \
    {{\"label\", \"probabilities\", \"pixels\"}}\n  \
    GET /api/model     the model's shape, parameters and metadata\n  \
    GET /healthz       {{\"status\": \"ok\"}}\n\n\
    A bad request gets a 4xx and {{\"error\": \"...\", \"kind\": \"...\"}}. Bodies are \
    limited to {} MiB, pictures to {} megapixels. Ctrl-C or SIGTERM stops the server \
    (requests running get 5 s to finish).",
    MAX_BODY >> 20, MAX_IMAGE_PIXELS / 1_000_000))]
pub struct ServeArgs {
    /// Model written by `train`: a .npz file, or a run folder (its model.npz).
    #[arg(long, value_name = "PATH", default_value = super::runs::LATEST_MODEL)]
    pub model: PathBuf,
    /// Address to listen on; port 0 picks a free port. 0.0.0.0 opens the
    /// page to the network (no authentication).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let model_file = super::runs::model_path(&args.model)?;
    check_exists(&model_file, "--model")?;
    let model = Mlp::load_npz(&model_file)?;
    let meta = Mlp::read_meta(&model_file);
    // Each request predicts one row on its own thread: OpenBLAS's threads
    // would only contend with the other requests'.
    crate::threads::set_openblas_threads(1);
    let shape = model.shape();
    crate::serve::run(Served::new(model, &model_file, meta), args.addr, |bound| {
        outln!(
            "serving {} ({shape}) on http://{bound}/ (Ctrl-C to stop)",
            model_file.display()
        );
    })?;
    outln!("stopped");
    Ok(())
}
