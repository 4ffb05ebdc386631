use super::*;
use ::image::{imageops, GrayImage, Luma, Rgb, RgbImage, Rgba, RgbaImage};

/// Digit `i` of the bundled sample, as 0-1 intensities, and its label.
fn sample_digit(i: usize) -> (Vec<f32>, u8) {
    let set = crate::data::sample::train_sample().unwrap();
    let pixels = set.row(i).iter().map(|&b| f32::from(b) / 255.0).collect();
    (pixels, set.labels.as_ref().unwrap()[i])
}

/// `pixels` (28x28, white on black) enlarged `scale` times, smoothly,
/// as ink intensity 0-1 per pixel of the enlarged image.
fn enlarged(pixels: &[f32], scale: u32) -> GrayImage {
    let small = GrayImage::from_fn(28, 28, |x, y| {
        Luma([(pixels[y as usize * 28 + x as usize] * 255.0).round() as u8])
    });
    imageops::resize(
        &small,
        28 * scale,
        28 * scale,
        imageops::FilterType::Triangle,
    )
}

/// The digit as a person would photograph it: dark ink on light paper,
/// `scale` times larger, at (`left`, `top`) in a `width`x`height` page.
fn on_paper(pixels: &[f32], scale: u32, width: u32, height: u32, left: u32, top: u32) -> GrayImage {
    let ink = enlarged(pixels, scale);
    let mut page = GrayImage::from_pixel(width, height, Luma([255]));
    for (x, y, p) in ink.enumerate_pixels() {
        page.put_pixel(left + x, top + y, Luma([255 - p.0[0]]));
    }
    page
}

fn mean_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
}

/// Centre of mass in pixel indices (MNIST's convention: (14, 14)).
fn centre_of_mass(p: &[f32]) -> (f32, f32) {
    let m: f32 = p.iter().sum();
    let cx = p
        .iter()
        .enumerate()
        .map(|(i, v)| v * (i % SIDE) as f32)
        .sum::<f32>()
        / m;
    let cy = p
        .iter()
        .enumerate()
        .map(|(i, v)| v * (i / SIDE) as f32)
        .sum::<f32>()
        / m;
    (cx, cy)
}

fn png(img: &DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), ::image::ImageFormat::Png)
        .unwrap();
    out
}

#[test]
fn an_mnist_digit_photographed_off_centre_comes_back_as_it_was() {
    let (mut worst, mut total) = (0f32, 0f32);
    for i in 0..40 {
        let (original, _) = sample_digit(i);
        let page = on_paper(
            &original,
            12,
            800,
            520,
            23 + 9 * i as u32,
            150 - 3 * i as u32,
        );
        let digit = digit_from_image(&DynamicImage::ImageLuma8(page)).unwrap();
        assert!(digit.inverted, "digit {i}");
        assert_eq!(digit.pixels.len(), SIDE * SIDE);
        assert!(digit.pixels.iter().all(|v| (0.0..=1.0).contains(v)));
        let top = digit.pixels.iter().copied().fold(0.0, f32::max);
        assert_eq!(top, 1.0, "digit {i}: the strongest pixel is full ink");
        let (cx, cy) = centre_of_mass(&digit.pixels);
        assert!(
            (cx - 14.0).abs() < 0.05 && (cy - 14.0).abs() < 0.05,
            "digit {i}: ({cx}, {cy})"
        );
        let d = mean_abs_diff(&digit.pixels, &original);
        worst = worst.max(d);
        total += d;
    }
    // The mean intensity of an MNIST digit is about 0.13: the round
    // trip moves pixels by a few hundredths (edges anti-aliased twice).
    assert!(total / 40.0 < 0.045, "mean abs diff {}", total / 40.0);
    assert!(worst < 0.1, "worst mean abs diff {worst}");
    eprintln!("mean abs diff {:.4}, worst {worst:.4}", total / 40.0);
}

#[test]
fn polarity_is_detected_both_ways_and_gives_the_same_digit() {
    let (original, _) = sample_digit(3);
    let dark_on_light = on_paper(&original, 10, 400, 360, 60, 50);
    let mut light_on_dark = dark_on_light.clone();
    imageops::invert(&mut light_on_dark);
    let a = digit_from_image(&DynamicImage::ImageLuma8(dark_on_light)).unwrap();
    let b = digit_from_image(&DynamicImage::ImageLuma8(light_on_dark)).unwrap();
    assert!(a.inverted);
    assert!(!b.inverted);
    assert!(mean_abs_diff(&a.pixels, &b.pixels) < 0.01);
    // MNIST's own form is light on dark: a sample row as a 28x28
    // picture is read as it is.
    let small = enlarged(&original, 1);
    let c = digit_from_image(&DynamicImage::ImageLuma8(small)).unwrap();
    assert!(!c.inverted);
    assert!(mean_abs_diff(&c.pixels, &original) < 0.05);
}

#[test]
fn colour_and_transparency_are_read_as_ink() {
    let (original, _) = sample_digit(7);
    let ink = enlarged(&original, 9);
    let (w, h) = (ink.width() + 130, ink.height() + 70);
    let at = |x: u32, y: u32| {
        let (x, y) = (x.wrapping_sub(100), y.wrapping_sub(20));
        ink.get_pixel_checked(x, y)
            .map_or(0.0, |p| f32::from(p.0[0]) / 255.0)
    };
    let mix = |paper: f32, pen: f32, t: f32| (paper * (1.0 - t) + pen * t).round() as u8;
    // Blue ballpoint on yellowish paper.
    let colour = RgbImage::from_fn(w, h, |x, y| {
        let t = at(x, y);
        Rgb([
            mix(250.0, 20.0, t),
            mix(240.0, 40.0, t),
            mix(180.0, 140.0, t),
        ])
    });
    // A canvas drawing: black strokes whose alpha is the ink, on a
    // transparent background (composited black on black would be blank).
    let black_strokes = RgbaImage::from_fn(w, h, |x, y| Rgba([0, 0, 0, mix(0.0, 255.0, at(x, y))]));
    // White strokes on a transparent canvas.
    let white_strokes = RgbaImage::from_fn(w, h, |x, y| {
        Rgba([255, 255, 255, mix(0.0, 255.0, at(x, y))])
    });
    for (name, img, inverted) in [
        ("colour", DynamicImage::ImageRgb8(colour), true),
        (
            "black on transparent",
            DynamicImage::ImageRgba8(black_strokes),
            true,
        ),
        (
            "white on transparent",
            DynamicImage::ImageRgba8(white_strokes),
            false,
        ),
    ] {
        let d = digit_from_bytes(&png(&img)).unwrap();
        assert_eq!(d.inverted, inverted, "{name}");
        let diff = mean_abs_diff(&d.pixels, &original);
        assert!(diff < 0.05, "{name}: mean abs diff {diff}");
    }
}

#[test]
fn jpeg_noise_and_grey_paper_are_not_ink() {
    let (original, _) = sample_digit(11);
    let mut page = on_paper(&original, 11, 500, 420, 140, 70);
    // Grey paper with a fine texture.
    let mut state = 12345u32;
    for p in page.pixels_mut() {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let grain = (state >> 24) as f32 / 255.0 * 16.0 - 8.0;
        let v = f32::from(p.0[0]) * 0.8 + 20.0 + grain;
        p.0[0] = v.clamp(0.0, 255.0) as u8;
    }
    let mut jpeg = Vec::new();
    ::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 70)
        .encode_image(&DynamicImage::ImageLuma8(page))
        .unwrap();
    let d = digit_from_bytes(&jpeg).unwrap();
    assert!(d.inverted);
    let diff = mean_abs_diff(&d.pixels, &original);
    assert!(diff < 0.06, "mean abs diff {diff}");
    // The background is clean: no pixel far from the digit's pixels is lit.
    let stray = (0..SIDE * SIDE)
        .filter(|&i| d.pixels[i] > 0.1 && original[i] == 0.0)
        .filter(|&i| {
            let (x, y) = ((i % SIDE) as i32, (i / SIDE) as i32);
            (-2..=2).all(|dy| {
                (-2..=2).all(|dx| {
                    let (u, v) = (x + dx, y + dy);
                    !(0..SIDE as i32).contains(&u)
                        || !(0..SIDE as i32).contains(&v)
                        || original[(v * SIDE as i32 + u) as usize] == 0.0
                })
            })
        })
        .count();
    assert_eq!(stray, 0);
}

#[test]
fn a_blank_picture_has_no_digit() {
    let white = GrayImage::from_pixel(300, 200, Luma([255]));
    assert!(matches!(
        digit_from_image(&DynamicImage::ImageLuma8(white)),
        Err(ImageError::NoInk)
    ));
    let black = RgbImage::from_pixel(64, 64, Rgb([0, 0, 0]));
    assert!(matches!(
        digit_from_image(&DynamicImage::ImageRgb8(black)),
        Err(ImageError::NoInk)
    ));
    let clear = RgbaImage::from_pixel(50, 50, Rgba([0, 0, 0, 0]));
    assert!(matches!(
        digit_from_image(&DynamicImage::ImageRgba8(clear)),
        Err(ImageError::NoInk)
    ));
    // Paper texture alone, and one speck of dust on it.
    let mut state = 7u32;
    let mut paper = GrayImage::from_fn(320, 240, |_, _| {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        Luma([225 + (state >> 28) as u8])
    });
    paper.put_pixel(100, 100, Luma([0]));
    let e = digit_from_bytes(&png(&DynamicImage::ImageLuma8(paper))).unwrap_err();
    assert!(matches!(e, ImageError::NoInk), "{e}");
    assert!(e.to_string().starts_with("no digit found"), "{e}");
}

/// A PNG that is only a header declaring `width` x `height`.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit grey
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc32fast::hash(&ihdr).to_be_bytes());
    // The start of the pixel data: a zlib header, then nothing.
    let idat = b"IDAT\x78\x9c";
    out.extend_from_slice(&2u32.to_be_bytes());
    out.extend_from_slice(idat);
    out.extend_from_slice(&crc32fast::hash(idat).to_be_bytes());
    out
}

#[test]
fn huge_dimensions_are_refused_from_the_header() {
    // 100,000 x 100,000 grey pixels would be 10 GB: refused before any
    // decoding (there are no pixel bytes to decode).
    let e = digit_from_bytes(&png_header(100_000, 100_000)).unwrap_err();
    assert!(
        matches!(
            e,
            ImageError::TooLarge {
                width: 100_000,
                height: 100_000,
                limit: MAX_PIXELS
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "the image is 100000x100000 pixels, over the limit of 50000000 pixels"
    );
    // Within the limit, the same truncated file is a decoding error.
    let e = digit_from_bytes(&png_header(100, 100)).unwrap_err();
    assert!(matches!(e, ImageError::Decode(_)), "{e}");
}

#[test]
fn corrupt_and_unknown_bytes_are_errors_of_one_line() {
    let (original, _) = sample_digit(0);
    let good = png(&DynamicImage::ImageLuma8(on_paper(
        &original, 4, 150, 150, 10, 20,
    )));
    assert!(digit_from_bytes(&good).is_ok());
    let mut corrupt = good.clone();
    let n = corrupt.len();
    for b in &mut corrupt[n / 3..n - 20] {
        *b ^= 0x5a;
    }
    let truncated = &good[..good.len() / 2];
    for (name, bytes) in [("corrupt", &corrupt[..]), ("truncated", truncated)] {
        let e = digit_from_bytes(bytes).unwrap_err();
        assert!(matches!(e, ImageError::Decode(_)), "{name}: {e:?}");
        assert!(!e.to_string().contains('\n'), "{name}: {e}");
    }
    let e = digit_from_bytes(b"ImageId,Label\n1,7\n").unwrap_err();
    assert!(matches!(e, ImageError::Unsupported(_)), "{e:?}");
    assert!(e.to_string().contains("PNG, JPEG"), "{e}");
    assert!(matches!(digit_from_bytes(b""), Err(ImageError::Decode(_))));
}

#[test]
fn files_are_read_and_a_missing_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (original, _) = sample_digit(5);
    let path = dir.path().join("five.bmp");
    DynamicImage::ImageLuma8(on_paper(&original, 6, 250, 200, 30, 10))
        .into_rgb8()
        .save_with_format(&path, ::image::ImageFormat::Bmp)
        .unwrap();
    let d = digit_from_file(&path).unwrap();
    assert!(mean_abs_diff(&d.pixels, &original) < 0.05);
    let missing = dir.path().join("missing.png");
    let e = digit_from_file(&missing).unwrap_err();
    assert!(matches!(e, ImageError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("missing.png"), "{e}");
    // The preview is the digit, as PNG.
    let back = ::image::load_from_memory(&d.to_png()).unwrap().into_luma8();
    assert_eq!(back.dimensions(), (28, 28));
    assert_eq!(back.into_raw(), d.to_bytes());
}
