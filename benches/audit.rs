//! The audit log: sealing (chain + HMAC-SHA256), verifying and appending records durably
//! (JSON Lines, synced), against a bare
//! HMAC-SHA256 of the same canonical bytes, in the same run. Criterion reports the time per
//! record; records per second are printed from the medians.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, KeyInit, Mac};
use palisade::audit::{AuditSink, Chain, Event, JsonlSink, MemorySink, Outcome, Verifier};
use palisade::core::KeyRing;

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn event(i: u64) -> Event {
    Event::new(
        format!("admin-{i}"),
        "impersonation.request",
        format!("user-{i}"),
        Outcome::Success,
    )
    .org("org-1")
    .request_id(format!("req-{i:016x}"))
    .detail("method", "GET")
    .detail("path", "/api/orgs/org-1/documents/d1")
}

fn audit(c: &mut Criterion) {
    let ring = KeyRing::parse(&format!("k1 1 {KEY}")).expect("ring");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // A log to verify, and one record's bytes for the bare HMAC.
    let sink = MemorySink::with_chain(Chain::new(ring.clone()).checkpoint_every(1_000));
    rt.block_on(async {
        for i in 0..10_000 {
            sink.append(event(i)).await.expect("append");
        }
    });
    let records = sink.records();
    let bytes = records[0].signed_bytes();
    let key = base64_key();

    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(1));
    group.bench_function("bare_hmac_sha256", |b| {
        b.iter(|| {
            let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).expect("key");
            mac.update(black_box(&bytes));
            black_box(mac.finalize().into_bytes())
        })
    });
    // Sealing: what every sink pays per record (the chain, the MAC, the next hash), without a
    // store growing under the bench.
    let mut chain = Chain::new(ring.clone());
    let mut i = 0;
    group.bench_function("seal", |b| {
        b.iter(|| {
            i += 1;
            chain.seal(event(i)).expect("seal")
        })
    });
    let verifier = Verifier::new(ring.clone());
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("verify_10000", |b| {
        b.iter(|| {
            let report = verifier.verify(records.iter().cloned().map(Ok), None);
            assert!(report.is_ok());
            report.records
        })
    });
    group.throughput(Throughput::Elements(1));
    let dir = std::env::temp_dir().join(format!("palisade-audit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = JsonlSink::open(dir.join("log.jsonl"), Chain::new(ring)).expect("open");
    let mut j = 0;
    group.bench_function("append_jsonl_synced", |b| {
        b.iter(|| {
            j += 1;
            rt.block_on(file.append(event(j))).expect("append")
        })
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn base64_key() -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .expect("key")
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = audit
}
criterion_main!(benches);
