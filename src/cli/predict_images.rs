//! `mnist-blas predict --image`: label pictures of single digits (files, or
//! directories of them), each brought to MNIST's form by
//! [`crate::data::image`]; optionally keep the 28x28 each became.

use super::predict::{write_table, PredictArgs};
use super::{check_outputs, scoring_engine, thread_pool};
use crate::data::image::{digit_from_file, Digit, ImageError};
use crate::data::Dataset;
use crate::metrics::probabilities;
use crate::model::Mlp;
use crate::output::write_atomic;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The extensions a directory's image files are recognised by (any case).
pub(crate) const EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "gif", "bmp", "webp"];

pub(super) fn run(args: &PredictArgs) -> Result<()> {
    let inputs = expand(&args.image, args.quiet)?;
    let previews = match &args.preview {
        Some(dir) => preview_paths(dir, &inputs.files),
        None => Vec::new(),
    };
    let mut in_paths: Vec<&Path> = inputs.files.iter().map(PathBuf::as_path).collect();
    in_paths.push(&args.model);
    let mut outputs: Vec<(&str, &Path)> = Vec::new();
    if let Some(out) = &args.out {
        outputs.push(("--out", out));
    }
    if let Some(dir) = &args.preview {
        check_preview_dir(dir, &inputs.dirs)?;
        outputs.extend(previews.iter().map(|p| ("--preview", p.as_path())));
    }
    // (The preview files' directory may not exist yet: it is checked and
    // made below, so only the names are compared here.)
    crate::output::check_distinct(&in_paths, &outputs)?;
    if let Some(out) = &args.out {
        check_outputs(&[], &[("--out", out.as_path())])?;
    }
    if let Some(dir) = &args.preview {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--preview {}: cannot create the directory", dir.display()))?;
    }
    let model = Mlp::load_npz(&args.model)?;
    let pool = thread_pool(args.threads)?;

    // Every picture is read; the unreadable ones are reported and left out.
    let read: Vec<Result<Digit, ImageError>> = pool.install(|| {
        use rayon::prelude::*;
        inputs
            .files
            .par_iter()
            .map(|p| digit_from_file(p))
            .collect()
    });
    let mut good = Vec::new();
    let mut pixels = Vec::new();
    let mut failed = 0;
    for (i, (path, digit)) in inputs.files.iter().zip(read).enumerate() {
        match digit {
            Ok(digit) => {
                pixels.extend(digit.to_bytes());
                if let Some(preview) = previews.get(i) {
                    let png = digit.to_png();
                    write_atomic(preview, |w| w.write_all(&png))?;
                }
                good.push(path);
            }
            Err(e @ ImageError::Io { .. }) => {
                failed += 1;
                eprintln!("error: {e}");
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {}: {e}", path.display());
            }
        }
    }
    let total = inputs.files.len();
    if good.is_empty() {
        bail!("no picture could be read (see above); nothing written");
    }

    let set = Dataset::from_parts(pixels, None, PathBuf::from("--image"))?;
    let unsure = pool.install(|| -> Result<_> {
        let engine = scoring_engine(args.engine, &model, &set.pixels)?;
        let probs = probabilities(engine.as_ref(), &model, &set);
        let keys = || good.iter().map(|p| csv_field(&p.display().to_string()));
        let unsure = match &args.out {
            Some(out) => {
                let mut unsure = 0;
                write_atomic(out, |w| {
                    unsure = write_table(w, "File", keys(), &probs, args)?;
                    Ok(())
                })?;
                unsure
            }
            None => {
                let mut w = std::io::BufWriter::new(std::io::stdout().lock());
                write_table(&mut w, "File", keys(), &probs, args)
                    .and_then(|u| w.flush().map(|()| u))
                    .context("cannot write the table to standard output")?
            }
        };
        Ok(unsure)
    })?;

    if !args.quiet {
        let mut line = format!(
            "predicted {} with {}",
            crate::text::plural(good.len(), "picture"),
            args.model.display()
        );
        if unsure > 0 {
            line += &format!(" ({} below 50% confidence)", crate::text::thousands(unsure));
        }
        match &args.out {
            Some(out) => line += &format!("; wrote {}", out.display()),
            None => line += "; the table is on standard output",
        }
        if let Some(dir) = &args.preview {
            line += &format!("; what the model saw is in {}", dir.display());
        }
        eprintln!("{line}");
    }
    if failed > 0 {
        bail!(
            "{} of {} could not be read (see above); the other {} {} predicted",
            crate::text::thousands(failed),
            crate::text::plural(total, "picture"),
            crate::text::thousands(good.len()),
            if good.len() == 1 { "was" } else { "were" },
        );
    }
    Ok(())
}

/// The pictures `--image` names, in order: a file as given, a directory
/// as its image files sorted by name.
struct Inputs {
    files: Vec<PathBuf>,
    /// The directories given, so the previews do not go into one.
    dirs: Vec<PathBuf>,
}

fn expand(given: &[PathBuf], quiet: bool) -> Result<Inputs> {
    let mut inputs = Inputs {
        files: Vec::new(),
        dirs: Vec::new(),
    };
    for path in given {
        let meta = std::fs::metadata(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!("{}: no such file or directory (--image)", path.display())
            } else {
                anyhow::anyhow!(
                    "{}: {} (--image)",
                    path.display(),
                    crate::output::describe(&e)
                )
            }
        })?;
        if !meta.is_dir() {
            inputs.files.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path)
            .and_then(|d| {
                d.map(|e| e.map(|e| e.file_name()))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(|e| {
                anyhow::anyhow!(
                    "{}: cannot list the directory: {} (--image)",
                    path.display(),
                    crate::output::describe(&e)
                )
            })?;
        let mut names: Vec<OsString> = entries;
        names.sort();
        let mut skipped = 0;
        let before = inputs.files.len();
        for name in names {
            let file = path.join(&name);
            if is_image_name(&name) && file.is_file() {
                inputs.files.push(file);
            } else {
                skipped += 1;
            }
        }
        if inputs.files.len() == before {
            bail!(
                "{}: no image files in the directory (--image takes .{})",
                path.display(),
                EXTENSIONS.join(" .")
            );
        }
        if skipped > 0 && !quiet {
            eprintln!(
                "note: {}: skipped {} {} that {} not image files (.{})",
                path.display(),
                crate::text::thousands(skipped),
                if skipped == 1 { "entry" } else { "entries" },
                if skipped == 1 { "is" } else { "are" },
                EXTENSIONS.join(" .")
            );
        }
        inputs.dirs.push(path.clone());
    }
    Ok(inputs)
}

/// Named like an image file: not hidden, one of [`EXTENSIONS`].
fn is_image_name(name: &std::ffi::OsStr) -> bool {
    let path = Path::new(name);
    !name.as_encoded_bytes().starts_with(b".")
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// `DIR/NAME.png` for each picture, NAME its file name without the
/// extension; pictures sharing a stem (`7.jpg`, `7.png`) keep their whole
/// name (`7.jpg.png`), and pictures sharing a name in different
/// directories are numbered by their row (`3-7.png`).
fn preview_paths(dir: &Path, files: &[PathBuf]) -> Vec<PathBuf> {
    let stem = |p: &Path| p.file_stem().unwrap_or(p.as_os_str()).to_os_string();
    let name = |p: &Path| p.file_name().unwrap_or(p.as_os_str()).to_os_string();
    let mut stems: HashMap<OsString, usize> = HashMap::new();
    let mut names: HashMap<OsString, usize> = HashMap::new();
    for f in files {
        *stems.entry(stem(f)).or_default() += 1;
        *names.entry(name(f)).or_default() += 1;
    }
    files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut base = if stems[&stem(f)] == 1 {
                stem(f)
            } else if names[&name(f)] == 1 {
                name(f)
            } else {
                let mut n = OsString::from(format!("{}-", i + 1));
                n.push(name(f));
                n
            };
            base.push(".png");
            dir.join(base)
        })
        .collect()
}

/// `--preview DIR` is a directory (or will be made one) and not one of
/// the directories of pictures, where its files would be read next time.
fn check_preview_dir(dir: &Path, image_dirs: &[PathBuf]) -> Result<()> {
    if let Ok(meta) = std::fs::metadata(dir) {
        if !meta.is_dir() {
            bail!("--preview {}: not a directory", dir.display());
        }
        use std::os::unix::fs::MetadataExt;
        for d in image_dirs {
            if std::fs::metadata(d).is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino())) {
                bail!(
                    "--preview {}: is the directory of pictures given to --image; \
                     give the previews their own directory",
                    dir.display()
                );
            }
        }
    }
    Ok(())
}

/// A CSV field: quoted (quotes doubled) when it holds a comma, a quote or
/// a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_names_stay_apart() {
        let files: Vec<PathBuf> = ["a/7.jpg", "a/7.png", "a/one.png", "b/7.png", "b/two.gif"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let names: Vec<PathBuf> = preview_paths(Path::new("seen"), &files);
        let want: Vec<PathBuf> = [
            "7.jpg.png",
            "2-7.png.png",
            "one.png",
            "4-7.png.png",
            "two.png",
        ]
        .iter()
        .map(|n| Path::new("seen").join(n))
        .collect();
        assert_eq!(names, want);
    }

    #[test]
    fn image_names_by_extension_not_hidden() {
        for yes in ["a.png", "B.JPG", "c.jpeg", "d.Gif", "e.bmp", "f.webp"] {
            assert!(is_image_name(yes.as_ref()), "{yes}");
        }
        for no in [
            ".a.png",
            "notes.txt",
            "png",
            "labels.csv",
            "x.tiff",
            ".DS_Store",
        ] {
            assert!(!is_image_name(no.as_ref()), "{no}");
        }
    }

    #[test]
    fn csv_fields_are_quoted_when_they_must_be() {
        assert_eq!(csv_field("d/a.png"), "d/a.png");
        assert_eq!(csv_field("a,b.png"), "\"a,b.png\"");
        assert_eq!(csv_field("say \"7\".png"), "\"say \"\"7\"\".png\"");
    }
}
