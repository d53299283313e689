//! The committed JSON Schemas (`lab-report/schemas/`) are the ones the types generate; this fails
//! when a type changed and its schema was not regenerated. `UPDATE_SCHEMAS=1 cargo test -p
//! lab-report --test schema` rewrites them (review the diff: a removed or renamed field needs a
//! schema_version bump).

#![allow(clippy::unwrap_used)]

use lab_report::schema::{documents, render};

#[test]
fn committed_schemas_match_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (file, schema) in documents() {
        let want = render(&schema);
        let path = dir.join(file);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &want).unwrap();
            eprintln!("UPDATED {}", path.display());
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(have) if have == want => {}
            Ok(_) => stale.push(format!("{file} differs from the types")),
            Err(e) => stale.push(format!("{file}: {e}")),
        }
    }
    assert!(
        stale.is_empty(),
        "{}; run UPDATE_SCHEMAS=1 cargo test -p lab-report --test schema and review the diff",
        stale.join("; ")
    );
}

#[test]
fn every_document_names_its_schema_and_version() {
    for (file, schema) in documents() {
        let props = schema.get("properties").unwrap();
        for key in ["schema", "schema_version"] {
            assert!(props.get(key).is_some(), "{file} has no {key}");
        }
        let title = schema.get("title").unwrap().as_str().unwrap();
        assert!(title.starts_with("hami-isolation-lab/"), "{title}");
    }
}

#[test]
fn the_real_reports_validate_against_the_committed_schema() {
    // Each real report parses with the types the schema is generated from, and the types write
    // back the same JSON value (nothing dropped or renamed).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/h200");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            let report: lab_report::probe::Report = serde_json::from_value(value.clone())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(
                serde_json::to_value(&report).unwrap(),
                value,
                "{}",
                path.display()
            );
        }
    }
}
