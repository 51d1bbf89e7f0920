//! One refresh on each session store, against the store's bare round trip in the same run
//! (`PING` for Redis; `SELECT 1` and a one-row `UPDATE` for PostgreSQL, whose commit flushes
//! the WAL like a refresh's does), plus the round trips a refresh takes.
//!
//! Uses the machine's Redis and PostgreSQL (`PALISADE_REDIS_URL`, `PALISADE_DATABASE_URL`).

use std::cell::RefCell;
use std::hint::black_box;
use std::str::FromStr as _;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade::core::KeyRing;
use palisade::sessions::{
    DeviceBinding, MemoryStore, PostgresStore, RedisStore, RefreshSessions, RefreshStore,
};

fn ring() -> KeyRing {
    KeyRing::parse("k1 1 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=").expect("ring")
}

fn redis_url() -> String {
    std::env::var("PALISADE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn database_url() -> String {
    std::env::var("PALISADE_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Benches a chain of refreshes: each iteration spends the token the previous one issued.
fn bench_refresh<S: RefreshStore>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    store: S,
) {
    let sessions = RefreshSessions::new(store, ring());
    let device = DeviceBinding::new("bench-device", b"ua=bench");
    let (_, first) = rt
        .block_on(sessions.start("bench-user", &device))
        .expect("start");
    let current = RefCell::new(first);
    c.bench_function(&format!("sessions/{name}/refresh"), |b| {
        b.iter(|| {
            let token = current.borrow().expose().to_owned();
            let next = rt
                .block_on(sessions.refresh(black_box(&token), &device))
                .expect("refresh");
            *current.borrow_mut() = next.token;
        })
    });
}

fn sessions(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    bench_refresh(c, &rt, "memory", MemoryStore::new());

    // Redis: one EVALSHA per refresh.
    let prefix = format!("palisade-bench:{}", std::process::id());
    let redis = rt
        .block_on(RedisStore::connect(&redis_url(), &prefix))
        .expect("redis");
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = rt
        .block_on(client.get_multiplexed_async_connection())
        .expect("redis connection");
    c.bench_function("sessions/redis/ping", |b| {
        b.iter(|| {
            let pong: String = rt
                .block_on(redis::cmd("PING").query_async(&mut conn))
                .expect("ping");
            black_box(pong)
        })
    });
    let evalsha_calls = |conn: &mut redis::aio::MultiplexedConnection| -> u64 {
        let info: String = rt
            .block_on(redis::cmd("INFO").arg("commandstats").query_async(conn))
            .expect("info");
        info.lines()
            .find(|l| l.starts_with("cmdstat_evalsha:"))
            .and_then(|l| l.split("calls=").nth(1))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // Round trips: count script calls over 100 refreshes (after one warm-up that loads it).
    {
        let sessions = RefreshSessions::new(redis.clone(), ring());
        let device = DeviceBinding::new("count", b"x");
        let (_, mut token) = rt
            .block_on(sessions.start("count-user", &device))
            .expect("start");
        token = rt
            .block_on(sessions.refresh(token.expose(), &device))
            .expect("warm")
            .token;
        let before = evalsha_calls(&mut conn);
        for _ in 0..100 {
            token = rt
                .block_on(sessions.refresh(token.expose(), &device))
                .expect("refresh")
                .token;
        }
        let per = (evalsha_calls(&mut conn) - before) as f64 / 100.0;
        println!("redis: {per:.2} EVALSHA round trips per refresh");
    }
    bench_refresh(c, &rt, "redis", redis);
    let keys: Vec<String> = rt
        .block_on(
            redis::cmd("KEYS")
                .arg(format!("{prefix}:*"))
                .query_async(&mut conn),
        )
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<(), _> = rt.block_on(redis::cmd("DEL").arg(keys).query_async(&mut conn));
    }

    // PostgreSQL: one transaction per refresh, in a schema of its own.
    let schema = format!("palisade_bench_{}", std::process::id());
    let admin = rt
        .block_on(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&database_url()),
        )
        .expect("postgres");
    rt.block_on(sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).execute(&admin))
        .expect("schema");
    let options = sqlx::postgres::PgConnectOptions::from_str(&database_url())
        .expect("url")
        .options([("search_path", schema.as_str())]);
    let pg = rt
        .block_on(PostgresStore::connect(options))
        .expect("postgres store");
    rt.block_on(pg.migrate()).expect("migrate");
    c.bench_function("sessions/postgres/select1", |b| {
        b.iter(|| {
            let one: i32 = rt
                .block_on(sqlx::query_scalar("SELECT 1").fetch_one(&admin))
                .expect("select 1");
            black_box(one)
        })
    });
    // A bare one-row write in its own transaction: its commit (WAL flush) is the floor of any
    // durable refresh.
    rt.block_on(sqlx::raw_sql(&format!(
        "CREATE TABLE {schema}.counter (n BIGINT NOT NULL); INSERT INTO {schema}.counter VALUES (0)"
    )).execute(&admin)).expect("counter");
    let update = format!("UPDATE {schema}.counter SET n = n + 1");
    c.bench_function("sessions/postgres/update1", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(sqlx::query(&update).execute(&admin))
                    .expect("update"),
            )
        })
    });
    bench_refresh(c, &rt, "postgres", pg);
    rt.block_on(sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&admin))
        .expect("drop schema");
}

criterion_group!(benches, sessions);
criterion_main!(benches);
