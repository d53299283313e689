//! manifests/rbac.yaml and the code cannot drift: every command runs against the mock enforcing
//! that file, and fails on any request it does not allow; and every permission the file grants
//! cluster-ctl is used by some command (least privilege).

use std::collections::BTreeSet;
use std::time::Duration;

use cluster_ctl::commands::{self, exit};
use cluster_ctl::helm::InstallOptions;

use crate::mockapi::rbac::{Grant, Policy};
use crate::mockapi::{INSTALLER_TOKEN, MockApi, Seen, TOKEN};
use crate::support::*;

fn policy() -> String {
    rbac_policy()
}

/// The documented binding for `probe` of one's own pods in namespace `ns`.
fn prober_binding(ns: &str) -> String {
    format!(
        "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: cluster-ctl-probe, namespace: {ns}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: \"hami-isolation-lab:prober\"}}\nsubjects: [{{kind: ServiceAccount, name: cluster-ctl, namespace: hami-isolation-lab}}]\n"
    )
}

fn denied_text(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter(|s| s.denied)
        .map(|s| format!("{} {} ({:?})", s.method, s.uri, s.attrs))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn every_command_needs_only_what_manifests_rbac_yaml_grants_and_uses_all_of_it() {
    let mut used: BTreeSet<Grant> = BTreeSet::new();
    let mut record = |m: &MockApi| {
        used.extend(m.seen().into_iter().flat_map(|s| s.grants));
    };
    for cmd in Command::ALL {
        let tokens: &[&str] = match cmd {
            Command::InstallHami | Command::Cleanup => &[TOKEN, INSTALLER_TOKEN],
            _ => &[TOKEN],
        };
        for token in tokens {
            let m = healthy_with_probes();
            m.enforce_rbac(&policy());
            prepare(cmd, &m);
            let dir = tempfile::tempdir().unwrap();
            let out = invoke(cmd, &m.cluster_as(token, API_TIMEOUT), dir.path()).await;
            let out = out.unwrap_or_else(|e| panic!("{cmd:?} as {token}: {e}"));
            assert_eq!(
                out.exit,
                cmd.healthy_exit(),
                "{cmd:?} as {token}: {}",
                out.human
            );
            assert!(
                m.denied().is_empty(),
                "{cmd:?} as {token} was refused: {:#?}",
                denied_text(&m.seen())
            );
            assert!(
                m.seen().iter().all(|s| !s.grants.is_empty()),
                "every request was authorized"
            );
            record(&m);
        }
    }
    // install-hami while HAMi comes up: every wait lists, then watches.
    let m = hami_coming_up();
    m.enforce_rbac(&policy());
    let out = commands::install_hami(
        &m.cluster(API_TIMEOUT),
        &helm("helm-list-deployed.json"),
        &ctx(false),
        &InstallOptions::default(),
        Duration::from_secs(300),
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::OK, "{}", out.human);
    assert!(m.denied().is_empty(), "{:#?}", denied_text(&m.seen()));
    record(&m);
    // install-hami on a cluster whose device plugin never gets ready: the waits time out and
    // read the objects as they are now.
    let m = healthy();
    m.patch(
        "daemonsets.apps",
        "kube-system",
        "hami-device-plugin",
        serde_json::json!({"status": {"numberReady": 0}}),
    );
    m.patch(
        "nodes",
        "",
        "gpu-vm-1",
        serde_json::json!({"metadata": {"annotations": {"hami.io/node-nvidia-register": null}}}),
    );
    m.enforce_rbac(&policy());
    let out = commands::install_hami(
        &m.cluster(API_TIMEOUT),
        &helm("helm-list-deployed.json"),
        &ctx(false),
        &InstallOptions::default(),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(out.exit, exit::CLAIM_FAILED, "{}", out.human);
    assert!(m.denied().is_empty(), "{:#?}", denied_text(&m.seen()));
    record(&m);
    // probe of one's own pod in another namespace, with the documented binding.
    let m = healthy_with_probes();
    m.add(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "workloads"}}));
    let mut pod = running_lab_pod("trainer-0");
    pod["metadata"]["namespace"] = "workloads".into();
    m.add(pod);
    m.enforce_rbac(&(policy() + &prober_binding("workloads")));
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("gpu-probe");
    std::fs::write(&bin, b"probe").unwrap();
    let mut c = ctx(false);
    c.namespace = "workloads".into();
    let out = commands::probe(
        &m.cluster(API_TIMEOUT),
        &c,
        "trainer-0",
        None,
        None,
        &bin,
        None,
        Duration::from_secs(300),
    )
    .await
    .unwrap();
    assert_eq!(out.exit, 0, "{}", out.human);
    assert!(m.denied().is_empty(), "{:#?}", denied_text(&m.seen()));
    record(&m);
    // install-hami and cleanup --uninstall-hami through k3s's HelmChart, as hami-installer: a
    // failed install (its Job watched, its log read), the re-run deleting the failed Job, an
    // upgrade (merge patch), the uninstall (delete, watched until gone).
    {
        use crate::mockapi::lifecycle::{HelmController, HelmRun, INSTALL_LOG};
        let m = k3s_with_helm_controller(HelmController {
            installs: [
                HelmRun::Failed("Error: INSTALLATION FAILED\n".into()),
                HelmRun::Complete(INSTALL_LOG.into()),
            ]
            .into(),
            ..HelmController::default()
        });
        let c = m.cluster_as(INSTALLER_TOKEN, API_TIMEOUT);
        let none = lab_runner::RecordingRunner::new(&[]);
        let wait = Duration::from_secs(300);
        let first =
            commands::install_hami(&c, &none, &ctx(false), &InstallOptions::default(), wait).await;
        assert!(first.is_err(), "the scripted failure");
        for version in ["2.10.0", "2.10.1"] {
            let opts = InstallOptions {
                chart_version: version.into(),
                ..InstallOptions::default()
            };
            let out = commands::install_hami(&c, &none, &ctx(false), &opts, wait)
                .await
                .unwrap();
            assert_eq!(out.exit, exit::OK, "{}", out.human);
        }
        let out = commands::cleanup(&c, &none, &ctx(false), true, wait)
            .await
            .unwrap();
        assert_eq!(out.json["uninstalled_hami"], true);
        assert!(m.denied().is_empty(), "{:#?}", denied_text(&m.seen()));
        record(&m);
    }
    // fleet in hami-isolation-lab: probe pods created, watched, probed over exec, deleted and
    // swept; one card the scheduler cannot place (its FailedScheduling event read).
    {
        use crate::mockapi::gpu_cluster::{GpuNode, gpu_cluster};
        let mut node = GpuNode::new(0, 2);
        node.cards[1].schedulable = false;
        let m = gpu_cluster(&[node], Duration::from_secs(5));
        m.enforce_rbac(&policy());
        m.probe_reply("*", "all", crate::fleet::verified_reply());
        let dir = tempfile::tempdir().unwrap();
        let out = commands::fleet(
            &m.cluster(API_TIMEOUT),
            &crate::fleet::ctx(),
            &crate::fleet::args(dir.path(), 2),
        )
        .await
        .unwrap();
        assert_eq!(out.exit, exit::CLAIM_FAILED, "{}", out.human);
        assert_eq!(out.json["totals"]["verified"], 1, "{}", out.human);
        assert!(m.denied().is_empty(), "{:#?}", denied_text(&m.seen()));
        record(&m);
    }
    // Least privilege: no permission granted is left unused (helm's installer roles are helm's:
    // the tests record helm, they do not run it; the HelmChart path's role is checked).
    let granted = Policy::from_yaml(&policy()).unwrap().all_rules();
    let unused: Vec<&Grant> = granted
        .iter()
        .filter(|g| !g.role.contains(":installer") && !used.contains(g))
        .collect();
    assert!(unused.is_empty(), "granted but never used: {unused:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_missing_permission_is_refused_and_named() {
    // Without the pods/exec rule: the probes cannot run, and the run says which rule is missing.
    let rule = "    resources: [\"pods/exec\"]\n    resourceNames: [\"hami-share-a\", \"hami-share-b\", \"hami-baseline\",\n";
    let trimmed = policy().replace(rule, &rule.replace("pods/exec", "pods/attach"));
    assert_ne!(trimmed, policy(), "the rule to remove is in the file");
    let m = healthy_with_probes();
    m.enforce_rbac(&trimmed);
    let dir = tempfile::tempdir().unwrap();
    let out = invoke(Command::Run, &m.cluster(API_TIMEOUT), dir.path())
        .await
        .unwrap();
    assert_eq!(out.exit, exit::ENVIRONMENT, "{}", out.human);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/run.json")).unwrap())
            .unwrap();
    let reason = report["exercises"][1]["reason"].as_str().unwrap();
    assert!(reason.contains("refused to let cluster-ctl get pods/exec hami-share-a in namespace default (403 Forbidden"), "{reason}");
    assert!(
        reason.contains(
            "cannot get resource \"pods/exec\" in API group \"\" in the namespace \"default\""
        ),
        "{reason}"
    );
    assert!(reason.contains("{apiGroups: [\"\"], resources: [\"pods/exec\"], verbs: [\"get\", \"create\"], resourceNames: [\"hami-share-a\"]}"), "{reason}");
    assert!(!m.denied().is_empty());
    // probe of a pod in a namespace without the documented binding: exit 3 naming the rule.
    let m = healthy_with_probes();
    m.add(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "workloads"}}));
    m.enforce_rbac(&policy());
    let bin = dir.path().join("gpu-probe");
    std::fs::write(&bin, b"probe").unwrap();
    let mut c = ctx(false);
    c.namespace = "workloads".into();
    let err = commands::probe(
        &m.cluster(API_TIMEOUT),
        &c,
        "trainer-0",
        None,
        None,
        &bin,
        None,
        Duration::from_secs(300),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, exit::ENVIRONMENT);
    let text = err.to_string();
    assert!(
        text.contains("get pods trainer-0 in namespace workloads"),
        "{text}"
    );
    assert!(text.contains("in a Role of namespace workloads"), "{text}");
}
