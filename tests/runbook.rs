//! The key-rotation runbook in `docs/hardening-guide.md` names, for every key, the tests that
//! run its steps: each must exist, so that the runbook cannot point at nothing.

#[test]
fn every_runbook_step_names_tests_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide =
        std::fs::read_to_string(root.join("docs/hardening-guide.md")).expect("hardening guide");
    let runbook = guide
        .split("## Key-rotation runbook")
        .nth(1)
        .expect("a key-rotation runbook section");
    // Each "Exercised by:" paragraph lists test functions in backticks.
    let mut named = Vec::new();
    for paragraph in runbook.split("\n\n") {
        if let Some(list) = paragraph.trim_start().strip_prefix("Exercised by:") {
            named.extend(list.split('`').skip(1).step_by(2).map(str::to_owned));
        }
    }
    let sections = runbook.matches("\n### ").count();
    assert!(sections >= 7, "only {sections} keys in the runbook");
    assert!(named.len() >= sections, "{named:?}");
    let mut sources = String::new();
    let mut stack = vec![root.join("crates"), root.join("tests")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(&path).expect("source"));
            }
        }
    }
    for name in named {
        assert!(
            sources.contains(&format!("fn {name}(")),
            "the runbook names `{name}`, which is no test"
        );
    }
}
