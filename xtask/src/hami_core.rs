//! `cargo xtask hami-core --src DIR`: builds `libvgpu.so` from a HAMi-core source folder the
//! user names (a clone of Project-HAMi/HAMi-core at any revision), the way its `build.sh` does,
//! so `gpu-probe conformance --lib` can measure that revision.
//!
//! Typed plan (each step with why) → `--dry-run` prints it → apply. Only the `vgpu` target is
//! built: the test programs of older revisions do not compile with CUDA 13. Older revisions need
//! CUDA 12 headers (`--cuda-home`), and those from before GCC 10's `-fno-common` default (HAMi
//! v2.6.0's c0f9da6) need `--fcommon`; a failed build says which. The result is checked to export
//! the hooks (a non-Debug build hides them). Nothing is written outside DIR/build and `--out`;
//! the source and the library stay out of this repository.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use lab_runner::{Cmd, Runner, SystemRunner};

/// build.sh's options: the hooks are only exported in a Debug build.
pub const CMAKE_OPTIONS: &[&str] = &[
    "-DDLSYM_HOOK_ENABLE=1",
    "-DMULTIPROCESS_LIMIT_ENABLE=1",
    "-DHOOK_MEMINFO_ENABLE=1",
    "-DHOOK_NVML_ENABLE=1",
    "-DCMAKE_BUILD_TYPE=Debug",
    "-DTEST_DEVICE_ID=0",
    // CMake 4 refuses the `cmake_minimum_required` of older revisions without this.
    "-DCMAKE_POLICY_VERSION_MINIMUM=3.5",
];

/// Symbols a working libvgpu.so exports (the allocation and view hooks).
pub const HOOKS: &[&str] = &[
    "cuMemAlloc_v2",
    "cuMemGetInfo_v2",
    "nvmlDeviceGetMemoryInfo",
];

#[derive(Debug, Clone, clap::Args)]
pub struct HamiCoreArgs {
    /// The HAMi-core source folder (with CMakeLists.txt and src/).
    #[arg(long)]
    pub src: PathBuf,
    /// Copy the built library here (default: it stays in DIR/build).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A CUDA folder with include/cuda.h and include/nvml.h (older revisions need CUDA 12's).
    #[arg(long)]
    pub cuda_home: Option<PathBuf>,
    /// Compile with -fcommon (revisions that define globals in headers, e.g. c0f9da6).
    #[arg(long)]
    pub fcommon: bool,
    /// Parallel jobs.
    #[arg(long, default_value_t = 8)]
    pub jobs: u32,
    /// Print the plan and do nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// One step of the plan.
#[derive(Debug, Clone)]
pub struct Step {
    pub cmd: Cmd,
    pub why: &'static str,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub src: PathBuf,
    pub build: PathBuf,
    pub revision: String,
    pub steps: Vec<Step>,
    pub out: Option<PathBuf>,
}

/// Checks DIR and makes the plan (runs only `git rev-parse`, to name the revision).
pub fn plan(args: &HamiCoreArgs, runner: &dyn Runner) -> Result<Plan> {
    let src = &args.src;
    if !src.join("CMakeLists.txt").is_file() || !src.join("src").is_dir() {
        bail!(
            "{} is not a HAMi-core source folder (no CMakeLists.txt and src/)\n  fix: pass a clone of https://github.com/Project-HAMi/HAMi-core, e.g. `git clone https://github.com/Project-HAMi/HAMi-core DIR && git -C DIR checkout <commit>`",
            src.display()
        );
    }
    if let Some(home) = &args.cuda_home
        && !home.join("include/cuda.h").is_file()
    {
        bail!(
            "{} has no include/cuda.h\n  fix: point --cuda-home at a CUDA folder (CUDA 12 headers for older revisions: e.g. the PyPI wheels nvidia-cuda-runtime-cu12 and nvidia-nvml-dev-cu12 unpacked)",
            home.display()
        );
    }
    // Only the folder's own repository names the revision (a folder inside another checkout
    // would give that checkout's commit).
    let own_repo = src.join(".git").exists();
    let revision = own_repo
        .then(|| {
            runner.run(
                &Cmd::new("git")
                    .args([
                        "-C",
                        &src.display().to_string(),
                        "rev-parse",
                        "--short=7",
                        "HEAD",
                    ])
                    .timeout(std::time::Duration::from_secs(10)),
            )
        })
        .and_then(Result::ok)
        .filter(lab_runner::Output::success)
        .map(|o| o.stdout.trim().to_owned())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| {
            src.file_name()
                .map_or_else(|| "unknown".into(), |n| n.to_string_lossy().into_owned())
        });
    let build = src.join("build");
    let mut configure = Cmd::new("cmake")
        .args([
            "-S".to_owned(),
            src.display().to_string(),
            "-B".to_owned(),
            build.display().to_string(),
        ])
        .args(CMAKE_OPTIONS.iter().copied())
        .timeout(std::time::Duration::from_secs(300));
    if args.fcommon {
        configure = configure.arg("-DCMAKE_C_FLAGS=-fcommon");
    }
    if let Some(home) = &args.cuda_home {
        configure = configure.env("CUDA_HOME", home.display().to_string());
    }
    let compile = Cmd::new("cmake")
        .args([
            "--build".to_owned(),
            build.display().to_string(),
            "--target".to_owned(),
            "vgpu".to_owned(),
            "-j".to_owned(),
            args.jobs.max(1).to_string(),
        ])
        .timeout(std::time::Duration::from_secs(1200));
    Ok(Plan {
        src: src.clone(),
        build,
        revision,
        steps: vec![
            Step {
                cmd: configure,
                why: "configure with build.sh's options (a Debug build exports the hooks; a Release build hides them)",
            },
            Step {
                cmd: compile,
                why: "build only the library (target vgpu): older revisions' test programs do not compile with CUDA 13",
            },
        ],
        out: args.out.clone(),
    })
}

/// The plan as people read it.
pub fn render(p: &Plan) -> String {
    let mut s = format!("hami-core {} (revision {}):\n", p.src.display(), p.revision);
    for step in &p.steps {
        s.push_str(&format!("  - {}\n    why: {}\n", step.cmd, step.why));
    }
    s.push_str(&format!(
        "  - check {}/libvgpu.so exports {}\n    why: a library without the hooks caps nothing\n",
        p.build.display(),
        HOOKS.join(", ")
    ));
    if let Some(out) = &p.out {
        s.push_str(&format!("  - copy it to {}\n", out.display()));
    }
    s
}

/// What a failed step's output suggests.
pub fn hint(output: &str) -> Option<&'static str> {
    if output.contains("multiple definition of") {
        Some(
            "the link failed on globals defined in headers: re-run with --fcommon (GCC 10 and later default to -fno-common)",
        )
    } else if output.contains("cuda.h") || output.contains("CUDA_") || output.contains("nvml.h") {
        Some(
            "the CUDA headers do not fit this revision: re-run with --cuda-home pointing at CUDA 12 headers (include/cuda.h and include/nvml.h)",
        )
    } else if output.contains("Could not find") || output.contains("CMake Error") {
        Some(
            "cmake could not configure: check that cmake ≥ 3.x and a C compiler are installed, and CUDA_HOME/--cuda-home has include/cuda.h",
        )
    } else {
        None
    }
}

/// Where cmake put the library.
pub fn built_library(build: &Path) -> Option<PathBuf> {
    [build.join("libvgpu.so"), build.join("src/libvgpu.so")]
        .into_iter()
        .find(|p| p.is_file())
}

/// The hooks missing from `nm -D --defined-only` output.
pub fn missing_hooks(nm: &str) -> Vec<&'static str> {
    HOOKS
        .iter()
        .copied()
        .filter(|h| !nm.lines().any(|l| l.split_whitespace().last() == Some(h)))
        .collect()
}

/// Applies the plan; returns the library's path.
pub fn apply(p: &Plan, runner: &dyn Runner) -> Result<PathBuf> {
    for step in &p.steps {
        eprintln!("+ {}", step.cmd);
        let out = runner
            .run(&step.cmd)
            .with_context(|| format!("could not run `{}`", step.cmd))?;
        if !out.success() {
            let text = format!("{}\n{}", out.stdout, out.stderr);
            let tail: Vec<&str> = text.trim_end().lines().rev().take(15).collect();
            let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
            bail!(
                "`{}` failed ({}):\n{tail}\n  fix: {}",
                step.cmd,
                out.code
                    .map_or_else(|| "a signal".to_owned(), |c| format!("exit {c}")),
                hint(&text).unwrap_or("read the output above")
            );
        }
    }
    let lib = built_library(&p.build).with_context(|| {
        format!(
            "the build finished but {} has no libvgpu.so (nor src/libvgpu.so)",
            p.build.display()
        )
    })?;
    let nm = runner
        .run_checked(
            &Cmd::new("nm")
                .args(["-D", "--defined-only", &lib.display().to_string()])
                .timeout(std::time::Duration::from_secs(30)),
        )
        .context("could not list the library's symbols (install binutils)")?;
    let missing = missing_hooks(&nm.stdout);
    if !missing.is_empty() {
        bail!(
            "{} does not export {}: it would cap nothing\n  fix: build with CMAKE_BUILD_TYPE=Debug (as build.sh does); remove {} and re-run",
            lib.display(),
            missing.join(", "),
            p.build.display()
        );
    }
    let Some(out) = &p.out else {
        return Ok(lib);
    };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = out.with_extension("so.partial");
    std::fs::copy(&lib, &tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot move it to {}", out.display()))?;
    Ok(out.clone())
}

pub fn run(args: &HamiCoreArgs) -> Result<u8> {
    let runner = SystemRunner::new(false)
        .with_hint(
            "cmake",
            "install cmake (apt-get install cmake) and a C compiler",
        )
        .with_hint("nm", "install binutils");
    let p = plan(args, &runner)?;
    print!("{}", render(&p));
    if args.dry_run {
        return Ok(0);
    }
    let lib = apply(&p, &runner)?;
    println!(
        "built {} (HAMi-core {}); measure it: gpu-probe conformance --lib {} --revision {}",
        lib.display(),
        p.revision,
        lib.display(),
        p.revision
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use lab_runner::RecordingRunner;

    fn source() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("CMakeLists.txt"), "project(libvgpu)\n").unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        dir
    }

    fn args(src: &Path) -> HamiCoreArgs {
        HamiCoreArgs {
            src: src.to_path_buf(),
            out: None,
            cuda_home: None,
            fcommon: false,
            jobs: 4,
            dry_run: true,
        }
    }

    #[test]
    fn the_plan_builds_only_the_library_with_build_sh_options() {
        let dir = source();
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        let fake = RecordingRunner::new(&["git"]);
        fake.reply("rev-parse", 0, "c0f9da6\n", "");
        let mut a = args(dir.path());
        a.fcommon = true;
        let p = plan(&a, &fake).unwrap();
        assert_eq!(p.revision, "c0f9da6");
        let configure = &p.steps[0].cmd;
        for o in CMAKE_OPTIONS {
            assert!(configure.args.iter().any(|a| a == o), "{o}");
        }
        assert!(
            configure
                .args
                .iter()
                .any(|a| a == "-DCMAKE_C_FLAGS=-fcommon")
        );
        let build = &p.steps[1].cmd;
        assert!(build.args.windows(2).any(|w| w == ["--target", "vgpu"]));
        assert!(p.steps.iter().all(|s| s.cmd.timeout.is_some()));
        let text = render(&p);
        assert!(text.contains("why: build only the library"), "{text}");
    }

    #[test]
    fn cuda_home_is_passed_and_checked() {
        let dir = source();
        let cuda = tempfile::tempdir().unwrap();
        let fake = RecordingRunner::new(&[]);
        let mut a = args(dir.path());
        a.cuda_home = Some(cuda.path().to_path_buf());
        let e = plan(&a, &fake).unwrap_err().to_string();
        assert!(e.contains("no include/cuda.h") && e.contains("fix:"), "{e}");
        std::fs::create_dir(cuda.path().join("include")).unwrap();
        std::fs::write(cuda.path().join("include/cuda.h"), "").unwrap();
        let p = plan(&a, &fake).unwrap();
        assert!(
            p.steps[0]
                .cmd
                .env
                .iter()
                .any(|(k, v)| k == "CUDA_HOME" && v == &cuda.path().display().to_string())
        );
        // Not a repository of its own: the folder's name stands for the revision.
        assert_eq!(
            p.revision,
            dir.path().file_name().unwrap().to_string_lossy()
        );
    }

    #[test]
    fn a_folder_that_is_not_hami_core_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let e = plan(&args(dir.path()), &RecordingRunner::new(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a HAMi-core source folder") && e.contains("git clone"),
            "{e}"
        );
    }

    #[test]
    fn failures_suggest_the_fix_and_a_hookless_library_is_refused() {
        assert!(
            hint("/usr/bin/ld: multiple definition of `region_info'")
                .unwrap()
                .contains("--fcommon")
        );
        assert!(
            hint("error: unknown type name 'CUmemAllocationCompType' in cuda.h")
                .unwrap()
                .contains("--cuda-home")
        );
        assert_eq!(hint("all fine"), None);
        let nm = "0000000000012345 T cuMemAlloc_v2\n0000000000012346 T cuMemGetInfo_v2\n0000000000012347 T nvmlDeviceGetMemoryInfo\n0000000000012348 T dlsym\n";
        assert!(missing_hooks(nm).is_empty());
        assert_eq!(missing_hooks("0000000000012348 T dlsym\n").len(), 3);
    }

    #[test]
    fn a_failed_build_stops_with_its_output_and_the_hint() {
        let dir = source();
        let fake = RecordingRunner::new(&["git", "cmake"]);
        fake.reply(
            "--build",
            2,
            "",
            "/usr/bin/ld: multiple definition of `region_info'\n",
        );
        let p = plan(&args(dir.path()), &fake).unwrap();
        let e = apply(&p, &fake).unwrap_err().to_string();
        assert!(
            e.contains("multiple definition") && e.contains("--fcommon"),
            "{e}"
        );
    }
}
