//! `mnist-blas serve`: the real binary on a free port, every endpoint and
//! every kind of bad request through a real HTTP client, many clients at
//! once, and a clean stop on SIGTERM.

use crate::common::{bin, run_in, stderr};
use mnist_blas::data::sample::train_sample;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Stdio};

/// A `serve` process, stopped (SIGTERM) when dropped.
pub struct Server {
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

impl Server {
    /// `mnist-blas serve --addr 127.0.0.1:0 ARGS` in `dir`, once it has
    /// printed the address it listens on.
    pub fn start(dir: &Path, args: &[&str]) -> Server {
        let mut child = bin()
            .current_dir(dir)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let url = match line.split_once("http://") {
            Some((_, rest)) => format!("http://{}", rest.split('/').next().unwrap()),
            None => {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("serve printed no address: {line:?}; stderr: {err}");
            }
        };
        Server { child, stdout, url }
    }

    /// SIGTERM, then the exit status and the rest of stdout.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: a plain signal to our own child, which has not been waited for.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        (status, rest)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: as in `stop`.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }
}

/// A client that returns 4xx and 5xx answers instead of failing on them.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Status and JSON body.
pub fn post(agent: &ureq::Agent, url: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    let r = agent
        .post(url)
        .header("Content-Type", content_type)
        .send(body)
        .unwrap_or_else(|e| panic!("POST {url} ({content_type}): {e}"));
    answer(r)
}

fn get(agent: &ureq::Agent, url: &str) -> (u16, Value) {
    answer(agent.get(url).call().unwrap())
}

fn answer(mut r: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: not JSON ({e}): {text}"));
    (status, body)
}

/// A model trained on the built-in sample in `dir` (as runs/latest).
pub fn train_in(dir: &Path) {
    let o = run_in(
        dir,
        &["train", "--epochs", "4", "--layers", "64", "--quiet"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Row `i` of the built-in sample: its pixels (0-255) and label.
pub fn sample_digit(i: usize) -> (Vec<u8>, u8) {
    let set = train_sample().unwrap();
    let row = set.pixels[i * 784..(i + 1) * 784].to_vec();
    (row, set.labels.unwrap()[i])
}

/// For each of the first `n` sample digits, two request bodies: its
/// pixels as JSON and its photograph as PNG, with their content types.
fn mixed_requests(n: usize) -> Vec<(&'static str, Vec<u8>)> {
    (0..n)
        .flat_map(|i| {
            let (row, _) = sample_digit(i);
            let values: Vec<f64> = row.iter().map(|&b| b as f64 / 255.0).collect();
            [
                ("application/json", pixels_json(&values)),
                ("image/png", photographed(&row)),
            ]
        })
        .collect()
}

/// The centre of mass (column, row) of a 28x28 picture, row by row.
pub fn centre_of_mass(px: &[f64]) -> (f64, f64) {
    let mass: f64 = px.iter().sum();
    let along = |coord: fn(usize) -> usize| {
        px.iter()
            .enumerate()
            .map(|(i, v)| coord(i) as f64 * v)
            .sum::<f64>()
            / mass
    };
    (along(|i| i % 28), along(|i| i / 28))
}

/// The digit `row` drawn as a person would photograph it: black ink on
/// white, scaled 8x, off centre in a wider frame, as PNG.
pub fn photographed(row: &[u8]) -> Vec<u8> {
    let (w, h) = (320u32, 260u32);
    let img = image::GrayImage::from_fn(w, h, |x, y| {
        let (x, y) = (x as i64 - 70, y as i64 - 20);
        let ink = if (0..224).contains(&x) && (0..224).contains(&y) {
            row[(y / 8 * 28 + x / 8) as usize]
        } else {
            0
        };
        image::Luma([255 - ink])
    });
    png(&img)
}

fn png(img: &image::GrayImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn pixels_json(row: &[f64]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "pixels": row })).unwrap()
}

/// A good answer: the fields, ten probabilities summing to 1, the label
/// the most probable digit, 784 pixels from 0 to 1.
fn check_prediction(body: &Value) -> (u64, Vec<f64>) {
    let p: Vec<f64> = body["probabilities"]
        .as_array()
        .unwrap_or_else(|| panic!("no probabilities: {body}"))
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(p.len(), 10, "{body}");
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{p:?}");
    let label = body["label"].as_u64().unwrap();
    let best = (0..10).fold(0, |b, c| if p[c] > p[b] { c } else { b });
    assert_eq!(label, best as u64, "{body}");
    let seen: Vec<f64> = body["pixels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(seen.len(), 784);
    assert!(seen.iter().all(|v| (0.0..=1.0).contains(v)));
    (label, seen)
}

/// A bad request's answer: `status`, a `kind`, and an error naming the
/// problem (containing each of `words`).
fn check_error(got: (u16, Value), status: u16, kind: &str, words: &[&str]) {
    let (s, body) = got;
    assert_eq!(s, status, "{body}");
    assert_eq!(body["kind"], kind, "{body}");
    let error = body["error"].as_str().unwrap_or_else(|| panic!("{body}"));
    assert!(!error.contains('\n'), "{error}");
    for w in words {
        assert!(error.contains(w), "`{w}` not in: {error}");
    }
}

#[test]
fn serve_answers_every_endpoint_and_names_every_bad_request() {
    let dir = tempfile::tempdir().unwrap();
    train_in(dir.path());
    // No --model: runs/latest's, like predict and eval.
    let server = Server::start(dir.path(), &[]);
    let api = format!("{}/api/predict", server.url);
    let a = agent();

    assert_eq!(
        get(&a, &format!("{}/healthz", server.url)),
        (200, json!({"status": "ok"}))
    );

    let (s, m) = get(&a, &format!("{}/api/model", server.url));
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["shape"], "784-64-10");
    assert_eq!(m["layers"], json!([784, 64, 10]));
    assert_eq!(m["params"], 784 * 64 + 64 + 64 * 10 + 10);
    assert!(m["meta"].is_object(), "train writes its metadata: {m}");
    assert!(m["file"].as_str().unwrap().ends_with("model.npz"), "{m}");

    // The page: one file, nothing fetched from elsewhere.
    let mut r = a.get(&server.url).call().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/html"), "{ct}");
    let page = r.body_mut().read_to_string().unwrap();
    assert!(page.contains("<canvas id=\"pad\""), "{page}");
    for external in ["src=\"http", "href=\"http", "url(http", "@import", "//cdn"] {
        assert!(!page.contains(external), "the page fetches `{external}`");
    }

    // 28x28 pixels: the model sees them as given (to 1/255).
    let (row, _) = sample_digit(3);
    let values: Vec<f64> = row.iter().map(|&b| b as f64 / 255.0).collect();
    let (s, body) = post(&a, &api, "application/json", &pixels_json(&values));
    assert_eq!(s, 200, "{body}");
    let (label, seen) = check_prediction(&body);
    assert!(body.get("inverted").is_none(), "{body}");
    for (v, b) in seen.iter().zip(&row) {
        assert!((v - *b as f64 / 255.0).abs() < 1e-6);
    }

    // The same digit photographed: dark on light, large, off centre. It is
    // inverted, cropped and centred: its ink's centre of mass is near the
    // middle of the 28x28.
    let photo = photographed(&row);
    let (s, body) = post(&a, &api, "image/png", &photo);
    assert_eq!(s, 200, "{body}");
    let (photo_label, seen) = check_prediction(&body);
    assert_eq!(body["inverted"], true, "{body}");
    let (cx, cy) = centre_of_mass(&seen);
    assert!(
        (cx - 14.0).abs() < 1.5 && (cy - 14.0).abs() < 1.5,
        "({cx}, {cy})"
    );
    // As a multipart form's file: the same answer.
    let boundary = "b0undary7MA4YWxkTrZu0gW";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"d.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(&photo);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let multipart = format!("multipart/form-data; boundary={boundary}");
    let (s, from_form) = post(&a, &api, &multipart, &form);
    assert_eq!(s, 200, "{from_form}");
    assert_eq!(from_form, body);
    assert_eq!(photo_label, from_form["label"].as_u64().unwrap());
    let _ = label;

    // Every kind of bad request: a 4xx naming the problem.
    let json_of = |s: &str| s.as_bytes().to_vec();
    check_error(
        post(
            &a,
            &api,
            "application/json",
            &json_of("{\"pixels\": [0, 1,"),
        ),
        400,
        "malformed_json",
        &["malformed JSON", "EOF"],
    );
    check_error(
        post(
            &a,
            &api,
            "application/json",
            &json_of("{\"pixels\": [NaN]}"),
        ),
        400,
        "malformed_json",
        &["malformed JSON"],
    );
    check_error(
        post(&a, &api, "application/json", &json_of("{\"pixel\": []}")),
        400,
        "bad_field",
        &["unknown field `pixel`", "784"],
    );
    check_error(
        post(
            &a,
            &api,
            "application/json",
            &json_of("{\"pixels\": [\"0\"]}"),
        ),
        400,
        "bad_field",
        &["invalid type: string"],
    );
    check_error(
        post(&a, &api, "application/json", &pixels_json(&values[..783])),
        422,
        "wrong_length",
        &["783 values", "expected 784"],
    );
    let mut high = values.clone();
    high[5] = 1.5;
    check_error(
        post(&a, &api, "application/json", &pixels_json(&high)),
        422,
        "out_of_range",
        &["pixels[5] is 1.5", "from 0"],
    );
    let mut low = values.clone();
    low[700] = -0.25;
    check_error(
        post(&a, &api, "application/json", &pixels_json(&low)),
        422,
        "out_of_range",
        &["pixels[700] is -0.25"],
    );
    check_error(
        post(
            &a,
            &api,
            "application/json",
            &json_of("{\"pixels\": [1e400]}"),
        ),
        400,
        "malformed_json",
        &["number out of range"],
    );
    check_error(
        post(&a, &api, "application/json", &pixels_json(&[0.001; 784])),
        422,
        "blank",
        &["blank"],
    );
    // Over the JSON limit (256 KiB) and over the body limit (10 MiB).
    let mut long = b"{\"pixels\": [".to_vec();
    long.resize(300 << 10, b' ');
    long.extend_from_slice(b"0]}");
    check_error(
        post(&a, &api, "application/json", &long),
        413,
        "too_large",
        &["JSON body", "262,144 bytes"],
    );
    let huge = vec![0u8; (10 << 20) + 1000];
    check_error(
        post(&a, &api, "image/png", &huge),
        413,
        "too_large",
        &["body", "10,485,760 bytes"],
    );
    check_error(
        post(&a, &api, "text/plain", b"7"),
        415,
        "unsupported_media_type",
        &["text/plain", "application/json"],
    );
    check_error(
        post(&a, &api, "image/png", b"this is not a picture at all"),
        415,
        "unsupported_media_type",
        &["PNG, JPEG"],
    );
    check_error(
        post(&a, &api, "image/png", &photo[..photo.len() / 2]),
        422,
        "bad_image",
        &["decode"],
    );
    check_error(
        post(&a, &api, "image/png", &[]),
        422,
        "bad_image",
        &["empty"],
    );
    // Refused from its header: 4001x4001 is over 16,000,000 pixels.
    let big = png(&image::GrayImage::new(4001, 4001));
    check_error(
        post(&a, &api, "image/png", &big),
        422,
        "image_too_large",
        &["4001x4001", "16,000,000"],
    );
    let white = png(&image::GrayImage::from_pixel(300, 200, image::Luma([255])));
    check_error(
        post(&a, &api, "image/png", &white),
        422,
        "blank",
        &["blank"],
    );
    check_error(
        post(&a, &api, "multipart/form-data; boundary=x", b"--x\r\nnope"),
        400,
        "bad_multipart",
        &["multipart"],
    );
    check_error(
        get(&a, &format!("{}/nope", server.url)),
        404,
        "not_found",
        &["/nope"],
    );
    check_error(
        get(&a, &api),
        405,
        "method_not_allowed",
        &["GET", "/api/predict"],
    );

    // Still up after all that, and stops cleanly on SIGTERM.
    assert_eq!(get(&a, &format!("{}/healthz", server.url)).0, 200);
    let (status, rest) = server.stop();
    assert!(status.success(), "{status:?}");
    assert_eq!(rest.trim(), "stopped");
}

/// 16 clients at once, each 20 requests (pixels and pictures in turn):
/// every answer is the one a lone request gets.
#[test]
fn serve_answers_concurrent_clients_alike() {
    let dir = tempfile::tempdir().unwrap();
    train_in(dir.path());
    let server = Server::start(dir.path(), &["--model", "runs/latest"]);
    let api = format!("{}/api/predict", server.url);
    let inputs = mixed_requests(4);
    let a = agent();
    let alone: Vec<Value> = inputs
        .iter()
        .map(|(ct, body)| {
            let (s, v) = post(&a, &api, ct, body);
            assert_eq!(s, 200, "{v}");
            v
        })
        .collect();
    std::thread::scope(|scope| {
        for t in 0..16 {
            let (inputs, alone, api) = (&inputs, &alone, &api);
            scope.spawn(move || {
                let a = agent();
                for k in 0..20 {
                    let i = (t + k) % inputs.len();
                    let (s, v) = post(&a, api, inputs[i].0, &inputs[i].1);
                    assert_eq!(s, 200, "{v}");
                    assert_eq!(v, alone[i]);
                }
            });
        }
    });
    let (status, _) = server.stop();
    assert!(status.success(), "{status:?}");
}

#[test]
fn serve_refuses_a_missing_model_and_a_taken_port() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_in(dir.path(), &["serve", "--addr", "127.0.0.1:0"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no runs/latest/model.npz yet"),
        "{}",
        stderr(&o)
    );
    let o = run_in(dir.path(), &["serve", "--model", "gone.npz"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("gone.npz"), "{}", stderr(&o));

    train_in(dir.path());
    let server = Server::start(dir.path(), &[]);
    let addr = server.url.trim_start_matches("http://");
    let o = run_in(dir.path(), &["serve", "--addr", addr]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// One load-test connection's latencies (picture?, milliseconds) and errors.
type Worker = (Vec<(bool, f64)>, Vec<String>);

/// Load on loopback: 20,000 requests over 32 connections (each a thread
/// with one keep-alive connection), half 28x28 pixels as JSON, half
/// photographed digits as PNG. Prints throughput and latency; no request
/// may fail. `cargo test --release --features blas --test it -- --ignored
/// serve_under_load --nocapture`
#[test]
#[ignore = "a load test; run in release, see its doc comment"]
fn serve_under_load() {
    const REQUESTS: usize = 20_000;
    const CONNECTIONS: usize = 32;
    let dir = tempfile::tempdir().unwrap();
    train_in(dir.path());
    let server = Server::start(dir.path(), &[]);
    let api = format!("{}/api/predict", server.url);
    let inputs = mixed_requests(8);
    let start = std::time::Instant::now();
    let per_thread: Vec<Worker> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..CONNECTIONS)
            .map(|t| {
                let (inputs, api) = (&inputs, &api);
                scope.spawn(move || {
                    let a = agent();
                    let mut times = Vec::new();
                    let mut errors = Vec::new();
                    for k in (t..REQUESTS).step_by(CONNECTIONS) {
                        let (ct, body) = &inputs[k % inputs.len()];
                        let sent = std::time::Instant::now();
                        let r = a
                            .post(api.as_str())
                            .header("Content-Type", *ct)
                            .send(&body[..]);
                        match r {
                            Ok(mut r) if r.status() == 200 => {
                                let ok = r.body_mut().read_to_string().is_ok();
                                if !ok {
                                    errors.push("unreadable body".to_string());
                                }
                            }
                            Ok(r) => errors.push(format!("status {}", r.status())),
                            Err(e) => errors.push(e.to_string()),
                        }
                        times.push((*ct == "image/png", sent.elapsed().as_secs_f64() * 1e3));
                    }
                    (times, errors)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let errors: Vec<String> = per_thread.iter().flat_map(|(_, e)| e.clone()).collect();
    let all: Vec<(bool, f64)> = per_thread.into_iter().flat_map(|(t, _)| t).collect();
    let quantiles = |image: Option<bool>| {
        let mut ms: Vec<f64> = all
            .iter()
            .filter(|(i, _)| image.is_none_or(|want| *i == want))
            .map(|&(_, t)| t)
            .collect();
        ms.sort_by(f64::total_cmp);
        let q = |p: f64| ms[((ms.len() as f64 * p) as usize).min(ms.len() - 1)];
        format!("p50 {:.2} ms, p99 {:.2} ms", q(0.50), q(0.99))
    };
    println!(
        "load: {REQUESTS} requests over {CONNECTIONS} connections in {wall:.2} s: \
         {:.0} requests/s; all {}; pixels {}; png {}; {} errors",
        all.len() as f64 / wall,
        quantiles(None),
        quantiles(Some(false)),
        quantiles(Some(true)),
        errors.len()
    );
    assert_eq!(all.len(), REQUESTS);
    assert!(
        errors.is_empty(),
        "{} errors, first: {}",
        errors.len(),
        errors[0]
    );
    let (status, _) = server.stop();
    assert!(status.success());
}
