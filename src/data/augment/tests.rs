use super::*;

/// A 28x28 pattern with one bright pixel at (x, y) and a dimmer one at
/// (x2, y2).
fn dots(points: &[(usize, usize, u8)]) -> Vec<u8> {
    let mut img = vec![0u8; FEATURES];
    for &(x, y, v) in points {
        img[y * SIDE + x] = v;
    }
    img
}

fn warp(w: &Warp, img: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; FEATURES];
    w.apply(img, &mut out);
    out
}

fn digit() -> Vec<u8> {
    (0..FEATURES)
        .map(|i| ((i * 37 + i / SIDE * 11) % 256) as u8)
        .collect()
}

#[test]
fn all_parameters_zero_leave_the_image_unchanged_bit_for_bit() {
    let img = digit();
    assert_eq!(warp(&Warp::none(), &img), img);
    let mut out = vec![0u8; 3 * FEATURES];
    let rows: Vec<u8> = [img.clone(), img.clone(), img.clone()].concat();
    Augment::OFF.apply_rows(5, 3, &rows, &mut out);
    assert_eq!(out, rows);
}

#[test]
fn a_whole_pixel_shift_moves_every_pixel_exactly() {
    let img = dots(&[(10, 10, 200), (3, 20, 90), (27, 0, 255)]);
    let w = Warp {
        shift: (2.0, -3.0),
        ..Warp::none()
    };
    // (27, 0) leaves the image; the others move right 2 and up 3.
    assert_eq!(warp(&w, &img), dots(&[(12, 7, 200), (5, 17, 90)]));
}

#[test]
fn a_quarter_turn_maps_a_pattern_onto_its_turned_self() {
    // An L-shaped pattern about the centre (13.5, 13.5): (x, y) ->
    // (y, 27 - x) is a quarter turn counter-clockwise as seen.
    let img = dots(&[(20, 13, 255), (20, 14, 255), (13, 20, 128)]);
    let w = Warp {
        rotate: 90.0,
        ..Warp::none()
    };
    let turn = |(x, y, v): (usize, usize, u8)| (y, 27 - x, v);
    let want = dots(&[(20, 13, 255), (20, 14, 255), (13, 20, 128)].map(turn));
    assert_eq!(warp(&w, &img), want);
    // Four quarter turns give the image back.
    let mut x = img.clone();
    for _ in 0..4 {
        x = warp(&w, &x);
    }
    assert_eq!(x, img);
}

#[test]
fn a_symmetric_pattern_is_its_own_quarter_turn() {
    let mut img = vec![0u8; FEATURES];
    for y in 0..SIDE {
        for x in 0..SIDE {
            let (dx, dy) = (x as f32 - 13.5, y as f32 - 13.5);
            if (dx * dx + dy * dy).sqrt() < 9.0 && (dx.abs() - dy.abs()).abs() < 3.0 {
                img[y * SIDE + x] = 255;
            }
        }
    }
    let w = Warp {
        rotate: 90.0,
        ..Warp::none()
    };
    assert_eq!(warp(&w, &img), img);
    let w = Warp {
        rotate: 45.0,
        ..Warp::none()
    };
    assert_ne!(warp(&w, &img), img);
}

#[test]
fn draws_depend_on_seed_epoch_and_row_only() {
    let a = Augment {
        elastic_alpha: 34.0,
        elastic_sigma: 4.0,
        ..Augment::RECIPE
    };
    assert_eq!(a.draw(1, 2, 3), a.draw(1, 2, 3));
    let field = a.draw(1, 2, 3).field.unwrap();
    assert_ne!(a.draw(2, 2, 3).field.unwrap(), field);
    assert_ne!(a.draw(1, 3, 3).field.unwrap(), field);
    assert_ne!(a.draw(1, 2, 4).field.unwrap(), field);
    // Smoothed: neighbours move together, by a pixel or so.
    let mean =
        |d: &dyn Fn(usize) -> f32| (0..FEATURES - 1).map(d).sum::<f32>() / (FEATURES - 1) as f32;
    let size = mean(&|p| field[p][0].abs());
    let step = mean(&|p| (field[p + 1][0] - field[p][0]).abs());
    assert!(size > 0.3 && size < 5.0, "{size}");
    assert!(step < size / 3.0, "{step} {size}");
}

#[test]
fn the_blur_is_the_separable_gaussian_convolution() {
    let mut img = [0f32; FEATURES];
    for (i, v) in img.iter_mut().enumerate() {
        *v = ((i * 7919) % 13) as f32 - 6.0;
    }
    let k = gaussian(3.0);
    let r = k.len() as isize / 2;
    let fast = blur(&img, &k);
    for y in 0..SIDE as isize {
        for x in 0..SIDE as isize {
            let mut want = 0.0f64;
            for dy in -r..=r {
                for dx in -r..=r {
                    let (sx, sy) = (x + dx, y + dy);
                    if (0..SIDE as isize).contains(&sx) && (0..SIDE as isize).contains(&sy) {
                        want += (k[(dx + r) as usize] * k[(dy + r) as usize]) as f64
                            * img[sy as usize * SIDE + sx as usize] as f64;
                    }
                }
            }
            let got = fast[y as usize * SIDE + x as usize] as f64;
            assert!((got - want).abs() < 1e-4, "({x}, {y}): {got} vs {want}");
        }
    }
}

#[test]
fn apply_rows_is_the_same_on_any_thread_count() {
    let a = Augment {
        elastic_alpha: 34.0,
        elastic_sigma: 4.0,
        ..Augment::RECIPE
    };
    let rows: Vec<u8> = (0..40).flat_map(|_| digit()).collect();
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut out = vec![0u8; rows.len()];
        pool.install(|| a.apply_rows(9, 1, &rows, &mut out));
        out
    };
    let one = run(1);
    assert_eq!(one, run(3));
    assert_ne!(one, rows);
    // Row i is row i's own draw.
    let mut o = vec![0u8; FEATURES];
    a.draw(9, 1, 17).apply(&digit(), &mut o);
    assert_eq!(&one[17 * FEATURES..18 * FEATURES], &o[..]);
}

#[test]
fn specs_parse_print_and_refuse_in_one_line() {
    assert_eq!("".parse::<Augment>().unwrap(), Augment::RECIPE);
    assert!("off".parse::<Augment>().unwrap().is_off());
    let a: Augment = "shift=2;rotate=12,scale=0.1,elastic=34/4".parse().unwrap();
    assert_eq!(
        a,
        Augment {
            shift: 2.0,
            rotate: 12.0,
            scale: 0.1,
            shear: 0.0,
            elastic_alpha: 34.0,
            elastic_sigma: 4.0
        }
    );
    assert_eq!(a.to_string().parse::<Augment>().unwrap(), a);
    assert_eq!(
        Augment::RECIPE.to_string().parse::<Augment>().unwrap(),
        Augment::RECIPE
    );
    for bad in [
        "shift",
        "shift=-1",
        "twist=3",
        "elastic=34",
        "elastic=34/0",
        "rotate=x",
    ] {
        let e = bad.parse::<Augment>().unwrap_err().to_string();
        assert!(
            !e.contains('\n') && e.starts_with("--augment"),
            "{bad}: {e}"
        );
    }
}
