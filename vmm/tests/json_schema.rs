//! The JSON that `vmm run --json` and `vmm inspect --json` print is described by JSON
//! Schemas generated from the types that print it (`schemars`), checked in under `docs/`.
//! These tests fail when the types and the checked-in schemas part ways; regenerate with
//! `KVM_MM_BLESS=1 cargo test -p vmm --test json_schema`.

use schemars::JsonSchema;
use std::path::PathBuf;
use std::time::Duration;
use vmm::inspect::Output;
use vmm::outcome::{ExitReason, Outcome, RunRecord};

fn schema<T: JsonSchema>() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(T)).expect("a schema is JSON")
}

fn checked_in(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs").join(name)
}

fn matches_checked_in(name: &str, generated: &serde_json::Value) {
    let path = checked_in(name);
    let text = serde_json::to_string_pretty(generated).expect("printable") + "\n";
    if std::env::var_os("KVM_MM_BLESS").is_some() {
        std::fs::write(&path, &text).expect("docs/ is writable");
        return;
    }
    let found = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        found == text,
        "{} is not the schema of the types that print it; regenerate it with \
         `KVM_MM_BLESS=1 cargo test -p vmm --test json_schema` and review the diff",
        path.display()
    );
}

#[test]
fn the_run_schema_is_checked_in() {
    matches_checked_in("outcome.schema.json", &schema::<Outcome>());
}

#[test]
fn the_inspect_schema_is_checked_in() {
    matches_checked_in("inspect.schema.json", &schema::<Output>());
}

/// An outcome prints the properties its schema lists, each of them required there.
#[test]
fn an_outcome_prints_what_its_schema_says() {
    let record = RunRecord {
        exit: ExitReason::GuestExit { status: 0 },
        reports: Vec::new(),
        checkpoints: Vec::new(),
        unexpected_accesses: Vec::new(),
        translation_checks: Vec::new(),
        inspections: Vec::new(),
        console: "x".repeat(100_000),
        console_truncated: false,
    };
    let outcome = Outcome::new(record, 0, Duration::from_millis(1), Duration::from_millis(2));
    let printed = serde_json::to_value(&outcome).expect("serialisable");
    let schema = schema::<Outcome>();
    let mut properties: Vec<&String> =
        schema["properties"].as_object().expect("an object schema").keys().collect();
    let mut keys: Vec<&String> = printed.as_object().expect("an object").keys().collect();
    properties.sort();
    keys.sort();
    assert_eq!(keys, properties);
    assert_eq!(printed["setup_seconds"], 0.001, "times name their unit");
    assert_eq!(printed["translation_checks"]["guest"]["checked"], 0);
    let console = printed["console"].as_str().expect("text");
    assert_eq!(console.len(), vmm::outcome::JSON_CONSOLE_LIMIT, "the console's tail");
    assert_eq!(printed["console_truncated"], true);
}
