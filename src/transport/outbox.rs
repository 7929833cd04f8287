//! The file outbox: one `.eml` per notice in a directory, so that a new user runs everything with no
//! server.
//!
//! Owns the atomic write (temporary file, fsync, rename): a reader never sees half a file and a crash
//! never leaves one. A full or read-only disk is an I/O error here, which [`super::Transport::send`]
//! records as a temporary failure: the recipient stays pending, never lost.

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

/// Creates the outbox if needed and proves it writable with a probe file.
pub(super) async fn check(dir: &Path) -> anyhow::Result<()> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| anyhow::anyhow!("the outbox {} cannot be created ({e})", dir.display()))?;
    let probe = dir.join(".breach-notifier-write-test");
    tokio::fs::write(&probe, b"ok")
        .await
        .map_err(|e| anyhow::anyhow!("the outbox {} is not writable ({e})", dir.display()))?;
    let _ = tokio::fs::remove_file(&probe).await;
    Ok(())
}

/// Writes `dir/name.eml` so that a reader never sees half a file and a crash never leaves one.
pub(super) async fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    tokio::fs::create_dir_all(dir).await?;
    let path = dir.join(format!("{name}.eml"));
    let tmp = dir.join(format!(".{name}.eml.tmp"));
    let mut f = tokio::fs::File::create(&tmp).await?;
    f.write_all(bytes).await?;
    f.sync_all().await?;
    drop(f);
    tokio::fs::rename(&tmp, &path).await?;
    Ok(path)
}
