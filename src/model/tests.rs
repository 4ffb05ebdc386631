//! The model's tests: init, shapes, the file format.
use super::*;
use crate::output::write_atomic;
use ndarray_npy::NpzWriter;

#[test]
fn uniform_init_is_in_range_and_seeded() {
    let a = Mlp::init(&Layers::one(10), Init::Uniform, 0).unwrap();
    assert!(a
        .params()
        .iter()
        .all(|p| p.iter().all(|&v| (-0.5..0.5).contains(&v))));
    assert_eq!(a, Mlp::init(&Layers::one(10), Init::Uniform, 0).unwrap());
    assert_ne!(a, Mlp::init(&Layers::one(10), Init::Uniform, 1).unwrap());
}

#[test]
fn he_init_has_the_right_scale() {
    let m = Mlp::init(&Layers::one(64), Init::He, 3).unwrap();
    let w1 = &m.layers[0].w;
    let var = w1.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / w1.len() as f64;
    let expected = 2.0 / FEATURES as f64;
    assert!((var / expected - 1.0).abs() < 0.05, "{var} vs {expected}");
    assert!(m.layers[0].b.iter().all(|&v| v == 0.0));
}

#[cfg(feature = "blas")]
#[test]
fn orthogonal_init_gives_row_major_orthogonal_layers() {
    let m = Mlp::init(&Layers::parse("64-32").unwrap(), Init::Orthogonal, 5).unwrap();
    for layer in &m.layers {
        assert!(layer.w.is_standard_layout());
        assert!(layer.b.iter().all(|&b| b == 0.0));
        // Wide layers have orthogonal rows, tall ones orthogonal columns,
        // each of norm sqrt(2) (the ReLU gain).
        let w = &layer.w;
        let gram = if w.nrows() <= w.ncols() {
            w.dot(&w.t())
        } else {
            w.t().dot(w)
        };
        for ((i, j), &v) in gram.indexed_iter() {
            let want = if i == j { 2.0 } else { 0.0 };
            assert!((v - want).abs() < 1e-4, "({i}, {j}) = {v}");
        }
    }
    assert_eq!(m.params().len(), 6);
}

#[test]
fn npz_round_trip_keeps_every_bit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.npz");
    let m = Mlp::init(&Layers::parse("12-7-5").unwrap(), Init::He, 9).unwrap();
    m.save_npz(&path).unwrap();
    assert_eq!(Mlp::load_npz(&path).unwrap(), m);
}

#[test]
fn npz_with_wrong_shapes_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.npz");
    let m = Mlp::init(&Layers::one(10), Init::Uniform, 0).unwrap();
    write_atomic(&path, |w| {
        let mut npz = NpzWriter::new(w);
        npz.add_array("w1", &m.layers[0].w).unwrap();
        npz.add_array("b1", &Array2::<f32>::zeros((10, 1))).unwrap();
        npz.add_array("w2", &Array2::<f32>::zeros((10, 11)))
            .unwrap();
        npz.add_array("b2", &Array2::<f32>::zeros((10, 1))).unwrap();
        npz.finish().unwrap();
        Ok(())
    })
    .unwrap();
    let err = Mlp::load_npz(&path).unwrap_err().to_string();
    assert!(
        err.contains("bad.npz") && err.contains("'w2'") && err.contains("(10, 11)"),
        "{err}"
    );
}

#[test]
fn garbage_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.npz");
    std::fs::write(&path, b"this is not a zip").unwrap();
    let err = Mlp::load_npz(&path).unwrap_err().to_string();
    assert!(
        err.contains("junk.npz") && err.contains("not a valid .npz"),
        "{err}"
    );
}

#[test]
fn layers_parse_accepts_hidden_widths_or_the_full_shape() {
    let l = Layers::parse("256-128").unwrap();
    assert_eq!(l.hidden(), &[256, 128]);
    assert_eq!(l.widths(), vec![784, 256, 128, 10]);
    assert_eq!(l.depth(), 3);
    assert_eq!(l.to_string(), "784-256-128-10");
    assert_eq!(l.flag(), "256-128");
    // The full shape, inputs and classes included, means the same.
    assert_eq!(Layers::parse("784-256-128-10").unwrap(), l);
    assert_eq!(Layers::parse("10").unwrap(), Layers::one(10));
    assert_eq!(Layers::parse("10").unwrap().to_string(), "784-10-10");
    // Every width counted: 784*256 + 256 + 256*128 + 128 + 128*10 + 10.
    assert_eq!(l.params(), 235_146);
    let sixteen = vec!["1"; MAX_HIDDEN_LAYERS].join("-");
    assert_eq!(Layers::parse(&sixteen).unwrap().depth(), 17);
}

#[test]
fn layers_parse_refuses_bad_specs_saying_why() {
    let refused = |s: &str| Layers::parse(s).unwrap_err();
    let e = refused("0");
    assert!(e.contains("0 units") && e.contains("1 to 100000"), "{e}");
    let e = refused("256-0");
    assert!(e.contains("0 units"), "{e}");
    for bad in ["a-b", "256,128", "", "256-", "-256", "1.5"] {
        let e = refused(bad);
        assert!(
            e.contains("expected hidden widths joined by '-'") && e.contains("256-128"),
            "{bad:?}: {e}"
        );
    }
    let seventeen = vec!["4"; MAX_HIDDEN_LAYERS + 1].join("-");
    let e = refused(&seventeen);
    assert!(
        e.contains("17 hidden layers") && e.contains("16 this program accepts"),
        "{e}"
    );
    // Each width allowed, the total not: 78.5 M + 100 M parameters.
    let e = refused("100000-1000");
    assert!(
        e.contains("784-100000-1000-10")
            && e.contains("parameters")
            && e.contains(&MAX_PARAMS.to_string()),
        "{e}"
    );
    let e = refused("100001");
    assert!(e.contains("100001 units"), "{e}");
    // One error line each.
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn three_hidden_layers_round_trip_bit_for_bit_under_the_notebooks_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.npz");
    // Uniform: biases are not zero, so they are really compared.
    let layers = Layers::parse("32-16-8").unwrap();
    let m = Mlp::init(&layers, Init::Uniform, 11).unwrap();
    m.save_npz(&path).unwrap();
    let back = Mlp::load_npz(&path).unwrap();
    assert_eq!(back.shape(), layers);
    let bits = |m: &Mlp| -> Vec<u32> {
        m.params()
            .iter()
            .flat_map(|p| p.iter().map(|v| v.to_bits()))
            .collect()
    };
    assert_eq!(bits(&back), bits(&m));

    // wi outputs x inputs, bi outputs x 1, float32, nothing else.
    let mut npz = ndarray_npy::NpzReader::new(std::fs::File::open(&path).unwrap()).unwrap();
    let mut names = npz.names().unwrap();
    names.sort();
    assert_eq!(names, ["b1", "b2", "b3", "b4", "w1", "w2", "w3", "w4"]);
    let widths = layers.widths();
    for i in 1..=4 {
        let w: Array2<f32> = npz.by_name(&format!("w{i}")).unwrap();
        let b: Array2<f32> = npz.by_name(&format!("b{i}")).unwrap();
        assert_eq!(w.dim(), (widths[i], widths[i - 1]), "w{i}");
        assert_eq!(b.dim(), (widths[i], 1), "b{i}");
        assert_eq!(w, m.layers[i - 1].w);
    }
}

/// A model file of the arrays `arrays` (name, rows, columns; zeros).
fn write_arrays(path: &Path, arrays: &[(&str, usize, usize)]) {
    write_atomic(path, |w| {
        let mut npz = NpzWriter::new(w);
        for &(name, rows, cols) in arrays {
            npz.add_array(name, &Array2::<f32>::zeros((rows, cols)))
                .unwrap();
        }
        npz.finish().unwrap();
        Ok(())
    })
    .unwrap();
}

#[test]
fn deep_files_whose_layers_do_not_chain_are_refused_by_array() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |name: &str, arrays: &[(&str, usize, usize)]| -> String {
        let path = dir.path().join(name);
        write_arrays(&path, arrays);
        let e = Mlp::load_npz(&path).unwrap_err().to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        assert!(!e.contains('\n'), "{e}");
        e
    };
    // The good file first, so the ones below fail for their one fault.
    let good = [
        ("w1", 16, 784),
        ("b1", 16, 1),
        ("w2", 8, 16),
        ("b2", 8, 1),
        ("w3", 10, 8),
        ("b3", 10, 1),
    ];
    let path = dir.path().join("good.npz");
    write_arrays(&path, &good);
    assert_eq!(
        Mlp::load_npz(&path).unwrap().shape(),
        Layers::parse("16-8").unwrap()
    );

    let mut arrays = good;
    arrays[2] = ("w2", 8, 15);
    let e = refused("w2.npz", &arrays);
    assert!(
        e.contains("array 'w2'") && e.contains("(H, 16)") && e.contains("(8, 15)"),
        "{e}"
    );

    let mut arrays = good;
    arrays[4] = ("w3", 9, 8);
    arrays[5] = ("b3", 9, 1);
    let e = refused("w3.npz", &arrays);
    assert!(
        e.contains("array 'w3'") && e.contains("(10, 8)") && e.contains("(9, 8)"),
        "{e}"
    );

    let e = refused("b3.npz", &good[..5]);
    assert!(e.contains("array 'b3' is missing"), "{e}");

    let mut arrays = good;
    arrays[3] = ("b2", 8, 2);
    let e = refused("b2.npz", &arrays);
    assert!(e.contains("array 'b2'") && e.contains("(8, 2)"), "{e}");
}
