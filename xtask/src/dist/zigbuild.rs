//! The portable-build tools, zig and cargo-zigbuild, set up in a way that works on today's
//! distributions.
//!
//! Why a virtual environment: Debian 12+ and Ubuntu 23.04+ mark their system Python as "externally
//! managed" (PEP 668), so `pip install ziglang cargo-zigbuild` is refused there. Both tools are on
//! PyPI as wheels (zig itself, and cargo-zigbuild's prebuilt binary), so the xtask creates a
//! virtual environment under the build folder (`target/zigbuild-venv`), installs the pinned
//! versions into it and runs cargo-zigbuild from there. cargo-zigbuild finds zig through
//! `python3 -m ziglang` when `python3` is the environment's own, so the environment's `bin` goes
//! first on PATH. A cargo-zigbuild and zig the user already has on PATH are used as they are.
//!
//! [`decide`] is pure over [`ZigFacts`] (shared with the lab's preflight, which must say before
//! anything changes whether the build phase will find or can make these tools).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lab_runner::{Cmd, Runner};

/// The environment, relative to the workspace root (under cargo's build folder, ignored by git).
pub const VENV: &str = "target/zigbuild-venv";
/// What goes into it: the versions this repository's dist builds are made with.
pub const PACKAGES: [&str; 2] = ["ziglang==0.17.1", "cargo-zigbuild==0.24.1"];
/// pip downloads about 60 MB; a slow mirror gets this long.
const PIP_TIMEOUT: Duration = Duration::from_secs(900);

/// What [`decide`] looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZigFacts {
    /// `cargo-zigbuild` is on PATH.
    pub zigbuild_on_path: bool,
    /// zig is reachable the way cargo-zigbuild looks for it: `zig` on PATH or `python3 -m ziglang`.
    pub zig_on_path: bool,
    /// `target/zigbuild-venv` exists with its cargo-zigbuild (it is only ever renamed into place
    /// once complete).
    pub venv_ready: bool,
    pub python3: bool,
    /// `python3 -c "import venv, ensurepip"` works (Debian and Ubuntu ship ensurepip only in
    /// `python3-venv`).
    pub python_venv: bool,
}

/// Where the build phase gets the tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZigTools {
    /// The user's own cargo-zigbuild and zig on PATH.
    OnPath,
    /// The environment made earlier.
    Venv,
    /// Python 3 with venv is here: the build makes the environment.
    CreateVenv,
    /// None of the above; `python3` says whether Python is missing or only its venv module.
    Missing { python3: bool },
}

/// Pure: which tools the build will use.
pub fn decide(f: &ZigFacts) -> ZigTools {
    if f.zigbuild_on_path && f.zig_on_path {
        ZigTools::OnPath
    } else if f.venv_ready {
        ZigTools::Venv
    } else if f.python3 && f.python_venv {
        ZigTools::CreateVenv
    } else {
        ZigTools::Missing { python3: f.python3 }
    }
}

fn venv_dir(root: &Path) -> PathBuf {
    root.join(VENV)
}

/// Reads the facts (read-only: nothing is created).
pub fn observe(runner: &dyn Runner, root: &Path) -> ZigFacts {
    let py_ok = |code: &str| {
        runner.exists("python3")
            && runner
                .run(
                    &Cmd::new("python3")
                        .args(["-c", code])
                        .timeout(Duration::from_secs(30)),
                )
                .is_ok_and(|o| o.success())
    };
    ZigFacts {
        zigbuild_on_path: runner.exists("cargo-zigbuild"),
        zig_on_path: runner.exists("zig") || py_ok("import ziglang"),
        venv_ready: venv_dir(root).join("bin/cargo-zigbuild").is_file(),
        python3: runner.exists("python3"),
        python_venv: py_ok("import venv, ensurepip"),
    }
}

/// How to run cargo-zigbuild: the program and the PATH it needs (None: the caller's PATH).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZigBuild {
    pub program: String,
    pub path: Option<String>,
}

impl ZigBuild {
    /// `cargo-zigbuild ARGS…` with the environment's bin first on PATH when it comes from there.
    pub fn cmd(&self) -> Cmd {
        let cmd = Cmd::new(&self.program);
        match &self.path {
            Some(p) => cmd.env("PATH", p),
            None => cmd,
        }
    }
}

fn from_venv(root: &Path) -> ZigBuild {
    let bin = venv_dir(root).join("bin");
    let path = match std::env::var_os("PATH") {
        Some(old) => format!("{}:{}", bin.display(), old.to_string_lossy()),
        None => bin.display().to_string(),
    };
    ZigBuild {
        program: bin.join("cargo-zigbuild").display().to_string(),
        path: Some(path),
    }
}

/// The fix for [`ZigTools::Missing`], for the distribution `family` names.
pub fn missing_fix(python3: bool, family: crate::lab::preflight::Family) -> String {
    use crate::lab::preflight::Family;
    let pkg = match family {
        Family::Debian if python3 => "`sudo apt-get install python3-venv`",
        Family::Debian => "`sudo apt-get install python3 python3-venv`",
        Family::Fedora => "`sudo dnf install python3`",
        Family::Arch => "`sudo pacman -S python`",
        Family::Suse => "`sudo zypper install python3`",
        Family::Unknown => "install Python 3 with its venv module",
    };
    format!(
        "{pkg}: the build then puts zig and cargo-zigbuild into {VENV} (pip inside a virtual environment, as PEP 668 asks); or put your own `cargo-zigbuild` and `zig` on PATH (`cargo install --locked cargo-zigbuild`, zig from https://ziglang.org/download/)"
    )
}

/// Finds or makes the tools; returns how to run cargo-zigbuild.
pub fn ensure(
    runner: &dyn Runner,
    root: &Path,
    family: crate::lab::preflight::Family,
) -> Result<ZigBuild> {
    match decide(&observe(runner, root)) {
        ZigTools::OnPath => Ok(ZigBuild {
            program: "cargo-zigbuild".into(),
            path: None,
        }),
        ZigTools::Venv => Ok(from_venv(root)),
        ZigTools::CreateVenv => {
            create_venv(runner, root)?;
            Ok(from_venv(root))
        }
        ZigTools::Missing { python3 } => bail!(
            "zig and cargo-zigbuild (they link gpu-probe against glibc 2.28) are not on PATH, and {}; fix: {}",
            if python3 {
                "python3 has no venv module to install them with"
            } else {
                "python3 is not installed to install them with"
            },
            missing_fix(python3, family)
        ),
    }
}

/// Builds the environment in a temporary folder and renames it into place only when both tools
/// answer, so a half-made environment is never taken for a ready one.
fn create_venv(runner: &dyn Runner, root: &Path) -> Result<()> {
    let dir = venv_dir(root);
    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .with_context(|| format!("removing the unfinished {}", tmp.display()))?;
    }
    if let Some(parent) = tmp.parent() {
        std::fs::create_dir_all(parent)?;
    }
    eprintln!(
        "==> zig and cargo-zigbuild into {} ({})",
        dir.display(),
        PACKAGES.join(" ")
    );
    let python = tmp.join("bin/python3").display().to_string();
    let steps = [
        Cmd::new("python3")
            .args(["-m", "venv"])
            .arg(tmp.display().to_string())
            .timeout(Duration::from_secs(120)),
        Cmd::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "-q",
            ])
            .args(PACKAGES)
            .timeout(PIP_TIMEOUT),
        Cmd::new(tmp.join("bin/cargo-zigbuild").display().to_string())
            .arg("--version")
            .timeout(Duration::from_secs(30)),
        Cmd::new(&python)
            .args(["-m", "ziglang", "version"])
            .timeout(Duration::from_secs(30)),
    ];
    for cmd in steps {
        runner
            .run_checked(&cmd)
            .with_context(|| format!("setting up {}", dir.display()))?;
    }
    std::fs::rename(&tmp, &dir).with_context(|| format!("moving {} into place", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_runner::RecordingRunner;

    #[test]
    fn the_users_tools_win_then_the_venv_then_making_it() {
        let all = ZigFacts {
            zigbuild_on_path: true,
            zig_on_path: true,
            venv_ready: true,
            python3: true,
            python_venv: true,
        };
        assert_eq!(decide(&all), ZigTools::OnPath);
        // cargo-zigbuild alone on PATH is not enough: it would find no zig.
        let no_zig = ZigFacts {
            zig_on_path: false,
            ..all.clone()
        };
        assert_eq!(decide(&no_zig), ZigTools::Venv);
        let fresh = ZigFacts {
            zigbuild_on_path: false,
            zig_on_path: false,
            venv_ready: false,
            ..all.clone()
        };
        assert_eq!(decide(&fresh), ZigTools::CreateVenv);
        let no_venv_module = ZigFacts {
            python_venv: false,
            ..fresh.clone()
        };
        assert_eq!(decide(&no_venv_module), ZigTools::Missing { python3: true });
        assert_eq!(
            decide(&ZigFacts::default()),
            ZigTools::Missing { python3: false }
        );
    }

    #[test]
    fn the_fix_names_the_package_of_the_distribution() {
        use crate::lab::preflight::Family;
        assert!(missing_fix(true, Family::Debian).contains("apt-get install python3-venv"));
        assert!(missing_fix(false, Family::Fedora).contains("dnf install python3"));
        assert!(
            missing_fix(true, Family::Unknown).contains("cargo install --locked cargo-zigbuild")
        );
    }

    #[test]
    fn the_venv_is_made_in_a_temporary_folder_and_only_then_moved_into_place() {
        let dir = tempfile::tempdir().expect("tmp");
        let tmp = dir.path().join("target/zigbuild-venv.tmp");
        // A leftover of an interrupted run is removed first.
        std::fs::create_dir_all(tmp.join("bin")).expect("mkdir");
        let python = tmp.join("bin/python3").display().to_string();
        let zigbuild = tmp.join("bin/cargo-zigbuild").display().to_string();
        let fake = RecordingRunner::new(&["python3", &python, &zigbuild]);
        fake.reply("-m ziglang version", 1, "", "No module named ziglang");
        let err = create_venv(&fake, dir.path()).expect_err("zig does not answer");
        assert!(
            format!("{err:#}").contains("No module named ziglang"),
            "{err:#}"
        );
        let lines = fake.lines();
        assert!(lines[0].starts_with("python3 -m venv "), "{lines:?}");
        assert!(lines[0].ends_with("target/zigbuild-venv.tmp"), "{lines:?}");
        assert!(
            lines[1].contains("-m pip install")
                && lines[1].ends_with("ziglang==0.17.1 cargo-zigbuild==0.24.1"),
            "{lines:?}"
        );
        assert!(lines[2].ends_with("cargo-zigbuild --version"), "{lines:?}");
        assert!(!tmp.exists(), "the leftover was removed");
        assert!(
            !dir.path().join(VENV).exists(),
            "a failed setup is never taken for a ready environment"
        );
        assert_eq!(
            decide(&observe(&RecordingRunner::new(&[]), dir.path())),
            ZigTools::Missing { python3: false }
        );
    }
}
