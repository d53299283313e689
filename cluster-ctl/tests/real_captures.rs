//! The diagnosis engine on real captures: every case of `tests/data/real-captures` (output users
//! pasted into HAMi's and HAMi-core's issue trackers, and the project's own H200 probe reports) is
//! named as its `expected.json` says — mode, the evidence lines that matched (quoted with line
//! numbers), the fix — and as no other mode; the outputs of a healthy run name nothing.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use cluster_ctl::diagnose::{self, Diagnosis, Outcome};

const CAPTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/real-captures");
const HEALTHY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/healthy");

/// The capture files of a case (not its provenance notes or expectations).
fn capture_files(case: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(CAPTURES).join(case))
        .unwrap_or_else(|e| panic!("{case}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name != "source.txt" && name != "expected.json"
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{case} has no capture file");
    files
}

fn explain(files: &[PathBuf]) -> Diagnosis {
    let ev = diagnose::text::read_paths(files, &mut std::io::empty()).unwrap();
    diagnose::diagnose(&ev)
}

fn expected(case: &str) -> serde_json::Value {
    let text =
        std::fs::read_to_string(Path::new(CAPTURES).join(case).join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Asserts the case is named as `mode` only, every expected signal is in a quoted evidence line
/// that has a line number (or, for lines of reports, its source), and the fix says `fix`.
fn check(case: &str, mode: &str, fix: &str) -> Diagnosis {
    let want = expected(case);
    assert_eq!(
        want["failure_mode"], mode,
        "{case}: the test and expected.json disagree"
    );
    let d = explain(&capture_files(case));
    let named: Vec<&str> = d.problems().map(|f| f.mode).collect();
    assert_eq!(named, vec![mode], "{case}: {}", diagnose::render::human(&d));
    assert_eq!(d.outcome, Outcome::FailureNamed);
    let f = &d.findings[0];
    let quoted: String = f
        .evidence
        .iter()
        .map(|e| e.text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for s in want["signals"].as_array().unwrap() {
        let s = s.as_str().unwrap();
        let line = f.evidence.iter().find(|e| e.text.contains(s));
        assert!(
            line.is_some() || quoted.contains(s),
            "{case}: signal {s:?} not among the quoted evidence:\n{quoted}"
        );
        if let Some(e) = line
            && !e.source.ends_with(".json")
        {
            assert!(
                e.line.is_some(),
                "{case}: {s:?} quoted without its line number"
            );
        }
    }
    let fix_text = format!("{}\n{}", f.fix.join("\n"), f.commands.join("\n"));
    assert!(
        fix_text.contains(fix),
        "{case}: the fix does not say {fix:?}:\n{fix_text}"
    );
    d
}

macro_rules! cases {
    ($($name:ident: $case:literal => $mode:literal, fix $fix:literal;)*) => {
        $(
            #[test]
            fn $name() {
                check($case, $mode, $fix);
            }
        )*

        /// Every case folder has its test (and so its expectation).
        #[test]
        fn every_capture_has_a_test() {
            let tested = [$($case),*];
            let mut dirs: Vec<String> = std::fs::read_dir(CAPTURES)
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            dirs.sort();
            for d in &dirs {
                assert!(tested.contains(&d.as_str()), "{d} has no test");
                let source = std::fs::read_to_string(Path::new(CAPTURES).join(d).join("source.txt")).unwrap();
                assert!(
                    source.contains("https://github.com/") || source.contains("Origin: this project's gpu-probe"),
                    "{d}: source.txt names no source"
                );
            }
            assert_eq!(dirs.len(), tested.len());
        }
    };
}

cases! {
    node_unregistered_from_describe_events: "01-node-unregistered"
        => "node-unregistered", fix "hami-device-plugin";
    webhook_x509: "03-webhook-x509-unknown-authority"
        => "webhook-tls-untrusted", fix "delete secret hami-scheduler-tls";
    webhook_timeout_markdown_links: "04-webhook-timeout"
        => "webhook-unreachable", fix "get svc,endpoints hami-scheduler";
    webhook_no_route_wrapped_lines: "05-webhook-no-route-unexpected-admission"
        => "webhook-unreachable", fix "recreate the GPU pods";
    kube_scheduler_usage_on_a_vendor_version: "07-kube-scheduler-legacy-flags-vendor-version"
        => "scheduler-version-mismatch", fix "upgrade HAMi to ≥ 2.6.0";
    k3s_tag_in_the_image_name: "08-scheduler-image-invalid-k3s-version"
        => "scheduler-image-tag-invalid", fix "--scheduler-tag v1.31.2";
    helm_refuses_the_gke_version: "09-helm-kubeversion-prerelease"
        => "helm-kubeversion-prerelease", fix "--kube-version v1.32.3";
    device_plugin_without_nvml: "10-device-plugin-nvml-not-loaded"
        => "device-plugin-no-nvidia-runtime", fix "devicePlugin.runtimeClassName=nvidia";
    preload_ignored_full_card: "11-isolation-not-applied-libvgpu-preload"
        => "hami-core-not-injected", fix "libvgpu.so";
    oom_at_the_gpumem_limit: "13-hami-core-oom-gpumem-limit"
        => "gpumem-limit-exceeded", fix "nvidia.com/gpumem";
    more_cards_than_the_node_has: "15-request-exceeds-node-gpu-count"
        => "request-exceeds-node-gpu-count", fix "physical GPU count";
    whole_card_request_on_a_used_card: "16-card-memory-exhausted-default-full-card"
        => "card-insufficient-memory", fix "explicit nvidia.com/gpumem";
    driver_pod_crash_looping: "17-gpu-operator-driver-crash-stale-handshake"
        => "gpu-driver-not-ready", fix "logs nvidia-driver-daemonset-2x8xv";
    cdi_conflict: "18-gpu-operator-cdi-conflict"
        => "gpu-operator-cdi-conflict", fix "disable CDI";
    hang_on_driver_570: "19-hami-core-hang-driver-570"
        => "hami-core-driver-incompatible-hang", fix "≥ 2.5.1";
    cards_registered_unhealthy: "20-device-registered-unhealthy"
        => "gpu-marked-unhealthy", fix "Xid";
    usage_underflow: "24-hami-core-usage-underflow-false-oom"
        => "hami-core-usage-accounting-bug", fix "≥ 2.6.1";
    node_lock_binding_rejected: "25-node-lock-held-binding-rejected"
        => "node-lock-held", fix "kubectl annotate node user hami.io/mutex.lock-";
    node_lock_newer_wording: "26-node-lock-held-device-plugin-restart"
        => "node-lock-held", fix "kubectl annotate node rke2-agent07-ai hami.io/mutex.lock-";
    webhook_connection_reset_escaped_quotes: "27-webhook-connection-reset"
        => "webhook-unreachable", fix "-n kube-system get svc,endpoints hami-scheduler";
    webhook_context_deadline: "28-webhook-context-deadline"
        => "webhook-unreachable", fix "recreate the GPU pods";
    webhook_denies_node_name: "29-webhook-denies-node-name"
        => "pod-has-node-name", fix "nodeSelector";
    hami_core_lock_directory: "30-hami-core-vgpulock-missing"
        => "hami-core-lock-dir-missing", fix "mkdir -p /tmp/vgpulock";
    shared_region_permission: "31-hami-core-shrreg-permission-denied"
        => "hami-core-shared-region-denied", fix "/proc/1/environ";
    cuinit_no_device: "32-hami-core-cuinit-no-device"
        => "cuda-no-device", fix "CUDA_VISIBLE_DEVICES";
    no_binding_pod_found: "33-unexpected-admission-no-binding-pod"
        => "default-scheduler-pods", fix "kubectl -n volc-content-mng delete pod pdf-model-deploy-fdfc65bfc-xg9sp";
    default_scheduler_counts_gpumem: "34-default-scheduler-insufficient-gpumem"
        => "default-scheduler-pods", fix "get endpoints hami-scheduler";
    h200_probe_on_a_bare_card: "35-h200-probe-bare-card"
        => "full-card-view", fix "set-default-runtime";
    h200_audit_paths_escape: "36-h200-probe-audit-escapes"
        => "hami-core-allocation-escapes", fix "PR #217";
    helm_refuses_eks_version_on_2_4_1: "37-helm-kubeversion-eks"
        => "helm-kubeversion-prerelease", fix "upgrade HAMi to ≥ 2.6.0";
}

#[test]
fn the_version_shown_turns_the_workaround_into_an_upgrade() {
    // 07 shows HAMi 2.4.1 (its environment lines); the bug is fixed in 2.6.0.
    let d = check(
        "07-kube-scheduler-legacy-flags-vendor-version",
        "scheduler-version-mismatch",
        "upgrade HAMi to ≥ 2.6.0",
    );
    let f = &d.findings[0];
    assert_eq!(
        f.fix.len(),
        1,
        "no workaround beside the upgrade: {:?}",
        f.fix
    );
    assert!(f.versions.seen.as_deref().unwrap().contains("HAMi 2.4.1"));
    assert!(
        f.versions
            .advice
            .as_deref()
            .unwrap()
            .contains("upgrade to ≥ 2.6.0")
    );
    // 09 shows no HAMi version: the upgrade and the workaround, both.
    let d = check(
        "09-helm-kubeversion-prerelease",
        "helm-kubeversion-prerelease",
        "--kube-version",
    );
    assert!(d.findings[0].fix.len() > 1);
    assert!(d.findings[0].versions.seen.is_none());
}

#[test]
fn a_consequence_is_quoted_under_its_cause() {
    let d = check(
        "05-webhook-no-route-unexpected-admission",
        "webhook-unreachable",
        "recreate",
    );
    let f = &d.findings[0];
    assert_eq!(f.explains, vec!["default-scheduler-pods"]);
    let wrapped: Vec<(&str, Option<usize>)> = f
        .evidence
        .iter()
        .map(|e| (e.source.rsplit('/').next().unwrap(), e.line))
        .collect();
    assert_eq!(
        wrapped,
        vec![
            ("kube-apiserver.log", Some(1)),
            ("kube-apiserver.log", Some(2)),
            ("pod-events.txt", Some(1)),
            ("pod-events.txt", Some(2)),
        ],
        "both halves of each wrapped line are quoted"
    );
}

#[test]
fn crlf_and_a_truncated_paste_read_the_same() {
    let case = "03-webhook-x509-unknown-authority";
    let text = std::fs::read_to_string(capture_files(case)[0].clone()).unwrap();
    let crlf = text.replace('\n', "\r\n");
    let cut = &crlf[..crlf.len() / 3];
    let d = diagnose::diagnose(&diagnose::text::read_texts(&[("paste", cut.as_bytes())]));
    assert_eq!(
        d.problems().map(|f| f.mode).collect::<Vec<_>>(),
        vec!["webhook-tls-untrusted"]
    );
    assert!(!d.findings[0].evidence[0].text.ends_with('\r'));
}

#[test]
fn everything_at_once_names_each_failure_once() {
    // A user pastes several captures into one report: each is named, none twice.
    let mut files = Vec::new();
    for case in [
        "03-webhook-x509-unknown-authority",
        "10-device-plugin-nvml-not-loaded",
        "24-hami-core-usage-underflow-false-oom",
    ] {
        files.extend(capture_files(case));
    }
    let d = explain(&files);
    let mut named: Vec<&str> = d.problems().map(|f| f.mode).collect();
    named.sort_unstable();
    assert_eq!(
        named,
        vec![
            "device-plugin-no-nvidia-runtime",
            "hami-core-usage-accounting-bug",
            "webhook-tls-untrusted"
        ]
    );
}

#[test]
fn a_healthy_run_names_nothing() {
    let d = explain(&[Path::new(HEALTHY).to_path_buf()]);
    assert_eq!(
        d.outcome,
        Outcome::NoKnownFailure,
        "{}",
        diagnose::render::human(&d)
    );
    assert_eq!(d.problems().count(), 0);
    // What it looked at: the run's objects, reports, the probes' stderr, the H200 reports.
    let read: Vec<&str> = d.looked_at.iter().map(|l| l.read_as.as_str()).collect();
    for kind in [
        "Kubernetes objects",
        "cluster-ctl run report",
        "gpu-probe stderr",
        "helm list",
    ] {
        assert!(read.contains(&kind), "{kind} not read: {read:?}");
    }
    assert_eq!(
        d.looked_at
            .iter()
            .filter(|l| l.read_as.starts_with("gpu-probe report"))
            .count(),
        2 + 6,
        "{:?}",
        d.looked_at
    );
    let human = diagnose::render::human(&d);
    assert!(human.contains("no known failure matched"), "{human}");
    assert!(human.contains("signals checked"), "{human}");
}

#[test]
fn each_healthy_h200_report_alone_names_nothing() {
    for e in std::fs::read_dir(Path::new(HEALTHY).join("h200-hami-core-reports")).unwrap() {
        let p = e.unwrap().path();
        let d = explain(std::slice::from_ref(&p));
        assert_eq!(
            d.problems().count(),
            0,
            "{}: {}",
            p.display(),
            diagnose::render::human(&d)
        );
    }
}
