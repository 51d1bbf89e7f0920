//! `docs/metrics.md` lists exactly the metric names the code emits.

#[test]
fn every_emitted_metric_is_documented_and_every_documented_one_emitted() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/metrics.md")).expect("docs/metrics.md");
    let documented: std::collections::BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect();
    let mut emitted = std::collections::BTreeSet::new();
    let mut stack = vec![root.join("crates")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source");
                for kind in ["counter!(", "histogram!(", "gauge!("] {
                    for piece in text.split(kind).skip(1) {
                        let name = piece.trim_start().trim_start_matches('"');
                        if let Some(name) = name.split('"').next()
                            && name.starts_with("palisade_")
                        {
                            emitted.insert(name.to_owned());
                        }
                    }
                }
            }
        }
    }
    assert!(emitted.len() >= 8, "{emitted:?}");
    assert_eq!(emitted, documented);
}
