//! `cargo xtask dist` and `cargo xtask gpu-bundle`: portable release binaries.
//!
//! The tools must run on hosts and in container images older than this build machine, so they are
//! linked against glibc 2.28 with `cargo zigbuild` (target suffix `.2.28`; zig and cargo-zigbuild
//! from PATH or from the virtual environment [`zigbuild`] makes under `target/`), and every binary's
//! highest `GLIBC_x.y` symbol version is checked: the build fails when one needs a newer glibc.
//! The gpu-probe artifact is the one cluster-ctl copies into pods.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use lab_runner::{Cmd, Runner, SystemRunner};
use sha2::{Digest, Sha256};

pub mod zigbuild;

pub const TOOLS: &[&str] = &["gpu-probe", "host-setup", "cluster-ctl", "evidence-pack"];
pub const GLIBC_BASELINE: (u32, u32) = (2, 28);
const X86: &str = "x86_64-unknown-linux-gnu";
const ARM: &str = "aarch64-unknown-linux-gnu";

#[derive(Debug, clap::Args)]
pub struct DistArgs {
    /// Where the binaries and SHA256SUMS go.
    #[arg(long, default_value = "dist")]
    pub out: PathBuf,
    /// Build only these tools (default: all four).
    #[arg(long = "tool")]
    pub tools: Vec<String>,
}

/// Builds, checks and collects the binaries; returns their paths.
pub fn run(args: &DistArgs) -> Result<Vec<PathBuf>> {
    let runner = SystemRunner::new(true).with_hint("objdump", "install binutils");
    let root = crate::workspace_root();
    let family = crate::lab::preflight::Distro::read().family();
    let zigbuild = zigbuild::ensure(&runner, &root, family)?;
    let tools: Vec<&str> = if args.tools.is_empty() {
        TOOLS.to_vec()
    } else {
        args.tools.iter().map(String::as_str).collect()
    };
    let out_dir = if args.out.is_absolute() {
        args.out.clone()
    } else {
        root.join(&args.out)
    };
    let mut targets = vec![X86];
    if rust_target_installed(&runner, ARM) {
        targets.push(ARM);
    } else {
        eprintln!(
            "note: aarch64 skipped: the Rust target {ARM} is not installed here (`rustup target add {ARM}`)"
        );
    }
    let mut built = Vec::new();
    for target in targets {
        let mut cmd = zigbuild
            .cmd()
            .args(["zigbuild", "--release", "--target"])
            .arg(format!("{target}.2.28"));
        for tool in &tools {
            cmd = cmd.args(["-p", tool]);
        }
        let out = runner.run(&cmd.dir(&root).streamed())?;
        if !out.success() {
            bail!(
                "the {target} build failed (exit {:?}); its output is above",
                out.code
            );
        }
        let dest = out_dir.join(target);
        std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
        for tool in &tools {
            let src = root.join("target").join(target).join("release").join(tool);
            let bin = dest.join(tool);
            std::fs::copy(&src, &bin).with_context(|| format!("copying {}", src.display()))?;
            check_glibc(&runner, &bin)?;
            built.push(bin);
        }
    }
    write_sums(&out_dir, &built)?;
    for b in &built {
        let size = std::fs::metadata(b).map(|m| m.len()).unwrap_or(0);
        eprintln!("{:>9} bytes  {}", size, b.display());
    }
    eprintln!(
        "SHA256SUMS written to {}",
        out_dir.join("SHA256SUMS").display()
    );
    Ok(built)
}

fn rust_target_installed(runner: &dyn Runner, target: &str) -> bool {
    runner
        .run(&Cmd::new("rustup").args(["target", "list", "--installed"]))
        .is_ok_and(|o| o.stdout.lines().any(|l| l.trim() == target))
}

/// Fails when `bin` needs a glibc newer than the baseline.
pub fn check_glibc(runner: &dyn Runner, bin: &Path) -> Result<(u32, u32)> {
    let out = runner.run_checked(&Cmd::new("objdump").arg("-T").arg(bin.display().to_string()))?;
    let Some(max) = max_glibc(&out.stdout) else {
        bail!(
            "{}: no GLIBC symbol versions found (not a dynamic glibc binary?)",
            bin.display()
        );
    };
    if max > GLIBC_BASELINE {
        bail!(
            "{} needs GLIBC_{}.{}, newer than the {}.{} baseline: build it with `cargo zigbuild --target {X86}.2.28`",
            bin.display(),
            max.0,
            max.1,
            GLIBC_BASELINE.0,
            GLIBC_BASELINE.1
        );
    }
    eprintln!(
        "{}: highest GLIBC symbol version {}.{} (≤ {}.{})",
        bin.display(),
        max.0,
        max.1,
        GLIBC_BASELINE.0,
        GLIBC_BASELINE.1
    );
    Ok(max)
}

/// The highest `GLIBC_x.y[.z]` in `objdump -T` output, as (major, minor).
pub fn max_glibc(objdump: &str) -> Option<(u32, u32)> {
    objdump
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.');
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        })
        .max()
}

fn write_sums(dir: &Path, files: &[PathBuf]) -> Result<()> {
    let mut lines = String::new();
    for f in files {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let rel = f.strip_prefix(dir).unwrap_or(f);
        lines.push_str(&format!(
            "{:x}  {}\n",
            Sha256::digest(&bytes),
            rel.display()
        ));
    }
    std::fs::write(dir.join("SHA256SUMS"), lines).context("writing SHA256SUMS")
}

/// Builds what the GPU tests need on a GPU host into `.carry/` (ignored by git):
/// the portable gpu-probe, the GPU test binary and the benchmark.
pub fn gpu_bundle() -> Result<()> {
    let root = crate::workspace_root();
    let carry = root.join(".carry");
    std::fs::create_dir_all(&carry)?;
    let args = DistArgs {
        out: carry.join("dist"),
        tools: vec!["gpu-probe".into()],
    };
    let built = run(&args)?;
    if let Some(probe) = built.first() {
        std::fs::copy(probe, carry.join("gpu-probe"))?;
    }
    let runner = SystemRunner::new(true);
    for (sub, kind, name, dest) in [
        ("test", "--test", "gpu", "gpu-test"),
        ("bench", "--bench", "probe", "probe-bench"),
    ] {
        let cmd = Cmd::new("cargo")
            .args([
                sub,
                "-p",
                "gpu-probe",
                kind,
                name,
                "--no-run",
                "--message-format=json",
            ])
            .dir(&root);
        let out = runner.run_checked(&cmd)?;
        let exe = executable_of(&out.stdout, name)
            .with_context(|| format!("no executable for {kind} {name}"))?;
        let target = carry.join(dest);
        std::fs::copy(&exe, &target)?;
        let _ = runner.run(&Cmd::new("strip").arg(target.display().to_string()));
    }
    eprintln!("ready: {} (copy it to the GPU host)", carry.display());
    Ok(())
}

/// The executable of target `name` in cargo's JSON messages.
fn executable_of(messages: &str, name: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|m| {
            (m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
                .then(|| m["executable"].as_str().map(PathBuf::from))
                .flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_runner::RecordingRunner;

    const OBJDUMP: &str = "\
0000000000000000      DF *UND*  0000000000000000 (GLIBC_2.2.5) write
0000000000000000      DF *UND*  0000000000000000 (GLIBC_2.28) fcntl64
0000000000000000      DF *UND*  0000000000000000  GLIBC_2.18  __cxa_thread_atexit_impl
";

    #[test]
    fn highest_glibc_version() {
        assert_eq!(max_glibc(OBJDUMP), Some((2, 28)));
        assert_eq!(
            max_glibc("(GLIBC_2.34) __libc_start_main\n(GLIBC_2.9) pipe2"),
            Some((2, 34))
        );
        assert_eq!(max_glibc("no versions"), None);
        assert_eq!(max_glibc("(GLIBC_PRIVATE) x"), None);
    }

    #[test]
    fn a_binary_needing_a_newer_glibc_fails_the_check() {
        let fake = RecordingRunner::new(&["objdump"]);
        fake.reply("objdump", 0, "(GLIBC_2.34) __libc_start_main\n", "");
        let err = check_glibc(&fake, Path::new("/x/gpu-probe")).expect_err("2.34 > 2.28");
        assert!(err.to_string().contains("GLIBC_2.34"), "{err}");
        let ok = RecordingRunner::new(&["objdump"]);
        ok.reply("objdump", 0, OBJDUMP, "");
        assert_eq!(
            check_glibc(&ok, Path::new("/x/gpu-probe")).expect("ok"),
            (2, 28)
        );
    }

    #[test]
    fn the_check_runs_on_this_machines_own_binaries() {
        // A real objdump on a real native binary of this machine (Debian 12: glibc 2.36): the
        // parser must find a version, whatever it is.
        let runner = SystemRunner::new(false);
        if !runner.exists("objdump") {
            lab_runner::tier::skipped("objdump", "objdump is not installed (Debian: binutils)");
            return;
        }
        let exe = std::env::current_exe().expect("exe");
        let out = runner
            .run_checked(&Cmd::new("objdump").arg("-T").arg(exe.display().to_string()))
            .expect("objdump");
        assert!(max_glibc(&out.stdout).is_some());
    }

    #[test]
    fn finds_the_test_executable_in_cargo_messages() {
        let msgs = r#"{"reason":"compiler-artifact","target":{"name":"other"},"executable":"/t/other"}
{"reason":"compiler-artifact","target":{"name":"gpu"},"executable":"/t/deps/gpu-abc"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            executable_of(msgs, "gpu"),
            Some(PathBuf::from("/t/deps/gpu-abc"))
        );
        assert_eq!(executable_of(msgs, "probe"), None);
    }
}
