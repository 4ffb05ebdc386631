use super::*;
use crate::model::{Init, Layers};

/// The element type and dims of a graph input or output, a symbolic
/// dimension as `'N'` (quoted) and a fixed one as its number.
fn dims(v: &ValueInfoProto) -> (i32, Vec<String>) {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().unwrap().value.as_ref() else {
        panic!("{:?} is not a tensor", v.name);
    };
    let dims = t
        .shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| match d.value.as_ref().unwrap() {
            dimension::Value::DimParam(p) => format!("'{p}'"),
            dimension::Value::DimValue(v) => v.to_string(),
        })
        .collect();
    (t.elem_type.unwrap(), dims)
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn decoded(m: &Mlp, meta: Option<&str>) -> ModelProto {
    ModelProto::decode(m.to_onnx(meta).as_slice()).expect("the bytes decode as a ModelProto")
}

#[test]
fn graph_is_gemm_relu_per_layer_then_softmax_wired_in_order() {
    let m = Mlp::init(&Layers::parse("5-4").unwrap(), Init::He, 1).unwrap();
    let model = decoded(&m, None);
    assert_eq!(model.ir_version, Some(IR_VERSION));
    assert_eq!(model.opset_import.len(), 1);
    assert_eq!(model.opset_import[0].domain.as_deref().unwrap_or(""), "");
    assert_eq!(model.opset_import[0].version, Some(OPSET));
    assert_eq!(model.producer_name.as_deref(), Some(PRODUCER));
    assert!(model.doc_string.as_deref().unwrap().contains("784-5-4-10"));

    let g = model.graph.as_ref().unwrap();
    let ops: Vec<&str> = g
        .node
        .iter()
        .map(|n| n.op_type.as_deref().unwrap())
        .collect();
    assert_eq!(ops, ["Gemm", "Relu", "Gemm", "Relu", "Gemm", "Softmax"]);
    let wiring: Vec<(Vec<&str>, Vec<&str>)> = g
        .node
        .iter()
        .map(|n| (strs(&n.input), strs(&n.output)))
        .collect();
    assert_eq!(
        wiring,
        [
            (vec!["pixels", "w1", "b1"], vec!["z1"]),
            (vec!["z1"], vec!["a1"]),
            (vec!["a1", "w2", "b2"], vec!["z2"]),
            (vec!["z2"], vec!["a2"]),
            (vec!["a2", "w3", "b3"], vec!["z3"]),
            (vec!["z3"], vec!["probabilities"]),
        ]
    );
    // Every Gemm multiplies by the transposed weights (outputs x inputs
    // in the file); Softmax normalises each row.
    for n in &g.node {
        let attrs: Vec<(&str, i32, i64)> = n
            .attribute
            .iter()
            .map(|a| (a.name.as_deref().unwrap(), a.r#type.unwrap(), a.i.unwrap()))
            .collect();
        let int = AttributeType::Int as i32;
        match n.op_type.as_deref().unwrap() {
            "Gemm" => assert_eq!(attrs, [("transB", int, 1)]),
            "Relu" => assert!(attrs.is_empty()),
            "Softmax" => assert_eq!(attrs, [("axis", int, 1)]),
            op => panic!("unexpected op {op}"),
        }
    }

    // One input, one output, float32 with a symbolic batch size; the
    // weights are initializers, not inputs a caller could override.
    let float = DataType::Float as i32;
    assert_eq!(g.input.len(), 1);
    assert_eq!(g.input[0].name.as_deref(), Some(INPUT));
    assert_eq!(
        dims(&g.input[0]),
        (float, vec!["'N'".to_string(), "784".into()])
    );
    assert_eq!(g.output.len(), 1);
    assert_eq!(g.output[0].name.as_deref(), Some(OUTPUT));
    assert_eq!(
        dims(&g.output[0]),
        (float, vec!["'N'".to_string(), "10".into()])
    );
}

#[test]
fn initializers_are_the_model_bit_for_bit() {
    let m = Mlp::init(&Layers::parse("7-3").unwrap(), Init::He, 2).unwrap();
    let g = decoded(&m, None).graph.unwrap();
    let names: Vec<&str> = g
        .initializer
        .iter()
        .map(|t| t.name.as_deref().unwrap())
        .collect();
    assert_eq!(names, ["w1", "b1", "w2", "b2", "w3", "b3"]);
    let expected = m.params();
    for (t, want) in g.initializer.iter().zip(expected) {
        let name = t.name.as_deref().unwrap();
        assert_eq!(t.data_type, Some(DataType::Float as i32), "{name}");
        let layer = &m.layers[name[1..].parse::<usize>().unwrap() - 1];
        let dims: Vec<i64> = if name.starts_with('w') {
            vec![layer.outputs() as i64, layer.inputs() as i64]
        } else {
            vec![layer.outputs() as i64]
        };
        assert_eq!(t.dims, dims, "{name}");
        assert!(t.float_data.is_empty(), "{name}: the values are raw data");
        let raw = t.raw_data.as_deref().unwrap();
        let bits: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let want: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits, want, "{name}");
    }
}

#[test]
fn metadata_names_the_shape_and_carries_the_model_meta() {
    let m = Mlp::init(&Layers::one(10), Init::He, 3).unwrap();
    let props = |model: &ModelProto| -> Vec<(String, String)> {
        model
            .metadata_props
            .iter()
            .map(|e| (e.key.clone().unwrap(), e.value.clone().unwrap()))
            .collect()
    };
    let meta = r#"{"format":"mnist-blas model","shape":"10"}"#;
    let with = props(&decoded(&m, Some(meta)));
    let keys: Vec<&str> = with.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["shape", "pixels", "probabilities", "meta"]);
    assert_eq!(with[0].1, "784-10-10");
    assert!(with[1].1.contains("divided by 255"), "{}", with[1].1);
    assert_eq!(with[3].1, meta);
    let without = props(&decoded(&m, None));
    assert_eq!(without, with[..3]);
}

#[test]
fn the_same_model_gives_the_same_bytes() {
    let m = Mlp::init(&Layers::parse("6-6").unwrap(), Init::Uniform, 4).unwrap();
    assert_eq!(m.to_onnx(Some("x")), m.to_onnx(Some("x")));
}
