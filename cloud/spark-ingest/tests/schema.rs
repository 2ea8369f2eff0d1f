//! Indexes other services rely on: spark-api finds a meter by id through `roster_meters`, and
//! that lookup must use `roster_meters_meter_id`, not scan every roster.

mod common;

use common::{Kind, TestDb};

const LOOKUP: &str = "SELECT gateway, position FROM roster_meters WHERE meter_id = $1 \
                      ORDER BY gateway";

#[tokio::test]
async fn meter_lookup_uses_the_index_sqlite() {
    let db = TestDb::new(Kind::Sqlite).await;
    let store = db.store().await;
    drop(store);
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    let plan: Vec<(i64, i64, i64, String)> =
        sqlx::query_as(&format!("EXPLAIN QUERY PLAN {}", LOOKUP.replace("$1", "?")))
            .bind("MTR-1")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let text: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("COVERING INDEX roster_meters_meter_id")),
        "{text:?}"
    );
}

#[tokio::test]
async fn meter_lookup_uses_the_index_postgres() {
    let db = TestDb::new(Kind::Postgres).await;
    let store = db.store().await;
    drop(store);
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    // A table this small would be scanned anyway; ask the planner what it would do otherwise.
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut conn)
        .await
        .unwrap();
    let plan: Vec<(String,)> = sqlx::query_as(&format!("EXPLAIN {LOOKUP}"))
        .bind("MTR-1")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let text: Vec<&str> = plan.iter().map(|r| r.0.as_str()).collect();
    assert!(
        text.iter().any(|t| t.contains("roster_meters_meter_id")),
        "{text:?}"
    );
}
