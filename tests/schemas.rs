//! The checked-in JSON Schemas must be what the code generates.

mod common;

#[test]
fn checked_in_schemas_match_the_code() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let output = common::sluice()
        .args(["schemas", "--check", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "schemas/ is stale; run `cargo run -- schemas --out schemas`:\n{}",
        common::stderr(&output)
    );
}

#[test]
fn every_builtin_plugin_has_a_schema() {
    let dir = tempfile::tempdir().unwrap();
    let output = common::sluice()
        .args(["schemas", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    for file in [
        "worker.json",
        "connector-common.json",
        "connectors/SimulatorSource.json",
        "connectors/FileSink.json",
    ] {
        let text = std::fs::read_to_string(dir.path().join(file))
            .unwrap_or_else(|_| panic!("{file} missing"));
        let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(schema["properties"].is_object(), "{file}");
    }
    let sim: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("connectors/SimulatorSource.json")).unwrap(),
    )
    .unwrap();
    // A connector's schema holds the runtime's keys and its own.
    assert!(sim["properties"]["tasks.max"].is_object());
    assert!(sim["properties"]["errors.tolerance"].is_object());
    assert!(sim["properties"]["malformed.rate"].is_object());
}
