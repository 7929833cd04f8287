//! `breach-notifier export evidence|postal`: streaming exports for regulators and print vendors.

use std::process::ExitCode;

use crate::cli::ExportCommand;
use crate::store::Store;

pub async fn run(_store: &Store, _cmd: ExportCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`breach-notifier export` is not available in this build yet")
}
