//! `mnist-blas export`: a model for other runtimes, as ONNX (onnxruntime,
//! and every ONNX runtime) or safetensors (PyTorch, candle, burn).

use super::{check_exists, check_outputs};
use crate::data::{CLASSES, FEATURES};
use crate::model::onnx::{BATCH, INPUT, IR_VERSION, OPSET, OUTPUT};
use crate::model::Mlp;
use anyhow::Result;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  mnist-blas export                   # runs/latest's model -> model.onnx
  mnist-blas export --model runs/first --out digits.onnx
  mnist-blas export --out model.safetensors

ONNX: the graph takes `pixels`, float32 [N, 784] for N images, each value a pixel byte divided by 255 (0 to 1, ink high, as `predict` reads CSV and IDX files), and gives `probabilities`, float32 [N, 10]: the probabilities `predict --probabilities` writes. It is one Gemm per layer, Relu between them and Softmax at the end, at IR version 8, opset 13 (onnxruntime 1.10 and later). The weights are initializers w1, b1, w2, ... as in the .npz, bit for bit.

safetensors: the .npz's arrays, same names, shapes and bits (w1 outputs by inputs, b1 outputs by 1, ...), float32; the header's metadata holds the shape and the model's `meta` JSON.")]
pub struct ExportArgs {
    /// Model written by `train`: a .npz file, or a run folder (its model.npz).
    #[arg(long, value_name = "PATH", default_value = super::runs::LATEST_MODEL)]
    pub model: PathBuf,
    /// File to write [default: model.onnx, or model.safetensors for
    /// --format safetensors].
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Format to write [default: safetensors for an --out ending in
    /// .safetensors, else onnx].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
}

/// A file format `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// ONNX: a graph any ONNX runtime runs.
    Onnx,
    /// safetensors: the weights alone.
    Safetensors,
}

impl Format {
    /// `--format`, or what `--out`'s extension says.
    fn of(given: Option<Format>, out: Option<&Path>) -> Format {
        given.unwrap_or_else(
            || match out.and_then(Path::extension).and_then(|e| e.to_str()) {
                Some(ext) if ext.eq_ignore_ascii_case("safetensors") => Format::Safetensors,
                _ => Format::Onnx,
            },
        )
    }

    fn default_out(self) -> &'static str {
        match self {
            Format::Onnx => "model.onnx",
            Format::Safetensors => "model.safetensors",
        }
    }
}

pub fn run(args: ExportArgs) -> Result<()> {
    let model_path = super::runs::model_path(&args.model)?;
    let format = Format::of(args.format, args.out.as_deref());
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format.default_out()));
    check_exists(&model_path, "--model")?;
    check_outputs(&[&model_path], &[("--out", out.as_path())])?;
    let model = Mlp::load_npz(&model_path)?;
    let meta = Mlp::read_meta(&model_path);
    match format {
        Format::Onnx => model.save_onnx(&out, meta.as_deref())?,
        Format::Safetensors => model.save_safetensors(&out, meta.as_deref())?,
    }
    if !args.quiet {
        let shape = model.shape();
        match format {
            Format::Onnx => {
                outln!(
                    "wrote {} ({shape}, ONNX IR {IR_VERSION}, opset {OPSET}) from {}",
                    out.display(),
                    model_path.display()
                );
                outln!(
                    "input `{INPUT}` float32 [{BATCH}, {FEATURES}] (pixel / 255), \
                     output `{OUTPUT}` float32 [{BATCH}, {CLASSES}]"
                );
            }
            Format::Safetensors => outln!(
                "wrote {} ({shape}, safetensors: w1, b1, ... float32) from {}",
                out.display(),
                model_path.display()
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_comes_from_the_flag_then_the_extension() {
        let of = |f, out: Option<&str>| Format::of(f, out.map(Path::new));
        assert_eq!(of(None, None), Format::Onnx);
        assert_eq!(of(None, Some("m.onnx")), Format::Onnx);
        assert_eq!(of(None, Some("m.SafeTensors")), Format::Safetensors);
        assert_eq!(of(None, Some("weights")), Format::Onnx);
        assert_eq!(of(Some(Format::Onnx), Some("m.safetensors")), Format::Onnx);
        assert_eq!(of(Some(Format::Safetensors), None), Format::Safetensors);
    }
}
