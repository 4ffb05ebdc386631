//! The draw-a-digit page in a real browser: `serve` with a model trained on
//! the built-in sample, Debian's headless Chromium driven through
//! chromedriver (WebDriver), digits drawn stroke by stroke with pointer
//! actions (mouse and touch), and what the page shows read back.
//!
//! Needs `chromium` and `chromium-driver` (`.ci/run` installs them):
//! `cargo test --release --features blas --test it -- --ignored browser`.
//! Its screenshot goes to its temp folder; to refresh the one in the docs:
//! `MNIST_BLAS_SCREENSHOT=docs/img/serve.png cargo test --release --features blas --test it -- --ignored browser`.

use crate::serve::{centre_of_mass, train_in, Server};
use fantoccini::actions::{
    InputSource, MouseActions, PointerAction, TouchActions, MOUSE_BUTTON_LEFT,
};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's packages put them.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// chromedriver on a free port, once it accepts connections.
fn chromedriver(dir: &Path) -> (Killed, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg(format!(
            "--log-path={}",
            dir.join("chromedriver.log").display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {CHROMEDRIVER} (apt-get install chromium-driver): {e}")
        });
    let child = Killed(child);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "chromedriver did not start listening on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, format!("http://127.0.0.1:{port}"))
}

/// One stroke through `points` (pixels from the pad's centre), as a mouse
/// drag or a finger's touch.
async fn stroke(c: &Client, pad: &Element, points: &[(f64, f64)], touch: bool) {
    let step = Some(Duration::from_millis(8));
    let to = |&(x, y): &(f64, f64)| PointerAction::MoveToElement {
        element: pad.clone(),
        duration: step,
        x,
        y,
    };
    let mut actions = vec![
        to(&points[0]),
        PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        },
    ];
    actions.extend(points[1..].iter().map(to));
    actions.push(PointerAction::Up {
        button: MOUSE_BUTTON_LEFT,
    });
    if touch {
        let seq = actions
            .into_iter()
            .fold(TouchActions::new("finger".into()), |s, a| s.then(a));
        c.perform_actions(seq).await.unwrap();
    } else {
        let seq = actions
            .into_iter()
            .fold(MouseActions::new("mouse".into()), |s, a| s.then(a));
        c.perform_actions(seq).await.unwrap();
    }
}

/// `n` points along the segment from `a` to `b`, `a` included.
fn line(a: (f64, f64), b: (f64, f64), n: usize) -> Vec<(f64, f64)> {
    (0..=n)
        .map(|i| {
            let t = i as f64 / n as f64;
            (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1))
        })
        .collect()
}

/// Wait for the page's answers to `count` predictions in all (none
/// pending), then read what it shows: the digit, the bar widths (%) and
/// the preview's pixels (0-255, the red channel).
async fn shown(c: &Client, count: u64) -> (String, Vec<f64>, Vec<f64>) {
    let start = Instant::now();
    loop {
        let state = c
            .execute(
                "return [Number(document.body.dataset.count), document.body.dataset.pending];",
                vec![],
            )
            .await
            .unwrap();
        if state[0].as_u64().unwrap() >= count && state[1] == "0" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the page shows no answer: {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = c
        .execute(
            "const bars = [...Array(10).keys()].map(d => \
                 parseFloat(document.getElementById('bar' + d).style.width) || 0);\
             const px = document.getElementById('seen').getContext('2d')\
                 .getImageData(0, 0, 28, 28).data.filter((_, i) => i % 4 === 0);\
             return [document.getElementById('digit').textContent, bars, Array.from(px)];",
            vec![],
        )
        .await
        .unwrap();
    let nums = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    (v[0].as_str().unwrap().to_string(), nums(&v[1]), nums(&v[2]))
}

/// The page's reading of a digit is `want`: shown as the digit, its bar
/// the longest, the bars summing to 100%, the preview holding ink centred
/// by its mass.
fn check(shown: &(String, Vec<f64>, Vec<f64>), want: &str) {
    let (digit, bars, px) = shown;
    assert_eq!(digit, want, "bars {bars:?}");
    let d: usize = want.parse().unwrap();
    assert!(bars.iter().all(|&b| b <= bars[d]), "{bars:?}");
    assert!((bars.iter().sum::<f64>() - 100.0).abs() < 1.0, "{bars:?}");
    let mass: f64 = px.iter().sum();
    assert!(mass > 255.0 * 20.0, "the preview shows little ink: {mass}");
    let (cx, cy) = centre_of_mass(px);
    assert!(
        (cx - 14.0).abs() < 1.5 && (cy - 14.0).abs() < 1.5,
        "({cx}, {cy})"
    );
}

#[test]
#[ignore = "needs Debian's chromium and chromium-driver; .ci/run installs them"]
fn browser_draws_digits_and_the_page_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    train_in(dir.path());
    let server = Server::start(dir.path(), &[]);
    let (_driver, webdriver) = chromedriver(dir.path());
    let profile = dir.path().join("chromium-profile");
    let shot = dir.path().join("serve.png");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1000,700",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let c = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&webdriver)
            .await
            .unwrap_or_else(|e| panic!("cannot start Chromium through chromedriver: {e}"));
        let result = draw(&c, &server.url, &shot).await;
        c.close().await.unwrap();
        result
    });
    if let Some(copy) = std::env::var_os("MNIST_BLAS_SCREENSHOT") {
        let copy = PathBuf::from(copy);
        std::fs::copy(&shot, &copy)
            .unwrap_or_else(|e| panic!("cannot copy the screenshot to {}: {e}", copy.display()));
        eprintln!("screenshot: {}", copy.display());
    }
    let (status, _) = server.stop();
    assert!(status.success());
}

/// How many answers the page has shown.
async fn count(c: &Client) -> u64 {
    c.execute("return Number(document.body.dataset.count);", vec![])
        .await
        .unwrap()
        .as_u64()
        .unwrap()
}

async fn draw(c: &Client, url: &str, shot: &Path) {
    c.goto(url).await.unwrap();
    let pad = c.find(Locator::Css("#pad")).await.unwrap();
    let model = c.find(Locator::Css("#model")).await.unwrap();
    let start = Instant::now();
    while !model.text().await.unwrap().contains("784-64-10") {
        assert!(start.elapsed() < Duration::from_secs(30), "no model line");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, _, _, side) = pad.rectangle().await.unwrap();
    let k = side / 300.0; // the strokes below are for a 300-pixel pad
    let at = |pts: Vec<(f64, f64)>| -> Vec<(f64, f64)> {
        pts.into_iter().map(|(x, y)| (x * k, y * k)).collect()
    };

    // A "1" with the mouse: a short lead-in stroke then the stem.
    stroke(c, &pad, &at(line((-25.0, -70.0), (5.0, -100.0), 6)), false).await;
    stroke(c, &pad, &at(line((5.0, -100.0), (5.0, 100.0), 30)), false).await;
    let one = shown(c, 1).await;
    check(&one, "1");

    // Clear: no digit, empty bars, a black preview.
    c.find(Locator::Css("#clear"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let cleared = c
        .execute(
            "return [document.getElementById('digit').textContent, \
             document.getElementById('bar1').style.width];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(cleared, json!(["\u{2013}", "0%"]));

    // A "0" with a finger: one loop, drawn as touch pointer events.
    let n = count(c).await;
    let ring: Vec<(f64, f64)> = (0..=48)
        .map(|i| {
            let t = i as f64 / 48.0 * 2.0 * std::f64::consts::PI - 0.3;
            (62.0 * t.sin(), -88.0 * t.cos())
        })
        .collect();
    stroke(c, &pad, &at(ring), true).await;
    let zero = shown(c, n + 1).await;
    check(&zero, "0");
    assert_ne!(zero.2, one.2, "the preview did not change");

    // A "7" in two mouse strokes (bar, then the diagonal), left on screen.
    c.find(Locator::Css("#clear"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let n = count(c).await;
    stroke(c, &pad, &at(line((-70.0, -85.0), (70.0, -85.0), 20)), false).await;
    stroke(c, &pad, &at(line((70.0, -85.0), (-15.0, 100.0), 30)), false).await;
    let seven = shown(c, n + 1).await;
    check(&seven, "7");
    std::fs::write(shot, c.screenshot().await.unwrap()).unwrap();
}
