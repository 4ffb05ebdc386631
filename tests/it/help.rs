//! Every command's `--help`: it reads at 80 columns, lists every value the
//! code accepts, and its examples use files a user has.

use crate::common::{bin, stderr, text};
use clap::{Command, CommandFactory, ValueEnum};
use mnist_blas::cli::Cli;
use mnist_blas::engine::EngineKind;

/// Columns every line of help fits in.
const WIDTH: usize = 80;

/// The root command and every subcommand, as their `--help` arguments.
fn commands() -> Vec<Vec<String>> {
    let mut all = vec![Vec::new()];
    all.extend(
        Cli::command()
            .get_subcommands()
            .map(|c| vec![c.get_name().to_string()]),
    );
    all
}

/// `mnist-blas ARGS --help`, piped; `columns` as the terminal's width if any.
fn help(args: &[String], columns: Option<&str>) -> String {
    let mut cmd = bin();
    cmd.args(args).arg("--help");
    match columns {
        Some(c) => cmd.env("COLUMNS", c),
        None => cmd.env_remove("COLUMNS"),
    };
    let o = cmd.output().expect("the binary runs");
    assert!(o.status.success(), "{args:?} --help: {}", stderr(&o));
    text(&o.stdout)
}

/// The command `args` names in the parser (the root for no args).
fn command(args: &[String]) -> Command {
    let root = Cli::command();
    match args.first() {
        Some(name) => root
            .find_subcommand(name)
            .unwrap_or_else(|| panic!("no subcommand {name}"))
            .clone(),
        None => root,
    }
}

/// The lines of `help` about option `--long`: its own line and its
/// description, up to the next option.
fn option_block(help: &str, long: &str) -> String {
    let is_option = |l: &str| {
        let indent = l.len() - l.trim_start().len();
        indent <= 6 && l.trim_start().starts_with('-')
    };
    let mut lines = help.lines().skip_while(|l| {
        !(is_option(l)
            && l.split([',', ' '])
                .any(|w| w == format!("--{long}") || w.starts_with(&format!("--{long}="))))
    });
    let Some(first) = lines.next() else {
        panic!("no --{long} in:\n{help}");
    };
    let mut block = first.to_string();
    for l in lines.take_while(|l| !is_option(l) && !l.starts_with(|c: char| c.is_alphabetic())) {
        block.push('\n');
        block.push_str(l);
    }
    block
}

/// The examples of a command's help: from `Examples:` to the first blank line.
fn examples(after_help: &str) -> Vec<&str> {
    after_help
        .lines()
        .skip_while(|l| !l.starts_with("Examples:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect()
}

#[test]
fn every_help_fits_in_80_columns() {
    // An 80-column terminal, and a pipe (`--help | less`: no width known).
    for columns in [Some("80"), None] {
        for args in commands() {
            let h = help(&args, columns);
            for line in h.lines() {
                assert!(
                    line.chars().count() <= WIDTH,
                    "`mnist-blas {} --help` (COLUMNS {columns:?}) has a line of {} columns:\n{line}",
                    args.join(" "),
                    line.chars().count()
                );
            }
        }
    }
}

/// clap wraps long lines at 80 columns, which breaks an example command in
/// the middle: each example line must fit as written, a long command going
/// on with ` \` onto lines indented under it.
#[test]
fn examples_fit_as_written_and_continue_with_a_backslash() {
    for args in commands() {
        let cmd = command(&args);
        let name = format!("mnist-blas {}", args.join(" "));
        let after = cmd
            .get_after_help()
            .unwrap_or_else(|| panic!("`{name}` has no examples"))
            .to_string();
        let lines = examples(&after);
        assert!(!lines.is_empty(), "`{name}` has no examples:\n{after}");
        for (i, line) in lines.iter().enumerate() {
            assert!(
                line.chars().count() <= WIDTH,
                "`{name} --help`: example line of {} columns:\n{line}",
                line.chars().count()
            );
            let continued = i > 0 && lines[i - 1].ends_with(" \\");
            let indent = line.len() - line.trim_start().len();
            assert_eq!(
                indent,
                if continued { 6 } else { 2 },
                "`{name} --help`: an example starts 2 columns in, its continuation \
                 lines (after ` \\`) 6:\n{line}"
            );
        }
        assert!(
            !lines.last().unwrap().ends_with('\\'),
            "`{name} --help`: the last example goes on nowhere"
        );
        // Prose: lines of at most 80 columns, or whole paragraphs on one
        // line for clap to wrap; a longer line broken by hand comes out
        // ragged (80 columns, then a few words, then 80 again).
        let raw: Vec<&str> = after.lines().collect();
        for (i, line) in raw.iter().enumerate() {
            let ends_paragraph = raw.get(i + 1).is_none_or(|next| next.trim().is_empty());
            assert!(
                line.chars().count() <= WIDTH || ends_paragraph,
                "`{name} --help`: a line of {} columns in the middle of a paragraph \
                 (write the paragraph on one line, or its lines within {WIDTH} columns):\n{line}",
                line.chars().count()
            );
        }
    }
}

#[test]
fn examples_name_files_a_user_has() {
    for args in commands() {
        let cmd = command(&args);
        let after = cmd
            .get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        for line in examples(&after) {
            for word in line.split_whitespace() {
                let word = word.trim_matches(|c: char| "\"'`,;()".contains(c));
                for internal in ["../shared", "tests/", "data/sample", "docs/", "fixtures/"] {
                    assert!(
                        !word.contains(internal),
                        "`mnist-blas {} --help`: `{word}` is a path in this repository, \
                         not one a user has:\n{line}",
                        args.join(" ")
                    );
                }
                // data/train.csv is where a user puts the Kaggle file.
                if word.contains("data/") {
                    assert_eq!(word, "data/train.csv", "{line}");
                }
            }
        }
    }
}

/// Every value a flag takes (`--engine auto|blas|naive|sparse`, ...) is
/// named in the help of each command that has the flag; the sweep's flags
/// that take `train`'s values name every one of `train`'s.
#[test]
fn every_accepted_value_is_in_the_help() {
    let train = command(&["train".to_string()]);
    for args in commands() {
        let cmd = command(&args);
        let h = help(&args, Some("80"));
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long().filter(|_| arg.get_action().takes_values()) else {
                continue;
            };
            // The values this flag takes, or for a sweep flag that takes
            // lists of a `train` flag's values, that flag's.
            let mut values = arg.get_possible_values();
            if values.is_empty() {
                if let Some(t) = train.get_arguments().find(|t| t.get_long() == Some(long)) {
                    if args.first().map(String::as_str) == Some("sweep") {
                        values = t.get_possible_values();
                    }
                }
            }
            if values.is_empty() || values.iter().all(|v| v.is_hide_set()) {
                continue;
            }
            let block = option_block(&h, long);
            for v in values.iter().filter(|v| !v.is_hide_set()) {
                let name = v.get_name();
                let named = block
                    .split(|c: char| !(c.is_alphanumeric() || c == '-'))
                    .any(|w| w == name);
                assert!(
                    named,
                    "`mnist-blas {} --help`: --{long} does not name `{name}`:\n{block}",
                    args.join(" ")
                );
            }
        }
    }
    // The engines in particular, in `train` and `sweep` (the user's report):
    // every one the code has.
    let engines: Vec<String> = EngineKind::value_variants()
        .iter()
        .filter_map(|e| e.to_possible_value())
        .map(|v| v.get_name().to_string())
        .collect();
    assert_eq!(engines, ["auto", "blas", "naive", "sparse"]);
    for sub in ["train", "sweep"] {
        let block = option_block(&help(&[sub.to_string()], Some("80")), "engine");
        for e in &engines {
            assert!(
                block.contains(e.as_str()),
                "{sub} --engine lacks {e}:\n{block}"
            );
        }
    }
}
