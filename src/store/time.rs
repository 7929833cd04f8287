//! One time type for both dialects, so that a query shared by the backends binds and reads times the
//! same way: `timestamptz` on PostgreSQL, INTEGER milliseconds since the Unix epoch (UTC) on SQLite,
//! as `docs/database.md` specifies. sqlx's own `DateTime<Utc>` cannot serve SQLite: it writes text
//! and reads an integer as seconds.
//!
//! Bind a [`DbTime`] (or `Option<DbTime>`); decode rows with `#[sqlx(try_from = "DbTime")]` on a
//! `DateTime<Utc>` field and `#[sqlx(try_from = "DbTimeOpt")]` on an `Option<DateTime<Utc>>` one.

use chrono::{DateTime, TimeZone, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Database, Decode, Encode, Postgres, Sqlite, Type, ValueRef};

/// A point in time as the database stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DbTime(pub DateTime<Utc>);

/// A nullable time column, for row decoding (`NULL` is `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbTimeOpt(pub Option<DateTime<Utc>>);

impl DbTime {
    /// Milliseconds since the epoch, the SQLite dialect's time representation.
    pub fn millis(self) -> i64 {
        self.0.timestamp_millis()
    }

    /// The inverse of [`DbTime::millis`] (out-of-range values read as the epoch).
    pub fn from_millis(ms: i64) -> DbTime {
        DbTime(Utc.timestamp_millis_opt(ms).single().unwrap_or_default())
    }
}

impl From<DateTime<Utc>> for DbTime {
    fn from(t: DateTime<Utc>) -> Self {
        DbTime(t)
    }
}

impl From<DbTime> for DateTime<Utc> {
    fn from(t: DbTime) -> Self {
        t.0
    }
}

impl From<DbTimeOpt> for Option<DateTime<Utc>> {
    fn from(t: DbTimeOpt) -> Self {
        t.0
    }
}

impl Type<Postgres> for DbTime {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for DbTime {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for DbTime {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        <DateTime<Utc> as Decode<Postgres>>::decode(value).map(DbTime)
    }
}

impl Type<Sqlite> for DbTime {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for DbTime {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<Sqlite>>::encode_by_ref(&self.millis(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for DbTime {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        <i64 as Decode<Sqlite>>::decode(value).map(DbTime::from_millis)
    }
}

/// `DbTimeOpt` is `DbTime` that reads `NULL` as `None`, on either backend.
impl<DB: Database> Type<DB> for DbTimeOpt
where
    DbTime: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <DbTime as Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <DbTime as Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for DbTimeOpt
where
    DbTime: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
        if value.is_null() {
            return Ok(DbTimeOpt(None));
        }
        <DbTime as Decode<DB>>::decode(value).map(|t| DbTimeOpt(Some(t.0)))
    }
}

/// Binds an optional time.
pub fn opt(t: Option<DateTime<Utc>>) -> Option<DbTime> {
    t.map(DbTime)
}
