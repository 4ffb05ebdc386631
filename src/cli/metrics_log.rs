//! `train`'s metrics CSV, written as the run goes: the header, then a row
//! per epoch (per logged iteration for full batch), each in one write, so
//! `tail -f` or an optimiser deciding to prune can follow the run.

use crate::train::Record;
use anyhow::Result;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The metrics CSV, a row per record, flushed as each one ends so that
/// `tail -f` (or an optimiser deciding to prune) can follow the run.
pub(super) struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
    /// The first write that failed; the run ends with it.
    error: Option<std::io::Error>,
}

impl MetricsLog {
    const HEADER: &'static str =
        "step,train_loss,train_accuracy,heldout_loss,heldout_accuracy,seconds";

    /// Start the file: the header, then the `earlier` records of a resumed run.
    pub(super) fn open(path: &Path, earlier: &[Record]) -> Result<MetricsLog> {
        let file = crate::output::open_live(path)?;
        let mut log = MetricsLog {
            path: path.to_path_buf(),
            file,
            error: None,
        };
        log.write(format!("{}\n", Self::HEADER));
        for r in earlier {
            log.append(r);
        }
        Ok(log)
    }

    pub(super) fn append(&mut self, r: &Record) {
        let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        self.write(format!(
            "{},{},{},{},{},{:.6}\n",
            r.step,
            r.train_loss,
            r.train_accuracy,
            opt(r.heldout_loss),
            opt(r.heldout_accuracy),
            r.seconds
        ));
    }

    /// One whole row per write (a reader never sees half of one from us).
    fn write(&mut self, row: String) {
        if self.error.is_none() {
            if let Err(e) = self.file.write_all(row.as_bytes()) {
                self.error = Some(e);
            }
        }
    }

    /// The first write error, if any, naming the file; else sync it.
    pub(super) fn finish(self) -> Result<()> {
        let result = match self.error {
            Some(e) => Err(e),
            None => crate::output::sync_if_it_can(&self.file),
        };
        result.map_err(|e| {
            crate::output::WriteError {
                path: self.path.clone(),
                source: e,
            }
            .into()
        })
    }
}
