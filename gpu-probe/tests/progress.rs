//! Progress of the real gpu-probe binary, without a GPU: the probe, its worker and its children
//! load a simulated driver (`tests/data/simulated-driver/libcuda.c`, constructed: one device that
//! refuses allocations past a limit, slowly when asked), put first on `LD_LIBRARY_PATH` the way
//! the NVIDIA runtime puts the real one on the library path. It is compiled here with `cc`.
//!
//! - without a terminal (stderr a pipe, `-o json`): every step of the cap search and every audit
//!   path is one plain line on stderr, with no control character, and stdout is the JSON alone;
//! - on a terminal (a tmux pane): the cap search draws a progress bar that moves;
//! - a driver that lacks an entry point the probe needs (`cuMemGetInfo_v2`) is the clear
//!   environment error, exit 3, not a crash;
//! - the driver's soname (`libcuda.so.1`) is used before a toolkit stub named `libcuda.so`.
//!
//! The same probe on the real card and under real HAMi-core: tests/gpu.rs.

// std's Command, not lab_runner: the binary under test with stderr a plain pipe, in tmux panes of
// the test's own, and `cc` for the simulated driver.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use gpu_probe::report::{MIB, Report};
use lab_runner::{Cmd, Runner, SystemRunner};

fn probe_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gpu-probe"))
}

/// Compiles the simulated driver to `out` with the given `-D` defines.
fn compile(out: &Path, defines: &[&str]) {
    let source =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/simulated-driver/libcuda.c");
    let mut cc = Command::new("cc");
    cc.args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(out)
        .arg(&source);
    for d in defines {
        cc.arg(format!("-D{d}"));
    }
    let done = cc
        .output()
        .expect("cc runs (a C compiler is needed to link Rust anyway)");
    assert!(
        done.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&done.stderr)
    );
}

/// A folder holding the simulated driver as `libcuda.so.1` and `libcuda.so` (a link to it, as a
/// driver install has it).
fn simulated_driver(old: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    let defines: &[&str] = if old { &["SIM_OLD_DRIVER"] } else { &[] };
    compile(&dir.path().join("libcuda.so.1"), defines);
    std::os::unix::fs::symlink("libcuda.so.1", dir.path().join("libcuda.so")).expect("symlink");
    dir
}

/// The environment that makes the probe load the simulated driver (and no HAMi-core).
fn sim_env(driver: &Path, alloc_ms: u32) -> Vec<(String, String)> {
    vec![
        ("LD_LIBRARY_PATH".into(), driver.display().to_string()),
        ("SIM_CUDA_ALLOC_MS".into(), alloc_ms.to_string()),
        ("SIM_CUDA_LIMIT_MIB".into(), "8000".into()),
        ("SIM_CUDA_TOTAL_MIB".into(), "16384".into()),
    ]
}

fn run(driver: &Path, alloc_ms: u32, args: &[&str]) -> Output {
    let mut cmd = Command::new(probe_bin());
    cmd.args(args)
        .env_remove("LD_PRELOAD")
        .env_remove("CUDA_DEVICE_MEMORY_LIMIT")
        .env_remove("CUDA_DEVICE_MEMORY_LIMIT_0")
        .stdin(Stdio::null());
    for (k, v) in sim_env(driver, alloc_ms) {
        cmd.env(k, v);
    }
    cmd.output().expect("gpu-probe runs")
}

/// Control characters other than the newline that ends each line.
fn control_chars(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect()
}

#[test]
fn without_a_terminal_each_cap_step_is_a_plain_line_on_stderr_and_stdout_is_the_json() {
    let driver = simulated_driver(false);
    let out = run(
        driver.path(),
        0,
        &[
            "cap",
            "--expect-mib",
            "8000",
            "--no-nvidia-smi",
            "-o",
            "json",
        ],
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    let report: Report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is the report alone ({e}): {stdout}\nstderr: {stderr}"));
    let cap = &report.cap.as_ref().expect("cap section").devices[0];
    // The simulated device refused past 8000 MiB: the search found it, so it really ran.
    assert!(
        cap.held_bytes <= 8000 * MIB && cap.held_bytes > 7900 * MIB,
        "{cap:?}"
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("cap device 0: "))
        .collect();
    // One line per step, and the last one when the search ends.
    assert_eq!(lines.len(), cap.steps.len() + 1, "{stderr}");
    assert!(
        lines[0].starts_with("cap device 0: 1024/10000 MiB after ")
            && lines[0].ends_with(": +1024 MiB held"),
        "{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("refused: CUDA_ERROR_OUT_OF_MEMORY (2)"))
    );
    assert!(
        lines
            .last()
            .unwrap()
            .ends_with("calls (resolution-reached) (done)"),
        "{stderr}"
    );
    assert_eq!(control_chars(&stderr), Vec::<char>::new(), "{stderr:?}");
    assert!(
        !stderr.contains("lab-progress"),
        "the worker's event lines are relayed, not passed through: {stderr}"
    );
    assert!(
        !stdout.contains("cap device 0: "),
        "progress never on stdout"
    );
}

#[test]
fn the_audit_logs_each_path_including_the_ones_the_parent_runs() {
    let driver = simulated_driver(false);
    let out = run(
        driver.path(),
        0,
        &[
            "audit",
            "--expect-mib",
            "8000",
            "--no-nvidia-smi",
            "--quiet",
        ],
    );
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("audit: "))
        .collect();
    // Seven paths in the worker, the two processes after it, the seven bypass rows (the
    // cleared-environment child among them), then the summary.
    let rows = 7 + 1 + gpu_probe::bypass::ROWS.len();
    assert_eq!(lines.len(), rows + 1, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("audit: 1/{rows} paths after ")),
        "{stderr}"
    );
    assert!(
        lines[0].ends_with("cuMemAlloc_v2: held 8000 MiB"),
        "{stderr}"
    );
    assert!(
        lines[1].ends_with("cuMemAllocPitch_v2: not applicable"),
        "the simulated driver has no cuMemAllocPitch_v2: {stderr}"
    );
    assert!(
        lines[7].starts_with(&format!("audit: 8/{rows} paths"))
            && lines[7].contains("second process of the same container"),
        "{stderr}"
    );
    assert!(
        lines[8].starts_with(&format!("audit: 9/{rows} paths"))
            && lines[8].contains("child with a cleared environment"),
        "{stderr}"
    );
    assert!(lines[rows].ends_with("(done)"), "{stderr}");
    assert_eq!(control_chars(&stderr), Vec::<char>::new(), "{stderr:?}");
}

#[test]
fn a_driver_without_an_entry_point_the_probe_needs_is_an_environment_error_not_a_crash() {
    let driver = simulated_driver(true);
    let out = run(
        driver.path(),
        0,
        &[
            "cap",
            "--expect-mib",
            "8000",
            "--no-nvidia-smi",
            "-o",
            "json",
        ],
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    let report: Report = serde_json::from_str(&stdout).expect("a report");
    let cuda = report
        .checks
        .iter()
        .find(|c| c.id == "cuda")
        .expect("the cuda check");
    assert!(cuda.environment, "{cuda:?}");
    assert!(
        cuda.reason
            .starts_with("libcuda.so.1 could not be loaded (symbol cuMemGetInfo_v2 missing: ")
            && cuda.reason.contains("undefined symbol: cuMemGetInfo_v2")
            && cuda
                .reason
                .ends_with("the driver is too old or not an NVIDIA driver"),
        "{}",
        cuda.reason
    );
}

#[test]
fn the_drivers_soname_is_used_before_a_toolkit_stub_named_libcuda_so() {
    // A folder as a CUDA image with the toolkit's stubs on the library path has it: libcuda.so is
    // the stub, libcuda.so.1 the driver.
    let dir = tempfile::tempdir().expect("tmp");
    compile(&dir.path().join("libcuda.so.1"), &[]);
    compile(&dir.path().join("libcuda.so"), &["SIM_STUB"]);
    let out = run(
        dir.path(),
        0,
        &[
            "cap",
            "--expect-mib",
            "8000",
            "--no-nvidia-smi",
            "-o",
            "json",
        ],
    );
    let report: Report = serde_json::from_slice(&out.stdout).expect("a report");
    assert_eq!(report.driver.cuda_error, None, "{:?}", report.checks);
    let cap = &report.cap.as_ref().expect("cap section").devices[0];
    assert!(cap.held_bytes > 7900 * MIB, "{cap:?}");
    // The stub alone is the clear error it gives.
    let stub_only = tempfile::tempdir().expect("tmp");
    compile(&stub_only.path().join("libcuda.so.1"), &["SIM_STUB"]);
    let out = run(
        stub_only.path(),
        0,
        &["cap", "--no-nvidia-smi", "-o", "json"],
    );
    assert_eq!(out.status.code(), Some(3));
    let report: Report = serde_json::from_slice(&out.stdout).expect("a report");
    let why = report.driver.cuda_error.unwrap_or_default();
    assert!(
        why.starts_with("cuInit failed: CUDA_ERROR_STUB_LIBRARY (34)"),
        "{why}"
    );
}

/// A tmux server of this test's own (`-L`), killed when the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"]);
        c
    }
    fn capture(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "probe"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

/// The held MiB a frame's cap bar shows, when it shows one: `cap device 0 [===>  ] 3072/10000 MiB`.
fn bar_position(frame: &str) -> Option<u64> {
    let line = frame.lines().find(|l| l.contains("cap device 0"))?;
    let bar = &line[line.find('[')?..=line.find(']')?];
    if !bar.contains('=') && !bar.contains('>') {
        return None;
    }
    let rest = &line[line.find(']')? + 1..];
    let (pos, _) = rest.trim_start().split_once("/10000 MiB")?;
    pos.trim().parse().ok()
}

#[test]
fn on_a_terminal_the_cap_search_draws_a_bar_that_moves() {
    if Command::new("tmux").arg("-V").output().is_err() {
        lab_runner::tier::skipped(
            "tmux",
            "tmux is not installed (Debian: apt-get install -y tmux); no terminal was driven",
        );
        return;
    }
    let driver = simulated_driver(false);
    let tmux = Tmux {
        socket: format!("gpu-probe-progress-{}", std::process::id()),
    };
    let mut line = String::from("env -u LD_PRELOAD -u CUDA_DEVICE_MEMORY_LIMIT_0");
    for (k, v) in sim_env(driver.path(), 150) {
        line.push_str(&format!(" {k}='{v}'"));
    }
    line.push_str(&format!(
        " '{}' cap --expect-mib 8000 --no-nvidia-smi; echo PROBE-EXITED; sleep 60",
        probe_bin().display()
    ));
    // Through the one runner, so the tier log records that the real tmux ran this test's pane.
    let started = SystemRunner::new(false)
        .run(
            &Cmd::new("tmux")
                .args(["-L", &tmux.socket, "-f", "/dev/null"])
                .args(["new-session", "-d", "-s", "probe", "-x", "150", "-y", "40"])
                .arg(&line)
                .timeout(Duration::from_secs(30)),
        )
        .expect("tmux new-session");
    assert!(started.success(), "{started:?}");
    let begin = Instant::now();
    let mut positions = Vec::new();
    let mut last = String::new();
    while begin.elapsed() < Duration::from_secs(60) {
        last = tmux.capture();
        if let Some(p) = bar_position(&last)
            && positions.last() != Some(&p)
        {
            positions.push(p);
        }
        if last.contains("PROBE-EXITED") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        last.contains("PROBE-EXITED"),
        "the probe did not end:\n{last}"
    );
    // The bar was drawn while the search ran, and it moved: several positions, rising to the
    // most the simulated device allowed (a refusal makes a step, not the position, smaller).
    assert!(
        positions.len() >= 3,
        "positions {positions:?}; last frame:\n{last}"
    );
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert!(
        *positions.last().unwrap() > 7000,
        "{positions:?}; last frame:\n{last}"
    );
    // The finished bar stays where the search ended (what the device allowed), not at 100 %.
    assert_eq!(bar_position(&last), Some(8000), "{last}");
    assert!(
        last.contains("held 8000 MiB in 20 calls (resolution-reached)"),
        "{last}"
    );
    // The report follows on the same terminal.
    assert!(last.contains("cap.device0"), "{last}");
}
