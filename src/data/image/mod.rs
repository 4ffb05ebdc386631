//! A picture of a digit (a photo, a scan, a canvas drawing) -> the 28x28
//! image the model sees, made the way MNIST's digits were made.
//!
//! LeCun's description of MNIST: the digits were size-normalised to fit a
//! 20x20 box keeping their aspect ratio, anti-aliased (so grey levels), and
//! centred in a 28x28 field by their centre of mass; white ink on black,
//! the strokes' cores at full intensity. A model trained on MNIST reads a
//! digit well only when it is brought to the same form, so [`digit_from_image`]:
//!
//! 1. reads each pixel's luminance, compositing any transparency over a
//!    background that contrasts with the ink;
//! 2. finds the polarity from the median of a ring along the border (the
//!    paper or the canvas) and turns dark ink on light paper into light ink
//!    on black;
//! 3. subtracts the background and a noise floor measured on the same ring,
//!    so paper texture and JPEG noise are not ink, and drops specks far
//!    smaller than the digit's strokes;
//! 4. crops to the ink, scales the longer side to 20 px by area averaging,
//!    and places it so the centre of mass lands on pixel (14, 14);
//! 5. scales intensities so the strongest pixel is 1.0.
//!
//! Large pictures are first reduced by an integer box average to at most
//! [`WORK_SIDE`] pixels a side, so memory and time stay bounded whatever the
//! camera.

use ::image::{DynamicImage, GrayImage, ImageBuffer, Pixel};
use std::io::{BufRead, Cursor, Seek};
use std::path::{Path, PathBuf};

/// Side of the model's input image.
pub const SIDE: usize = 28;
/// Side of the box the digit's longer side is scaled to (MNIST's 20x20).
pub const BOX: usize = 20;
/// Largest picture accepted, in pixels (width x height): a 48-megapixel
/// phone photo fits. Checked from the file's header, before decoding.
pub const MAX_PIXELS: u64 = 50_000_000;
/// Pictures larger than this on a side are box-averaged down to it first.
pub const WORK_SIDE: usize = 1024;

/// The 28x28 digit the model sees: row-major, 0.0 (background) .. 1.0
/// (ink), as MNIST (white ink on black).
#[derive(Debug, Clone, PartialEq)]
pub struct Digit {
    /// `SIDE * SIDE` intensities, row-major.
    pub pixels: Vec<f32>,
    /// The input was dark ink on a light background (and was inverted).
    pub inverted: bool,
}

impl Digit {
    /// The pixels as the model's `u8` rows store them (0-255).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.pixels
            .iter()
            .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect()
    }

    /// The 28x28 as a greyscale image (white ink on black), for a preview.
    pub fn to_gray_image(&self) -> GrayImage {
        GrayImage::from_raw(SIDE as u32, SIDE as u32, self.to_bytes()).expect("SIDE * SIDE pixels")
    }

    /// The 28x28 as PNG bytes.
    pub fn to_png(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.to_gray_image()
            .write_to(&mut Cursor::new(&mut out), ::image::ImageFormat::Png)
            .expect("PNG encoding into memory cannot fail");
        out
    }
}

/// Why a picture gave no digit. Each message is one line; the caller names
/// the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The bytes are not a valid picture of their format.
    #[error("cannot decode the image: {0}")]
    Decode(String),
    /// Over [`MAX_PIXELS`]; found from the header, nothing was decoded.
    #[error("the image is {width}x{height} pixels, over the limit of {limit} pixels")]
    TooLarge { width: u32, height: u32, limit: u64 },
    /// Nothing stands out from the background.
    #[error("no digit found: the image is blank (nothing stands out from the background)")]
    NoInk,
    /// Not a picture format this build reads.
    #[error("{0}")]
    Unsupported(String),
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The formats read, for messages.
pub const FORMATS: &str = "PNG, JPEG, GIF, BMP or WebP";

/// The digit in `bytes`, a picture in any supported format. Its
/// dimensions are checked against [`MAX_PIXELS`] before it is decoded.
pub fn digit_from_bytes(bytes: &[u8]) -> Result<Digit, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Decode("the image is empty (0 bytes)".into()));
    }
    let open = || {
        ::image::io::Reader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| ImageError::Decode(e.to_string()))
    };
    digit_from_image(&decode_bounded(open)?)
}

/// The digit in the picture at `path` (any supported format, found from
/// the content, not the name). Messages do not repeat the path, except
/// for [`ImageError::Io`]: the caller names the file.
pub fn digit_from_file(path: &Path) -> Result<Digit, ImageError> {
    let io = |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    };
    if std::fs::metadata(path).map_err(io)?.len() == 0 {
        return Err(ImageError::Decode("the image is empty (0 bytes)".into()));
    }
    // Opened twice: once for the header, once to decode.
    let open = || {
        ::image::io::Reader::open(path)
            .and_then(|r| r.with_guessed_format())
            .map_err(io)
    };
    digit_from_image(&decode_bounded(open)?)
}

/// Decodes the picture `open` gives (called twice: once for the header,
/// once to decode), refusing one over [`MAX_PIXELS`] before decoding it.
fn decode_bounded<R: BufRead + Seek>(
    mut open: impl FnMut() -> Result<::image::io::Reader<R>, ImageError>,
) -> Result<DynamicImage, ImageError> {
    let mut reader = open()?;
    if reader.format().is_none() {
        return Err(ImageError::Unsupported(format!(
            "not a picture this program reads ({FORMATS})"
        )));
    }
    // Reading the header allocates nothing in proportion to the picture;
    // the decoders' default limit would refuse a large one with a less
    // clear message than TooLarge.
    reader.no_limits();
    let (width, height) = reader.into_dimensions().map_err(image_error)?;
    let too_large = || ImageError::TooLarge {
        width,
        height,
        limit: MAX_PIXELS,
    };
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(too_large());
    }
    let mut reader = open()?;
    let mut limits = ::image::io::Limits::default();
    // The decoded pixels (up to 8 bytes each: 16-bit RGBA) and the
    // decoders' own buffers: a backstop should a header lie.
    limits.max_alloc = Some(MAX_PIXELS * 8 + (64 << 20));
    reader.limits(limits);
    match reader.decode() {
        Err(::image::ImageError::Limits(_)) => Err(too_large()),
        other => other.map_err(image_error),
    }
}

fn image_error(e: ::image::ImageError) -> ImageError {
    let one_line = |s: String| s.split_whitespace().collect::<Vec<_>>().join(" ");
    match e {
        ::image::ImageError::Unsupported(u) => {
            ImageError::Unsupported(one_line(format!("unsupported picture: {u} ({FORMATS})")))
        }
        ::image::ImageError::IoError(e) => ImageError::Decode(one_line(e.to_string())),
        e => ImageError::Decode(one_line(e.to_string())),
    }
}

/// A greyscale picture, row-major, values 0-1.
struct Plane {
    width: usize,
    height: usize,
    v: Vec<f32>,
}

impl Plane {
    fn at(&self, x: usize, y: usize) -> f32 {
        self.v[y * self.width + x]
    }
}

/// The digit in `img`: see the module's description.
pub fn digit_from_image(img: &DynamicImage) -> Result<Digit, ImageError> {
    let (width, height) = (img.width() as usize, img.height() as usize);
    if width == 0 || height == 0 {
        return Err(ImageError::NoInk);
    }
    let background = transparent_background(img);
    let grey = reduced_luminance(img, background);

    // Polarity and background level, from a ring along the border.
    let mut ring = border_ring(&grey);
    let paper = median(&mut ring);
    let inverted = paper > 0.5;
    let ink_of = |l: f32| if inverted { 1.0 - l } else { l };
    let v: Vec<f32> = grey.v.iter().map(|&l| ink_of(l)).collect();
    let bg = ink_of(paper);
    let mut deviations: Vec<f32> = ring.iter().map(|&l| (ink_of(l) - bg).abs()).collect();
    let noise = 1.4826 * median(&mut deviations);

    // The ink's level: a high percentile of what clearly stands out.
    let floor = bg + (4.0 * noise).max(0.1);
    let mut standing: Vec<f32> = v.iter().copied().filter(|&x| x > floor).collect();
    if standing.is_empty() {
        return Err(ImageError::NoInk);
    }
    let at = (standing.len() - 1) * 9 / 10;
    let peak = *standing.select_nth_unstable_by(at, |a, b| a.total_cmp(b)).1;
    // Below `lo` is paper: its noise, and the faint halo JPEG leaves
    // around strokes.
    let lo = bg + (4.0 * noise).max(0.15 * (peak - bg));
    let span = (peak - lo).max(1e-6);
    let mut ink = Plane {
        width: grey.width,
        height: grey.height,
        v: v.iter()
            .map(|&x| ((x - lo) / span).clamp(0.0, 1.0))
            .collect(),
    };
    drop(v);
    if !keep_the_digit(&mut ink) {
        return Err(ImageError::NoInk);
    }

    let pixels = frame(&ink).ok_or(ImageError::NoInk)?;
    Ok(Digit { pixels, inverted })
}

/// The luminance transparent pixels are composited over: if most of the
/// picture is transparent (a drawing on a transparent canvas), the shade
/// opposite the drawing's mean; otherwise the mean of the opaque part (a
/// picture with a few transparent corners). `None` when fully opaque.
fn transparent_background(img: &DynamicImage) -> Option<f32> {
    if !img.color().has_alpha() {
        return None;
    }
    let (mut weight, mut sum, mut transparent, mut total) = (0f64, 0f64, 0u64, 0u64);
    visit(img, |_, _, l, a| {
        weight += f64::from(a);
        sum += f64::from(a * l);
        transparent += (a < 0.5) as u64;
        total += 1;
    });
    if transparent == 0 {
        return None;
    }
    let mean = if weight > 0.0 {
        (sum / weight) as f32
    } else {
        0.0
    };
    Some(if transparent * 2 >= total {
        if mean < 0.5 {
            1.0
        } else {
            0.0
        }
    } else {
        mean
    })
}

/// Calls `f(x, y, luminance, alpha)` for every pixel, values 0-1.
fn visit(img: &DynamicImage, mut f: impl FnMut(usize, usize, f32, f32)) {
    fn each<P: Pixel<Subpixel = u8>>(
        buf: &ImageBuffer<P, Vec<u8>>,
        f: &mut impl FnMut(usize, usize, f32, f32),
    ) {
        for (x, y, p) in buf.enumerate_pixels() {
            let [r, g, b, a] = p.to_rgba().0;
            let l = (299 * u32::from(r) + 587 * u32::from(g) + 114 * u32::from(b)) as f32
                / (1000.0 * 255.0);
            f(x as usize, y as usize, l, f32::from(a) / 255.0);
        }
    }
    match img {
        DynamicImage::ImageLuma8(b) => each(b, &mut f),
        DynamicImage::ImageLumaA8(b) => each(b, &mut f),
        DynamicImage::ImageRgb8(b) => each(b, &mut f),
        DynamicImage::ImageRgba8(b) => each(b, &mut f),
        other => each(&other.to_rgba8(), &mut f),
    }
}

/// Luminance composited over `background`, box-averaged by the smallest
/// whole factor that brings both sides to at most [`WORK_SIDE`].
fn reduced_luminance(img: &DynamicImage, background: Option<f32>) -> Plane {
    let (width, height) = (img.width() as usize, img.height() as usize);
    let k = width.max(height).div_ceil(WORK_SIDE).max(1);
    let (rw, rh) = (width.div_ceil(k), height.div_ceil(k));
    let mut sum = vec![0f32; rw * rh];
    visit(img, |x, y, l, a| {
        let l = match background {
            Some(b) => a * l + (1.0 - a) * b,
            None => l,
        };
        sum[(y / k) * rw + x / k] += l;
    });
    for (i, s) in sum.iter_mut().enumerate() {
        let (x, y) = (i % rw, i / rw);
        let cw = (width - x * k).min(k);
        let ch = (height - y * k).min(k);
        *s /= (cw * ch) as f32;
    }
    Plane {
        width: rw,
        height: rh,
        v: sum,
    }
}

/// The pixels of a ring along the border, 2% of the shorter side thick
/// (at least one pixel).
fn border_ring(p: &Plane) -> Vec<f32> {
    let t = (p.width.min(p.height) / 50).max(1);
    let mut ring = Vec::new();
    for y in 0..p.height {
        for x in 0..p.width {
            let inside = x >= t && y >= t && x + t < p.width && y + t < p.height;
            if !inside {
                ring.push(p.at(x, y));
            }
        }
    }
    ring
}

fn median(v: &mut [f32]) -> f32 {
    let mid = v.len() / 2;
    *v.select_nth_unstable_by(mid, |a, b| a.total_cmp(b)).1
}

/// Keeps the ink's pieces (8-connected) that carry at least 5% of the
/// largest piece's ink, clearing specks and dust; false when what is left
/// is too small to be a digit.
fn keep_the_digit(ink: &mut Plane) -> bool {
    let (w, h) = (ink.width, ink.height);
    let mut parent: Vec<u32> = (0..(w * h) as u32).collect();
    fn find(parent: &mut [u32], mut i: u32) -> u32 {
        while parent[i as usize] != i {
            let up = parent[parent[i as usize] as usize];
            parent[i as usize] = up;
            i = up;
        }
        i
    }
    let on = |i: usize| ink.v[i] > 0.0;
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if !on(i) {
                continue;
            }
            // Neighbours already visited: left, and the three above.
            let mut join = |j: usize| {
                if on(j) {
                    let (a, b) = (find(&mut parent, i as u32), find(&mut parent, j as u32));
                    if a != b {
                        parent[a.max(b) as usize] = a.min(b);
                    }
                }
            };
            if x > 0 {
                join(i - 1);
            }
            if y > 0 {
                if x > 0 {
                    join(i - w - 1);
                }
                join(i - w);
                if x + 1 < w {
                    join(i - w + 1);
                }
            }
        }
    }
    let mut mass = vec![0f32; w * h];
    let mut area = vec![0u32; w * h];
    for i in 0..w * h {
        if on(i) {
            let r = find(&mut parent, i as u32) as usize;
            parent[i] = r as u32;
            mass[r] += ink.v[i];
            area[r] += 1;
        }
    }
    let largest = mass.iter().copied().fold(0.0, f32::max);
    let biggest_area = area.iter().copied().max().unwrap_or(0);
    // A digit is more than a few pixels, and more than a ten-thousandth
    // of the picture.
    if largest <= 0.0 || (biggest_area as usize) < (w * h / 10_000).max(4) {
        return false;
    }
    for i in 0..w * h {
        if ink.v[i] > 0.0 && mass[parent[i] as usize] < 0.05 * largest {
            ink.v[i] = 0.0;
        }
    }
    true
}

/// The ink cropped to its bounding box, scaled so the longer side is
/// [`BOX`] pixels by area averaging, in a [`SIDE`]x[`SIDE`] frame with its
/// centre of mass on pixel (14, 14), the strongest pixel at 1.0.
fn frame(ink: &Plane) -> Option<Vec<f32>> {
    let (w, h) = (ink.width, ink.height);
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for y in 0..h {
        for x in 0..w {
            if ink.at(x, y) > 0.0 {
                x0 = x0.min(x);
                x1 = x1.max(x + 1);
                y0 = y0.min(y);
                y1 = y1.max(y + 1);
            }
        }
    }
    if x0 >= x1 {
        return None;
    }
    let mut crop = Plane {
        width: x1 - x0,
        height: y1 - y0,
        v: (y0..y1)
            .flat_map(|y| (x0..x1).map(move |x| (x, y)))
            .map(|(x, y)| ink.at(x, y))
            .collect(),
    };
    let mut scale = BOX as f64 / crop.width.max(crop.height) as f64;
    if scale > 1.0 {
        // A digit smaller than the box: enlarged bilinearly first, so the
        // area average below has detail to average instead of blocks.
        let up = scale.ceil() as usize;
        crop = enlarge(&crop, up);
        scale /= up as f64;
    }

    // Centre of mass, pixel i covering [i, i + 1).
    let (mut m, mut mx, mut my) = (0f64, 0f64, 0f64);
    for y in 0..crop.height {
        for x in 0..crop.width {
            let v = f64::from(crop.at(x, y));
            m += v;
            mx += v * (x as f64 + 0.5);
            my += v * (y as f64 + 0.5);
        }
    }
    if m <= 0.0 {
        return None;
    }
    // MNIST's centre of mass is pixel (14, 14): its centre is 14.5.
    let centre = SIDE as f64 / 2.0 + 0.5;
    let wx = area_weights(crop.width, mx / m, centre, scale);
    let wy = area_weights(crop.height, my / m, centre, scale);

    let mut rows = vec![0f32; crop.height * SIDE];
    for (src, row) in crop.v.chunks(crop.width).zip(rows.chunks_mut(SIDE)) {
        for (&v, weights) in src.iter().zip(&wx) {
            if v != 0.0 {
                for &(o, wt) in weights {
                    row[o] += v * wt;
                }
            }
        }
    }
    let mut out = vec![0f32; SIDE * SIDE];
    for (y, weights) in wy.iter().enumerate() {
        for &(o, wt) in weights {
            for x in 0..SIDE {
                out[o * SIDE + x] += rows[y * SIDE + x] * wt;
            }
        }
    }
    let top = out.iter().copied().fold(0.0, f32::max);
    if top <= 0.0 {
        return None;
    }
    Some(out.iter().map(|&v| (v / top).clamp(0.0, 1.0)).collect())
}

/// For each of `n` source pixels, the output pixels it covers and with
/// what weight, when source coordinate `centre_src` maps to output
/// coordinate `centre_out` and lengths scale by `scale` (at most 1): an
/// output pixel's value is the mean of the source over its footprint.
fn area_weights(n: usize, centre_src: f64, centre_out: f64, scale: f64) -> Vec<Vec<(usize, f32)>> {
    (0..n)
        .map(|i| {
            let a = (i as f64 - centre_src) * scale + centre_out;
            let b = (i as f64 + 1.0 - centre_src) * scale + centre_out;
            let mut cover = Vec::new();
            let first = a.floor().max(0.0) as usize;
            let last = (b.ceil().min(SIDE as f64)).max(0.0) as usize;
            for o in first..last {
                let overlap = b.min(o as f64 + 1.0) - a.max(o as f64);
                if overlap > 0.0 {
                    // Overlap in output pixels; the footprint of one output
                    // pixel is 1 / scale source pixels.
                    cover.push((o, overlap as f32));
                }
            }
            cover
        })
        .collect()
}

/// `p` enlarged `up` times each way by bilinear interpolation between
/// pixel centres.
fn enlarge(p: &Plane, up: usize) -> Plane {
    let (w, h) = (p.width * up, p.height * up);
    let sample = |c: f64, n: usize| {
        let c = (c - 0.5).clamp(0.0, (n - 1) as f64);
        let i = (c.floor() as usize).min(n - 1);
        let j = (i + 1).min(n - 1);
        (i, j, (c - i as f64) as f32)
    };
    let mut v = Vec::with_capacity(w * h);
    for y in 0..h {
        let (y0, y1, fy) = sample((y as f64 + 0.5) / up as f64, p.height);
        for x in 0..w {
            let (x0, x1, fx) = sample((x as f64 + 0.5) / up as f64, p.width);
            let top = p.at(x0, y0) * (1.0 - fx) + p.at(x1, y0) * fx;
            let bottom = p.at(x0, y1) * (1.0 - fx) + p.at(x1, y1) * fx;
            v.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    Plane {
        width: w,
        height: h,
        v,
    }
}

#[cfg(test)]
mod tests;
