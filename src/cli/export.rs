//! `breach-notifier export evidence|postal`: streaming exports for regulators and print vendors.
//!
//! The streaming lives in [`crate::ops::export`]; this opens the output and reports. A file is written
//! under a temporary name in its own directory and renamed into place only once complete and synced,
//! so a half-written export never looks like a finished one (an interrupted run leaves nothing, or at
//! worst a `.NAME.PID.partial` file after a hard kill).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::anyhow;

use crate::cli::args::{ExportArgs, ExportCommand};
use crate::ops::export::{ExportError, ExportKind, ExportOptions, Format, export};
use crate::store::{CampaignState, Store};

pub async fn run(store: &Store, cmd: ExportCommand) -> anyhow::Result<ExitCode> {
    let (kind, args): (ExportKind, ExportArgs) = match cmd {
        ExportCommand::Evidence(args) => (ExportKind::Evidence, args),
        ExportCommand::Postal(args) => (ExportKind::Postal, args),
    };
    let format: Format = args.format.parse()?;
    // An unknown campaign is reported before any file is touched.
    let campaign = store.require_campaign(args.campaign).await?;
    let mut opts = ExportOptions::new(campaign.id, kind, format);
    opts.progress = true;

    let (summary, shown) = match &args.output {
        None => {
            let shown = "standard output".to_string();
            let (summary, mut out) = interruptible(export(store, &opts, std::io::stdout()))
                .await?
                .map_err(|e| explain(e, &shown))?;
            std::io::Write::flush(&mut out).map_err(|e| write_error(&shown, e))?;
            (summary, shown)
        }
        Some(path) => {
            let shown = path.display().to_string();
            let (partial, file) = Partial::create(path).map_err(|e| write_error(&shown, e))?;
            // On any error below, dropping `partial` removes the temporary file.
            let (summary, file) = interruptible(export(store, &opts, file))
                .await?
                .map_err(|e| explain(e, &shown))?;
            partial.commit(file).map_err(|e| write_error(&shown, e))?;
            (summary, shown)
        }
    };
    eprintln!("wrote {} recipients to {shown}", summary.written);
    if let Some(note) = state_note(campaign.id, campaign.state, kind) {
        eprintln!("{note}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs an export unless Ctrl-C comes first (then the partial file is removed on the way out).
async fn interruptible<T>(work: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    tokio::select! {
        done = work => Ok(done),
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted: no export was written")),
    }
}

/// A word for the operator when the campaign may still change, or was cancelled.
fn state_note(id: i64, state: CampaignState, kind: ExportKind) -> Option<String> {
    match (state, kind) {
        (CampaignState::Running | CampaignState::Paused, _) => Some(format!(
            "note: campaign {id} is {state}: recipients may still change; export again once it is completed"
        )),
        (CampaignState::Cancelled, ExportKind::Postal) => Some(format!(
            "note: campaign {id} is cancelled: recipients who were never emailed are still listed; check before mailing"
        )),
        _ => None,
    }
}

fn write_error(shown: &str, e: std::io::Error) -> anyhow::Error {
    anyhow!("cannot write the export to {shown}: {e}")
}

fn explain(e: ExportError, shown: &str) -> anyhow::Error {
    match e {
        ExportError::Write(e) => write_error(shown, e),
        ExportError::Store(e) => e.into(),
    }
}

/// An export file being written under a temporary name next to its final one. Dropped without
/// [`Partial::commit`], it removes the temporary file.
struct Partial {
    temp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl Partial {
    fn create(target: &Path) -> std::io::Result<(Self, File)> {
        if target.is_dir() {
            return Err(std::io::Error::other("it is a directory"));
        }
        let name = target
            .file_name()
            .ok_or_else(|| std::io::Error::other("not a file name"))?
            .to_string_lossy()
            .into_owned();
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let temp = dir.join(format!(".{name}.{}.partial", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            // Exports carry personal data (the postal list: names and addresses): owner only.
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&temp)?;
        Ok((
            Partial {
                temp,
                target: target.to_path_buf(),
                committed: false,
            },
            file,
        ))
    }

    /// Syncs the complete file and renames it into place.
    fn commit(mut self, file: File) -> std::io::Result<()> {
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.temp, &self.target)?;
        self.committed = true;
        #[cfg(unix)]
        if let Some(dir) = self.target.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the rename itself durable; best effort.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}
