//! Both engines against an independent numpy computation of one training
//! step (tests/fixtures, made by scripts/make_step_fixture.py in float64).

use crate::testutil::{max_rel_diff, tolerance};
use mnist_blas::engine::{naive, EngineKind};
use mnist_blas::model::{Dense, Mlp};
use mnist_blas::optim::{Optimizer, OptimizerKind};
use mnist_blas::train::shard::ShardBuffers;
use ndarray::{Array0, Array1, Array2, ArrayD, Ix2};
use ndarray_npy::NpzReader;

struct Fixture {
    x: Vec<u8>,
    y: Vec<u8>,
    model: Mlp,
    arrays: NpzReader<std::fs::File>,
}

fn open(name: &'static str) -> Fixture {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut npz = NpzReader::new(std::fs::File::open(&path).expect("fixture present")).unwrap();
    let x: Array2<u8> = npz.by_name("x").unwrap();
    let y: Array1<u8> = npz.by_name("y").unwrap();
    let w1: Array2<f32> = npz.by_name("w1").unwrap();
    let b1: Array2<f32> = npz.by_name("b1").unwrap();
    let w2: Array2<f32> = npz.by_name("w2").unwrap();
    let b2: Array2<f32> = npz.by_name("b2").unwrap();
    let model = Mlp {
        layers: vec![
            Dense {
                w: w1,
                b: b1.column(0).to_owned(),
            },
            Dense {
                w: w2,
                b: b2.column(0).to_owned(),
            },
        ],
    };
    Fixture {
        x: x.iter().copied().collect(),
        y: y.to_vec(),
        model,
        arrays: npz,
    }
}

impl Fixture {
    fn f64s(&mut self, name: &str) -> Vec<f64> {
        let a: ArrayD<f64> = self.arrays.by_name(name).unwrap();
        a.iter().copied().collect()
    }
    fn matrix(&mut self, name: &str) -> Array2<f64> {
        self.arrays
            .by_name::<ndarray::OwnedRepr<f64>, Ix2>(name)
            .unwrap()
    }
}

fn flat(m: &Mlp) -> [Vec<f64>; 4] {
    let p = m.params();
    assert_eq!(p.len(), 4, "a one-hidden-layer model");
    std::array::from_fn(|i| p[i].iter().map(|&v| v as f64).collect())
}

const FIXTURES: [&str; 2] = ["step_h10_b32.npz", "step_h16_b7.npz"];
const PARAMS: [&str; 4] = ["w1", "b1", "w2", "b2"];

#[test]
fn oracle_forward_and_gradients_equal_numpy_in_f64() {
    for name in FIXTURES {
        let mut f = open(name);
        let rows = f.y.len();
        let probs = f.matrix("probs"); // 10 x B
        let z1 = f.matrix("z1"); // H x B
        for (r, row) in f.x.chunks(784).enumerate() {
            let fw = naive::forward_row(&f.model, row);
            let d = max_rel_diff(fw.probs.clone(), probs.column(r).to_vec());
            assert!(d < tolerance::F64_VS_F64, "{name} row {r} probs {d}");
            let d = max_rel_diff(fw.z[0].clone(), z1.column(r).to_vec());
            assert!(d < tolerance::F64_VS_F64, "{name} row {r} z1 {d}");
        }
        let (g, stats) = naive::gradients(&f.model, &f.x, &f.y);
        let loss: Array0<f64> = f.arrays.by_name("loss").unwrap();
        assert!((stats.mean_loss() - loss[()]).abs() < 1e-12, "{name} loss");
        let ours = [
            g.layers[0].w.iter().copied().collect(),
            g.layers[0].b.to_vec(),
            g.layers[1].w.iter().copied().collect(),
            g.layers[1].b.to_vec(),
        ];
        for (p, ours) in PARAMS.iter().zip(ours) {
            let mean: Vec<f64> = ours.iter().map(|v| v / rows as f64).collect();
            let d = max_rel_diff(mean, f.f64s(&format!("d{p}")));
            assert!(d < tolerance::F64_VS_F64, "{name} d{p}: {d}");
        }
    }
}

#[test]
fn both_engines_take_numpys_sgd_and_adam_step() {
    for name in FIXTURES {
        for engine in [EngineKind::Naive, EngineKind::Blas] {
            let mut f = open(name);
            let engine_impl = engine.build();
            let mut grads = Mlp::zeros(&f.model.shape());
            let stats = ShardBuffers::default().mean_gradients(
                engine_impl.as_ref(),
                &f.model,
                &f.x,
                &f.y,
                None,
                &mut grads,
            );
            let loss: Array0<f64> = f.arrays.by_name("loss").unwrap();
            assert!(
                (stats.mean_loss() - loss[()]).abs() < 1e-5,
                "{name} {engine} loss"
            );
            for (p, ours) in PARAMS.iter().zip(flat(&grads)) {
                let d = max_rel_diff(ours, f.f64s(&format!("d{p}")));
                assert!(d < tolerance::F32_VS_F64, "{name} {engine} d{p}: {d}");
            }

            let mut sgd = f.model.clone();
            Optimizer::new(OptimizerKind::Sgd, 0.1, 0.0, &sgd.shape()).step(&mut sgd, &grads);
            for (p, ours) in PARAMS.iter().zip(flat(&sgd)) {
                let d = max_rel_diff(ours, f.f64s(&format!("{p}_next")));
                assert!(d < 1e-6, "{name} {engine} {p}_next: {d}");
            }

            let mut adam = f.model.clone();
            Optimizer::new(OptimizerKind::Adam, 0.01, 0.0, &adam.shape()).step(&mut adam, &grads);
            for (p, ours) in PARAMS.iter().zip(flat(&adam)) {
                let d = max_rel_diff(ours, f.f64s(&format!("{p}_adam")));
                assert!(d < 1e-5, "{name} {engine} {p}_adam: {d}");
            }
        }
    }
}
