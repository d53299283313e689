//! The real binary's `doctor --explain`: no cluster or kubeconfig needed; exit 1 when a failure
//! was named, 0 when none matched, 3 when an input cannot be read; `-` reads stdin; `-o json` is
//! one document; `--save` keeps it.

// std's Command, not lab_runner: the built CLI under test, its stdin piped as a user pastes text.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

const CAPTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/real-captures");
const HEALTHY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/healthy");

fn ctl(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cluster-ctl"))
        .args(args)
        .env_remove("KUBECONFIG")
        .env("PATH", "/nonexistent-path-for-tests")
        .env("HOME", "/nonexistent-home-for-tests")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

#[test]
fn a_named_failure_exits_1_with_quoted_lines_and_the_fix() {
    let log = format!("{CAPTURES}/10-device-plugin-nvml-not-loaded/device-plugin-logs.txt");
    let out = ctl(&["doctor", "--explain", &log], None);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("1. device-plugin-no-nvidia-runtime — confidence high"),
        "{text}"
    );
    assert!(
        text.contains("device-plugin-logs.txt:2  I0104 07:22:39.590312"),
        "{text}"
    );
    assert!(
        text.contains("$ cluster-ctl install-hami --set devicePlugin.runtimeClassName=nvidia"),
        "{text}"
    );
}

#[test]
fn stdin_json_and_save() {
    let paste = std::fs::read(format!(
        "{CAPTURES}/03-webhook-x509-unknown-authority/kube-apiserver.log"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("diagnosis.json");
    let out = ctl(
        &[
            "doctor",
            "--explain",
            "-",
            "-o",
            "json",
            "--save",
            saved.to_str().unwrap(),
        ],
        Some(&paste),
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "hami-isolation-lab/diagnosis");
    assert_eq!(v["outcome"], "failure-named");
    assert_eq!(v["findings"][0]["mode"], "webhook-tls-untrusted");
    assert_eq!(v["findings"][0]["evidence"][0]["source"], "stdin");
    assert_eq!(v["findings"][0]["evidence"][0]["line"], 1);
    let kept: serde_json::Value = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    assert_eq!(kept, v);
    // Our own answer is not evidence: explaining it again names nothing.
    let again = ctl(&["doctor", "--explain", saved.to_str().unwrap()], None);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}

#[test]
fn nothing_matched_exits_0_and_says_what_was_looked_at() {
    let out = ctl(&["doctor", "--explain", HEALTHY], None);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("doctor: no known failure matched"), "{text}");
    assert!(text.contains("run.json (cluster-ctl run report"), "{text}");
    assert!(
        text.contains("webhook-unreachable: kube-apiserver"),
        "the signals checked: {text}"
    );
}

#[test]
fn an_unreadable_input_exits_3_and_no_input_is_a_usage_error() {
    let out = ctl(&["doctor", "--explain", "/nonexistent/capture.txt"], None);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/capture.txt"));
    assert_eq!(ctl(&["doctor", "--explain"], None).status.code(), Some(2));
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn the_lab_diagnosis_of_a_run_folder_travels_in_the_evidence_bundle() {
    // A run folder whose captured device-plugin log shows a failure (as `run` keeps logs).
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    copy_dir(
        std::path::Path::new(&format!("{HEALTHY}/cluster-run")),
        &run,
    );
    std::fs::create_dir_all(run.join("cluster/logs")).unwrap();
    std::fs::copy(
        format!("{CAPTURES}/10-device-plugin-nvml-not-loaded/device-plugin-logs.txt"),
        run.join("cluster/logs/hami-device-plugin-x7k2p_device-plugin.log"),
    )
    .unwrap();
    let saved = run.join("diagnosis.json");
    // What `cargo xtask lab` runs after a failed exercise.
    let out = ctl(
        &[
            "doctor",
            "--explain",
            run.to_str().unwrap(),
            "--save",
            saved.to_str().unwrap(),
        ],
        None,
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("cluster/logs/hami-device-plugin-x7k2p_device-plugin.log:2"),
        "{text}"
    );
    // A second diagnosis of the same folder reads the same (its own diagnosis.json is skipped).
    let again = ctl(
        &["doctor", "--explain", run.to_str().unwrap(), "-o", "json"],
        None,
    );
    let v: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(v["findings"][0]["mode"], "device-plugin-no-nvidia-runtime");
    // evidence-pack packs it as it is, listed in SHA256SUMS, and the bundle verifies.
    let plan = evidence_pack::bundle::plan(&run, None).unwrap();
    let entry = plan
        .entries
        .iter()
        .find(|e| e.path.ends_with("/diagnosis.json") || e.path == "diagnosis.json")
        .expect("diagnosis.json is in the bundle");
    assert_eq!(entry.bytes, std::fs::read(&saved).unwrap());
    evidence_pack::bundle::write(&plan, &dir.path().join(plan.file_name()), false).unwrap();
    let verified = evidence_pack::bundle::verify(&dir.path().join(plan.file_name())).unwrap();
    assert!(verified.files > 0);
    let (_, files) =
        evidence_pack::bundle::read_archive(&dir.path().join(plan.file_name())).unwrap();
    let sums = files
        .iter()
        .find(|(k, _)| k.ends_with("SHA256SUMS"))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap();
    assert!(sums.contains("diagnosis.json"), "{sums}");
}
