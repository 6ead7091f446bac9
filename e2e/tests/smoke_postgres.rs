//! PostgreSQL from Debian's packages: a throwaway cluster, one database per test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use sqlx::{Connection, PgConnection, Row};

#[tokio::test]
async fn each_test_gets_an_empty_database_it_can_migrate() {
    let first = larder_e2e::postgres::database("smoke-a");
    let second = larder_e2e::postgres::database("smoke-b");
    assert_ne!(first, second);

    let mut conn = PgConnection::connect(&first).await.unwrap();
    sqlx::raw_sql("CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t VALUES ($1, $2)")
        .bind(7_i64)
        .bind("seven")
        .execute(&mut conn)
        .await
        .unwrap();
    let row = sqlx::query("SELECT name FROM t WHERE id = 7")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("name"), "seven");

    // The other test's database does not see this one's table.
    let mut other = PgConnection::connect(&second).await.unwrap();
    let missing = sqlx::query("SELECT 1 FROM t").fetch_one(&mut other).await;
    assert!(missing.is_err(), "table leaked across test databases");
}
