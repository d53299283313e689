//! `cluster-ctl harden` against the mock API server: creates the policy and its binding, a second
//! run changes nothing, a changed exempt list replaces only the binding, `--dry-run` writes
//! nothing, a server before 1.30 is refused before anything else is asked, HAMi outside the exempt
//! namespaces stops it before any write, and the lab's own identities (manifests/rbac.yaml) may
//! not apply it. What the bound policy refuses is `bypass.rs`'s.

use cluster_ctl::commands::{exit, harden};
use serde_json::json;

use crate::mockapi::MockApi;
use crate::support::*;

const POLICY_RESOURCE: &str = "validatingadmissionpolicies.admissionregistration.k8s.io";
const BINDING_RESOURCE: &str = "validatingadmissionpolicybindings.admissionregistration.k8s.io";

#[tokio::test(start_paused = true)]
async fn hami_in_a_namespace_that_is_not_exempt_stops_harden_before_any_write() {
    let m = MockApi::new();
    m.add(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "hami-device-plugin-abc", "namespace": "hami-system", "labels": {"app.kubernetes.io/component": "hami-device-plugin"}},
        "spec": {"containers": [{"name": "device-plugin", "image": "x"}]}}));
    let err = harden(&m.cluster(API_TIMEOUT), &ctx(false), &[])
        .await
        .unwrap_err();
    assert_eq!(err.code, exit::USAGE);
    assert!(
        format!("{:#}", err.error).contains("--hami-namespace hami-system"),
        "{:#}",
        err.error
    );
    assert!(writes(&m).is_empty());
    // With the right --hami-namespace it goes ahead.
    let mut c = ctx(false);
    c.hami_namespace = "hami-system".into();
    let out = harden(&m.cluster(API_TIMEOUT), &c, &[]).await.unwrap();
    assert_eq!(out.exit, exit::OK, "{}", out.human);
}

const POLICIES: &str = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies";
const BINDINGS: &str = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings";
const NAME: &str = "hami-isolation-lab-gpu-tenant";

fn writes(m: &MockApi) -> Vec<String> {
    m.seen_paths()
        .into_iter()
        .filter(|p| p.starts_with("POST") || p.starts_with("PUT") || p.starts_with("DELETE"))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn creates_both_then_a_second_run_changes_nothing() {
    let m = MockApi::new();
    let client = m.cluster(API_TIMEOUT);
    let out = harden(&client, &ctx(false), &[]).await.unwrap();
    assert_eq!(out.exit, exit::OK, "{}", out.human);
    assert!(
        out.human.contains("create ValidatingAdmissionPolicy "),
        "{}",
        out.human
    );
    assert!(out.human.contains("read back"), "{}", out.human);
    assert_eq!(
        writes(&m),
        [format!("POST {POLICIES}"), format!("POST {BINDINGS}")]
    );
    assert!(m.has(POLICY_RESOURCE, "", NAME));
    assert!(m.has(BINDING_RESOURCE, "", NAME));

    let before = m.seen().len();
    let again = harden(&client, &ctx(false), &[]).await.unwrap();
    assert_eq!(again.exit, exit::OK);
    assert!(again.human.contains("Nothing to do"), "{}", again.human);
    assert_eq!(
        writes(&m).len(),
        2,
        "the second run wrote: {:?}",
        &m.seen()[before..]
    );
}

#[tokio::test(start_paused = true)]
async fn a_changed_exempt_list_replaces_only_the_binding() {
    let m = MockApi::new();
    let client = m.cluster(API_TIMEOUT);
    harden(&client, &ctx(false), &["gpu-admin".into()])
        .await
        .unwrap();
    let out = harden(&client, &ctx(false), &[]).await.unwrap();
    assert_eq!(out.exit, exit::OK, "{}", out.human);
    assert!(
        out.human.contains("unchanged ValidatingAdmissionPolicy "),
        "{}",
        out.human
    );
    assert!(
        out.human
            .contains("replace ValidatingAdmissionPolicyBinding"),
        "{}",
        out.human
    );
    assert_eq!(
        writes(&m).last().unwrap(),
        &format!("PUT {BINDINGS}/{NAME}")
    );
    assert_eq!(writes(&m).len(), 3);
}

#[tokio::test(start_paused = true)]
async fn dry_run_prints_the_plan_and_the_objects_and_writes_nothing() {
    let m = MockApi::new();
    let out = harden(&m.cluster(API_TIMEOUT), &ctx(true), &[])
        .await
        .unwrap();
    assert_eq!(out.exit, exit::OK);
    assert!(writes(&m).is_empty(), "{:?}", m.seen_paths());
    assert!(
        out.human
            .contains("create ValidatingAdmissionPolicyBinding"),
        "{}",
        out.human
    );
    assert!(
        out.human.contains("kind: ValidatingAdmissionPolicy\n"),
        "{}",
        out.human
    );
    assert!(
        out.human.contains("hami-isolation-lab: privileged"),
        "{}",
        out.human
    );
}

#[tokio::test(start_paused = true)]
async fn an_old_server_is_refused_before_anything_is_read_or_written() {
    let m = MockApi::new();
    m.set_version(json!({"major": "1", "minor": "29", "gitVersion": "v1.29.9+k3s1"}));
    let err = harden(&m.cluster(API_TIMEOUT), &ctx(false), &[])
        .await
        .unwrap_err();
    assert_eq!(err.code, exit::ENVIRONMENT);
    assert!(
        format!("{:#}", err.error).contains("v1.29.9+k3s1"),
        "{:#}",
        err.error
    );
    assert_eq!(m.seen_paths(), ["GET /version"]);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_server_is_an_environment_failure() {
    let m = MockApi::new();
    m.settings(|s| s.unreachable = true);
    let err = harden(&m.cluster(API_TIMEOUT), &ctx(false), &[])
        .await
        .unwrap_err();
    assert_eq!(err.code, exit::ENVIRONMENT);
}

#[tokio::test(start_paused = true)]
async fn the_labs_own_identity_may_not_apply_the_policy_and_is_told_who_may() {
    let m = MockApi::new();
    m.enforce_rbac(&rbac_policy());
    for token in [crate::mockapi::TOKEN, crate::mockapi::INSTALLER_TOKEN] {
        let err = harden(&m.cluster_as(token, API_TIMEOUT), &ctx(false), &[])
            .await
            .unwrap_err();
        assert_eq!(err.code, exit::ENVIRONMENT);
        let text = format!("{:#}", err.error);
        assert!(
            text.contains("403 Forbidden")
                && text.contains("validatingadmissionpolicies")
                && text.contains("cluster admin"),
            "{text}"
        );
    }
    assert!(writes(&m).is_empty(), "{:?}", m.seen_paths());
    assert!(!m.has(POLICY_RESOURCE, "", NAME));
}
