//! Schema versions: the migrations built into this binary, and how the database's compare with them.
//!
//! Every command except `migrate` refuses a database whose schema is behind (run `migrate`), ahead (a
//! newer binary migrated it: upgrade this one) or altered (a built-in migration's checksum differs).

use sqlx::migrate::Migrator;

use super::{Result, StoreError};

/// PostgreSQL migrations, embedded at build time from `migrations/postgres/`.
pub static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
/// SQLite migrations, embedded at build time from `migrations/sqlite/`.
pub static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");

/// A migration recorded in the database's `_sqlx_migrations` table.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AppliedMigration {
    pub version: i64,
    pub checksum: Vec<u8>,
    pub success: bool,
}

/// How the database's schema compares with this binary's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaState {
    /// No migration has ever run here.
    Empty { known: i64 },
    /// Some built-in migrations are not applied yet.
    Behind { applied: Vec<i64>, known: i64 },
    /// Exactly the binary's migrations.
    Current { version: i64 },
    /// The database has migrations this binary does not know.
    Ahead { applied: i64, known: i64 },
    /// A migration with a known version was changed after it was applied, or failed half-way.
    Modified { version: i64 },
}

impl SchemaState {
    /// The operator-facing problem, or `None` when the schema is current.
    pub fn problem(&self) -> Option<String> {
        match self {
            SchemaState::Current { .. } => None,
            SchemaState::Empty { known } => Some(format!(
                "the database has no breach-notifier schema (this binary expects version {known}): run `breach-notifier migrate` first"
            )),
            SchemaState::Behind { applied, known } => Some(format!(
                "the database schema is behind this binary (database at version {}, binary expects {known}): run `breach-notifier migrate` (if a migration is running now, wait for it to finish)",
                applied.last().copied().unwrap_or(0)
            )),
            SchemaState::Ahead { applied, known } => Some(format!(
                "the database schema (version {applied}) is newer than this binary (version {known}): a newer breach-notifier migrated it; upgrade this binary (see docs/deploy.md)"
            )),
            SchemaState::Modified { version } => Some(format!(
                "the database's migration {version} does not match this binary's (changed after it was applied, or it failed half-way); restore the database or ask the developers"
            )),
        }
    }

    /// The versions applied, when that is meaningful.
    pub fn applied(&self) -> Vec<i64> {
        match self {
            SchemaState::Behind { applied, .. } => applied.clone(),
            SchemaState::Current { version } => (1..=*version).collect(),
            _ => Vec::new(),
        }
    }

    /// The schema version the database is at (0 when empty).
    pub fn version(&self) -> i64 {
        match self {
            SchemaState::Empty { .. } => 0,
            SchemaState::Behind { applied, .. } => applied.last().copied().unwrap_or(0),
            SchemaState::Current { version } => *version,
            SchemaState::Ahead { applied, .. } => *applied,
            SchemaState::Modified { version } => *version,
        }
    }
}

/// Compares `applied` (None: no migrations table) with the migrator's list.
pub fn state(migrator: &Migrator, applied: Option<Vec<AppliedMigration>>) -> Result<SchemaState> {
    let known: Vec<_> = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .collect();
    let latest = known.iter().map(|m| m.version).max().unwrap_or(0);
    let Some(applied) = applied.filter(|a| !a.is_empty()) else {
        return Ok(SchemaState::Empty { known: latest });
    };
    let mut versions = Vec::new();
    for row in &applied {
        match known.iter().find(|m| m.version == row.version) {
            None => {
                let newest = applied
                    .iter()
                    .map(|m| m.version)
                    .max()
                    .unwrap_or(row.version);
                return Ok(SchemaState::Ahead {
                    applied: newest,
                    known: latest,
                });
            }
            Some(m) if !row.success || m.checksum.as_ref() != row.checksum.as_slice() => {
                return Ok(SchemaState::Modified {
                    version: row.version,
                });
            }
            Some(_) => versions.push(row.version),
        }
    }
    versions.sort_unstable();
    if versions.len() == known.len() {
        Ok(SchemaState::Current { version: latest })
    } else {
        Ok(SchemaState::Behind {
            applied: versions,
            known: latest,
        })
    }
}

/// Maps a missing `_sqlx_migrations` table to `None`.
pub(crate) fn absent_table_is_none<T>(
    result: std::result::Result<T, sqlx::Error>,
) -> Result<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(sqlx::Error::Database(e))
            if e.message().contains("_sqlx_migrations")
                && (e.message().contains("does not exist")
                    || e.message().contains("no such table")) =>
        {
            Ok(None)
        }
        Err(e) => Err(StoreError::Database(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(migrator: &Migrator) -> Vec<(i64, String)> {
        migrator
            .iter()
            .map(|m| (m.version, m.description.to_string()))
            .collect()
    }

    /// Both dialects' folders hold the same migrations (version and name), so that a schema version
    /// means the same on both backends.
    #[test]
    fn both_dialects_have_the_same_migrations() {
        assert_eq!(versions(&POSTGRES), versions(&SQLITE));
        assert!(!versions(&POSTGRES).is_empty());
    }
}
