//! Where the collector keeps its work tables on PostgreSQL (`gc_live`, `gc_sweep`,
//! `gc_sweep_refs`): unlogged tables that several connections read, or, for a user
//! who may not create tables in the schema, temporary tables of one connection.

use std::borrow::Cow;

use sqlx::{AnyConnection, Row};

use super::{DbError, QueryContext};

/// How the collector keeps its work tables on PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WorkTables {
    /// Unlogged tables in the schema, which every lane (connection) reads. The run lock
    /// keeps other runs out; each step drops them, the next drops what a crash left.
    Shared,
    /// Temporary tables of one connection, which go with it: one lane only.
    Private,
}

impl WorkTables {
    /// Shared when the connection's user may create tables in its current schema.
    pub(crate) async fn choose(conn: &mut AnyConnection) -> Result<Self, DbError> {
        let may_create: bool =
            sqlx::query("SELECT COALESCE(has_schema_privilege(current_schema(), 'CREATE'), FALSE)")
                .fetch_one(&mut *conn)
                .await
                .and_then(|r| r.try_get(0))
                .context("check whether the collector may create its work tables")?;
        if !may_create {
            tracing::info!(
                "the database user may not create tables in the schema: garbage collection \
                 keeps its work tables in one connection and runs on it alone"
            );
        }
        Ok(if may_create {
            Self::Shared
        } else {
            Self::Private
        })
    }

    /// How many connections may work at once, of `wanted`.
    pub(crate) fn lanes(self, wanted: usize) -> usize {
        match self {
            Self::Shared => wanted.max(1),
            Self::Private => 1,
        }
    }

    /// A statement written for shared tables, as these tables need it; `None` when it
    /// has nothing to do (dropping: temporary tables go with their connection, which
    /// is a fresh one for each step).
    pub(crate) fn adapt(self, sql: &'static str) -> Option<Cow<'static, str>> {
        match self {
            Self::Shared => Some(Cow::Borrowed(sql)),
            Self::Private if sql.starts_with("DROP TABLE") => None,
            Self::Private => Some(Cow::Owned(sql.replacen(
                "CREATE UNLOGGED TABLE",
                "CREATE TEMP TABLE",
                1,
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_tables_are_temporary_and_never_dropped_by_name() {
        let create = "CREATE UNLOGGED TABLE gc_live (h BIGINT NOT NULL)";
        assert_eq!(
            WorkTables::Private.adapt(create).as_deref(),
            Some("CREATE TEMP TABLE gc_live (h BIGINT NOT NULL)")
        );
        assert_eq!(
            WorkTables::Private.adapt("DROP TABLE IF EXISTS gc_live"),
            None
        );
        assert_eq!(WorkTables::Shared.adapt(create).as_deref(), Some(create));
        assert_eq!(
            WorkTables::Private.adapt("ANALYZE gc_live").as_deref(),
            Some("ANALYZE gc_live")
        );
        assert_eq!(
            (WorkTables::Shared.lanes(2), WorkTables::Private.lanes(2)),
            (2, 1)
        );
    }
}
