//! The tier table `cargo xtask ci` prints after the tests: for each tier (pure, golden, built
//! CLI, mock API, real containerd 1.x and 2.x, tar/sha256sum, xmllint, chromium, …) how many
//! tests ran it, or why none did; and, under `CI=true`, which tiers that CI can install did not
//! run (a failure, not a skip).
//!
//! Pure: it reads the tier log the tests wrote (`lab_runner::tier`, see ARCHITECTURE.md "Test
//! tiers") and cargo's test output, so every count rests on a record of a test that passed.
//! - a **program tier** counts the tests that ran that real program through `SystemRunner`
//!   (a bare `--version` probe does not count);
//! - a **reported tier** counts the tests that called `lab_runner::tier::ran(NAME)`;
//! - **golden** counts the tests of `tests/golden*.rs` files;
//! - **pure** counts every other passed test: no record of any tier.
//!
//! Skips come from `lab_runner::tier::skipped(NAME, why)`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use lab_runner::tier::{Event, Record};

/// What shows that a test exercised a tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// Passed tests with no record of any other tier.
    Rest,
    /// Tests of test files `tests/<prefix>*.rs`.
    TestFiles(&'static str),
    /// A run of any of these programs (by file name).
    Programs(Vec<String>),
    /// A run of `containerd` whose major version is in `min..=max`.
    Containerd { min: u32, max: u32 },
    /// A run of a binary built in the workspace's target dir (a CLI under test).
    BuiltBinaries,
    /// `lab_runner::tier::ran(name)`.
    Reported,
}

/// Whether CI can put what a tier needs on the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Install {
    /// Nothing to install (pure, golden, built CLI).
    Nothing,
    /// Debian packages (installed by `cargo xtask ci` as root).
    Debian(String),
    /// A script of the repo.
    Script(&'static str),
    /// Cannot be had on a CI machine; the text says where it runs.
    NotHere(&'static str),
}

impl Install {
    /// CI can make the tier run, so under `CI=true` a tier that did not run fails.
    pub fn required(&self) -> bool {
        matches!(self, Self::Nothing | Self::Debian(_) | Self::Script(_))
    }
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub name: String,
    pub evidence: Evidence,
    pub install: Install,
}

/// Every tier `cargo xtask ci` knows: the fixed ones, plus one per Debian test package
/// (`(package, binary, why)`, the list in ci.rs), so a package added there gets its row.
pub fn registry(packages: &[(&str, &str, &str)]) -> Vec<Tier> {
    let tier = |name: &str, evidence, install| Tier {
        name: name.to_owned(),
        evidence,
        install,
    };
    let mut out = vec![
        tier("pure", Evidence::Rest, Install::Nothing),
        tier("golden", Evidence::TestFiles("golden"), Install::Nothing),
        tier("built CLI", Evidence::BuiltBinaries, Install::Nothing),
        tier("mock API", Evidence::Reported, Install::Nothing),
        tier(
            "containerd 1.x",
            Evidence::Containerd { min: 1, max: 1 },
            Install::Debian("containerd".to_owned()),
        ),
        tier(
            "containerd 2.x",
            Evidence::Containerd {
                min: 2,
                max: u32::MAX,
            },
            Install::Script("host-setup/tests/install-containerd2.sh"),
        ),
        tier(
            "tar/sha256sum",
            Evidence::Programs(vec!["tar".to_owned(), "sha256sum".to_owned()]),
            Install::Debian("tar coreutils".to_owned()),
        ),
        tier(
            "GPU",
            Evidence::Reported,
            Install::NotHere(
                "needs an NVIDIA GPU: run on the GPU machine (`cargo xtask gpu-bundle`, README \"GPU tests\")",
            ),
        ),
    ];
    for (package, binary, _) in packages {
        if *binary == "containerd" || out.iter().any(|t| t.name == *binary) {
            continue;
        }
        out.push(tier(
            binary,
            Evidence::Programs(vec![(*binary).to_owned()]),
            Install::Debian((*package).to_owned()),
        ));
    }
    out
}

/// One test libtest reported as passed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PassedTest {
    /// File name of the test executable (`host_setup-1a2b…`), `doctest-<crate>` for doc tests.
    pub binary: String,
    /// The source cargo named in its `Running` line (`tests/cli.rs`, `src/lib.rs`).
    pub source: String,
    pub name: String,
}

/// Passed tests from `cargo test` output (its `Running …` / `Doc-tests …` lines and the
/// `test NAME ... ok` lines after each).
pub fn passed_tests(cargo_output: &str) -> Vec<PassedTest> {
    let mut out = Vec::new();
    let (mut binary, mut source) = (String::new(), String::new());
    for line in cargo_output.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("Running ") {
            // `Running unittests src/lib.rs (target/debug/deps/host_setup-1a2b)` or
            // `Running tests/cli.rs (target/debug/deps/cli-3c4d)`.
            let rest = rest.strip_prefix("unittests ").unwrap_or(rest);
            if let Some((src, exe)) = rest.split_once(" (") {
                source = src.to_owned();
                binary = Path::new(exe.trim_end_matches(')'))
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
            }
        } else if let Some(krate) = t.strip_prefix("Doc-tests ") {
            source = "doc tests".to_owned();
            binary = format!("doctest-{krate}");
        } else if let Some(name) = passed_name(t) {
            out.push(PassedTest {
                binary: binary.clone(),
                source: source.clone(),
                name: name.to_owned(),
            });
        }
    }
    out
}

/// The test name of a `test NAME ... ok` line. A test that writes to stderr directly (not through
/// libtest's capture) can put text in front of it on the same line
/// (`SKIPPED (GPU test): test NAME ... ok`), so the `test ` after a space counts too.
fn passed_name(line: &str) -> Option<&str> {
    let head = line.strip_suffix(" ... ok")?;
    let at = head
        .match_indices("test ")
        .map(|(i, _)| i)
        .find(|&i| i == 0 || head[..i].ends_with(char::is_whitespace))?;
    Some(&head[at + "test ".len()..])
}

/// What the machine has, as far as the table needs to know.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    /// Major version of each containerd binary the tests ran (by path).
    pub containerd_majors: BTreeMap<String, u32>,
    /// Programs found on PATH (for "not installed" reasons).
    pub on_path: BTreeSet<String>,
    /// The workspace's target dir (binaries under it are "built CLI").
    pub target_dir: String,
}

/// A row as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub tier: Tier,
    /// Distinct tests that exercised it.
    pub tests: usize,
    /// Why it did not run (or ran only partly), when it did not fully run.
    pub skipped: Vec<String>,
    pub status: String,
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn is_probe(detail: &str) -> bool {
    detail.ends_with(" args=--version") || detail.ends_with(" args=version")
}

/// The table.
pub fn table(
    tiers: &[Tier],
    records: &[Record],
    passed: &[PassedTest],
    machine: &Machine,
) -> Vec<Row> {
    // Which tier each (binary, test) record belongs to.
    let mut by_tier: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    let mut skips: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in records {
        let key = (r.binary.clone(), r.test.clone());
        match r.event {
            Event::Ran => {
                by_tier.entry(r.name.clone()).or_default().insert(key);
            }
            Event::Skipped => {
                skips
                    .entry(r.name.clone())
                    .or_default()
                    .insert(r.detail.clone());
            }
            Event::Exec if is_probe(&r.detail) => {}
            Event::Exec => {
                for t in tiers {
                    let hit = match &t.evidence {
                        Evidence::Programs(names) => names.iter().any(|n| n == file_name(&r.name)),
                        Evidence::Containerd { min, max } => {
                            file_name(&r.name) == "containerd"
                                && machine
                                    .containerd_majors
                                    .get(&r.name)
                                    .is_some_and(|m| (min..=max).contains(&m))
                        }
                        Evidence::BuiltBinaries => {
                            !machine.target_dir.is_empty()
                                && r.name.starts_with(&machine.target_dir)
                        }
                        _ => false,
                    };
                    if hit {
                        by_tier
                            .entry(t.name.clone())
                            .or_default()
                            .insert(key.clone());
                    }
                }
            }
        }
    }
    // Reported tiers CI does not know get rows too (a crate adding a tier needs no ci change).
    let mut tiers = tiers.to_vec();
    for name in by_tier.keys().chain(skips.keys()) {
        if !tiers.iter().any(|t| &t.name == name) {
            tiers.push(Tier {
                name: name.clone(),
                evidence: Evidence::Reported,
                install: Install::NotHere(
                    "a tier reported by its tests; cargo xtask ci does not install it",
                ),
            });
        }
    }
    let golden = |p: &PassedTest| {
        tiers.iter().any(|t| match t.evidence {
            Evidence::TestFiles(prefix) => p.source.starts_with(&format!("tests/{prefix}")),
            _ => false,
        })
    };
    // A test with any record (a tier it ran, or one it skipped) is not "pure".
    let mut counted: BTreeSet<(String, String)> = by_tier.values().flatten().cloned().collect();
    counted.extend(
        records
            .iter()
            .filter(|r| r.event == Event::Skipped)
            .map(|r| (r.binary.clone(), r.test.clone())),
    );
    counted.extend(
        passed
            .iter()
            .filter(|p| golden(p))
            .map(|p| (p.binary.clone(), p.name.clone())),
    );
    tiers
        .into_iter()
        .map(|t| {
            let tests = match &t.evidence {
                Evidence::Rest => passed
                    .iter()
                    .filter(|p| !counted.contains(&(p.binary.clone(), p.name.clone())))
                    .count(),
                Evidence::TestFiles(prefix) => passed
                    .iter()
                    .filter(|p| p.source.starts_with(&format!("tests/{prefix}")))
                    .count(),
                _ => by_tier.get(&t.name).map_or(0, BTreeSet::len),
            };
            let skipped: Vec<String> = skips
                .get(&t.name)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            let status = status(&t, tests, &skipped, machine);
            Row {
                tier: t,
                tests,
                skipped,
                status,
            }
        })
        .collect()
}

fn status(t: &Tier, tests: usize, skipped: &[String], machine: &Machine) -> String {
    let missing: Vec<&String> = match &t.evidence {
        Evidence::Programs(names) => names
            .iter()
            .filter(|n| !machine.on_path.contains(*n))
            .collect(),
        _ => Vec::new(),
    };
    match (tests, skipped.is_empty()) {
        (n, true) if n > 0 => "ran".to_owned(),
        (n, false) if n > 0 => format!("ran, but also skipped: {}", skipped.join("; ")),
        (_, false) => format!("skipped: {}", skipped.join("; ")),
        _ => match &t.install {
            Install::NotHere(why) => format!("not run: {why}"),
            _ if !missing.is_empty() => format!(
                "skipped: {} not installed",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => "NOT RUN: no test ran it".to_owned(),
        },
    }
}

/// The table for the CI log.
pub fn render(rows: &[Row]) -> String {
    let width = rows
        .iter()
        .map(|r| r.tier.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut s = format!("{:<width$}  {:>5}  STATUS\n", "TIER", "TESTS");
    for r in rows {
        let _ = writeln!(s, "{:<width$}  {:>5}  {}", r.tier.name, r.tests, r.status);
    }
    s
}

/// Under `CI=true`: every tier CI can install must have run, with no skip.
pub fn ci_failures(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .filter(|r| r.tier.install.required())
        .filter_map(|r| {
            let how = match &r.tier.install {
                Install::Debian(p) => format!("apt-get install {p}"),
                Install::Script(s) => format!("bash {s}"),
                _ => "nothing to install".to_owned(),
            };
            if r.tests == 0 {
                Some(format!(
                    "{}: no test ran it ({}; CI installs it with `{how}`)",
                    r.tier.name, r.status
                ))
            } else if !r.skipped.is_empty() {
                Some(format!(
                    "{}: a test skipped it under CI=true: {}",
                    r.tier.name,
                    r.skipped.join("; ")
                ))
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARGO: &str = "\
     Running unittests src/lib.rs (target/debug/deps/host_setup-aa11)
running 2 tests
test root::tests::a ... ok
test root::tests::b ... ok
test result: ok. 2 passed; 0 failed
     Running tests/golden_containerd.rs (target/debug/deps/golden_containerd-bb22)
test every_fixture ... ok
     Running tests/real_containerd.rs (/w/target/debug/deps/real_containerd-cc33)
test loads_v2 ... ok
test loads_v3 ... ok
test ignored_one ... ignored
SKIPPED (GPU test): test interleaved ... ok
   Doc-tests host_setup
test src/lib.rs - x (line 3) ... ok
";

    fn rec(event: Event, name: &str, binary: &str, test: &str, detail: &str) -> Record {
        Record {
            event,
            name: name.into(),
            binary: binary.into(),
            test: test.into(),
            detail: detail.into(),
        }
    }

    fn machine() -> Machine {
        Machine {
            containerd_majors: [
                ("/usr/bin/containerd".to_owned(), 1),
                ("/opt/c2/containerd".to_owned(), 2),
            ]
            .into(),
            on_path: ["containerd", "tar", "sha256sum"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            target_dir: "/w/target".into(),
        }
    }

    fn row<'a>(rows: &'a [Row], name: &str) -> &'a Row {
        rows.iter().find(|r| r.tier.name == name).unwrap()
    }

    #[test]
    fn cargo_output_gives_the_passed_tests_with_their_binary() {
        let p = passed_tests(CARGO);
        assert_eq!(p.len(), 7, "{p:?}");
        assert_eq!(p[0].binary, "host_setup-aa11");
        assert_eq!(p[2].source, "tests/golden_containerd.rs");
        assert_eq!(p[3].binary, "real_containerd-cc33");
        assert_eq!(p[5].name, "interleaved");
        assert_eq!(p[6].binary, "doctest-host_setup");
        assert_eq!(p[6].name, "src/lib.rs - x (line 3)");
    }

    #[test]
    fn each_test_counts_where_its_records_put_it() {
        let records = [
            rec(
                Event::Exec,
                "/usr/bin/containerd",
                "real_containerd-cc33",
                "loads_v2",
                "exit=0 args=-c",
            ),
            // A version probe alone does not count.
            rec(
                Event::Exec,
                "/opt/c2/containerd",
                "real_containerd-cc33",
                "loads_v2",
                "exit=0 args=--version",
            ),
            rec(
                Event::Exec,
                "/opt/c2/containerd",
                "real_containerd-cc33",
                "loads_v3",
                "exit=0 args=-c",
            ),
            rec(
                Event::Exec,
                "/w/target/debug/host-setup",
                "real_containerd-cc33",
                "loads_v3",
                "exit=0 args=verify",
            ),
            rec(Event::Ran, "Pushgateway", "x-1", "pushes", ""),
            rec(
                Event::Skipped,
                "chromium",
                "chromium-9",
                "renders",
                "chromium is not installed",
            ),
        ];
        let rows = table(
            &registry(&[("chromium", "chromium", "")]),
            &records,
            &passed_tests(CARGO),
            &machine(),
        );
        assert_eq!(row(&rows, "containerd 1.x").tests, 1);
        assert_eq!(row(&rows, "containerd 2.x").tests, 1);
        assert_eq!(row(&rows, "built CLI").tests, 1);
        assert_eq!(row(&rows, "golden").tests, 1);
        // 7 passed: 2 with containerd records, 1 golden → 4 pure (the lib tests, the interleaved
        // one, the doc test).
        assert_eq!(row(&rows, "pure").tests, 4);
        assert_eq!(
            row(&rows, "chromium").status,
            "skipped: chromium is not installed"
        );
        assert_eq!(
            row(&rows, "Pushgateway").tests,
            1,
            "a reported tier CI does not know gets a row"
        );
        // The mock API is reported by cluster-ctl's tests; none did here, and CI can run them.
        assert_eq!(row(&rows, "mock API").status, "NOT RUN: no test ran it");
        assert_eq!(
            row(&rows, "tar/sha256sum").status,
            "NOT RUN: no test ran it"
        );
        assert!(row(&rows, "GPU").status.contains("needs an NVIDIA GPU"));

        let failures = ci_failures(&rows);
        assert!(
            failures
                .iter()
                .any(|f| f.starts_with("chromium: no test ran it")),
            "{failures:?}"
        );
        assert!(
            failures
                .iter()
                .any(|f| f.starts_with("tar/sha256sum: no test ran it")),
            "{failures:?}"
        );
        assert!(
            failures
                .iter()
                .any(|f| f.starts_with("mock API: no test ran it")),
            "{failures:?}"
        );
        assert!(
            !failures
                .iter()
                .any(|f| f.starts_with("GPU") || f.starts_with("Pushgateway")),
            "{failures:?}"
        );
        assert!(
            !failures.iter().any(|f| f.starts_with("containerd")),
            "{failures:?}"
        );
        let text = render(&rows);
        assert!(text.starts_with("TIER"), "{text}");
        let line = text
            .lines()
            .find(|l| l.starts_with("containerd 2.x "))
            .unwrap();
        assert_eq!(
            line.split_whitespace().collect::<Vec<_>>(),
            ["containerd", "2.x", "1", "ran"],
            "{text}"
        );
    }

    #[test]
    fn a_skip_next_to_runs_still_fails_under_ci() {
        let records = [
            rec(
                Event::Exec,
                "/usr/bin/containerd",
                "real_containerd-cc33",
                "loads_v2",
                "exit=0 args=-c",
            ),
            rec(
                Event::Skipped,
                "containerd 1.x",
                "cli-1",
                "each_fixture",
                "partly: no v2 binary",
            ),
        ];
        let rows = table(&registry(&[]), &records, &passed_tests(CARGO), &machine());
        let r = row(&rows, "containerd 1.x");
        assert_eq!(r.status, "ran, but also skipped: partly: no v2 binary");
        assert!(
            ci_failures(&rows)
                .iter()
                .any(|f| f.contains("a test skipped it under CI=true"))
        );
    }
}
