//! `cargo xtask ci`: what `.ci/run` runs on a clean clone. Installs what the tests use (the
//! Debian packages below when root and missing, and containerd 2.x with
//! `host-setup/tests/install-containerd2.sh`), then `cargo fmt --check`, `cargo clippy -D
//! warnings` and `cargo test --workspace`, streaming each step's output, and ends with the tier
//! table (`tiers.rs`): what each tier ran, or why not. Under `CI=true`, a tier CI can install
//! that did not run is a failure, not a skip.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use lab_runner::{Cmd, Runner, SystemRunner};

use crate::tiers;

/// Debian packages the tests use, with the binary that shows each is installed.
const TEST_PACKAGES: &[(&str, &str, &str)] = &[
    (
        "binutils",
        "objdump",
        "xtask dist checks the GLIBC symbol versions of the binaries it builds",
    ),
    (
        "containerd",
        "containerd",
        "host-setup validates the configs it writes with the real containerd",
    ),
    (
        "chromium",
        "chromium",
        "evidence-pack renders report.html headless to check it shows",
    ),
    (
        "libxml2-utils",
        "xmllint",
        "evidence-pack checks junit.xml is well-formed XML",
    ),
    (
        "minisign",
        "minisign",
        "evidence-pack's signatures are checked by the real minisign, and it checks minisign's",
    ),
    (
        "tmux",
        "tmux",
        "gpu-probe's progress bars are shown on a real terminal (a tmux pane)",
    ),
    (
        "prometheus-pushgateway",
        "prometheus-pushgateway",
        "cluster-ctl pushes fleet metrics to the real Pushgateway and reads them back",
    ),
];

/// Debian packages of Python modules the tests import with Debian's own interpreter
/// ([`DEBIAN_PYTHON`]): `(package, module, why)`. What must be present is the module, not a
/// program, so each gets a reported tier named after the package (the test calls
/// `lab_runner::tier::ran(package)` after using it).
const TEST_PYTHON_MODULES: &[(&str, &str, &str)] = &[(
    "python3-prometheus-client",
    "prometheus_client.openmetrics.parser",
    "lab-report's OpenMetrics exposition is parsed by the reference OpenMetrics parser",
)];

/// The interpreter Debian's `python3-*` packages install modules for.
const DEBIAN_PYTHON: &str = "/usr/bin/python3";

/// Every tier of the table: the fixed ones, one per test package, one per Python module package.
fn registry() -> Vec<tiers::Tier> {
    let mut out = tiers::registry(TEST_PACKAGES);
    out.extend(
        TEST_PYTHON_MODULES
            .iter()
            .map(|(package, _, _)| tiers::Tier {
                name: (*package).to_owned(),
                evidence: tiers::Evidence::Reported,
                install: tiers::Install::Debian((*package).to_owned()),
            }),
    );
    out
}

/// Whether Debian's python3 imports `module`.
fn python_module_present(runner: &dyn Runner, module: &str) -> bool {
    runner.exists(DEBIAN_PYTHON)
        && runner
            .run(
                &Cmd::new(DEBIAN_PYTHON)
                    .args(["-c", &format!("import {module}")])
                    .timeout(std::time::Duration::from_secs(60)),
            )
            .is_ok_and(|o| o.success())
}

/// The test packages (programs and Python modules) not present here: `(package, why)`.
fn missing_test_packages(runner: &dyn Runner) -> Vec<(&'static str, String)> {
    let programs = TEST_PACKAGES
        .iter()
        .filter(|(_, bin, _)| !runner.exists(bin))
        .map(|(pkg, bin, what)| (*pkg, format!("`{bin}` is not on PATH; {what}")));
    let modules = TEST_PYTHON_MODULES
        .iter()
        .filter(|(_, module, _)| !python_module_present(runner, module))
        .map(|(pkg, module, what)| {
            (
                *pkg,
                format!("{DEBIAN_PYTHON} cannot import {module}; {what}"),
            )
        });
    programs.chain(modules).collect()
}

#[derive(Debug, clap::Args)]
pub struct CiArgs {
    /// Do not install missing Debian packages (their tests then skip, visibly; under CI=true the
    /// run fails).
    #[arg(long)]
    no_install: bool,
    /// Check and test only these crates (repeatable; default: the whole workspace). The tier
    /// table then shows only what their tests ran.
    #[arg(long, short = 'p', value_name = "CRATE")]
    package: Vec<String>,
    /// Only print the tier table of the last run (from target/test-tiers/), running nothing.
    #[arg(long)]
    tiers_only: bool,
}

/// `CI=true` (as CI systems set it): skipping what could be installed is a failure.
fn strict() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

pub fn run(args: &CiArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let runner = SystemRunner::new(true);
    let root = crate::workspace_root();
    if args.tiers_only {
        let rows = tier_table(&SystemRunner::new(false), &root)?;
        eprintln!("==> test tiers (last run)\n{}", tiers::render(&rows));
        return Ok(());
    }
    let mut install_problems = Vec::new();
    if !args.no_install {
        install_problems.extend(install_test_packages(&runner)?);
        install_problems.extend(install_containerd2(&runner, &root));
    }
    let scope: Vec<String> = if args.package.is_empty() {
        vec!["--workspace".to_owned()]
    } else {
        args.package
            .iter()
            .flat_map(|p| ["-p".to_owned(), p.clone()])
            .collect()
    };
    let steps: [(&str, Cmd); 3] = [
        (
            "format",
            Cmd::new("cargo").args(["fmt", "--all", "--", "--check"]),
        ),
        (
            "clippy",
            Cmd::new("cargo")
                .arg("clippy")
                .args(scope.iter().cloned())
                .args(["--all-targets", "--", "-D", "warnings"]),
        ),
        // The brief's "no panics on user input or environment": production code (not tests) may not
        // unwrap, expect or panic at all.
        (
            "no panics in production code",
            Cmd::new("cargo")
                .arg("clippy")
                .args(scope.iter().cloned())
                .args([
                    "--lib",
                    "--bins",
                    "--",
                    "-D",
                    "warnings",
                    "-D",
                    "clippy::unwrap_used",
                    "-D",
                    "clippy::expect_used",
                    "-D",
                    "clippy::panic",
                ]),
        ),
    ];
    for (name, cmd) in steps {
        eprintln!("==> {name}: {cmd}");
        let out = runner
            .run(&cmd.dir(&root).streamed())
            .with_context(|| format!("{name} could not run"))?;
        if !out.success() {
            bail!("{name} failed (exit {:?}); its output is above", out.code);
        }
    }
    let tests_ok = run_tests(&runner, &root, &scope)?;
    let rows = tier_table(&runner, &root)?;
    eprintln!("==> test tiers\n{}", tiers::render(&rows));
    if !tests_ok {
        bail!("tests failed; their output is above");
    }
    if strict() {
        let mut failures = install_problems;
        failures.extend(tiers::ci_failures(&rows));
        if !failures.is_empty() {
            bail!(
                "CI=true: tiers that CI can install did not run:\n  - {}",
                failures.join("\n  - ")
            );
        }
    } else {
        for p in &install_problems {
            eprintln!("note: {p}");
        }
    }
    fresh_vm_step(started.elapsed())?;
    eprintln!("==> ci: format, clippy and tests passed");
    Ok(())
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn tier_files(root: &Path) -> (PathBuf, PathBuf) {
    let dir = target_dir(root).join("test-tiers");
    (dir.join("tiers.log"), dir.join("cargo-test.log"))
}

/// `cargo test --workspace` (or the crates asked for), streamed and kept (for the table), with
/// the tier log on.
fn run_tests(runner: &dyn Runner, root: &Path, scope: &[String]) -> Result<bool> {
    let (log, output) = tier_files(root);
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    for f in [&log, &output] {
        match std::fs::remove_file(f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("remove {}", f.display())),
        }
    }
    let cmd = Cmd::new("bash")
        .args([
            "-c",
            "set -o pipefail; out=$1; shift; cargo test \"$@\" 2>&1 | tee \"$out\"",
            "cargo-test",
            &output.to_string_lossy(),
        ])
        .args(scope.iter().cloned())
        .env(lab_runner::tier::LOG_ENV, log.to_string_lossy())
        .dir(root)
        .streamed();
    eprintln!(
        "==> tests: cargo test {} (tier log: {})",
        scope.join(" "),
        log.display()
    );
    let out = runner.run(&cmd).context("the tests could not run")?;
    Ok(out.success())
}

/// Reads what the tests left and builds the table.
fn tier_table(runner: &dyn Runner, root: &Path) -> Result<Vec<tiers::Row>> {
    let (log, output) = tier_files(root);
    let read = |p: &Path| match std::fs::read_to_string(p) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("read {}", p.display())),
    };
    let records = lab_runner::tier::parse(&read(&log)?);
    let passed = tiers::passed_tests(&read(&output)?);
    let registry = registry();
    let mut machine = tiers::Machine {
        target_dir: target_dir(root).to_string_lossy().into_owned(),
        ..tiers::Machine::default()
    };
    for t in &registry {
        if let tiers::Evidence::Programs(names) = &t.evidence {
            machine
                .on_path
                .extend(names.iter().filter(|n| runner.exists(n)).cloned());
        }
    }
    for r in &records {
        if r.event == lab_runner::tier::Event::Exec
            && r.name.ends_with("/containerd")
            && !machine.containerd_majors.contains_key(&r.name)
            && let Some(major) = containerd_major(runner, &r.name)
        {
            machine.containerd_majors.insert(r.name.clone(), major);
        }
    }
    Ok(tiers::table(&registry, &records, &passed, &machine))
}

/// `containerd --version` → its major version.
fn containerd_major(runner: &dyn Runner, bin: &str) -> Option<u32> {
    let out = runner
        .run(
            &Cmd::new(bin)
                .arg("--version")
                .timeout(std::time::Duration::from_secs(30)),
        )
        .ok()?;
    // `containerd github.com/containerd/containerd/v2 2.1.9+unknown` → 2
    out.stdout
        .split_whitespace()
        .nth(2)?
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// README's VM commands on a fresh Debian root (`cargo xtask fresh-vm-test`), when root, when the
/// disk has room and when it fits the CI budget (`HAMI_CI_BUDGET_MIN`, default 90 minutes).
fn fresh_vm_step(elapsed: std::time::Duration) -> Result<()> {
    let budget_min = std::env::var("HAMI_CI_BUDGET_MIN")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(90);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let free = crate::lab::preflight::disk(&crate::workspace_root().join("target"))
        .map_or(0, |d| d.free_bytes);
    match crate::fresh_vm::ci_decision(
        root,
        elapsed,
        std::time::Duration::from_secs(budget_min * 60),
        free,
    ) {
        Err(why) => eprintln!("==> fresh machine: SKIPPED ({why})"),
        Ok(()) => {
            eprintln!("==> fresh machine: README's VM commands in a debootstrap Debian root");
            match crate::fresh_vm::run(&crate::fresh_vm::FreshVmArgs::default())? {
                0 => {}
                code => bail!("the fresh-machine test failed (exit {code}); its output is above"),
            }
        }
    }
    Ok(())
}

/// A containerd ≥ 2.0 (reads config v3), unpacked beside the system's, never installed:
/// host-setup's real-containerd tests validate v3 configs with it. Returns what went wrong.
fn install_containerd2(runner: &dyn Runner, root: &Path) -> Vec<String> {
    if Path::new("/opt/containerd2/usr/bin/containerd").exists() {
        return Vec::new();
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return vec![
            "containerd 2.x (for the config v3 tests) is missing and installing it needs root"
                .to_owned(),
        ];
    }
    let script = root
        .join("host-setup/tests/install-containerd2.sh")
        .display()
        .to_string();
    match runner.run(
        &Cmd::new("bash")
            .arg(script)
            .timeout(std::time::Duration::from_secs(900)),
    ) {
        Ok(o) if o.success() => {
            eprintln!(
                "==> containerd 2.x unpacked to /opt/containerd2: {}",
                o.stdout.trim()
            );
            Vec::new()
        }
        Ok(o) => vec![format!(
            "could not fetch containerd 2.x: {}",
            o.stderr.trim()
        )],
        Err(e) => vec![format!("could not fetch containerd 2.x: {e}")],
    }
}

/// Installs the missing test packages when root with apt; returns the ones that are still
/// missing afterwards, with why.
fn install_test_packages(runner: &dyn Runner) -> Result<Vec<String>> {
    let missing = missing_test_packages(runner);
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = missing.iter().map(|(pkg, _)| *pkg).collect();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !runner.exists("apt-get") {
        let why = if root { "no apt-get" } else { "not root" };
        return Ok(missing
            .iter()
            .map(|(pkg, what)| {
                format!(
                    "Debian package {pkg} is missing ({what}) and cannot be installed here ({why})"
                )
            })
            .collect());
    }
    eprintln!("==> installing test packages: {}", names.join(" "));
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    let update = Cmd::new("apt-get").args(["update", "-qq"]);
    let install = Cmd::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(names);
    for cmd in [update, install] {
        let cmd = env
            .iter()
            .fold(cmd, |c, (k, v)| c.env(*k, *v))
            .timeout(std::time::Duration::from_secs(1800));
        runner
            .run_checked(&cmd)
            .context("installing the Debian packages the tests use")?;
    }
    Ok(missing_test_packages(runner)
        .into_iter()
        .map(|(pkg, what)| format!("Debian package {pkg} was installed but still {what}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_runner::RecordingRunner;

    #[test]
    fn nothing_is_installed_when_everything_is_present() {
        let present: Vec<&str> = TEST_PACKAGES
            .iter()
            .map(|(_, bin, _)| *bin)
            .chain(["apt-get", DEBIAN_PYTHON])
            .collect();
        let fake = RecordingRunner::new(&present);
        assert!(install_test_packages(&fake).expect("ok").is_empty());
        // Only the import checks ran.
        let lines = fake.lines();
        assert_eq!(lines.len(), TEST_PYTHON_MODULES.len(), "{lines:?}");
        assert!(lines.iter().all(|l| l.contains("import ")), "{lines:?}");
    }

    #[test]
    fn every_test_package_has_a_tier_row() {
        let rows = registry();
        for (_, bin, _) in TEST_PACKAGES {
            let want = if *bin == "containerd" {
                "containerd 1.x"
            } else {
                bin
            };
            assert!(rows.iter().any(|t| t.name == want), "{bin}");
        }
        for (package, _, _) in TEST_PYTHON_MODULES {
            let row = rows.iter().find(|t| t.name == *package).expect("a row");
            assert!(row.install.required(), "{package}");
        }
    }

    #[test]
    fn a_python_module_that_does_not_import_is_installed() {
        let present: Vec<&str> = TEST_PACKAGES
            .iter()
            .map(|(_, bin, _)| *bin)
            .chain(["apt-get", DEBIAN_PYTHON])
            .collect();
        let fake = RecordingRunner::new(&present);
        // Not importable before the install (and not after: the run then says so).
        fake.reply("import prometheus_client", 1, "", "ModuleNotFoundError");
        // Root: apt-get installs it (and the check after says it still does not import);
        // not root: the problem says it cannot be installed here.
        let problems = install_test_packages(&fake).expect("ok");
        let lines = fake.lines();
        if lines.iter().any(|l| l.contains("apt-get install")) {
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains("python3-prometheus-client")),
                "{lines:?}"
            );
        }
        assert!(
            problems
                .iter()
                .any(|p| p.contains("python3-prometheus-client")),
            "{problems:?}"
        );
    }
}
