//! The bypass exercises' evidence, for a run loop: the bypass pods come from
//! `manifests::render_bypasses`, each is created through `api::create_pod`, and what comes back is
//! written where lab-report's judge reads it: the API server's refusal as `admission/<pod>.json`
//! ([`refusal_evidence`]), or, once admitted, the Pod as `pods/<pod>.json` and gpu-probe's report
//! from inside it as `probe/<pod>.json`. `lab_report::judge::judge_exercise` decides each from
//! those files (contained: refused, no GPU, or held to what it was given; escaped otherwise).

use lab_report::run::{Bypass, admission_file, pod_file, probe_file};
use serde_json::{Value, json};

/// The API server's answer to a refused create, as a `Status` object (`kind` and `apiVersion`
/// included, as the server sends it), when the error is one: a 4xx `Status` from the server.
/// Anything else (a timeout, a connection error, a 5xx) is not a refusal and gives `None`.
pub fn refusal_evidence(e: &kube::Error) -> Option<Value> {
    let kube::Error::Api(status) = e else {
        return None;
    };
    if !(400..500).contains(&status.code) {
        return None;
    }
    let mut v = serde_json::to_value(status.as_ref()).ok()?;
    let obj = v.as_object_mut()?;
    obj.insert("kind".into(), json!("Status"));
    obj.insert("apiVersion".into(), json!("v1"));
    obj.entry("metadata").or_insert(json!({}));
    Some(v)
}

/// The evidence paths of one bypass exercise: the refusal, the Pod, the probe report.
pub fn evidence_paths(b: &Bypass) -> [String; 3] {
    [
        admission_file(b.pod),
        pod_file(b.pod),
        probe_file(b.pod, None),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{self, ApiError};
    use crate::commands::Ctx;
    use crate::helm::HelmTarget;
    use crate::manifests::{self, DEFAULT_IMAGE};
    use crate::mockapi::MockApi;
    use crate::sizing::{Card, size};
    use k8s_openapi::api::core::v1::Pod;
    use kube::Api;
    use lab_report::judge::{EvidenceFile, RunContext, judge_exercise};
    use std::time::Duration;

    fn ctx() -> Ctx {
        Ctx {
            namespace: "lab".into(),
            hami_namespace: "kube-system".into(),
            dry_run: false,
            api_timeout: Duration::from_secs(5),
            helm: HelmTarget {
                kubeconfig: None,
                context: None,
                namespace: "kube-system".into(),
            },
        }
    }

    #[tokio::test]
    async fn with_the_policy_bound_every_bypass_pod_but_b5_is_refused_and_judged_contained() {
        let m = MockApi::new();
        let client = m.client();
        crate::harden::harden(&client, &ctx(), &[]).await.unwrap();
        let sizing = size(
            &[Card {
                uuid: None,
                devmem_mib: 143771,
            }],
            None,
            None,
        )
        .unwrap();
        let run = RunContext {
            slice_mib: Some(sizing.slice_mib),
            max_overhead_pct: None,
        };
        let pods: Api<Pod> = Api::namespaced(client.clone(), "lab");
        let mut refused = Vec::new();
        for b in manifests::render_bypasses(&sizing, "lab", DEFAULT_IMAGE).unwrap() {
            let [admission, _, _] = evidence_paths(b.bypass);
            match api::create_pod(&pods, &b.pod.pod).await {
                Err(ApiError::Call { source, .. }) => {
                    let status = refusal_evidence(&source).expect("a Status");
                    assert_eq!(status["code"], 403, "{status}");
                    let bytes = serde_json::to_vec(&status).unwrap();
                    let j = judge_exercise(
                        &b.bypass.exercise_id(),
                        &run,
                        &[EvidenceFile {
                            path: &admission,
                            bytes: Some(&bytes),
                        }],
                    );
                    assert!(j.is_supported(), "{}: {}", b.bypass.id, j.reason);
                    assert!(
                        j.reason
                            .contains("ValidatingAdmissionPolicy 'hami-isolation-lab-gpu-tenant'"),
                        "{}",
                        j.reason
                    );
                    refused.push(b.bypass.id);
                }
                Ok(_) => assert_eq!(b.bypass.id, "B5", "{} was admitted", b.bypass.id),
                Err(e) => panic!("{}: {e}", b.bypass.id),
            }
        }
        assert_eq!(refused, ["B1", "B2", "B3", "B4", "B6"]);
        // The lab's own pods are admitted.
        for p in manifests::render_all(&sizing, "lab", DEFAULT_IMAGE).unwrap() {
            api::create_pod(&pods, &p.pod).await.unwrap();
        }
        assert!(m.has("pods", "lab", "hami-bypass-b5"));
        assert!(m.has("pods", "lab", "hami-share-a"));
        assert!(!m.has("pods", "lab", "hami-bypass-b1"));
    }

    #[tokio::test]
    async fn without_the_policy_every_bypass_pod_is_admitted() {
        let m = MockApi::new();
        let pods: Api<Pod> = Api::namespaced(m.client(), "lab");
        let sizing = size(
            &[Card {
                uuid: None,
                devmem_mib: 49140,
            }],
            None,
            None,
        )
        .unwrap();
        for b in manifests::render_bypasses(&sizing, "lab", DEFAULT_IMAGE).unwrap() {
            api::create_pod(&pods, &b.pod.pod).await.unwrap();
        }
    }

    #[test]
    fn only_a_4xx_status_is_a_refusal() {
        let status: kube::core::Status = serde_json::from_value(json!({
            "status": "Failure", "code": 403, "reason": "Forbidden", "message": "m"
        }))
        .unwrap();
        let v = refusal_evidence(&kube::Error::Api(Box::new(status))).unwrap();
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["status"], "Failure");
        let s500: kube::core::Status =
            serde_json::from_value(json!({"status": "Failure", "code": 500})).unwrap();
        assert!(refusal_evidence(&kube::Error::Api(Box::new(s500))).is_none());
        assert_eq!(
            evidence_paths(&lab_report::run::BYPASSES[0]),
            [
                "admission/hami-bypass-b1.json",
                "pods/hami-bypass-b1.json",
                "probe/hami-bypass-b1.json"
            ]
        );
    }
}
