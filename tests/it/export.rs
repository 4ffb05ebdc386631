//! `mnist-blas export` through the real binary: the ONNX file decodes (with
//! the same prost types) to the graph and weights of the model, bit for bit;
//! safetensors likewise; `--model` and `--out` default as in `predict`; a
//! bad model or output path is one line on stderr, exit 1, nothing written.
//! onnxruntime itself runs the files in `onnx.rs` (ignored by default).

use crate::common::{bits, model_bits, run_in, stderr, stdout, tree};
use mnist_blas::model::onnx::proto::ModelProto;
use mnist_blas::model::{Init, Layers, Mlp};
use prost::Message;
use std::path::Path;

const META: &str = r#"{"format":"mnist-blas model","shape":"16-8"}"#;

/// A 784-16-8-10 model with a `meta` array, saved as `dir/name`.
fn save_model(dir: &Path, name: &str) -> Mlp {
    let m = Mlp::init(&Layers::parse("16-8").unwrap(), Init::He, 7).unwrap();
    m.save_npz_with_meta(&dir.join(name), META).unwrap();
    m
}

fn decode_onnx(path: &Path) -> ModelProto {
    ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap()
}

/// The parameters of an ONNX file's initializers, in file order, as bits.
fn onnx_bits(model: &ModelProto) -> Vec<u32> {
    let g = model.graph.as_ref().unwrap();
    g.initializer
        .iter()
        .flat_map(|t| {
            t.raw_data
                .as_deref()
                .unwrap()
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn onnx_file_holds_the_model_graph_and_weights_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = save_model(d, "m.npz");
    let o = run_in(d, &["export", "--model", "m.npz", "--out", "m.onnx"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
    assert_eq!(
        stdout(&o),
        "wrote m.onnx (784-16-8-10, ONNX IR 8, opset 13) from m.npz\n\
         input `pixels` float32 [N, 784] (pixel / 255), \
         output `probabilities` float32 [N, 10]\n"
    );
    let onnx = decode_onnx(&d.join("m.onnx"));
    assert_eq!(onnx.ir_version, Some(8));
    assert_eq!(onnx.opset_import[0].version, Some(13));
    assert_eq!(onnx.producer_name.as_deref(), Some("mnist-blas"));
    let g = onnx.graph.as_ref().unwrap();
    let ops: Vec<&str> = g
        .node
        .iter()
        .map(|n| n.op_type.as_deref().unwrap())
        .collect();
    assert_eq!(ops, ["Gemm", "Relu", "Gemm", "Relu", "Gemm", "Softmax"]);
    assert_eq!(g.input[0].name.as_deref(), Some("pixels"));
    assert_eq!(g.output[0].name.as_deref(), Some("probabilities"));
    let names: Vec<&str> = g
        .initializer
        .iter()
        .map(|t| t.name.as_deref().unwrap())
        .collect();
    assert_eq!(names, ["w1", "b1", "w2", "b2", "w3", "b3"]);
    let dims: Vec<&[i64]> = g.initializer.iter().map(|t| t.dims.as_slice()).collect();
    assert_eq!(
        dims,
        [&[16, 784][..], &[16], &[8, 16], &[8], &[10, 8], &[10]]
    );
    // The weights as written, and as the .npz holds them.
    assert_eq!(onnx_bits(&onnx), bits(&m));
    assert_eq!(onnx_bits(&onnx), model_bits(&d.join("m.npz")));
    let props: Vec<(&str, &str)> = onnx
        .metadata_props
        .iter()
        .map(|e| (e.key.as_deref().unwrap(), e.value.as_deref().unwrap()))
        .collect();
    assert!(props.contains(&("shape", "784-16-8-10")), "{props:?}");
    assert!(props.contains(&("meta", META)), "{props:?}");
}

#[test]
fn safetensors_file_holds_the_npz_arrays_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = save_model(d, "m.npz");
    // The format follows --out's extension.
    let o = run_in(d, &["export", "--model", "m.npz", "--out", "m.safetensors"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "wrote m.safetensors (784-16-8-10, safetensors: w1, b1, ... float32) from m.npz\n"
    );
    let bytes = std::fs::read(d.join("m.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut read = Vec::new();
    for (i, layer) in m.layers.iter().enumerate() {
        for (name, shape) in [
            (format!("w{}", i + 1), vec![layer.outputs(), layer.inputs()]),
            (format!("b{}", i + 1), vec![layer.outputs(), 1]),
        ] {
            let t = file.tensor(&name).unwrap();
            assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
            assert_eq!(t.shape(), shape, "{name}");
            read.extend(
                t.data()
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap())),
            );
        }
    }
    assert_eq!(file.len(), 6);
    assert_eq!(read, bits(&m));
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().as_ref().unwrap();
    assert_eq!(meta["shape"], "784-16-8-10");
    assert_eq!(meta["meta"], META);
}

#[test]
fn model_and_out_default_as_in_predict() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("runs/first")).unwrap();
    let m = save_model(&d.join("runs/first"), "model.npz");
    std::os::unix::fs::symlink("first", d.join("runs/latest")).unwrap();

    // No flags: runs/latest's model -> model.onnx.
    let o = run_in(d, &["export", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    assert_eq!(onnx_bits(&decode_onnx(&d.join("model.onnx"))), bits(&m));

    // A run folder means its model.npz; --format safetensors names the default file.
    let o = run_in(
        d,
        &["export", "--model", "runs/first", "--format", "safetensors"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("wrote model.safetensors (784-16-8-10"));
    let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
    assert_eq!(
        safetensors::SafeTensors::deserialize(&bytes).unwrap().len(),
        6
    );

    // A device is written in place, never replaced.
    let o = run_in(d, &["export", "-q", "--out", "/dev/null"]);
    assert!(o.status.success(), "{}", stderr(&o));
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
}

/// `export ARGS` in `dir` fails with exit 1 and one line on stderr that
/// contains `want`, and leaves `dir` as it was.
fn refused(dir: &Path, args: &[&str], want: &str) {
    let before = tree(dir);
    let mut all = vec!["export"];
    all.extend_from_slice(args);
    let o = run_in(dir, &all);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: one line:\n{err}");
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: expected {want:?} in:\n{err}");
    assert_eq!(stdout(&o), "", "{args:?}");
    assert!(tree(dir) == before, "{args:?} changed the folder");
}

#[test]
fn bad_models_and_outputs_are_one_line_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    refused(
        d,
        &[],
        "no --model given and no runs/latest/model.npz yet: train a model first",
    );
    refused(
        d,
        &["--model", "nope.npz"],
        "nope.npz: no such file (--model)",
    );
    std::fs::create_dir(d.join("empty")).unwrap();
    refused(
        d,
        &["--model", "empty"],
        "empty: a folder without a model.npz",
    );
    std::fs::write(d.join("bad.npz"), b"not a zip file").unwrap();
    refused(d, &["--model", "bad.npz", "--out", "bad.onnx"], "bad.npz: ");

    save_model(d, "m.npz");
    refused(
        d,
        &["--model", "m.npz", "--out", "m.npz"],
        "--out m.npz: is the input m.npz; refusing to overwrite an input",
    );
    refused(
        d,
        &["--model", "m.npz", "--out", "missing/m.onnx"],
        "missing/m.onnx: cannot write: directory missing does not exist",
    );
    refused(
        d,
        &["--model", "m.npz", "--out", "empty"],
        "empty: cannot write: is a directory",
    );
}
