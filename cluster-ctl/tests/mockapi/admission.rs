//! The mock's ValidatingAdmissionPolicy evaluator, over the policy file's OWN expressions, with
//! the `cel` crate (cel-rust): the binding's namespace selector, the policy's match conditions,
//! variables and validations, as the API server evaluates them (admitted when the namespace is
//! exempt, a match condition is false, or every validation is true). `tests/policy.rs` runs it
//! against the lab's pods; the mock runs it on every pod created while a policy and its binding
//! are stored ([`refusal_by_stored`]), answering as kube-apiserver does (403 with its wording).
//!
//! Tier: the CEL semantics are cel-rust's, not kube-apiserver's (cel-go); the policy uses only the
//! standard macros and string functions both implement.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value, json};

/// The two objects of the policy file, as JSON.
pub struct Policy {
    pub policy: Value,
    pub binding: Value,
}

pub fn load(text: &str) -> Policy {
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    let [policy, binding] = docs.as_slice() else {
        panic!("policy.yaml has {} documents, expected 2", docs.len());
    };
    assert_eq!(policy["kind"], "ValidatingAdmissionPolicy");
    assert_eq!(binding["kind"], "ValidatingAdmissionPolicyBinding");
    Policy {
        policy: policy.clone(),
        binding: binding.clone(),
    }
}

/// What the API server would do with a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The binding does not select the namespace.
    Exempt,
    /// A match condition is false: the policy does not apply.
    NotMatched,
    Admitted,
    /// The rule tags (`[hami-isolation-lab: TAG]`) of every validation that failed.
    Denied(Vec<String>),
}

fn to_cel(v: &Value) -> cel::Value {
    cel::to_value(v).unwrap()
}

/// Evaluates one expression; an evaluation error is a test failure (the API server would apply
/// failurePolicy: Fail, which rejects, but a policy that errors on a lab pod is a broken policy).
fn eval(expr: &str, vars: &[(&str, &cel::Value)], what: &str) -> cel::Value {
    let program =
        cel::Program::compile(expr).unwrap_or_else(|e| panic!("{what}: does not compile: {e}"));
    let mut ctx = cel::Context::default();
    for (name, value) in vars {
        ctx.add_variable_from_value(*name, (*value).clone());
    }
    program
        .execute(&ctx)
        .unwrap_or_else(|e| panic!("{what}: evaluation failed: {e}\n  expression: {expr}"))
}

fn eval_bool(expr: &str, vars: &[(&str, &cel::Value)], what: &str) -> bool {
    match eval(expr, vars, what) {
        cel::Value::Bool(b) => b,
        other => panic!("{what}: evaluates to {other:?}, not a bool"),
    }
}

/// The binding's `namespaceSelector`: `matchLabels` and `matchExpressions` over the namespace's
/// labels (the API server sets `kubernetes.io/metadata.name` on every namespace).
fn namespace_selected(selector: &Value, labels: &HashMap<String, String>) -> bool {
    let labels_ok = selector["matchLabels"].as_object().is_none_or(|m| {
        m.iter()
            .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
    });
    let exprs_ok = selector["matchExpressions"].as_array().is_none_or(|exprs| {
        exprs.iter().all(|e| {
            let key = e["key"].as_str().unwrap();
            let values: Vec<&str> = e["values"]
                .as_array()
                .map(|v| v.iter().map(|s| s.as_str().unwrap()).collect())
                .unwrap_or_default();
            let value = labels.get(key).map(String::as_str);
            match e["operator"].as_str().unwrap() {
                "In" => value.is_some_and(|v| values.contains(&v)),
                "NotIn" => value.is_none_or(|v| !values.contains(&v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                other => panic!("operator {other} not modelled"),
            }
        })
    });
    labels_ok && exprs_ok
}

pub fn decide(
    p: &Policy,
    namespace: &str,
    pod: &Value,
    operation: &str,
    sub_resource: &str,
) -> Decision {
    // The policy's matchConstraints and the binding's matchResources both select pods by
    // namespace; only the binding narrows it.
    let labels = HashMap::from([(
        "kubernetes.io/metadata.name".to_owned(),
        namespace.to_owned(),
    )]);
    for selector in [
        &p.policy["spec"]["matchConstraints"]["namespaceSelector"],
        &p.binding["spec"]["matchResources"]["namespaceSelector"],
    ] {
        if !namespace_selected(selector, &labels) {
            return Decision::Exempt;
        }
    }
    let mut pod = pod.clone();
    pod["metadata"]["namespace"] = json!(namespace);
    let object = to_cel(&pod);
    let request = to_cel(&json!({
        "operation": operation,
        "subResource": sub_resource,
        "namespace": namespace,
        "name": pod["metadata"]["name"],
    }));
    let spec = &p.policy["spec"];
    for mc in spec["matchConditions"].as_array().unwrap() {
        let what = format!("matchCondition {}", mc["name"]);
        let vars = [("object", &object), ("request", &request)];
        if !eval_bool(mc["expression"].as_str().unwrap(), &vars, &what) {
            return Decision::NotMatched;
        }
    }
    let mut variables: HashMap<String, cel::Value> = HashMap::new();
    for v in spec["variables"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let so_far: cel::Value = variables.clone().into();
        let vars = [
            ("object", &object),
            ("request", &request),
            ("variables", &so_far),
        ];
        let value = eval(
            v["expression"].as_str().unwrap(),
            &vars,
            &format!("variable {name}"),
        );
        variables.insert(name.to_owned(), value);
    }
    let variables: cel::Value = variables.into();
    let mut denied = Vec::new();
    for (i, val) in spec["validations"].as_array().unwrap().iter().enumerate() {
        let vars = [
            ("object", &object),
            ("request", &request),
            ("variables", &variables),
        ];
        if !eval_bool(
            val["expression"].as_str().unwrap(),
            &vars,
            &format!("validation {i}"),
        ) {
            denied.push(rule_tag(val["message"].as_str().unwrap()));
        }
    }
    if denied.is_empty() {
        Decision::Admitted
    } else {
        Decision::Denied(denied)
    }
}

/// `[hami-isolation-lab: TAG]` at the end of a validation's message.
pub fn rule_tag(message: &str) -> String {
    let start = message
        .rfind("[hami-isolation-lab: ")
        .unwrap_or_else(|| panic!("message without a rule tag: {message}"));
    message[start + "[hami-isolation-lab: ".len()..]
        .trim_end_matches(']')
        .to_owned()
}

/// The first failing validation's message for `pod` created in `namespace`, as the API server's
/// refusal (`pods "NAME" is forbidden: ValidatingAdmissionPolicy 'P' with binding 'B' denied
/// request: MSG`), or `None` when admitted.
pub fn refusal(p: &Policy, namespace: &str, pod: &Value) -> Option<String> {
    let Decision::Denied(tags) = decide(p, namespace, pod, "CREATE", "") else {
        return None;
    };
    let first = tags.first()?;
    let message = p.policy["spec"]["validations"]
        .as_array()?
        .iter()
        .filter_map(|v| v["message"].as_str())
        .find(|m| rule_tag(m) == *first)?;
    Some(format!(
        "pods {:?} is forbidden: ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {message}",
        pod["metadata"]["name"].as_str().unwrap_or_default(),
        p.policy["metadata"]["name"].as_str().unwrap_or_default(),
        p.binding["metadata"]["name"].as_str().unwrap_or_default(),
    ))
}

/// The refusal of `pod`, created in `namespace`, by a stored policy whose stored binding names it
/// (kube-apiserver's wording), or `None` when every such policy admits it.
pub fn refusal_by_stored(
    store: &super::store::Store,
    namespace: Option<&str>,
    pod: &Value,
) -> Option<String> {
    let namespace = namespace.unwrap_or("default");
    let of = |resource: &'static str| {
        store
            .objects
            .iter()
            .filter(move |(k, _)| k.resource == resource)
            .map(|(_, v)| v)
    };
    // Only a binding with the Deny action refuses (Warn and Audit let the request through).
    let denies = |b: &&Value| {
        b["spec"]["validationActions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "Deny"))
    };
    of("validatingadmissionpolicybindings.admissionregistration.k8s.io")
        .filter(denies)
        .find_map(|binding| {
            let policy = of("validatingadmissionpolicies.admissionregistration.k8s.io")
                .find(|p| p["metadata"]["name"] == binding["spec"]["policyName"])?;
            let p = Policy {
                policy: policy.clone(),
                binding: binding.clone(),
            };
            refusal(&p, namespace, pod)
        })
}
