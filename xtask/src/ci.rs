//! `cargo xtask ci`: what `.ci/run` runs on a clean clone. Installs the Debian packages the tests
//! use (when root and missing), then `cargo fmt --check`, `cargo clippy -D warnings` and
//! `cargo test --workspace`. Streams each step's output so the CI log shows the test summaries.

use anyhow::{Context, Result, bail};
use lab_runner::{Cmd, Runner, SystemRunner};

/// Debian packages the tests use, with the binary that shows each is installed.
const TEST_PACKAGES: &[(&str, &str, &str)] = &[
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
];

#[derive(Debug, clap::Args)]
pub struct CiArgs {
    /// Do not install missing Debian packages (their tests then skip, visibly).
    #[arg(long)]
    no_install: bool,
}

pub fn run(args: &CiArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let runner = SystemRunner::new(true);
    let root = crate::workspace_root();
    if !args.no_install {
        install_test_packages(&runner)?;
        install_containerd2(&runner, &root);
    }
    let steps: [(&str, Cmd); 4] = [
        (
            "format",
            Cmd::new("cargo").args(["fmt", "--all", "--", "--check"]),
        ),
        (
            "clippy",
            Cmd::new("cargo").args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        ),
        // The brief's "no panics on user input or environment": production code (not tests) may not
        // unwrap, expect or panic at all.
        (
            "no panics in production code",
            Cmd::new("cargo").args([
                "clippy",
                "--workspace",
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
        ("tests", Cmd::new("cargo").args(["test", "--workspace"])),
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
    fresh_vm_step(started.elapsed())?;
    eprintln!("==> ci: format, clippy and tests passed");
    Ok(())
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
/// host-setup's real-containerd tests validate v3 configs with it.
fn install_containerd2(runner: &dyn Runner, root: &std::path::Path) {
    if std::path::Path::new("/opt/containerd2/usr/bin/containerd").exists() {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "note: containerd 2.x for the v3 config tests is missing and needs root; those tests will be SKIPPED"
        );
        return;
    }
    let script = root
        .join("host-setup/tests/install-containerd2.sh")
        .display()
        .to_string();
    match runner.run(&Cmd::new("bash").arg(script)) {
        Ok(o) if o.success() => eprintln!(
            "==> containerd 2.x unpacked to /opt/containerd2: {}",
            o.stdout.trim()
        ),
        Ok(o) => eprintln!(
            "note: could not fetch containerd 2.x ({}); the v3 tests will be SKIPPED",
            o.stderr.trim()
        ),
        Err(e) => {
            eprintln!("note: could not fetch containerd 2.x ({e}); the v3 tests will be SKIPPED")
        }
    }
}

fn install_test_packages(runner: &dyn Runner) -> Result<()> {
    let missing: Vec<&(&str, &str, &str)> = TEST_PACKAGES
        .iter()
        .filter(|(_, bin, _)| !runner.exists(bin))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|(pkg, _, _)| *pkg).collect();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !runner.exists("apt-get") {
        for (pkg, _, why) in &missing {
            eprintln!("note: Debian package {pkg} is missing ({why}); its tests will be SKIPPED");
        }
        return Ok(());
    }
    eprintln!("==> installing test packages: {}", names.join(" "));
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    let update = Cmd::new("apt-get").args(["update", "-qq"]);
    let install = Cmd::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(names);
    for cmd in [update, install] {
        let cmd = env.iter().fold(cmd, |c, (k, v)| c.env(*k, *v));
        runner
            .run_checked(&cmd)
            .context("installing the Debian packages the tests use")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_runner::RecordingRunner;

    #[test]
    fn nothing_is_installed_when_everything_is_present() {
        let fake = RecordingRunner::new(&["containerd", "chromium", "xmllint", "apt-get"]);
        install_test_packages(&fake).expect("ok");
        assert!(fake.calls().is_empty());
    }
}
