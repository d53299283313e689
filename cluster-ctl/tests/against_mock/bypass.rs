//! `run --bypass` against the mock API server, both ways:
//!
//! - with the GPU tenant policy bound (`harden` applied first): B1–B4 and B6 are refused at
//!   admission as kube-apiserver words it (the mock evaluates the policy's own CEL) and judged
//!   contained; B5, which nothing in its spec gives away, is admitted and its gpu-probe answers
//!   with the real audit of HAMi-core 8f3a89c on an H200, whose region-tamper row escaped: judged
//!   ESCAPED with the memory it reached. Every lab pod is admitted (the baseline pod in the exempt
//!   namespace), the claims pack and verify with evidence-pack, and a B claim whose evidence is
//!   replaced by a Status that is no admission refusal fails as UNSUPPORTED.
//! - without the policy: every bypass pod is created, probed and deleted; their gpu-probe answers
//!   are real reports (the bare H200 for B1, B2 and B6, HAMi-core 8f3a89c's audit for B5, the
//!   8000 MiB HAMi-core slice for B3 and B4) and each is judged by the memory it reached.
//!
//! What the mock's answers stand for: the reports are real, but which report a real cluster gives
//! a bypass pod is not shown here (README, "What a tenant can and cannot do").

use cluster_ctl::commands::{self, exit};
use cluster_ctl::manifests::BASELINE_NAMESPACE;
use serde_json::{Value, json};

use crate::mockapi::MockApi;
use crate::mockapi::exec::Reply;
use crate::mockapi::fixtures::{gpu_probe_data, h200};
use crate::support::*;

const TAMPER_AUDIT: &str = "bypass/8f3a89c-audit-8000.json";

fn run_json(dir: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("out/run.json")).unwrap()).unwrap()
}

fn exercise<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["exercises"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in run.json"))
}

/// A MiB number of the judgement (written as a JSON float).
fn mib(v: &Value) -> u64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number")) as u64
}

fn bypass_args(dir: &std::path::Path) -> cluster_ctl::commands::RunArgs {
    let mut args = run_args(dir, true);
    args.bypass = true;
    args.baseline_namespace = Some(BASELINE_NAMESPACE.into());
    args
}

fn with_baseline_namespace(m: &MockApi) {
    m.add(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": BASELINE_NAMESPACE}, "status": {"phase": "Active"}}));
}

fn bypass_pods_left(m: &MockApi) -> Vec<String> {
    m.lab_pods()
        .into_iter()
        .filter(|p| p.contains("hami-bypass-"))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn with_the_policy_bound_every_bypass_pod_but_b5_is_refused_and_the_claims_pack_and_verify() {
    let m = healthy_with_probes();
    with_baseline_namespace(&m);
    m.probe_reply(
        "hami-bypass-b5",
        "audit",
        Reply::new(&gpu_probe_data(TAMPER_AUDIT), "", 1),
    );
    let cluster = m.cluster(API_TIMEOUT);
    let hardened = commands::harden(&cluster, &ctx(false), &[]).await.unwrap();
    assert_eq!(hardened.exit, exit::OK, "{}", hardened.human);
    let dir = tempfile::tempdir().unwrap();
    let out = commands::run(
        &cluster,
        &helm("helm-list-deployed.json"),
        &ctx(false),
        &bypass_args(dir.path()),
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::CLAIM_FAILED, "{}", out.human);
    let got = results(dir.path());
    let want: Vec<(String, String)> = [
        ("E1", "pass"),
        ("E2", "pass"),
        ("E3", "pass"),
        ("E4", "pass"),
        ("E5", "pass"),
        // The real H200 audit: three allocation paths escape HAMi-core.
        ("A1", "fail"),
        ("B1", "pass"),
        ("B2", "pass"),
        ("B3", "pass"),
        ("B4", "pass"),
        ("B5", "fail"),
        ("B6", "pass"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(got, want, "{}", out.human);
    let run = run_json(dir.path());
    // Each refused pod: the API server's Status is its evidence, and the rule that refused it.
    for (id, rule) in [
        ("B1", "visible-devices-env"),
        ("B2", "hami-core-env"),
        ("B3", "hami-core-env"),
        ("B4", "visible-devices-env"),
        ("B6", "privileged"),
    ] {
        let e = exercise(&run, id);
        let pod = format!("hami-bypass-{}", id.to_ascii_lowercase());
        assert_eq!(e["numbers"]["outcome"], "contained", "{id}: {e}");
        assert_eq!(e["numbers"]["shown"], "refused", "{id}: {e}");
        let reason = e["reason"].as_str().unwrap();
        assert!(
            reason.contains(
                "refused at admission by ValidatingAdmissionPolicy 'hami-isolation-lab-gpu-tenant'"
            ) && reason.contains(&format!("[hami-isolation-lab: {rule}]")),
            "{id}: {reason}"
        );
        let status: Value = serde_json::from_slice(
            &std::fs::read(dir.path().join(format!("out/admission/{pod}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (status["kind"].as_str(), status["code"].as_u64()),
            (Some("Status"), Some(403)),
            "{status}"
        );
        assert!(!m.has("pods", "default", &pod), "{pod} was stored");
    }
    // B5: admitted, its own region rewritten, and it held 10000 MiB against its 8000 MiB slice.
    let b5 = exercise(&run, "B5");
    assert_eq!(b5["numbers"]["outcome"], "escaped", "{b5}");
    assert_eq!(mib(&b5["numbers"]["reached_mib"]), 10000, "{b5}");
    assert_eq!(mib(&b5["numbers"]["given_mib"]), 8000, "{b5}");
    assert!(
        b5["reason"].as_str().unwrap().contains("region tamper"),
        "{b5}"
    );
    let runs: Vec<String> = m
        .exec_calls()
        .into_iter()
        .filter(|c| c.pod.starts_with("hami-bypass-") && c.command[0] == "/tmp/gpu-probe")
        .map(|c| format!("{} {}", c.pod, c.command[1..].join(" ")))
        .collect();
    assert_eq!(
        runs,
        ["hami-bypass-b5 audit --rows bypass --output json --expect-mib 8000"]
    );
    // The lab's own pods were admitted; the baseline pod ran in the exempt namespace.
    let posted_baseline = m.seen().iter().any(|s| {
        s.method == "POST"
            && s.status == 201
            && s.uri
                .starts_with(&format!("/api/v1/namespaces/{BASELINE_NAMESPACE}/pods"))
    });
    assert!(posted_baseline, "{:?}", m.seen_paths());
    assert!(
        exercise(&run, "A1")["numbers"]
            .get("overhead_p50_us_with_vs_without_hami")
            .is_some()
    );
    assert!(bypass_pods_left(&m).is_empty(), "{:?}", m.lab_pods());

    // The claims pack, each B claim is judged again, and the bundle verifies.
    let plan = evidence_pack::bundle::plan(&dir.path().join("out"), None).unwrap();
    let verdicts: Vec<(String, evidence_pack::model::ClaimVerdict)> = plan
        .summary
        .claims
        .iter()
        .map(|c| (c.id.clone(), c.verdict))
        .collect();
    use evidence_pack::model::ClaimVerdict::{Fail, Pass};
    for (id, v) in [
        ("B1", Pass),
        ("B2", Pass),
        ("B3", Pass),
        ("B4", Pass),
        ("B5", Fail),
        ("B6", Pass),
    ] {
        assert!(verdicts.contains(&(id.to_owned(), v)), "{id}: {verdicts:?}");
    }
    let bundles = tempfile::tempdir().unwrap();
    let path = bundles.path().join(plan.file_name());
    evidence_pack::bundle::write(&plan, &path, false).unwrap();
    let verified = evidence_pack::bundle::verify(&path).unwrap();
    assert_eq!(verified.summary.claims.len(), 12);

    // Tampered: B2's refusal replaced by a Status that refuses nothing at admission (a missing
    // namespace, lab-report's constructed one): the pass is UNSUPPORTED, naming the file.
    let not_a_refusal = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lab-report/tests/data/k8s/status-namespace-not-found.json"
    ))
    .unwrap();
    std::fs::write(
        dir.path().join("out/admission/hami-bypass-b2.json"),
        not_a_refusal,
    )
    .unwrap();
    let plan = evidence_pack::bundle::plan(&dir.path().join("out"), None).unwrap();
    let b2 = plan.summary.claims.iter().find(|c| c.id == "B2").unwrap();
    assert_eq!(b2.verdict, Fail, "{b2:?}");
    assert!(
        b2.reason.contains("UNSUPPORTED")
            && b2.reason.contains("admission/hami-bypass-b2.json")
            && b2
                .reason
                .contains("not a denial by an admission policy or webhook"),
        "{}",
        b2.reason
    );
}

#[tokio::test(start_paused = true)]
async fn without_the_policy_every_bypass_pod_runs_and_is_judged_by_the_memory_it_reached() {
    let m = healthy_with_probes();
    let bare = h200("h2-bare.json");
    for pod in ["hami-bypass-b1", "hami-bypass-b2", "hami-bypass-b6"] {
        m.probe_reply(pod, "all", Reply::new(&bare, "", 1));
    }
    for pod in ["hami-bypass-b3", "hami-bypass-b4"] {
        m.probe_reply(
            pod,
            "all",
            Reply::new(&h200("h1-8000.json"), &h200("h1-8000.err"), 0),
        );
    }
    m.probe_reply(
        "hami-bypass-b5",
        "audit",
        Reply::new(&gpu_probe_data(TAMPER_AUDIT), "", 1),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut args = run_args(dir.path(), false);
    args.bypass = true;
    let out = commands::run(
        &m.cluster(API_TIMEOUT),
        &helm("helm-list-deployed.json"),
        &ctx(false),
        &args,
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::CLAIM_FAILED, "{}", out.human);
    let run = run_json(dir.path());
    // The bare H200's own numbers: NVML total 143771 MiB (the whole card).
    for (id, outcome, reached, given) in [
        ("B1", "escaped", Some(143771), 0),
        ("B2", "escaped", Some(143771), 8000),
        ("B3", "contained", None, 8000),
        ("B4", "contained", None, 8000),
        ("B5", "escaped", Some(10000), 8000),
        ("B6", "escaped", Some(143771), 0),
    ] {
        let e = exercise(&run, id);
        assert_eq!(e["numbers"]["outcome"], outcome, "{id}: {e}");
        assert_eq!(mib(&e["numbers"]["given_mib"]), given, "{id}: {e}");
        match reached {
            Some(reached) => {
                assert_eq!(e["result"], "fail", "{id}: {e}");
                assert_eq!(mib(&e["numbers"]["reached_mib"]), reached, "{id}: {e}");
                assert!(
                    e["reason"].as_str().unwrap().contains("ESCAPED"),
                    "{id}: {e}"
                );
            }
            None => {
                assert_eq!(e["result"], "pass", "{id}: {e}");
                assert_eq!(e["numbers"]["shown"], "held", "{id}: {e}");
            }
        }
        let pod = format!("hami-bypass-{}", id.to_ascii_lowercase());
        let files = std::fs::read_dir(dir.path().join("out/admission"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(files, 0, "nothing was refused");
        assert!(
            dir.path().join(format!("out/pods/{pod}.json")).exists(),
            "{pod}"
        );
    }
    // Every bypass pod was labelled, created, and is gone.
    let created: Vec<String> = m
        .seen()
        .iter()
        .filter(|s| s.method == "POST" && s.status == 201)
        .filter_map(|s| s.body.as_ref())
        .filter(|b| b["metadata"]["labels"]["hami-isolation-lab/role"] == "bypass")
        .map(|b| b["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(created.len(), 6, "{created:?}");
    assert!(bypass_pods_left(&m).is_empty(), "{:?}", m.lab_pods());
}
