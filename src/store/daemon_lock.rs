//! The one-daemon rule of a SQLite database: `breach-notifier run` holds an exclusive lock on a file
//! beside the database (`notices.db.daemon.lock` for `notices.db`) for as long as it dispatches.
//!
//! SQLite has one writer at a time and no `SKIP LOCKED`, so two daemons on one file would claim the same
//! recipients; the second one must be refused. The lock is the operating system's own liveness: the
//! kernel releases it when the process exits, however it exits (`kill -9`, a panic, an OOM kill), so a
//! restart right after a crash is admitted at once while a daemon that really runs is refused. A
//! heartbeat row cannot tell "died a moment ago" from "alive": it would refuse every restart until the
//! row went stale, and admit a second daemon beside one whose heartbeat was merely late.
//!
//! The lock is `flock(2)` (`LockFileEx` on Windows) through [`std::fs::File::try_lock`], stable since
//! Rust 1.89 (sqlx 0.9 needs 1.94 already): no crate and no `unsafe` for one system call. It
//! belongs to the open file description, so a second `open` of the file conflicts even inside the same
//! process, and it is not inherited by programs the daemon starts (files are opened close-on-exec).
//!
//! The holder writes its instance id (`HOST-PID`) into the file so that a refused daemon can say which
//! one runs. The file is never deleted: a daemon that removed it on exit could let two later daemons
//! lock two different files of the same name. A file system that cannot lock (`ENOLCK` on some network
//! mounts) is an error naming the file, never a silent pass.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// What is appended to the database file's name to name its lock file.
pub const SUFFIX: &str = ".daemon.lock";

/// Why `run` may not dispatch on this SQLite database.
#[derive(Debug, thiserror::Error)]
pub enum DaemonLockError {
    /// Another process holds the lock. `holder` is the id it wrote (`HOST-PID`).
    #[error(
        "another daemon ({holder}) is running on this SQLite database; SQLite allows one daemon (use PostgreSQL for several)"
    )]
    Held { holder: String, path: PathBuf },
    /// The lock file could not be opened, locked or written.
    #[error("cannot take the daemon lock {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// The one-daemon lock of a SQLite database, held until this value is dropped or the process dies.
#[derive(Debug)]
pub struct DaemonLock {
    /// Holds the lock: closing the file releases it.
    file: File,
    path: PathBuf,
}

impl DaemonLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DaemonLock {
    fn drop(&mut self) {
        // Closing the file would release the lock as well; unlocking first says so. The file stays.
        let _ = self.file.unlock();
    }
}

/// The lock file of the database at `database_path`: beside the database file itself, after symbolic
/// links are followed (where SQLite also puts its `-wal` and `-shm` files).
pub fn lock_path(database_path: &Path) -> PathBuf {
    let database = std::fs::canonicalize(database_path).unwrap_or_else(|_| database_path.into());
    let mut name = database.into_os_string();
    name.push(SUFFIX);
    PathBuf::from(name)
}

/// Takes the lock of the database at `database_path` for the daemon `instance_id`, without waiting: a
/// lock held by another process (or by another [`DaemonLock`] of this one) is
/// [`DaemonLockError::Held`], naming the holder.
pub fn acquire(database_path: &Path, instance_id: &str) -> Result<DaemonLock, DaemonLockError> {
    let path = lock_path(database_path);
    let io = |error| DaemonLockError::Io {
        path: path.clone(),
        error,
    };
    let mut options = OpenOptions::new();
    // Never truncate on open: the file names the current holder until the lock is ours.
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        // Readable and writable by whoever may write the database, like SQLite's own -wal and -shm.
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if let Ok(meta) = std::fs::metadata(database_path) {
            options.mode(meta.permissions().mode() & 0o666);
        }
    }
    let mut file = options.open(&path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            // Best effort: the holder may be between taking the lock and writing its id.
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "unknown".to_string(),
                id => id.to_string(),
            };
            return Err(DaemonLockError::Held { holder, path });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(format!("{instance_id}\n").as_bytes())
        .map_err(io)?;
    Ok(DaemonLock { file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(dir: &Path) -> PathBuf {
        let db = dir.join("notices.db");
        std::fs::write(&db, b"").unwrap();
        db
    }

    fn held_by(result: Result<DaemonLock, DaemonLockError>) -> String {
        match result {
            Err(DaemonLockError::Held { holder, .. }) => holder,
            Err(e) => panic!("expected Held, got {e}"),
            Ok(lock) => panic!("a second lock was granted: {}", lock.path().display()),
        }
    }

    #[test]
    fn lock_file_is_beside_the_database_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let db = database(dir.path());
        let lock = acquire(&db, "host-1").unwrap();
        let expected = std::fs::canonicalize(dir.path())
            .unwrap()
            .join("notices.db.daemon.lock");
        assert_eq!(lock.path(), expected);
        assert_eq!(std::fs::read_to_string(&expected).unwrap(), "host-1\n");
    }

    #[test]
    fn a_second_lock_is_refused_even_in_the_same_process() {
        let dir = tempfile::tempdir().unwrap();
        let db = database(dir.path());
        let _first = acquire(&db, "host-1").unwrap();
        let second = acquire(&db, "host-2");
        let message = second.as_ref().map(|_| ()).unwrap_err().to_string();
        assert_eq!(
            message,
            "another daemon (host-1) is running on this SQLite database; SQLite allows one daemon (use PostgreSQL for several)"
        );
        assert_eq!(held_by(second), "host-1");
        // The refused one did not overwrite the holder's id.
        assert_eq!(std::fs::read_to_string(lock_path(&db)).unwrap(), "host-1\n");
    }

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_to_the_database_shares_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = database(dir.path());
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&db, &link).unwrap();
        let _first = acquire(&db, "host-1").unwrap();
        assert_eq!(held_by(acquire(&link, "host-2")), "host-1");
    }

    #[test]
    fn dropping_the_lock_releases_it_and_keeps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = database(dir.path());
        let first = acquire(&db, "a-much-longer-host-name-1").unwrap();
        let path = first.path().to_path_buf();
        drop(first);
        assert!(path.exists(), "the lock file is never deleted");
        let second = acquire(&db, "host-2").unwrap();
        assert_eq!(
            std::fs::read_to_string(second.path()).unwrap(),
            "host-2\n",
            "the new holder's id replaces the old one entirely"
        );
    }

    #[test]
    fn an_unwritable_place_is_an_error_naming_the_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("missing").join("notices.db");
        let e = acquire(&db, "host-1").unwrap_err();
        assert!(matches!(e, DaemonLockError::Io { .. }), "{e:?}");
        let message = e.to_string();
        assert!(
            message.contains("missing/notices.db.daemon.lock"),
            "{message}"
        );
    }
}
