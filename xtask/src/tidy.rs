//! Tidy: the workspace's code rules, checked as tests (`cargo test -p xtask tidy`), in the manner
//! of rust-analyzer's tidy tests. Over every member of root Cargo.toml's `[workspace].members`:
//!
//! - every `.rs` file under `src/`, `tests/`, `benches/` and `examples/` starts with a `//!`
//!   comment saying what it is;
//! - every dependency of a member (`[dependencies]`, `[dev-dependencies]`,
//!   `[build-dependencies]`, also under `[target.'cfg(…)']`) is `x.workspace = true`, with at most
//!   `features` and `optional` added: versions and paths live once, in root
//!   `[workspace.dependencies]`;
//! - each member's README.md names, in code (`` `name` ``), each top-level module of `src/` and
//!   each file or folder of `tests/` and `benches/` (`data/` and `*.proptest-regressions`
//!   excepted), and the root README.md names every member folder (`runner/`, …);
//! - root clippy.toml's `disallowed-methods` forbids `std::process::Command::new` (and
//!   `duct::cmd` where a member uses duct), and no `src/` outside `runner/` allows
//!   `clippy::disallowed_methods`: every process of the tools goes through lab-runner's `Runner`.
//!
//! Each check returns its breaches, one line each naming the file and the fix; the tests at the
//! bottom show every check failing on a small tree built in a temporary folder.

use std::path::{Path, PathBuf};

/// The one member allowed to start processes itself: lab-runner.
const RUNNER: &str = "runner";

/// The spawning functions root clippy.toml must forbid (`duct::cmd` only where a member uses duct).
const FORBIDDEN_SPAWNS: [&str; 2] = ["std::process::Command::new", "duct::cmd"];

/// Test folders whose files are not named one by one in a README (their own README covers them).
const UNLISTED_TEST_ENTRIES: [&str; 1] = ["data"];

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: cannot be read: {e}", path.display()))
}

fn parse_toml(path: &Path) -> Result<toml_edit::DocumentMut, String> {
    read(path)?
        .parse::<toml_edit::DocumentMut>()
        .map_err(|e| format!("{}: not valid TOML: {e}", path.display()))
}

/// The member folders of the workspace, as root Cargo.toml lists them.
fn members(root: &Path) -> Result<Vec<String>, String> {
    let manifest = root.join("Cargo.toml");
    let doc = parse_toml(&manifest)?;
    let list = doc
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .ok_or_else(|| format!("{}: no [workspace].members array", manifest.display()))?;
    let mut out = Vec::new();
    for m in list {
        let Some(m) = m.as_str() else {
            return Err(format!(
                "{}: a member that is not a string",
                manifest.display()
            ));
        };
        if m.contains('*') {
            return Err(format!(
                "{}: member `{m}` is a glob; list the folders one by one so tidy sees each",
                manifest.display()
            ));
        }
        out.push(m.to_string());
    }
    Ok(out)
}

/// Every file under `dir` (recursively), sorted; `data/` folders are skipped.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "data") {
                continue;
            }
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The names of a folder's entries, sorted (files and folders alike).
fn entry_names(dir: &Path) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().to_string(),
                e.path().is_dir(),
            )
        })
        .collect();
    out.sort();
    out
}

fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// (a) every .rs file says what it is

fn check_docs(root: &Path, members: &[String]) -> Vec<String> {
    let mut breaches = Vec::new();
    for member in members {
        for dir in ["src", "tests", "benches", "examples"] {
            for file in files_under(&root.join(member).join(dir)) {
                if file.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                match read(&file) {
                    Ok(text) if text.starts_with("//!") => {}
                    Ok(_) => breaches.push(format!(
                        "{}: does not start with a `//!` comment; add one on its first line saying \
                         what the file is",
                        rel(root, &file)
                    )),
                    Err(e) => breaches.push(e),
                }
            }
        }
    }
    breaches
}

// ---------------------------------------------------------------------------------------------
// (b) every dependency comes from [workspace.dependencies]

const DEPENDENCY_TABLES: [&str; 3] = ["dependencies", "dev-dependencies", "build-dependencies"];

/// What a member may add to `x.workspace = true`.
const ALLOWED_DEPENDENCY_KEYS: [&str; 3] = ["workspace", "features", "optional"];

fn check_dependency_table(
    file: &str,
    table_name: &str,
    table: &dyn toml_edit::TableLike,
    breaches: &mut Vec<String>,
) {
    for (name, item) in table.iter() {
        let fix = format!(
            "move it to root Cargo.toml's [workspace.dependencies] (same version and features) \
             and write `{name}.workspace = true` here (`features`/`optional` may stay)"
        );
        let Some(dep) = item.as_table_like() else {
            breaches.push(format!(
                "{file}: [{table_name}] {name} = {} sets its own version; {fix}",
                item.to_string().trim()
            ));
            continue;
        };
        if dep.get("workspace").and_then(|w| w.as_bool()) != Some(true) {
            breaches.push(format!(
                "{file}: [{table_name}] {name} is not `workspace = true`; {fix}"
            ));
            continue;
        }
        for (key, _) in dep.iter() {
            if !ALLOWED_DEPENDENCY_KEYS.contains(&key) {
                breaches.push(format!(
                    "{file}: [{table_name}] {name} sets `{key}` beside `workspace = true`; set it \
                     in root [workspace.dependencies] instead"
                ));
            }
        }
    }
}

fn check_dependencies(root: &Path, members: &[String]) -> Vec<String> {
    let mut breaches = Vec::new();
    for member in members {
        let path = root.join(member).join("Cargo.toml");
        let file = rel(root, &path);
        let doc = match parse_toml(&path) {
            Ok(doc) => doc,
            Err(e) => {
                breaches.push(e);
                continue;
            }
        };
        for table_name in DEPENDENCY_TABLES {
            if let Some(table) = doc.get(table_name).and_then(|t| t.as_table_like()) {
                check_dependency_table(&file, table_name, table, &mut breaches);
            }
        }
        let targets = doc.get("target").and_then(|t| t.as_table_like());
        for (cfg, target) in targets.into_iter().flat_map(|t| t.iter()) {
            for table_name in DEPENDENCY_TABLES {
                if let Some(table) = target.get(table_name).and_then(|t| t.as_table_like()) {
                    let name = format!("target.'{cfg}'.{table_name}");
                    check_dependency_table(&file, &name, table, &mut breaches);
                }
            }
        }
    }
    breaches
}

// ---------------------------------------------------------------------------------------------
// (c) READMEs name what exists

/// The code of a Markdown text: inline code spans and fenced blocks.
fn code_spans(markdown: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut prose = String::new();
    let mut fence: Option<String> = None;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        match &fence {
            Some(open) if trimmed.starts_with(open.as_str()) => fence = None,
            Some(_) => spans.push(line.to_string()),
            None if trimmed.starts_with("```") || trimmed.starts_with("~~~") => {
                let marker: String = trimmed
                    .chars()
                    .take_while(|c| *c == '`' || *c == '~')
                    .collect();
                fence = Some(marker);
            }
            None => {
                prose.push_str(line);
                prose.push('\n');
            }
        }
    }
    // Inline spans: a run of n backticks up to the next run of exactly n (CommonMark).
    let bytes = prose.as_bytes();
    let run_at = |i: usize| bytes[i..].iter().take_while(|b| **b == b'`').count();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let n = run_at(i);
        let start = i + n;
        let mut j = start;
        let mut close = None;
        while j < bytes.len() {
            if bytes[j] == b'`' {
                let m = run_at(j);
                if m == n {
                    close = Some(j);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                spans.push(prose[start..end].to_string());
                i = end + n;
            }
            None => i = start,
        }
    }
    spans
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Whether `text` holds `name` as a whole word (`ffi` in `ffi::cuda`, not in `ffix`).
fn holds_word(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(is_name_char) && !after.is_some_and(is_name_char)
    })
}

/// The first line of a file's `//!` comment, to quote in a fix.
fn doc_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let first = text.lines().next()?.strip_prefix("//!")?.trim();
    (!first.is_empty()).then(|| first.to_string())
}

/// Something a member's README must name.
#[derive(Debug)]
struct Entry {
    /// The name to write (`wait_state`, `cli.rs`, `common`).
    name: String,
    /// Other spellings that name it too (`--test cli` for `tests/cli.rs`).
    also: Vec<String>,
    path: PathBuf,
    /// The first line of its `//!` comment, quoted in the fix.
    doc: Option<String>,
}

/// What a member's README must name: each top-level module of `src/`, each entry of `tests/`
/// and `benches/`.
fn listed_entries(member_dir: &Path) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    let src = member_dir.join("src");
    for (name, is_dir) in entry_names(&src) {
        let (module, doc) = if is_dir {
            let doc = doc_line(&src.join(format!("{name}.rs")))
                .or_else(|| doc_line(&src.join(&name).join("mod.rs")));
            (name.clone(), doc)
        } else if let Some(stem) = name.strip_suffix(".rs") {
            (stem.to_string(), doc_line(&src.join(&name)))
        } else {
            continue;
        };
        if ["main", "lib", "mod"].contains(&module.as_str()) || out.iter().any(|e| e.name == module)
        {
            continue;
        }
        out.push(Entry {
            name: module,
            also: Vec::new(),
            path: src.join(&name),
            doc,
        });
    }
    for (dir, flag) in [("tests", "--test"), ("benches", "--bench")] {
        let dir = member_dir.join(dir);
        for (name, is_dir) in entry_names(&dir) {
            if UNLISTED_TEST_ENTRIES.contains(&name.as_str())
                || name.ends_with(".proptest-regressions")
            {
                continue;
            }
            let doc = if is_dir {
                doc_line(&dir.join(&name).join("mod.rs"))
            } else {
                doc_line(&dir.join(&name))
            };
            let also = match name.strip_suffix(".rs") {
                Some(stem) if !is_dir => vec![format!("{flag} {stem}")],
                _ => Vec::new(),
            };
            out.push(Entry {
                path: dir.join(&name),
                name,
                also,
                doc,
            });
        }
    }
    out
}

fn check_readmes(root: &Path, members: &[String]) -> Vec<String> {
    let mut breaches = Vec::new();
    for member in members {
        let readme = root.join(member).join("README.md");
        let text = match read(&readme) {
            Ok(text) => text,
            Err(_) => {
                breaches.push(format!(
                    "{}: missing; write it: what the crate is, its modules, how it is tested",
                    rel(root, &readme)
                ));
                continue;
            }
        };
        let spans = code_spans(&text);
        for Entry {
            name,
            also,
            path,
            doc,
        } in listed_entries(&root.join(member))
        {
            let mut spellings = std::iter::once(&name).chain(&also);
            if spellings.any(|n| spans.iter().any(|s| holds_word(s, n))) {
                continue;
            }
            let says = doc
                .map(|d| format!(" (its `//!`: \"{d}\")"))
                .unwrap_or_default();
            breaches.push(format!(
                "{}: does not name `{name}` ({}); add a line naming it in code, `{name}`, saying \
                 what it is{says}",
                rel(root, &readme),
                rel(root, &path)
            ));
        }
    }
    let readme = root.join("README.md");
    match read(&readme) {
        Ok(text) => {
            for member in members {
                let folder = format!("{member}/");
                let named = text
                    .match_indices(&folder)
                    .any(|(at, _)| !text[..at].chars().next_back().is_some_and(is_name_char));
                if !named {
                    breaches.push(format!(
                        "README.md: does not name the member folder `{folder}`; add it where the \
                         crates are listed, with a link to {member}/README.md"
                    ));
                }
            }
        }
        Err(e) => breaches.push(e),
    }
    breaches
}

// ---------------------------------------------------------------------------------------------
// (d) processes only through lab-runner

/// The paths root clippy.toml's `disallowed-methods` forbids.
fn disallowed_methods(root: &Path) -> Result<Vec<String>, String> {
    let path = root.join("clippy.toml");
    let doc = parse_toml(&path)?;
    let Some(list) = doc.get("disallowed-methods") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| format!("{}: `disallowed-methods` is not an array", path.display()))?;
    Ok(list
        .iter()
        .filter_map(|v| match v {
            toml_edit::Value::String(s) => Some(s.value().clone()),
            toml_edit::Value::InlineTable(t) => {
                t.get("path").and_then(|p| p.as_str()).map(String::from)
            }
            _ => None,
        })
        .collect())
}

/// Whether a member's Cargo.toml depends on `crate_name` (any table).
fn depends_on(root: &Path, member: &str, crate_name: &str) -> bool {
    let Ok(doc) = parse_toml(&root.join(member).join("Cargo.toml")) else {
        return false;
    };
    DEPENDENCY_TABLES
        .iter()
        .any(|t| doc.get(t).and_then(|t| t.get(crate_name)).is_some())
}

fn check_process_rule(root: &Path, members: &[String]) -> Vec<String> {
    let mut breaches = Vec::new();
    match disallowed_methods(root) {
        Ok(forbidden) => {
            for method in FORBIDDEN_SPAWNS {
                let crate_name = method.split("::").next().unwrap_or(method);
                let needed =
                    crate_name == "std" || members.iter().any(|m| depends_on(root, m, crate_name));
                if needed && !forbidden.iter().any(|f| f == method) {
                    breaches.push(format!(
                        "clippy.toml: `disallowed-methods` lacks `{method}`; add \
                         {{ path = \"{method}\", reason = \"processes go through lab_runner's \
                         Runner\" }}"
                    ));
                }
            }
        }
        Err(e) => breaches.push(e),
    }
    for member in members.iter().filter(|m| m.as_str() != RUNNER) {
        for file in files_under(&root.join(member).join("src")) {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            for (n, line) in text.lines().enumerate() {
                let line = line.trim_start();
                if line.starts_with("#") && line.contains("disallowed_methods") {
                    breaches.push(format!(
                        "{}:{}: allows `clippy::disallowed_methods` outside {RUNNER}/; run the \
                         process through lab_runner's `Runner` (a `Cmd` and a `&dyn Runner`)",
                        rel(root, &file),
                        n + 1
                    ));
                }
            }
        }
    }
    breaches
}

// ---------------------------------------------------------------------------------------------
// The checks over this workspace

#[track_caller]
fn assert_tidy(what: &str, breaches: Vec<String>) {
    assert!(
        breaches.is_empty(),
        "tidy: {what} ({} breach(es)):\n{}",
        breaches.len(),
        breaches.join("\n")
    );
}

fn workspace() -> (PathBuf, Vec<String>) {
    let root = crate::workspace_root();
    let members = members(&root).unwrap_or_else(|e| panic!("tidy: {e}"));
    assert!(
        members.len() > 1,
        "tidy: no members read from {}",
        root.display()
    );
    (root, members)
}

#[test]
fn every_rust_file_starts_with_a_doc_comment() {
    let (root, members) = workspace();
    assert_tidy("files without a `//!` comment", check_docs(&root, &members));
}

#[test]
fn every_dependency_version_lives_in_the_workspace() {
    let (root, members) = workspace();
    assert_tidy(
        "dependencies not from [workspace.dependencies]",
        check_dependencies(&root, &members),
    );
}

#[test]
fn every_readme_names_what_exists() {
    let (root, members) = workspace();
    assert_tidy(
        "READMEs that do not name what exists",
        check_readmes(&root, &members),
    );
}

#[test]
fn processes_go_through_the_runner() {
    let (root, members) = workspace();
    assert_tidy(
        "process spawning not kept inside runner/",
        check_process_rule(&root, &members),
    );
}

// ---------------------------------------------------------------------------------------------
// Each check can fail: a small workspace in a temporary folder, one member tidy, one not.

mod can_fail {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// `good` keeps every rule; `bad` breaks each once.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "Cargo.toml",
            "[workspace]\nmembers = [\"good\", \"bad\", \"runner\"]\n\
             [workspace.dependencies]\nanyhow = \"1\"\nduct = \"1\"\n",
        );
        write(
            root,
            "README.md",
            "The crates: [good/](good/README.md), `runner/`; and bad.\n",
        );
        write(
            root,
            "clippy.toml",
            "disallowed-methods = [{ path = \"std::process::Command::new\", reason = \"r\" }]\n",
        );
        write(
            root,
            "good/Cargo.toml",
            "[package]\nname = \"good\"\n[dependencies]\nanyhow.workspace = true\n\
             [dev-dependencies]\nanyhow = { workspace = true, features = [\"backtrace\"] }\n\
             [target.'cfg(unix)'.dependencies]\nanyhow = { workspace = true, optional = true }\n",
        );
        write(
            root,
            "good/README.md",
            "`alpha` does a thing; `tests/cli.rs` runs it; `common/`; the bench `b.rs`.\n\
             ```sh\ncargo test -p good --test gamma\n```\n",
        );
        write(
            root,
            "good/src/lib.rs",
            "//! The good crate.\npub mod alpha;\n",
        );
        write(root, "good/src/alpha.rs", "//! Alpha.\n");
        write(root, "good/tests/cli.rs", "//! The CLI.\n");
        write(
            root,
            "good/tests/gamma.rs",
            "//! Gamma, named in a fenced block.\n",
        );
        write(root, "good/tests/common/mod.rs", "//! Shared.\n");
        write(
            root,
            "good/tests/data/fixture.rs",
            "not a doc: data is skipped\n",
        );
        write(root, "good/tests/x.proptest-regressions", "cc 00\n");
        write(root, "good/benches/b.rs", "//! A bench.\n");
        write(
            root,
            "bad/Cargo.toml",
            "[package]\nname = \"bad\"\n[dependencies]\nanyhow = \"1\"\n\
             duct = { workspace = true, default-features = false }\n\
             [dev-dependencies]\nhelper = { path = \"../helper\" }\n\
             [target.'cfg(unix)'.build-dependencies]\nlibc = { version = \"0.2\" }\n",
        );
        write(root, "bad/README.md", "The alphabet; beta in prose only.\n");
        write(root, "bad/src/lib.rs", "pub mod beta;\n");
        write(
            root,
            "bad/src/beta.rs",
            "//! Beta: spawns.\n#[allow(clippy::disallowed_methods)]\nfn f() {}\n",
        );
        write(root, "bad/tests/t.rs", "// a plain comment first\n");
        write(
            root,
            "runner/Cargo.toml",
            "[package]\nname = \"lab-runner\"\n[dependencies]\nduct.workspace = true\n",
        );
        write(root, "runner/README.md", "`tier`\n");
        write(root, "runner/src/lib.rs", "//! The runner.\n");
        write(
            root,
            "runner/src/tier.rs",
            "//! Tiers.\n#![allow(clippy::disallowed_methods)]\n",
        );
        dir
    }

    fn run(check: fn(&Path, &[String]) -> Vec<String>) -> Vec<String> {
        let dir = tree();
        let members = members(dir.path()).unwrap();
        assert_eq!(members, ["good", "bad", "runner"]);
        check(dir.path(), &members)
    }

    /// Every breach names a file of `bad` (or a root file), never `good`.
    fn only_bad(breaches: &[String]) {
        for b in breaches {
            assert!(!b.starts_with("good/"), "a tidy file reported: {b}");
        }
    }

    #[test]
    fn a_file_without_a_doc_comment_is_named() {
        let breaches = run(check_docs);
        only_bad(&breaches);
        assert_eq!(breaches.len(), 2, "{breaches:#?}");
        assert!(breaches[0].starts_with("bad/src/lib.rs: does not start with a `//!`"));
        assert!(breaches[1].starts_with("bad/tests/t.rs: does not start with a `//!`"));
        assert!(
            breaches
                .iter()
                .all(|b| b.contains("add one on its first line"))
        );
    }

    #[test]
    fn a_dependency_with_its_own_version_is_named() {
        let breaches = run(check_dependencies);
        only_bad(&breaches);
        assert_eq!(breaches.len(), 4, "{breaches:#?}");
        assert!(
            breaches[0]
                .starts_with("bad/Cargo.toml: [dependencies] anyhow = \"1\" sets its own version")
        );
        assert!(breaches[0].contains("write `anyhow.workspace = true` here"));
        assert!(
            breaches[1].starts_with("bad/Cargo.toml: [dependencies] duct sets `default-features`")
        );
        assert!(
            breaches[2]
                .starts_with("bad/Cargo.toml: [dev-dependencies] helper is not `workspace = true`")
        );
        assert!(
            breaches[3]
                .starts_with("bad/Cargo.toml: [target.'cfg(unix)'.build-dependencies] libc is not")
        );
        assert!(breaches[3].contains("[workspace.dependencies]"));
    }

    #[test]
    fn a_readme_missing_a_module_or_test_is_named() {
        let breaches = run(check_readmes);
        only_bad(&breaches);
        assert_eq!(breaches.len(), 3, "{breaches:#?}");
        // `beta` is in prose only, and `alphabet` is not `alpha`: a name counts only in code.
        assert!(breaches[0].starts_with("bad/README.md: does not name `beta` (bad/src/beta.rs)"));
        assert!(breaches[0].contains("(its `//!`: \"Beta: spawns.\")"));
        assert!(breaches[1].starts_with("bad/README.md: does not name `t.rs` (bad/tests/t.rs)"));
        assert!(breaches[2].starts_with("README.md: does not name the member folder `bad/`"));
        assert!(breaches[2].contains("link to bad/README.md"));
    }

    #[test]
    fn a_missing_readme_is_named() {
        let dir = tree();
        std::fs::remove_file(dir.path().join("runner/README.md")).unwrap();
        let breaches = check_readmes(dir.path(), &members(dir.path()).unwrap());
        assert!(
            breaches
                .iter()
                .any(|b| b.starts_with("runner/README.md: missing; write it")),
            "{breaches:#?}"
        );
    }

    #[test]
    fn a_spawn_clippy_does_not_forbid_and_an_allow_outside_the_runner_are_named() {
        let breaches = run(check_process_rule);
        assert_eq!(breaches.len(), 2, "{breaches:#?}");
        // The runner depends on duct, so duct::cmd must be forbidden too; std's is.
        assert!(breaches[0].starts_with("clippy.toml: `disallowed-methods` lacks `duct::cmd`"));
        assert!(breaches[0].contains("path = \"duct::cmd\""));
        // The allow in runner/src is fine; the one in bad/src is not.
        assert!(
            breaches[1].starts_with(
                "bad/src/beta.rs:2: allows `clippy::disallowed_methods` outside runner/"
            )
        );

        let dir = tree();
        write(dir.path(), "clippy.toml", "msrv = \"1.89\"\n");
        let breaches = check_process_rule(dir.path(), &members(dir.path()).unwrap());
        assert!(
            breaches[0].contains("lacks `std::process::Command::new`"),
            "{breaches:#?}"
        );
    }

    #[test]
    fn code_spans_are_inline_code_and_fenced_blocks() {
        let md = "a `one` b ``two ` x`` c\n```sh\nthree --x\n```\nd `unclosed\n";
        assert_eq!(code_spans(md), ["three --x", "one", "two ` x"]);
        assert!(holds_word("ffi::{cuda,nvml}", "ffi"));
        assert!(holds_word("tests/cli.rs", "cli.rs"));
        assert!(!holds_word("gpu-probe", "probe"));
        assert!(!holds_word("alphabet", "alpha"));
    }
}
