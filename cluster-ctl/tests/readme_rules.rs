//! README's troubleshooting table is the rules table: generated from `diagnose::rules::RULES`,
//! so a rule added, changed or removed without the README fails here.
//! `UPDATE_README=1 cargo test -p cluster-ctl --test readme_rules` rewrites it.

#![allow(clippy::unwrap_used)]

const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
const BEGIN: &str = "<!-- doctor-rules:begin (generated: UPDATE_README=1 cargo test -p cluster-ctl --test readme_rules) -->\n";
const END: &str = "<!-- doctor-rules:end -->";

#[test]
fn readme_troubleshooting_table_is_generated_from_the_rules() {
    let text = std::fs::read_to_string(README).unwrap();
    let start = text.find(BEGIN).expect("README has the begin marker") + BEGIN.len();
    let end = text[start..].find(END).expect("README has the end marker") + start;
    let table = cluster_ctl::diagnose::render::readme_table();
    if std::env::var_os("UPDATE_README").is_some() {
        let updated = format!("{}{table}{}", &text[..start], &text[end..]);
        std::fs::write(README, updated).unwrap();
        return;
    }
    assert_eq!(
        &text[start..end],
        table,
        "README's troubleshooting table differs from the rules; run UPDATE_README=1 cargo test -p cluster-ctl --test readme_rules"
    );
    // Every rule names its upstream source in the table.
    for r in cluster_ctl::diagnose::rules::RULES {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", r.mode)))
            .unwrap();
        assert!(row.contains("](https://github.com/Project-HAMi/"), "{row}");
    }
}
