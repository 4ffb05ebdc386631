//! The README's tour, run top to bottom in a fresh folder laid out as the
//! README tells a user to lay it out (Kaggle's files in `data/`, MNIST's
//! test files beside), must print what the README shows. Every `$ command`
//! of a `console` block runs in order, in one folder, with `mnist-blas` on
//! PATH; every line the README shows after it must appear in the output,
//! in order (`...` skips lines). Timings, throughputs and run-folder
//! timestamps are masked; accuracies, counts and losses are compared as
//! printed. Ignored by default (a release build and ../shared): `.ci/run`
//! runs it.

use crate::common::{repo, BIN};
use std::path::Path;
use std::process::Command;

/// One `$ command` and the lines shown after it.
struct Step {
    command: String,
    shown: Vec<String>,
}

/// The `$` lines of every ```console block, in order.
fn steps(readme: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_console = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_console = line.trim() == "```console";
            continue;
        }
        if !in_console {
            continue;
        }
        match line.strip_prefix("$ ") {
            Some(command) => steps.push(Step {
                command: command.to_string(),
                shown: Vec::new(),
            }),
            None => steps
                .last_mut()
                .expect("a console block starts with a command")
                .shown
                .push(line.to_string()),
        }
    }
    steps
}

/// `line` with what differs from run to run replaced by `#`: a number
/// followed by ` s` (seconds) or `k samples/s`, and a run folder's
/// timestamp name.
fn mask(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || ".,-_".contains(chars[i])) {
                i += 1;
            }
            let token: String = chars[start..i].iter().collect();
            let rest: String = chars[i..].iter().collect();
            let rest_unit = rest.trim_start_matches(['k', 'M']);
            let seconds = rest_unit.starts_with(" s")
                && !rest_unit[2..].starts_with(|c: char| c.is_alphabetic());
            let timestamp = token.len() == 19 && token.matches('-').count() == 4;
            if seconds || rest_unit.starts_with(" samples/s") || timestamp {
                out.push('#');
                i += rest.len() - rest_unit.len();
            } else {
                out.push_str(&token);
            }
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn masking_hides_timings_and_run_names_only() {
    assert_eq!(
        mask("time:       load 0.30 s, train 1.58 s (total 2.01 s)"),
        "time:       load # s, train # s (total # s)"
    );
    assert_eq!(
        mask("epoch    1: train accuracy 0.7714 loss 0.7398  [0.16 s]"),
        "epoch    1: train accuracy 0.7714 loss 0.7398  [# s]"
    );
    assert_eq!(
        mask("throughput: 212k samples/s (336,000 samples in 1.58 s)"),
        "throughput: # samples/s (336,000 samples in # s)"
    );
    assert_eq!(
        mask("run folder: runs/2026-11-30_17-05-09"),
        "run folder: runs/#"
    );
    assert_eq!(mask("5 seeds, 12 steps"), "5 seeds, 12 steps");
}

/// Lines with the summary's continuation lines (indented 12 spaces under
/// their value) joined back on: where a value wraps depends on how wide a
/// timing came out.
fn joined<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in lines {
        match out.last_mut() {
            Some(last) if line.starts_with("            ") && !line.trim().is_empty() => {
                last.push(' ');
                last.push_str(line.trim());
            }
            _ => out.push(line.to_string()),
        }
    }
    out
}

/// Panics unless every shown line (but `...`) appears in `actual`, in order.
fn check_shown(step: &Step, actual: &str) {
    let lines: Vec<String> = joined(actual.lines()).iter().map(|l| mask(l)).collect();
    let mut at = 0;
    for shown in joined(step.shown.iter().map(String::as_str)) {
        if shown.trim() == "..." {
            continue;
        }
        let want = mask(&shown);
        match lines[at..].iter().position(|l| l.trim_end() == want.trim_end()) {
            Some(k) => at += k + 1,
            None => panic!(
                "README step `{}` shows a line the run did not print (in that order):\n  {shown}\nthe run printed:\n{actual}",
                step.command
            ),
        }
    }
}

#[test]
#[ignore = "needs ../shared and a release build; run by .ci/run"]
fn readme_tour_prints_what_the_readme_shows() {
    let shared = repo("../shared/data");
    if !shared.join("digit-recognizer/train.csv.gz").exists() {
        eprintln!("skipped: {} is not there", shared.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("data")).unwrap();
    // The readers sniff gzip from the content, so the files keep Kaggle's names.
    let link = |from: &str, to: &str| {
        std::os::unix::fs::symlink(shared.join(from), d.join(to)).unwrap();
    };
    link("digit-recognizer/train.csv.gz", "data/train.csv");
    link("digit-recognizer/test.csv.gz", "data/test.csv");
    link(
        "mnist-idx/t10k-images-idx3-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
    );
    link(
        "mnist-idx/t10k-labels-idx1-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    );
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let steps = steps(&readme);
    assert!(steps.len() >= 8, "{} console steps", steps.len());
    for step in &steps {
        println!("$ {}", step.command);
        let o = Command::new("sh")
            .arg("-c")
            .arg(&step.command)
            .current_dir(d)
            .env("PATH", &path)
            .env_remove("MNIST_BLAS_SIMD")
            .output()
            .unwrap();
        let actual = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "`{}` failed:\n{actual}", step.command);
        check_shown(step, &actual);
    }
}
