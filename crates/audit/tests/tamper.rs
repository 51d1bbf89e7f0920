//! Tampering against the verifier, on every sink: each kind of change is found, at the right
//! record, for the right reason; untouched logs verify.

use palisade_audit::{
    AuditSink, Chain, Checkpoint, Event, FindingKind, JsonlSink, MemorySink, Outcome, Record,
    Verifier,
};
use palisade_core::{KeyRing, ManualClock};

const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const K2: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
const NOW: u64 = 1_800_000_000;

fn ring(text: &str) -> KeyRing {
    KeyRing::parse(text).expect("ring")
}

fn chain(ring: KeyRing) -> Chain {
    Chain::with_clock(ring, ManualClock::at_unix(NOW).shared()).checkpoint_every(4)
}

fn event(i: usize) -> Event {
    Event::new(
        format!("admin-{i}"),
        "user.update",
        format!("user-{i}"),
        Outcome::Success,
    )
    .org("org-1")
    .request_id(format!("req-{i}"))
    .detail("field", "email")
}

/// Ten events (and the checkpoint records among them), from a memory sink and from a JSON
/// Lines sink, as the verifier reads them.
async fn logs(ring: KeyRing) -> Vec<(&'static str, Vec<Result<Record, String>>, Checkpoint)> {
    let memory = MemorySink::with_chain(chain(ring.clone()));
    let dir = std::env::temp_dir().join(format!("palisade-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(format!("log-{}.jsonl", rand_suffix()));
    let jsonl = JsonlSink::open(&path, chain(ring)).expect("open");
    for i in 0..10 {
        memory.append(event(i)).await.expect("append");
        jsonl.append(event(i)).await.expect("append");
    }
    let from_file: Vec<_> = jsonl.read().expect("read").collect();
    let _ = std::fs::remove_file(&path);
    vec![
        (
            "memory",
            memory.records().into_iter().map(Ok).collect(),
            memory.checkpoint().await.expect("checkpoint"),
        ),
        (
            "jsonl",
            from_file,
            jsonl.checkpoint().await.expect("checkpoint"),
        ),
    ]
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

type Tamper = fn(&mut Vec<Result<Record, String>>);

/// A tampering, the line it must be found at, and the finding expected there.
type Case = (&'static str, Tamper, u64, fn(&FindingKind) -> bool);

fn edit(r: &mut Result<Record, String>, f: impl FnOnce(&mut Record)) {
    if let Ok(record) = r {
        f(record);
    }
}

fn cases() -> Vec<Case> {
    vec![
        (
            "a changed field",
            |l| edit(&mut l[2], |r| r.actor = "someone-else".into()),
            3,
            |k| *k == FindingKind::BadMac,
        ),
        (
            "a changed detail",
            |l| {
                edit(&mut l[2], |r| {
                    r.details.insert("field".into(), "role".into());
                })
            },
            3,
            |k| *k == FindingKind::BadMac,
        ),
        (
            "a deleted record",
            |l| drop(l.remove(2)),
            3,
            |k| {
                matches!(
                    k,
                    FindingKind::Sequence {
                        expected: 3,
                        found: 4
                    }
                )
            },
        ),
        (
            "an inserted record",
            |l| {
                let copy = l[1].clone();
                l.insert(2, copy);
            },
            3,
            |k| {
                matches!(
                    k,
                    FindingKind::Sequence {
                        expected: 3,
                        found: 2
                    }
                )
            },
        ),
        (
            "reordered records",
            |l| l.swap(2, 3),
            3,
            |k| matches!(k, FindingKind::Sequence { .. }),
        ),
        (
            "a deleted record, later ones renumbered",
            |l| {
                drop(l.remove(2));
                for r in l.iter_mut().skip(2) {
                    edit(r, |r| r.seq -= 1);
                }
            },
            3,
            |k| *k == FindingKind::BrokenChain,
        ),
        (
            "an unknown key",
            |l| edit(&mut l[2], |r| r.key_id = "k9".into()),
            3,
            |k| matches!(k, FindingKind::UnknownKey(id) if id == "k9"),
        ),
        (
            "an unreadable line",
            |l| l[4] = Err("not a record".into()),
            5,
            |k| matches!(k, FindingKind::Unreadable(_)),
        ),
    ]
}

#[tokio::test]
async fn every_kind_of_tampering_is_found_on_every_sink() {
    let good_ring = ring(&format!("k1 1 {K1}"));
    let verifier = Verifier::new(good_ring.clone());
    let cases = cases();
    for (sink, log, _) in logs(good_ring.clone()).await {
        assert!(
            verifier.verify(log.clone(), None).is_ok(),
            "{sink}: untouched log"
        );
        for (name, tamper, line, kind) in &cases {
            let mut copy = log.clone();
            tamper(&mut copy);
            let report = verifier.verify(copy, None);
            let finding = report
                .finding
                .clone()
                .unwrap_or_else(|| panic!("{sink}: {name}: not found"));
            assert_eq!(finding.line, *line, "{sink}: {name}: {finding:?}");
            assert!(kind(&finding.kind), "{sink}: {name}: {finding:?}");
        }
    }
}

#[tokio::test]
async fn a_truncated_tail_is_found_through_a_published_checkpoint() {
    let good_ring = ring(&format!("k1 1 {K1}"));
    let verifier = Verifier::new(good_ring.clone());
    for (sink, log, checkpoint) in logs(good_ring.clone()).await {
        assert!(
            verifier.verify(log.clone(), Some(&checkpoint)).is_ok(),
            "{sink}"
        );
        let mut cut = log.clone();
        cut.pop();
        let report = verifier.verify(cut, Some(&checkpoint));
        assert!(
            matches!(
                report.finding.map(|f| f.kind),
                Some(FindingKind::Truncated { .. })
            ),
            "{sink}"
        );
        // A forged checkpoint is refused before the log is read.
        let mut forged = checkpoint.clone();
        forged.seq += 1;
        let report = verifier.verify(log.clone(), Some(&forged));
        assert_eq!(
            report.finding.map(|f| f.kind),
            Some(FindingKind::BadCheckpoint),
            "{sink}"
        );
    }
}

#[tokio::test]
async fn keys_rotate_and_retired_or_foreign_keys_are_refused() {
    // Written with k1 alone, valid forever at the writer ...
    let writer = ring(&format!("k1 1 {K1}"));
    let (_, log, _) = logs(writer).await.remove(0);
    // ... read by a ring where k1 retired before the records were written.
    let retired = ring(&format!("k1 1 {K1} retire_after={}\nk2 2 {K2}", NOW - 10));
    let report = Verifier::new(retired).verify(log.clone(), None);
    assert_eq!(
        report.finding.map(|f| (f.line, f.kind)),
        Some((1, FindingKind::RetiredKey("k1".into())))
    );
    // A ring that never held k1.
    let foreign = ring(&format!("k2 2 {K2}"));
    let report = Verifier::new(foreign).verify(log.clone(), None);
    assert_eq!(
        report.finding.map(|f| f.kind),
        Some(FindingKind::UnknownKey("k1".into()))
    );
    // Rotation: k1 then k2 active; a ring holding both verifies the whole log.
    let both = ring(&format!(
        "k1 1 {K1} retire_after={}\nk2 2 {K2} not_before={}",
        NOW + 100,
        NOW + 50
    ));
    let clock = ManualClock::at_unix(NOW);
    let sink = MemorySink::with_chain(Chain::with_clock(both.clone(), clock.shared()));
    sink.append(event(1)).await.expect("k1");
    clock.advance(std::time::Duration::from_secs(60));
    let second = sink.append(event(2)).await.expect("k2");
    assert_eq!(second.key_id, "k2");
    let records: Vec<_> = sink.records().into_iter().map(Ok).collect();
    assert!(Verifier::new(both).verify(records, None).is_ok());
}

#[tokio::test]
async fn many_writers_never_fork_one_chain_and_a_reopened_file_continues_it() {
    let good_ring = ring(&format!("k1 1 {K1}"));
    let dir = std::env::temp_dir().join(format!("palisade-audit-w-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("log.jsonl");
    let sink =
        JsonlSink::open(&path, Chain::new(good_ring.clone()).checkpoint_every(7)).expect("open");
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let sink = sink.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    sink.append(event(w * 100 + i)).await.expect("append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    drop(sink);
    let reopened =
        JsonlSink::open(&path, Chain::new(good_ring.clone()).checkpoint_every(7)).expect("reopen");
    reopened.append(event(999)).await.expect("append");
    let report = Verifier::new(good_ring).verify(
        reopened.read().expect("read"),
        Some(&reopened.checkpoint().await.expect("cp")),
    );
    assert!(report.is_ok(), "{report:?}");
    // 201 events and a checkpoint record after every 7th record.
    let events = 201u64;
    assert!(
        report.records > events && report.records < events + events / 6 + 2,
        "{}",
        report.records
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn secrets_and_oversized_events_are_refused() {
    let sink = MemorySink::new(ring(&format!("k1 1 {K1}")));
    for name in [
        "password",
        "refresh_token",
        "Authorization",
        "client_secret",
        "session_cookie",
    ] {
        let refused = sink.append(event(1).detail(name, "x")).await;
        assert!(refused.is_err(), "{name}");
    }
    assert!(
        sink.append(event(1).detail("note", "x".repeat(2_000)))
            .await
            .is_err()
    );
    assert!(sink.records().is_empty());
    // No key: nothing is written, and the error says so.
    let empty = MemorySink::new(ring(&format!("k1 1 {K1} not_before={}", u64::MAX / 2)));
    assert!(empty.append(event(1)).await.is_err());
}

#[tokio::test]
async fn one_changed_byte_of_the_file_is_found() {
    let good_ring = ring(&format!("k1 1 {K1}"));
    let dir = std::env::temp_dir().join(format!("palisade-audit-b-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("log.jsonl");
    let sink = JsonlSink::open(&path, chain(good_ring.clone())).expect("open");
    for i in 0..6 {
        sink.append(event(i)).await.expect("append");
    }
    let original = std::fs::read(&path).expect("read");
    let verify = |bytes: &[u8]| {
        std::fs::write(&path, bytes).expect("write");
        Verifier::new(good_ring.clone()).verify(sink.read().expect("read"), None)
    };
    assert!(verify(&original).is_ok());
    // Every single-byte change of the file, at a stride through it, is found.
    for at in (0..original.len()).step_by(7) {
        let mut bytes = original.clone();
        bytes[at] ^= 0x01;
        let report = verify(&bytes);
        assert!(!report.is_ok(), "byte {at} changed, log still verified");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_lagging_clock_never_signs_with_a_key_retired_at_the_stamp() {
    // k1 retires at NOW+10; k2 is valid from NOW+5.
    let keys = format!(
        "k1 1 {K1} retire_after={}\nk2 2 {K2} not_before={}",
        NOW + 10,
        NOW + 5
    );
    let clock = ManualClock::at_unix(NOW + 20);
    let sink = MemorySink::with_chain(Chain::with_clock(ring(&keys), clock.shared()));
    sink.append(event(0)).await.expect("append");
    // This writer's clock falls back to before k2: the record still carries the later time,
    // so it must be signed with the key valid then.
    clock.set(std::time::UNIX_EPOCH + std::time::Duration::from_secs(NOW));
    let second = sink.append(event(1)).await.expect("append");
    assert_eq!(second.key_id, "k2");
    let records: Vec<_> = sink.records().into_iter().map(Ok).collect();
    let report = Verifier::new(ring(&keys)).verify(records, None);
    assert!(report.is_ok(), "{report:?}");
}

#[tokio::test]
async fn lines_must_be_canonical_and_a_writer_never_extends_a_bad_tail() {
    let good_ring = ring(&format!("k1 1 {K1}"));
    let dir = std::env::temp_dir().join(format!("palisade-audit-c-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("log.jsonl");
    let sink = JsonlSink::open(&path, chain(good_ring.clone())).expect("open");
    for i in 0..3 {
        sink.append(event(i)).await.expect("append");
    }
    drop(sink);
    let original = std::fs::read_to_string(&path).expect("read");
    let verify = |text: &str| {
        std::fs::write(&path, text).expect("write");
        Verifier::new(good_ring.clone()).verify(JsonlSink::records_of(&path).expect("read"), None)
    };
    assert!(verify(&original).is_ok());
    // A shadowing duplicate before the real detail: the MAC still covers the last value,
    // but what a reader sees first is not what was signed. Refused.
    let shadowed = original.replacen(
        r#""details":{"#,
        r#""details":{"field":"nothing to see","#,
        1,
    );
    assert_ne!(shadowed, original);
    let report = verify(&shadowed);
    assert!(
        matches!(
            report.finding.as_ref().map(|f| (f.line, &f.kind)),
            Some((1, palisade_audit::FindingKind::Unreadable(_)))
        ),
        "{report:?}"
    );
    // Extra spacing is not canonical either.
    assert!(!verify(&original.replacen(r#""seq":1"#, r#""seq": 1"#, 1)).is_ok());
    // A writer refuses to continue after a last record that does not verify.
    let mut lines: Vec<&str> = original.lines().collect();
    let last = lines.pop().expect("last").replace("user-2", "user-9");
    let edited = format!("{}\n{last}\n", lines.join("\n"));
    std::fs::write(&path, &edited).expect("write");
    let refused = JsonlSink::open(&path, chain(good_ring.clone()));
    assert!(
        matches!(refused, Err(palisade_audit::AuditError::Corrupt(_))),
        "{refused:?}"
    );
    // Nor after one signed with a key it does not hold.
    std::fs::write(&path, &original).expect("write");
    let other_ring = ring(&format!("k2 1 {K1}"));
    assert!(JsonlSink::open(&path, chain(other_ring)).is_err());
    assert!(JsonlSink::open(&path, chain(good_ring)).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_command_line_verifier_exits_non_zero_on_any_finding() {
    let good_ring = ring(&format!("k1 1 {K1}"));
    let dir = std::env::temp_dir().join(format!("palisade-audit-cli-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (log, keys, cp) = (dir.join("log.jsonl"), dir.join("keys"), dir.join("cp.json"));
    std::fs::write(&keys, format!("k1 1 {K1}\n")).expect("keys");
    let sink = JsonlSink::open(&log, chain(good_ring)).expect("open");
    for i in 0..5 {
        sink.append(event(i)).await.expect("append");
    }
    let checkpoint = sink.checkpoint().await.expect("checkpoint");
    std::fs::write(&cp, serde_json::to_string(&checkpoint).expect("json")).expect("cp");
    let run = |extra: &[&std::path::Path]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_palisade-audit"));
        cmd.arg("verify")
            .arg("--file")
            .arg(&log)
            .arg("--keys")
            .arg(&keys);
        if let Some(cp) = extra.first() {
            cmd.arg("--checkpoint").arg(cp);
        }
        cmd.env_remove("AUDIT_SIGNING_KEY").output().expect("runs")
    };
    let ok = run(&[&cp]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    // One byte changed: exit 1.
    let mut bytes = std::fs::read(&log).expect("read");
    let at = bytes.iter().position(|&b| b == b'3').expect("a digit");
    bytes[at] = b'4';
    std::fs::write(&log, &bytes).expect("write");
    assert_eq!(run(&[&cp]).status.code(), Some(1));
    // The tail cut (against the published checkpoint): exit 1.
    let text = String::from_utf8(bytes).expect("utf8");
    let first_lines: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(&log, first_lines).expect("write");
    assert_eq!(run(&[&cp]).status.code(), Some(1));
    // No keys: a usage error, exit 2.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_palisade-audit"))
        .args(["verify", "--file"])
        .arg(&log)
        .env_remove("AUDIT_SIGNING_KEY")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use palisade_audit::PostgresSink;
    use std::str::FromStr as _;

    fn database_url() -> String {
        std::env::var("PALISADE_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    /// A sink in a fresh schema of the machine's PostgreSQL, and the schema's name.
    async fn sink(ring: KeyRing) -> (PostgresSink, String) {
        let schema = format!("palisade_audit_{}", rand_suffix().replace('-', "_"));
        let admin = sqlx::PgPool::connect(&database_url())
            .await
            .expect("postgres");
        sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .expect("schema");
        let options = sqlx::postgres::PgConnectOptions::from_str(&database_url())
            .expect("url")
            .options([("search_path", schema.as_str())]);
        let sink = PostgresSink::connect_with(options, "audit_log", ring)
            .await
            .expect("sink")
            .with_clock(ManualClock::at_unix(NOW).shared())
            .checkpoint_every(4);
        (sink, schema)
    }

    #[tokio::test]
    async fn rows_numbered_zero_or_below_are_read_too() {
        let good_ring = ring(&format!("k1 1 {K1}"));
        let (sink, schema) = sink(good_ring.clone()).await;
        for i in 0..3 {
            sink.append(event(i)).await.expect("append");
        }
        let verifier = Verifier::new(good_ring);
        assert!(sink.verify(&verifier, None).await.expect("verify").is_ok());
        let admin = sqlx::PgPool::connect(&database_url())
            .await
            .expect("postgres");
        // A row slipped in before the first: it must be seen, not skipped.
        sqlx::raw_sql(&format!(
            "INSERT INTO {schema}.audit_log (seq, record) SELECT -5, record FROM {schema}.audit_log WHERE seq = 1"
        ))
        .execute(&admin)
        .await
        .expect("insert");
        let report = sink.verify(&verifier, None).await.expect("verify");
        assert!(!report.is_ok(), "{report:?}");
        drop_schema(&schema).await;
    }

    async fn drop_schema(schema: &str) {
        if let Ok(admin) = sqlx::PgPool::connect(&database_url()).await {
            let _ = sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&admin)
                .await;
        }
    }

    #[tokio::test]
    async fn the_tampering_table_holds_on_postgres_too() {
        let good_ring = ring(&format!("k1 1 {K1}"));
        let verifier = Verifier::new(good_ring.clone());
        let (sink, schema) = sink(good_ring).await;
        for i in 0..10 {
            sink.append(event(i)).await.expect("append");
        }
        let checkpoint = sink.checkpoint().await.expect("checkpoint");
        let report = sink
            .verify(&verifier, Some(&checkpoint))
            .await
            .expect("verify");
        assert!(report.is_ok(), "{report:?}");
        let (_, memory, _) = logs(ring(&format!("k1 1 {K1}"))).await.remove(0);
        // The memory log is the same chain (same clock, keys and events): tamper with it and
        // store each version in the table.
        for (name, tamper, line, kind) in cases() {
            let mut copy = memory.clone();
            tamper(&mut copy);
            let rows: Vec<(i64, String)> = copy
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let text = match r {
                        Ok(r) => serde_json::to_string(r).expect("json"),
                        Err(_) => "{not json".to_owned(),
                    };
                    (i as i64 + 1, text)
                })
                .collect();
            sink.overwrite_for_tests(&rows).await.expect("overwrite");
            let report = sink.verify(&verifier, None).await.expect("verify");
            let finding = report
                .finding
                .unwrap_or_else(|| panic!("postgres: {name}: not found"));
            assert_eq!(finding.line, line, "postgres: {name}: {finding:?}");
            assert!(kind(&finding.kind), "postgres: {name}: {finding:?}");
        }
        drop_schema(&schema).await;
    }

    #[tokio::test]
    async fn the_command_line_verifier_reads_postgres() {
        let good_ring = ring(&format!("k1 1 {K1}"));
        let (sink, schema) = sink(good_ring).await;
        for i in 0..5 {
            sink.append(event(i)).await.expect("append");
        }
        let dir = std::env::temp_dir().join(format!("palisade-audit-pg-{}", rand_suffix()));
        std::fs::create_dir_all(&dir).expect("dir");
        let keys = dir.join("keys");
        std::fs::write(&keys, format!("k1 1 {K1}\n")).expect("keys");
        let url = format!("{}?options=-c%20search_path%3D{schema}", database_url());
        let run = || {
            std::process::Command::new(env!("CARGO_BIN_EXE_palisade-audit"))
                .args([
                    "verify",
                    "--postgres",
                    &url,
                    "--table",
                    "audit_log",
                    "--keys",
                ])
                .arg(&keys)
                .env("PALISADE_PROFILE", "development")
                .output()
                .expect("runs")
        };
        let ok = run();
        assert!(
            ok.status.success(),
            "{}{}",
            String::from_utf8_lossy(&ok.stdout),
            String::from_utf8_lossy(&ok.stderr)
        );
        // One record changed in the table: exit 1.
        let admin = sqlx::PgPool::connect(&database_url())
            .await
            .expect("postgres");
        sqlx::raw_sql(&format!(
            "UPDATE {schema}.audit_log SET record = replace(record, 'admin-2', 'admin-9') WHERE seq = 3"
        ))
        .execute(&admin)
        .await
        .expect("tamper");
        assert_eq!(run().status.code(), Some(1));
        // A table that does not exist is an error (exit 2), and is not created.
        let missing = std::process::Command::new(env!("CARGO_BIN_EXE_palisade-audit"))
            .args([
                "verify",
                "--postgres",
                &url,
                "--table",
                "no_such_log",
                "--keys",
            ])
            .arg(&keys)
            .env("PALISADE_PROFILE", "development")
            .output()
            .expect("runs");
        assert_eq!(missing.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&missing.stderr).contains("no audit table"));
        let created: Option<String> =
            sqlx::query_scalar(&format!("SELECT to_regclass('{schema}.no_such_log')::text"))
                .fetch_one(&admin)
                .await
                .expect("lookup");
        assert_eq!(created, None);
        let _ = std::fs::remove_dir_all(&dir);
        drop_schema(&schema).await;
    }

    #[tokio::test]
    async fn writers_in_many_sinks_extend_one_chain() {
        let good_ring = ring(&format!("k1 1 {K1}"));
        let (first, schema) = sink(good_ring.clone()).await;
        // A second sink on the same table: another process, as far as the chain knows.
        let options = sqlx::postgres::PgConnectOptions::from_str(&database_url())
            .expect("url")
            .options([("search_path", schema.as_str())]);
        let second = PostgresSink::connect_with(options, "audit_log", good_ring.clone())
            .await
            .expect("sink")
            .checkpoint_every(4);
        let tasks: Vec<_> = (0..8)
            .map(|w| {
                let sink = if w % 2 == 0 {
                    first.clone()
                } else {
                    second.clone()
                };
                tokio::spawn(async move {
                    for i in 0..10 {
                        sink.append(event(w * 100 + i)).await.expect("append");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("writer");
        }
        let checkpoint = second.checkpoint().await.expect("checkpoint");
        let report = first
            .verify(&Verifier::new(good_ring), Some(&checkpoint))
            .await
            .expect("verify");
        assert!(report.is_ok(), "{report:?}");
        // 80 events, and a checkpoint record whenever a record's number is a multiple of 4.
        let mut expected = 0u64;
        for _ in 0..80 {
            expected += 1;
            if expected.is_multiple_of(4) {
                expected += 1;
            }
        }
        assert_eq!(report.records, expected);
        drop_schema(&schema).await;
    }
}

#[tokio::test]
async fn a_second_writer_cannot_open_a_log_in_use() {
    let good_ring = ring(&format!("k1 1 {K1}"));
    let dir = std::env::temp_dir().join(format!("palisade-audit-l-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("log.jsonl");
    let first = JsonlSink::open(&path, chain(good_ring.clone())).expect("open");
    // A new log is its owner's only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(JsonlSink::open(&path, chain(good_ring.clone())).is_err());
    drop(first);
    assert!(JsonlSink::open(&path, chain(good_ring)).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_endless_line_is_unreadable_not_held() {
    let dir = std::env::temp_dir().join(format!("palisade-audit-x-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("log.jsonl");
    std::fs::write(&path, vec![b'x'; (1 << 20) + 10]).expect("write");
    let first = JsonlSink::records_of(&path).expect("read").next();
    assert!(matches!(first, Some(Err(_))));
    let _ = std::fs::remove_dir_all(&dir);
}
