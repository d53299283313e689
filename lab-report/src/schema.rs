//! The JSON Schema of each document, generated from the types (schemars). The committed copies
//! live in `lab-report/schemas/`; `tests/schema.rs` fails when they and the types differ
//! (`UPDATE_SCHEMAS=1 cargo test -p lab-report --test schema` rewrites them).

use schemars::{JsonSchema, Schema, schema_for};

/// `(file name under schemas/, schema)` of every document the tools exchange.
pub fn documents() -> Vec<(&'static str, Schema)> {
    vec![
        (
            "gpu-probe-report.schema.json",
            titled::<crate::probe::Report>(crate::probe::SCHEMA, crate::probe::SCHEMA_VERSION),
        ),
        (
            "cluster-run.schema.json",
            titled::<crate::run::RunReport>(crate::run::SCHEMA, crate::run::SCHEMA_VERSION),
        ),
        (
            "fleet.schema.json",
            titled::<crate::fleet::FleetReport>(crate::fleet::SCHEMA, crate::fleet::SCHEMA_VERSION),
        ),
        (
            "evidence-summary.schema.json",
            titled::<crate::summary::Summary>(
                crate::summary::SCHEMA,
                crate::summary::SCHEMA_VERSION,
            ),
        ),
    ]
}

fn titled<T: JsonSchema>(name: &str, version: u32) -> Schema {
    let mut s = schema_for!(T);
    s.insert("title".into(), format!("{name} v{version}").into());
    s
}

/// The text committed for a schema: pretty JSON and a final newline.
pub fn render(schema: &Schema) -> String {
    let text = serde_json::to_string_pretty(schema).unwrap_or_default();
    format!("{text}\n")
}
