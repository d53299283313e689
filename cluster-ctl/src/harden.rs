//! `cluster-ctl harden`: applies the GPU tenant policy (`manifests/policy.yaml`, a
//! ValidatingAdmissionPolicy and its binding) to the cluster. Render (the binding's exempt
//! namespaces from `--hami-namespace` and `--exempt-namespace`) → plan against what the server
//! holds (create / replace / unchanged, each with why) → `--dry-run` prints it → apply (create or
//! replace through [`crate::api`]) → read both back and plan again, which must be empty. A second
//! run changes nothing: an object is replaced only when a field this file sets differs on the
//! server (fields the server adds, such as defaults and status, are not compared).
//!
//! Everything here is pure: the rendering, the server-version gate, the check of the running pods
//! against the exempt list and the plan. `commands::harden` runs it against the cluster, through
//! `api` (`api::admission`).

use std::collections::BTreeSet;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::apimachinery::pkg::version::Info;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::manifests::{BASELINE_NAMESPACE, POLICY};

/// The first Kubernetes minor with `admissionregistration.k8s.io/v1` ValidatingAdmissionPolicy (GA).
pub const MIN_MINOR: u32 = 30;
/// The label key the API server sets on every namespace to its name; the binding selects on it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Why `harden` cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HardenError {
    #[error(
        "the API server is Kubernetes {0}: ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1) is GA only from 1.30, so the policy cannot be applied. Upgrade the cluster to 1.30 or later (k3s: `host-setup install --k3s-version v1.33.5+k3s1`), or enforce the same rules with a webhook policy engine (Kyverno, Gatekeeper) from manifests/policy.yaml's list"
    )]
    ServerTooOld(String),
    #[error(
        "cannot read the API server's version {0:?} (major/minor); `kubectl version` should show it"
    )]
    UnreadableVersion(String),
    #[error("manifests/policy.yaml is not what cluster-ctl expects: {0}")]
    BadPolicyFile(String),
    #[error(
        "--exempt-namespace {0:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"
    )]
    BadNamespace(String),
}

/// The policy and binding as they are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedPolicy {
    pub policy: ValidatingAdmissionPolicy,
    pub binding: ValidatingAdmissionPolicyBinding,
    /// The binding's exempt namespaces, in order.
    pub exempt: Vec<String>,
}

impl RenderedPolicy {
    /// Both objects as one YAML stream (what `--dry-run` prints).
    pub fn yaml(&self) -> String {
        let mut out = String::new();
        for v in [json_of(&self.policy), json_of(&self.binding)] {
            out.push_str("---\n");
            out.push_str(&serde_yaml_ng::to_string(&v).unwrap_or_default());
        }
        out
    }
}

fn json_of<T: Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

fn valid_namespace(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Deserializes one document into `T`, refusing a field `T` does not know (k8s-openapi would
/// drop it silently: a round trip that changes the JSON shows one).
fn strict<T: Serialize + for<'de> Deserialize<'de>>(
    doc: &Value,
    what: &str,
) -> Result<T, HardenError> {
    let t: T = serde_json::from_value(doc.clone())
        .map_err(|e| HardenError::BadPolicyFile(format!("{what}: {e}")))?;
    if json_of(&t) != *doc {
        return Err(HardenError::BadPolicyFile(format!(
            "{what} has a field the Kubernetes API does not define (it would be dropped)"
        )));
    }
    Ok(t)
}

/// Renders the policy file with the binding's exempt list: the file's own (kube-system and the
/// baseline namespace), then `hami_namespace`, then `extra`, without duplicates.
pub fn render_policy(
    extra: &[String],
    hami_namespace: &str,
) -> Result<RenderedPolicy, HardenError> {
    render_policy_text(POLICY, extra, hami_namespace)
}

/// [`render_policy`] over a given file text (tests pass broken ones).
pub fn render_policy_text(
    text: &str,
    extra: &[String],
    hami_namespace: &str,
) -> Result<RenderedPolicy, HardenError> {
    for ns in extra.iter().map(String::as_str).chain([hami_namespace]) {
        if !valid_namespace(ns) {
            return Err(HardenError::BadNamespace(ns.to_owned()));
        }
    }
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(text)
        .map(Value::deserialize)
        .collect::<Result<_, _>>()
        .map_err(|e| HardenError::BadPolicyFile(e.to_string()))?;
    let [policy_doc, binding_doc] = docs.as_slice() else {
        return Err(HardenError::BadPolicyFile(format!(
            "{} YAML documents, expected the policy and its binding",
            docs.len()
        )));
    };
    let policy: ValidatingAdmissionPolicy = strict(policy_doc, "the ValidatingAdmissionPolicy")?;
    let mut binding: ValidatingAdmissionPolicyBinding =
        strict(binding_doc, "the ValidatingAdmissionPolicyBinding")?;
    let policy_name = policy.metadata.name.clone().unwrap_or_default();
    let spec = binding
        .spec
        .as_mut()
        .ok_or_else(|| HardenError::BadPolicyFile("the binding has no spec".into()))?;
    if spec.policy_name.as_deref() != Some(policy_name.as_str()) {
        return Err(HardenError::BadPolicyFile(format!(
            "the binding names policy {:?}, not {policy_name:?}",
            spec.policy_name
        )));
    }
    let exempt_expr = spec
        .match_resources
        .as_mut()
        .and_then(|m| m.namespace_selector.as_mut())
        .and_then(|s| s.match_expressions.as_mut())
        .and_then(|exprs| {
            exprs
                .iter_mut()
                .find(|e| e.key == NAMESPACE_NAME_LABEL && e.operator == "NotIn")
        })
        .ok_or_else(|| {
            HardenError::BadPolicyFile(format!(
                "the binding has no `{NAMESPACE_NAME_LABEL} NotIn` namespace selector to list the exempt namespaces in"
            ))
        })?;
    let mut seen = BTreeSet::new();
    let exempt: Vec<String> = exempt_expr
        .values
        .clone()
        .unwrap_or_default()
        .into_iter()
        .chain([hami_namespace.to_owned()])
        .chain(extra.iter().cloned())
        .filter(|ns| seen.insert(ns.clone()))
        .collect();
    if !exempt.iter().any(|n| n == BASELINE_NAMESPACE) {
        return Err(HardenError::BadPolicyFile(format!(
            "the binding does not exempt {BASELINE_NAMESPACE}, where the --audit baseline pod runs"
        )));
    }
    exempt_expr.values = Some(exempt.clone());
    Ok(RenderedPolicy {
        policy,
        binding,
        exempt,
    })
}

/// Refuses a server older than 1.30 (the `minor` field may carry a `+`, as on EKS and GKE).
pub fn check_server(info: &Info) -> Result<(), HardenError> {
    let digits = |s: &str| -> Option<u32> {
        let d: String = s.chars().take_while(char::is_ascii_digit).collect();
        d.parse().ok()
    };
    let shown = if info.git_version.is_empty() {
        format!("{}.{}", info.major, info.minor)
    } else {
        info.git_version.clone()
    };
    match (digits(&info.major), digits(&info.minor)) {
        (Some(1), Some(minor)) if minor >= MIN_MINOR => Ok(()),
        (Some(major), _) if major > 1 => Ok(()),
        (Some(_), Some(_)) => Err(HardenError::ServerTooOld(shown)),
        _ => Err(HardenError::UnreadableVersion(shown)),
    }
}

/// What `harden` does to one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    Create,
    /// The fields (JSON paths) this file sets that differ on the server.
    Replace {
        changed: Vec<String>,
    },
    Unchanged,
}

/// One object of the plan, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedObject {
    pub kind: String,
    pub name: String,
    #[serde(flatten)]
    pub action: Action,
    pub why: String,
}

/// The plan: one entry per object, and warnings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HardenPlan {
    pub objects: Vec<PlannedObject>,
    pub exempt: Vec<String>,
    pub warnings: Vec<String>,
}

impl HardenPlan {
    /// Nothing to create or replace.
    pub fn is_empty(&self) -> bool {
        self.objects.iter().all(|o| o.action == Action::Unchanged)
    }
}

/// The paths where `want` sets something `have` does not hold equally. Objects compare key by
/// key (keys only `have` has are the server's: defaults, status, metadata it adds); lists of the
/// same length item by item (so a default inside an item is the server's too), other lists and
/// scalars whole. An empty object or list in `want` matches an absent field.
pub fn differences(want: &Value, have: Option<&Value>, path: &str, out: &mut Vec<String>) {
    match (want, have) {
        (Value::Object(w), Some(Value::Object(h))) => {
            for (k, wv) in w {
                differences(wv, h.get(k), &format!("{path}.{k}"), out);
            }
        }
        (Value::Array(w), Some(Value::Array(h))) if w.len() == h.len() => {
            for (i, (wv, hv)) in w.iter().zip(h).enumerate() {
                differences(wv, Some(hv), &format!("{path}[{i}]"), out);
            }
        }
        (Value::Object(w), None) if w.is_empty() => {}
        (Value::Array(w), None) if w.is_empty() => {}
        (Value::Null, None) => {}
        (w, Some(h)) if w == h => {}
        (
            Value::Object(w),
            Some(
                Value::Array(_)
                | Value::String(_)
                | Value::Number(_)
                | Value::Bool(_)
                | Value::Null,
            ),
        ) if w.is_empty() => {}
        _ => out.push(path.trim_start_matches('.').to_owned()),
    }
}

/// The fields of an object this file manages: labels, annotations it sets, and the spec.
fn managed(v: &Value) -> Value {
    json!({
        "metadata": {
            "labels": v["metadata"]["labels"],
            "annotations": v["metadata"]["annotations"],
        },
        "spec": v["spec"],
    })
}

fn plan_object(kind: &str, want: &Value, have: Option<&Value>) -> PlannedObject {
    let name = want["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (action, why) = match have {
        None => (Action::Create, format!("no {kind} {name} on the server")),
        Some(h) => {
            let mut changed = Vec::new();
            differences(&managed(want), Some(&managed(h)), "", &mut changed);
            if changed.is_empty() {
                (
                    Action::Unchanged,
                    "the server holds every field this file sets, as set".to_owned(),
                )
            } else {
                let why = format!("the server's {kind} differs in {}", changed.join(", "));
                (Action::Replace { changed }, why)
            }
        }
    };
    PlannedObject {
        kind: kind.to_owned(),
        name,
        action,
        why,
    }
}

/// Plans the two objects against what the server holds (`None`: absent).
pub fn plan(
    desired: &RenderedPolicy,
    live_policy: Option<&ValidatingAdmissionPolicy>,
    live_binding: Option<&ValidatingAdmissionPolicyBinding>,
    lab_namespace: &str,
) -> HardenPlan {
    let mut warnings = Vec::new();
    if desired.exempt.iter().any(|n| n == lab_namespace) {
        warnings.push(format!(
            "the lab namespace {lab_namespace} is exempt: bypass pods created there are not refused by the policy (run the lab in another namespace, or drop it from --exempt-namespace)"
        ));
    }
    HardenPlan {
        objects: vec![
            plan_object(
                "ValidatingAdmissionPolicy",
                &json_of(&desired.policy),
                live_policy.map(json_of).as_ref(),
            ),
            plan_object(
                "ValidatingAdmissionPolicyBinding",
                &json_of(&desired.binding),
                live_binding.map(json_of).as_ref(),
            ),
        ],
        exempt: desired.exempt.clone(),
        warnings,
    }
}

/// The plan for people.
pub fn plan_human(p: &HardenPlan) -> String {
    let mut out = String::new();
    for o in &p.objects {
        let verb = match &o.action {
            Action::Create => "create",
            Action::Replace { .. } => "replace",
            Action::Unchanged => "unchanged",
        };
        out.push_str(&format!(
            "  - {verb} {} {}\n    why: {}\n",
            o.kind, o.name, o.why
        ));
    }
    out.push_str(&format!(
        "  exempt namespaces (pods there are not checked): {}\n",
        p.exempt.join(", ")
    ));
    for w in &p.warnings {
        out.push_str(&format!("  warning: {w}\n"));
    }
    out
}

/// HAMi's components, by the `app.kubernetes.io/component` label its chart sets.
pub const HAMI_COMPONENTS: [&str; 2] = ["hami-device-plugin", "hami-scheduler"];

/// What the running pods say about the exempt list, before anything is applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PodsAtRisk {
    /// Namespaces outside the exempt list where HAMi's own components run: applying would refuse
    /// them at their next restart, so `harden` stops.
    pub hami_outside: Vec<String>,
    /// Other pods outside the exempt list that are privileged, add SYS_ADMIN or mount a hostPath
    /// (system agents, CNI, storage): they may be refused when they are created again.
    pub warnings: Vec<String>,
}

/// Checks the running pods against the exempt list: HAMi's components must be exempt; privileged
/// or hostPath pods elsewhere are named (the policy may refuse them when they are re-created).
pub fn pods_at_risk(pods: &[k8s_openapi::api::core::v1::Pod], exempt: &[String]) -> PodsAtRisk {
    let mut risk = PodsAtRisk::default();
    let mut flagged: BTreeSet<(String, String)> = BTreeSet::new();
    for pod in pods {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        if exempt.contains(&ns) {
            continue;
        }
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if labels
            .get("app.kubernetes.io/component")
            .is_some_and(|c| HAMI_COMPONENTS.contains(&c.as_str()))
        {
            if !risk.hami_outside.contains(&ns) {
                risk.hami_outside.push(ns);
            }
            continue;
        }
        let Some(spec) = pod.spec.as_ref() else {
            continue;
        };
        let privileged = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .filter_map(|c| c.security_context.as_ref())
            .any(|sc| {
                sc.privileged == Some(true)
                    || sc
                        .capabilities
                        .as_ref()
                        .and_then(|c| c.add.as_ref())
                        .is_some_and(|add| {
                            add.iter().any(|a| {
                                let a = a.to_ascii_uppercase();
                                let a = a.trim_start_matches("CAP_");
                                a == "SYS_ADMIN" || a == "ALL"
                            })
                        })
            });
        let host_path = spec.volumes.iter().flatten().any(|v| v.host_path.is_some());
        if privileged || host_path {
            let owner = pod
                .metadata
                .owner_references
                .as_ref()
                .and_then(|o| o.first())
                .map(|o| format!("{} {}", o.kind, o.name))
                .unwrap_or_else(|| {
                    format!("Pod {}", pod.metadata.name.clone().unwrap_or_default())
                });
            if flagged.insert((ns.clone(), owner.clone())) {
                risk.warnings.push(format!(
                    "{ns}/{owner} runs {}: the policy may refuse its pods when they are created again; if it is part of the platform, pass --exempt-namespace {ns}",
                    if privileged { "privileged" } else { "with a hostPath volume" }
                ));
            }
        }
    }
    risk
}

/// The type-checking warnings the API server wrote into the policy's status, one line each.
pub fn type_warnings(live: &ValidatingAdmissionPolicy) -> Vec<String> {
    live.status
        .as_ref()
        .and_then(|s| s.type_checking.as_ref())
        .and_then(|t| t.expression_warnings.as_ref())
        .map(|ws| {
            ws.iter()
                .map(|w| format!("{}: {}", w.field_ref, w.warning))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(major: &str, minor: &str) -> Info {
        Info {
            major: major.into(),
            minor: minor.into(),
            git_version: format!("v{major}.{minor}.0"),
            ..Info::default()
        }
    }

    #[test]
    fn servers_before_1_30_are_refused_with_what_to_do() {
        assert!(check_server(&info("1", "30")).is_ok());
        assert!(check_server(&info("1", "33")).is_ok());
        assert!(check_server(&info("1", "31+")).is_ok());
        let e = check_server(&info("1", "29")).unwrap_err();
        assert!(matches!(e, HardenError::ServerTooOld(_)));
        assert!(e.to_string().contains("Upgrade the cluster to 1.30"), "{e}");
        assert!(matches!(
            check_server(&info("", "")),
            Err(HardenError::UnreadableVersion(_))
        ));
    }

    #[test]
    fn the_exempt_list_gains_hamis_namespace_and_the_extras_once() {
        let r = render_policy(&["gpu-admin".into(), "kube-system".into()], "hami-system").unwrap();
        assert_eq!(
            r.exempt,
            [
                "kube-system",
                BASELINE_NAMESPACE,
                "hami-system",
                "gpu-admin"
            ]
        );
        assert!(r.yaml().contains("- gpu-admin"), "{}", r.yaml());
        let r = render_policy(&[], "kube-system").unwrap();
        assert_eq!(r.exempt, ["kube-system", BASELINE_NAMESPACE]);
        assert!(matches!(
            render_policy(&["Bad_NS".into()], "kube-system"),
            Err(HardenError::BadNamespace(_))
        ));
    }

    #[test]
    fn a_policy_file_with_an_unknown_field_or_no_exempt_list_is_refused() {
        let typo = POLICY.replace("failurePolicy: Fail", "failurePolcy: Fail");
        let e = render_policy_text(&typo, &[], "kube-system").unwrap_err();
        assert!(e.to_string().contains("does not define"), "{e}");
        let no_list = POLICY.replace("operator: NotIn", "operator: In");
        assert!(render_policy_text(&no_list, &[], "kube-system").is_err());
        let one_doc = POLICY.split("\n---\n").next().unwrap();
        assert!(render_policy_text(one_doc, &[], "kube-system").is_err());
    }

    #[test]
    fn the_plan_creates_then_leaves_alone_then_replaces_what_differs() {
        let d = render_policy(&[], "kube-system").unwrap();
        let p = plan(&d, None, None, "default");
        assert!(p.objects.iter().all(|o| o.action == Action::Create));
        // What the server returns holds more (defaults, status, uid): still unchanged.
        let mut live_policy = json_of(&d.policy);
        live_policy["metadata"]["uid"] = json!("u1");
        live_policy["metadata"]["resourceVersion"] = json!("7");
        live_policy["spec"]["matchConstraints"]["excludeResourceRules"] = json!([]);
        live_policy["status"] = json!({"observedGeneration": 1});
        let live_policy: ValidatingAdmissionPolicy = serde_json::from_value(live_policy).unwrap();
        let p = plan(&d, Some(&live_policy), Some(&d.binding), "default");
        assert!(p.is_empty(), "{p:?}");
        // An exempt list edited on the server is put back.
        let mut b = d.binding.clone();
        b.spec.as_mut().unwrap().validation_actions = Some(vec!["Warn".into()]);
        let p = plan(&d, Some(&live_policy), Some(&b), "default");
        assert_eq!(
            p.objects[1].action,
            Action::Replace {
                changed: vec!["spec.validationActions[0]".into()]
            }
        );
        assert!(plan_human(&p).contains("replace ValidatingAdmissionPolicyBinding"));
    }

    #[test]
    fn differences_ignore_what_the_server_adds_and_name_what_differs() {
        let want =
            json!({"spec": {"rules": [{"scope": "Namespaced"}], "sel": {}, "names": ["a", "b"]}});
        let have = json!({"spec": {"rules": [{"scope": "Namespaced", "extra": 1}], "names": ["a", "b"], "more": true}});
        let mut out = Vec::new();
        differences(&want, Some(&have), "", &mut out);
        assert!(out.is_empty(), "{out:?}");
        let have = json!({"spec": {"rules": [{"scope": "*"}], "names": ["a"]}});
        differences(&want, Some(&have), "", &mut out);
        assert_eq!(out, ["spec.names", "spec.rules[0].scope"]);
    }

    fn pod(ns: &str, v: Value) -> k8s_openapi::api::core::v1::Pod {
        let mut v = v;
        v["metadata"]["namespace"] = json!(ns);
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn hami_outside_the_exempt_list_and_privileged_system_pods_are_named() {
        let exempt = vec!["kube-system".to_owned()];
        let plugin = json!({"metadata": {"name": "p1", "labels": {"app.kubernetes.io/component": "hami-device-plugin"}},
            "spec": {"containers": [{"name": "c", "securityContext": {"privileged": true}}]}});
        let cni = json!({"metadata": {"name": "calico-node-x", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "calico-node", "uid": "u"}]},
            "spec": {"containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["sys_admin"]}}}]}});
        let storage = json!({"metadata": {"name": "s1"}, "spec": {"containers": [{"name": "c"}], "volumes": [{"name": "h", "hostPath": {"path": "/var/lib/x"}}]}});
        let plain = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c"}]}});
        let pods = vec![
            pod("kube-system", plugin.clone()),
            pod("hami-system", plugin),
            pod("calico-system", cni.clone()),
            pod("calico-system", cni),
            pod("longhorn", storage),
            pod("default", plain),
        ];
        let r = pods_at_risk(&pods, &exempt);
        assert_eq!(r.hami_outside, ["hami-system"]);
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(
            r.warnings[0].contains("calico-system/DaemonSet calico-node runs privileged"),
            "{:?}",
            r.warnings
        );
        assert!(
            r.warnings[1].contains("longhorn/Pod s1 runs with a hostPath volume"),
            "{:?}",
            r.warnings
        );
        assert!(r.warnings[1].contains("--exempt-namespace longhorn"));
        let all = vec![
            "kube-system".into(),
            "hami-system".into(),
            "calico-system".into(),
            "longhorn".into(),
        ];
        assert_eq!(pods_at_risk(&pods, &all), PodsAtRisk::default());
    }

    #[test]
    fn exempting_the_lab_namespace_is_warned_about() {
        let d = render_policy(&["default".into()], "kube-system").unwrap();
        let p = plan(&d, None, None, "default");
        assert_eq!(p.warnings.len(), 1, "{p:?}");
        assert!(p.warnings[0].contains("bypass pods"));
    }
}
