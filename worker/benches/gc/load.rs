//! Bulk loads of the synthetic cache into Larder's and niks3's schemas, by COPY with
//! the big tables' indexes dropped and rebuilt afterwards (as a restore would).

use std::fmt::Write as _;

use sqlx::postgres::PgCopyIn;
use sqlx::{Connection, Executor, PgConnection, Row};

use crate::dataset::{Dataset, PENDING_SESSIONS};

/// Buffered rows of one `COPY … FROM STDIN`.
struct Copy<'c> {
    copy: PgCopyIn<&'c mut PgConnection>,
    buf: String,
}

impl<'c> Copy<'c> {
    async fn begin(conn: &'c mut PgConnection, statement: &str) -> Copy<'c> {
        let copy = conn.copy_in_raw(statement).await.unwrap();
        Copy {
            copy,
            buf: String::with_capacity(2 << 20),
        }
    }

    /// Call after writing each row (without its newline) into `buf`.
    async fn end_row(&mut self) {
        self.buf.push('\n');
        if self.buf.len() >= 1 << 20 {
            self.copy
                .send(std::mem::take(&mut self.buf).into_bytes())
                .await
                .unwrap();
            self.buf.reserve(2 << 20);
        }
    }

    async fn finish(mut self) -> u64 {
        if !self.buf.is_empty() {
            self.copy
                .send(std::mem::take(&mut self.buf).into_bytes())
                .await
                .unwrap();
        }
        self.copy.finish().await.unwrap()
    }
}

async fn exec(conn: &mut PgConnection, sql: &str) {
    conn.execute(sqlx::AssertSqlSafe(sql.to_string()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Drops the primary keys and indexes of `tables`, returning the statements that
/// rebuild them exactly as the schema defined them.
async fn drop_indexes(conn: &mut PgConnection, tables: &[&str]) -> Vec<String> {
    let tables: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
    let constraints = sqlx::query(
        "SELECT format('ALTER TABLE %s ADD CONSTRAINT %I %s', conrelid::regclass, conname, \
         pg_get_constraintdef(oid)), \
         format('ALTER TABLE %s DROP CONSTRAINT %I', conrelid::regclass, conname) \
         FROM pg_constraint WHERE contype IN ('p', 'u') \
         AND conrelid::regclass::text = ANY($1)",
    )
    .bind(&tables)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let indexes = sqlx::query(
        "SELECT pg_get_indexdef(i.indexrelid), format('DROP INDEX %s', i.indexrelid::regclass) \
         FROM pg_index i WHERE i.indrelid::regclass::text = ANY($1) \
         AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
    )
    .bind(&tables)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let mut restore = Vec::new();
    for row in indexes.iter().chain(constraints.iter()) {
        exec(conn, &row.get::<String, _>(1)).await;
    }
    for row in constraints.iter().chain(indexes.iter()) {
        restore.push(row.get::<String, _>(0));
    }
    restore
}

async fn rebuild(conn: &mut PgConnection, restore: &[String]) {
    for sql in restore {
        exec(conn, sql).await;
    }
}

/// What a load wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct Loaded {
    pub objects: u64,
    pub refs: u64,
    pub roots: u64,
    pub pins: u64,
    pub pending_objects: u64,
}

/// Loads `ds` into a database Larder has just migrated; `now` is Unix ms.
pub async fn larder(url: &str, ds: &Dataset, now: i64) -> Loaded {
    let mut conn = PgConnection::connect(url).await.unwrap();
    exec(&mut conn, "SET maintenance_work_mem = '256MB'").await;
    let restore = drop_indexes(&mut conn, &["objects", "refs"]).await;
    let mut loaded = Loaded::default();

    let mut c = Copy::begin(
        &mut conn,
        "COPY objects (key, kind, nar_size, file_size, created_at, touched_at, touched_epoch) \
         FROM STDIN",
    )
    .await;
    for i in 0..ds.paths {
        let p = ds.path(i);
        let t = now - p.age;
        let _ = write!(c.buf, "{}.narinfo\t0\t\\N\t\\N\t{t}\t{t}\t0", p.hash);
        c.end_row().await;
        let _ = write!(
            c.buf,
            "{}\t1\t{}\t{}\t{t}\t{t}\t0",
            p.nar, p.nar_size, p.file_size
        );
        c.end_row().await;
        let _ = write!(c.buf, "{}.ls\t2\t\\N\t\\N\t{t}\t{t}\t0", p.hash);
        c.end_row().await;
    }
    loaded.objects = c.finish().await;

    let mut c = Copy::begin(&mut conn, "COPY refs (from_key, to_key) FROM STDIN").await;
    for i in 0..ds.paths {
        let p = ds.path(i);
        let _ = write!(c.buf, "{0}.narinfo\t{1}", p.hash, p.nar);
        c.end_row().await;
        let _ = write!(c.buf, "{0}.narinfo\t{0}.ls", p.hash);
        c.end_row().await;
        for &d in &p.deps {
            let _ = write!(c.buf, "{}.narinfo\t{}.narinfo", p.hash, ds.hash(d));
            c.end_row().await;
        }
    }
    loaded.refs = c.finish().await;

    let mut c = Copy::begin(
        &mut conn,
        "COPY closures (key, created_at, updated_at) FROM STDIN",
    )
    .await;
    for i in 0..ds.paths {
        if let Some(age) = ds.path(i).root_age {
            let t = now - age;
            let _ = write!(c.buf, "{}.narinfo\t{t}\t{t}", ds.hash(i));
            c.end_row().await;
        }
    }
    loaded.roots = c.finish().await;

    for i in ds.pins() {
        let hash = ds.hash(i);
        sqlx::query(
            "INSERT INTO pins (name, store_path, narinfo_key, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(format!("pin-{i}"))
        .bind(format!("/nix/store/{hash}-pinned"))
        .bind(format!("{hash}.narinfo"))
        .bind(now)
        .execute(&mut conn)
        .await
        .unwrap();
        loaded.pins += 1;
    }

    for s in 0..PENDING_SESSIONS {
        let paths = ds.pending(s);
        sqlx::query(
            "INSERT INTO pending_closures (id, closure_key, started_at, epoch) \
             VALUES ($1, $2, $3, 1)",
        )
        .bind(s as i64 + 1)
        .bind(ds.narinfo_key(paths[0]))
        .bind(now - 60_000)
        .execute(&mut conn)
        .await
        .unwrap();
        let mut c = Copy::begin(
            &mut conn,
            "COPY pending_objects (pending_id, key, kind, refs, needs_upload) FROM STDIN",
        )
        .await;
        for &i in &paths {
            let p = ds.path(i);
            for (key, kind) in [
                (format!("{}.narinfo", p.hash), 0),
                (p.nar.clone(), 1),
                (format!("{}.ls", p.hash), 2),
            ] {
                let _ = write!(c.buf, "{}\t{key}\t{kind}\t[]\t0", s + 1);
                c.end_row().await;
            }
        }
        loaded.pending_objects += c.finish().await;
    }
    exec(
        &mut conn,
        "SELECT setval(pg_get_serial_sequence('pending_closures', 'id'), \
         (SELECT MAX(id) FROM pending_closures))",
    )
    .await;

    rebuild(&mut conn, &restore).await;
    exec(&mut conn, "VACUUM ANALYZE").await;
    exec(&mut conn, "CHECKPOINT").await;
    loaded
}

/// Loads `ds` into a database niks3-server has just migrated.
pub async fn niks3(url: &str, ds: &Dataset) -> Loaded {
    let mut conn = PgConnection::connect(url).await.unwrap();
    exec(&mut conn, "SET maintenance_work_mem = '256MB'").await;
    let restore = drop_indexes(&mut conn, &["objects"]).await;
    let mut loaded = Loaded::default();

    let mut c = Copy::begin(&mut conn, "COPY objects (key, refs) FROM STDIN").await;
    for i in 0..ds.paths {
        let p = ds.path(i);
        let _ = write!(c.buf, "{0}.narinfo\t{{{1},{0}.ls", p.hash, p.nar);
        for &d in &p.deps {
            let _ = write!(c.buf, ",{}.narinfo", ds.hash(d));
        }
        c.buf.push('}');
        c.end_row().await;
        let _ = write!(c.buf, "{}\t{{}}", p.nar);
        c.end_row().await;
        let _ = write!(c.buf, "{}.ls\t{{}}", p.hash);
        c.end_row().await;
        loaded.refs += 2 + p.deps.len() as u64;
    }
    loaded.objects = c.finish().await;

    // Its timestamps are UTC `timestamp`s from the database clock: ages go through a
    // staging table so the same clock dates them.
    exec(
        &mut conn,
        "CREATE TEMP TABLE ages (key text, age_ms bigint)",
    )
    .await;
    let mut c = Copy::begin(&mut conn, "COPY ages (key, age_ms) FROM STDIN").await;
    for i in 0..ds.paths {
        if let Some(age) = ds.path(i).root_age {
            let _ = write!(c.buf, "{}.narinfo\t{age}", ds.hash(i));
            c.end_row().await;
        }
    }
    loaded.roots = c.finish().await;
    exec(
        &mut conn,
        "INSERT INTO closures (key, updated_at) SELECT key, \
         timezone('UTC', now()) - age_ms * interval '1 millisecond' FROM ages",
    )
    .await;

    for i in ds.pins() {
        let hash = ds.hash(i);
        sqlx::query("INSERT INTO pins (name, narinfo_key, store_path) VALUES ($1, $2, $3)")
            .bind(format!("pin-{i}"))
            .bind(format!("{hash}.narinfo"))
            .bind(format!("/nix/store/{hash}-pinned"))
            .execute(&mut conn)
            .await
            .unwrap();
        loaded.pins += 1;
    }

    for s in 0..PENDING_SESSIONS {
        let paths = ds.pending(s);
        let id: i64 = sqlx::query(
            "INSERT INTO pending_closures (key, started_at) \
             VALUES ($1, timezone('UTC', now()) - interval '1 minute') RETURNING id",
        )
        .bind(ds.narinfo_key(paths[0]))
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
        let mut c = Copy::begin(
            &mut conn,
            "COPY pending_objects (pending_closure_id, key, refs) FROM STDIN",
        )
        .await;
        for &i in &paths {
            let p = ds.path(i);
            for key in [
                format!("{}.narinfo", p.hash),
                p.nar.clone(),
                format!("{}.ls", p.hash),
            ] {
                let _ = write!(c.buf, "{id}\t{key}\t{{}}");
                c.end_row().await;
            }
        }
        loaded.pending_objects += c.finish().await;
    }

    rebuild(&mut conn, &restore).await;
    exec(&mut conn, "VACUUM ANALYZE").await;
    exec(&mut conn, "CHECKPOINT").await;
    loaded
}
