//! What kube-apiserver refuses in a write, and what it fills in. A body is decoded strictly into
//! its k8s-openapi type (an unknown field is a 400, as with `fieldValidation=Strict`); names,
//! label keys and values, annotation sizes and resource quantities are checked against the
//! apimachinery rules (422 `Invalid` with one cause per field, the real message format); pods get
//! the pod rules that matter here (containers, images, extended resources as whole numbers with
//! requests equal to limits, requests ≤ limits) and the server's defaults (requests from limits,
//! `Pending`, `default-scheduler`). An update may not change immutable fields.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::kinds::Kind;

/// A refused write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// (field, message) per failed rule.
    pub causes: Vec<(String, String)>,
}

impl Invalid {
    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
            causes: Vec::new(),
        }
    }

    /// The Status body the server sends.
    pub fn status(&self, kind: &Kind, name: &str) -> Value {
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
            "details": {
                "name": name, "group": kind.group, "kind": kind.kind,
                "causes": self.causes.iter().map(|(f, m)| json!({
                    "reason": "FieldValueInvalid", "message": m, "field": f
                })).collect::<Vec<_>>()
            }
        })
    }
}

const DNS1123_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_qualified_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// A label or annotation key: `[prefix/]name`, the prefix a DNS subdomain.
fn key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return Some(format!("prefix part {DNS1123_SUBDOMAIN}"));
    }
    (!is_qualified_part(name)).then(|| QUALIFIED_NAME.to_owned())
}

fn label_value_ok(v: &str) -> bool {
    v.is_empty() || is_qualified_part(v)
}

/// A Kubernetes quantity (`8000`, `500m`, `1Gi`, `1e3`) as a number of base units.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let digits = num.trim_start_matches(['+', '-']);
    if digits.is_empty()
        || digits.matches('.').count() > 1
        || digits.starts_with('.') && digits.len() == 1
        || num[..num.len() - digits.len()].len() > 1
    {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(value * factor)
}

/// The first field of `orig` that did not survive decoding into the typed object (unknown to
/// the type), as a dotted path.
fn unknown_field(orig: &Value, typed: &Value, path: &str) -> Option<String> {
    match (orig, typed) {
        (Value::Object(o), Value::Object(t)) => o.iter().find_map(|(k, v)| {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            match t.get(k) {
                _ if v.is_null() => None,
                None => Some(p),
                Some(tv) => unknown_field(v, tv, &p),
            }
        }),
        (Value::Array(o), Value::Array(t)) => o
            .iter()
            .zip(t)
            .enumerate()
            .find_map(|(i, (a, b))| unknown_field(a, b, &format!("{path}[{i}]"))),
        _ => None,
    }
}

fn strict<T: DeserializeOwned + Serialize>(obj: &Value) -> Result<(), Invalid> {
    let typed: T = serde_json::from_value(obj.clone())
        .map_err(|e| Invalid::bad_request(format!("strict decoding error: {e}")))?;
    let back = serde_json::to_value(&typed).map_err(|e| Invalid::bad_request(e.to_string()))?;
    match unknown_field(obj, &back, "") {
        Some(f) => Err(Invalid::bad_request(format!(
            "strict decoding error: unknown field \"{f}\""
        ))),
        None => Ok(()),
    }
}

/// Strict decoding for the kinds k8s-openapi has a type for (dynamic kinds are free JSON).
fn strict_by_kind(kind: &Kind, obj: &Value) -> Result<(), Invalid> {
    use k8s_openapi::api::{
        admissionregistration::v1 as admission, apps::v1 as apps, batch::v1 as batch,
        core::v1 as core, rbac::v1 as rbac,
    };
    match (kind.group.as_str(), kind.kind.as_str()) {
        ("", "Pod") => strict::<core::Pod>(obj),
        ("", "Node") => strict::<core::Node>(obj),
        ("", "Namespace") => strict::<core::Namespace>(obj),
        ("", "Event") => strict::<core::Event>(obj),
        ("", "Endpoints") => strict::<core::Endpoints>(obj),
        ("", "Service") => strict::<core::Service>(obj),
        ("", "ServiceAccount") => strict::<core::ServiceAccount>(obj),
        ("", "ConfigMap") => strict::<core::ConfigMap>(obj),
        ("", "Secret") => strict::<core::Secret>(obj),
        ("apps", "Deployment") => strict::<apps::Deployment>(obj),
        ("apps", "DaemonSet") => strict::<apps::DaemonSet>(obj),
        ("batch", "Job") => strict::<batch::Job>(obj),
        (_, "Role") => strict::<rbac::Role>(obj),
        (_, "ClusterRole") => strict::<rbac::ClusterRole>(obj),
        (_, "RoleBinding") => strict::<rbac::RoleBinding>(obj),
        (_, "ClusterRoleBinding") => strict::<rbac::ClusterRoleBinding>(obj),
        (_, "ValidatingAdmissionPolicy") => strict::<admission::ValidatingAdmissionPolicy>(obj),
        (_, "ValidatingAdmissionPolicyBinding") => {
            strict::<admission::ValidatingAdmissionPolicyBinding>(obj)
        }
        _ => Ok(()),
    }
}

fn metadata_causes(kind: &Kind, obj: &Value, causes: &mut Vec<(String, String)>) {
    let meta = &obj["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    let label_names = matches!(kind.kind.as_str(), "Namespace" | "Service");
    if name.is_empty() {
        causes.push((
            "metadata.name".into(),
            "Required value: name or generateName is required".into(),
        ));
    } else if label_names && !is_dns_label(name) {
        causes.push((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": {DNS1123_LABEL}"),
        ));
    } else if !is_dns_subdomain(name) {
        causes.push((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": {DNS1123_SUBDOMAIN}"),
        ));
    }
    if let Some(labels) = meta["labels"].as_object() {
        for (k, v) in labels {
            if let Some(p) = key_problem(k) {
                causes.push((
                    "metadata.labels".into(),
                    format!("Invalid value: \"{k}\": {p}"),
                ));
            }
            match v.as_str() {
                Some(s) if label_value_ok(s) => {}
                _ => causes.push((
                    "metadata.labels".into(),
                    format!(
                        "Invalid value: \"{}\": {LABEL_VALUE}",
                        v.as_str().unwrap_or("")
                    ),
                )),
            }
        }
    }
    if let Some(ann) = meta["annotations"].as_object() {
        let mut total = 0;
        for (k, v) in ann {
            total += k.len() + v.as_str().map_or(0, str::len);
            if let Some(p) = key_problem(k) {
                causes.push((
                    "metadata.annotations".into(),
                    format!("Invalid value: \"{k}\": {p}"),
                ));
            }
        }
        if total > 256 * 1024 {
            causes.push((
                "metadata.annotations".into(),
                format!("Too long: may not be more than 262144 bytes (got {total})"),
            ));
        }
    }
}

fn is_standard_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-")
}

fn container_causes(path: &str, c: &Value, causes: &mut Vec<(String, String)>) {
    let name = c["name"].as_str().unwrap_or_default();
    if !is_dns_label(name) {
        causes.push((
            format!("{path}.name"),
            format!("Invalid value: \"{name}\": {DNS1123_LABEL}"),
        ));
    }
    if c["image"].as_str().is_none_or(|i| i.trim().is_empty()) {
        causes.push((format!("{path}.image"), "Required value".into()));
    }
    for env in c["env"].as_array().into_iter().flatten() {
        let n = env["name"].as_str().unwrap_or_default();
        let ok = !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            && !n.as_bytes()[0].is_ascii_digit();
        if !ok {
            causes.push((
                format!("{path}.env[].name"),
                format!("Invalid value: \"{n}\": a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit"),
            ));
        }
    }
    let res = &c["resources"];
    let quantities = |which: &str| -> Vec<(String, String)> {
        res[which]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (limits, requests) = (quantities("limits"), quantities("requests"));
    for (which, list) in [("limits", &limits), ("requests", &requests)] {
        for (r, q) in list {
            let field = format!("{path}.resources.{which}[{r}]");
            if !is_standard_resource(r) && (!r.contains('/') || key_problem(r).is_some()) {
                causes.push((
                    field.clone(),
                    format!("Invalid value: \"{r}\": must be a standard resource type or fully qualified"),
                ));
            }
            match parse_quantity(q) {
                None => causes.push((
                    field,
                    format!("Invalid value: \"{q}\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"),
                )),
                Some(v) if v < 0.0 => causes.push((
                    field,
                    format!("Invalid value: \"{q}\": must be greater than or equal to 0"),
                )),
                Some(v) if !is_standard_resource(r) && v.fract() != 0.0 => causes.push((
                    field,
                    format!("Invalid value: \"{q}\": must be an integer"),
                )),
                Some(_) => {}
            }
        }
    }
    for (r, req) in &requests {
        let limit = limits.iter().find(|(l, _)| l == r).map(|(_, q)| q);
        let (Some(rv), lv) = (parse_quantity(req), limit.and_then(|l| parse_quantity(l))) else {
            continue;
        };
        let field = format!("{path}.resources.requests");
        match (is_standard_resource(r), lv) {
            (false, None) => causes.push((
                field,
                "Required value: Limit must be set for non overcommitable resources".to_owned(),
            )),
            (false, Some(l)) if l != rv => causes.push((
                field,
                format!(
                    "Invalid value: \"{req}\": must be equal to {r} limit of {}",
                    limit.map_or("", |s| s.as_str())
                ),
            )),
            (true, Some(l)) if rv > l => causes.push((
                field,
                format!(
                    "Invalid value: \"{req}\": must be less than or equal to {r} limit of {}",
                    limit.map_or("", |s| s.as_str())
                ),
            )),
            _ => {}
        }
    }
}

fn pod_causes(pod: &Value, causes: &mut Vec<(String, String)>) {
    let spec = &pod["spec"];
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        causes.push(("spec.containers".into(), "Required value".into()));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, c) in containers.iter().enumerate() {
        let path = format!("spec.containers[{i}]");
        if !names.insert(c["name"].as_str().unwrap_or_default().to_owned()) {
            causes.push((format!("{path}.name"), "Duplicate value".into()));
        }
        container_causes(&path, c, causes);
    }
    if let Some(p) = spec["restartPolicy"].as_str()
        && !matches!(p, "Always" | "OnFailure" | "Never")
    {
        causes.push((
            "spec.restartPolicy".into(),
            format!(
                "Unsupported value: \"{p}\": supported values: \"Always\", \"OnFailure\", \"Never\""
            ),
        ));
    }
    if spec["terminationGracePeriodSeconds"]
        .as_i64()
        .is_some_and(|g| g < 0)
    {
        causes.push((
            "spec.terminationGracePeriodSeconds".into(),
            "Invalid value: must be greater than or equal to 0".into(),
        ));
    }
}

/// What the server fills in on a new pod.
fn default_pod(pod: &mut Value) {
    let spec = &mut pod["spec"];
    if spec["schedulerName"].is_null() {
        spec["schedulerName"] = json!("default-scheduler");
    }
    if spec["restartPolicy"].is_null() {
        spec["restartPolicy"] = json!("Always");
    }
    if spec["terminationGracePeriodSeconds"].is_null() {
        spec["terminationGracePeriodSeconds"] = json!(30);
    }
    if let Some(containers) = spec["containers"].as_array_mut() {
        for c in containers {
            let limits = c["resources"]["limits"].clone();
            if let Some(l) = limits.as_object() {
                for (k, v) in l {
                    if c["resources"]["requests"][k].is_null() {
                        c["resources"]["requests"][k] = v.clone();
                    }
                }
            }
        }
    }
    pod["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
}

/// Checks a POSTed body for `kind` into namespace `url_ns`; returns the object to store, with
/// the server's defaults.
pub fn on_create(kind: &Kind, url_ns: Option<&str>, body: &[u8]) -> Result<Value, Invalid> {
    let mut obj: Value = serde_json::from_slice(body).map_err(|e| {
        Invalid::bad_request(format!(
            "the body of the request was in an unknown format: {e}"
        ))
    })?;
    if !obj.is_object() {
        return Err(Invalid::bad_request("the body is not a JSON object"));
    }
    if obj["kind"].as_str() != Some(kind.kind.as_str())
        || obj["apiVersion"].as_str() != Some(kind.api_version().as_str())
    {
        return Err(Invalid::bad_request(format!(
            "the API version in the data ({}) does not match the expected API version ({}) or kind {:?} is not {}",
            obj["apiVersion"],
            kind.api_version(),
            obj["kind"].as_str().unwrap_or(""),
            kind.kind
        )));
    }
    if let (Some(url), Some(body_ns)) = (url_ns, obj["metadata"]["namespace"].as_str())
        && url != body_ns
    {
        return Err(Invalid::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    strict_by_kind(kind, &obj)?;
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut causes = Vec::new();
    if obj["metadata"]["resourceVersion"]
        .as_str()
        .is_some_and(|r| !r.is_empty())
    {
        causes.push((
            "metadata.resourceVersion".into(),
            "Invalid value: must be empty on create".into(),
        ));
    }
    metadata_causes(kind, &obj, &mut causes);
    if kind.kind == "Pod" && kind.group.is_empty() {
        pod_causes(&obj, &mut causes);
    }
    if !causes.is_empty() {
        return Err(invalid(kind, &name, causes));
    }
    if kind.kind == "Pod" && kind.group.is_empty() {
        default_pod(&mut obj);
    }
    Ok(obj)
}

fn invalid(kind: &Kind, name: &str, causes: Vec<(String, String)>) -> Invalid {
    let joined: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
    let message = if joined.len() == 1 {
        format!("{} \"{name}\" is invalid: {}", kind.kind, joined[0])
    } else {
        format!(
            "{} \"{name}\" is invalid: [{}]",
            kind.kind,
            joined.join(", ")
        )
    };
    Invalid {
        code: 422,
        reason: "Invalid",
        message,
        causes,
    }
}

/// Checks an update of `old` to `new`: immutable metadata, and a pod's spec (only images,
/// `activeDeadlineSeconds` and tolerations may change).
pub fn on_update(kind: &Kind, old: &Value, new: &Value) -> Result<(), Invalid> {
    strict_by_kind(kind, new)?;
    let name = old["metadata"]["name"].as_str().unwrap_or_default();
    let mut causes = Vec::new();
    for f in ["name", "namespace", "uid", "creationTimestamp"] {
        let (o, n) = (&old["metadata"][f], &new["metadata"][f]);
        if !n.is_null() && o != n {
            causes.push((
                format!("metadata.{f}"),
                format!("Invalid value: {n}: field is immutable"),
            ));
        }
    }
    metadata_causes(kind, new, &mut causes);
    if kind.kind == "Pod" && kind.group.is_empty() {
        let strip = |spec: &Value| {
            let mut s = spec.clone();
            if let Some(m) = s.as_object_mut() {
                m.remove("activeDeadlineSeconds");
                m.remove("tolerations");
            }
            for c in s["containers"].as_array_mut().into_iter().flatten() {
                c["image"] = Value::Null;
            }
            s
        };
        if !new["spec"].is_null() && strip(&old["spec"]) != strip(&new["spec"]) {
            causes.push((
                "spec".into(),
                "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)".into(),
            ));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(kind, name, causes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_kind() -> Kind {
        Kind::new("", "v1", "Pod", "pods", true)
    }

    fn pod(limits: Value, requests: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "hami-share-a", "labels": {"app.kubernetes.io/part-of": "hami-isolation-lab"}},
            "spec": {"containers": [{"name": "cuda", "image": "nvidia/cuda:12.4.1-base-ubuntu22.04",
                "resources": {"limits": limits, "requests": requests}}]}
        }))
        .unwrap()
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("8000"), Some(8000.0));
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("1Gi"), Some(1073741824.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        for bad in ["", "8 GB", "1.2.3", "Mi", "--1", "1Q"] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_lab_pod_passes_and_gets_the_servers_defaults() {
        let obj = on_create(
            &pod_kind(),
            Some("default"),
            &pod(
                json!({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "8000"}),
                json!(null),
            ),
        )
        .unwrap();
        assert_eq!(
            obj["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpumem"],
            "8000"
        );
        assert_eq!(obj["status"]["phase"], "Pending");
        assert_eq!(obj["spec"]["schedulerName"], "default-scheduler");
    }

    #[test]
    fn what_a_real_server_refuses() {
        let k = pod_kind();
        let e = on_create(
            &k,
            Some("default"),
            &pod(json!({"nvidia.com/gpumem": "8000.5"}), json!(null)),
        )
        .unwrap_err();
        assert_eq!(e.code, 422);
        assert!(e.message.contains("must be an integer"), "{}", e.message);
        let e = on_create(
            &k,
            Some("default"),
            &pod(
                json!({"nvidia.com/gpu": "1"}),
                json!({"nvidia.com/gpu": "2"}),
            ),
        )
        .unwrap_err();
        assert!(
            e.message
                .contains("must be equal to nvidia.com/gpu limit of 1"),
            "{}",
            e.message
        );
        let e = on_create(
            &k,
            Some("default"),
            &pod(json!({"memory": "1Gi"}), json!({"memory": "2Gi"})),
        )
        .unwrap_err();
        assert!(
            e.message.contains("less than or equal to memory limit"),
            "{}",
            e.message
        );
        let e = on_create(
            &k,
            Some("default"),
            &pod(json!({"gpumem": "1"}), json!(null)),
        )
        .unwrap_err();
        assert!(e.message.contains("fully qualified"), "{}", e.message);
        let mut bad_label: Value = serde_json::from_slice(&pod(json!({}), json!(null))).unwrap();
        bad_label["metadata"]["labels"]["role"] = json!("not a valid value!");
        bad_label["metadata"]["name"] = json!("Hami_Share");
        let e = on_create(
            &k,
            Some("default"),
            &serde_json::to_vec(&bad_label).unwrap(),
        )
        .unwrap_err();
        assert_eq!(e.causes.len(), 2, "{e:?}");
        let mut unknown: Value = serde_json::from_slice(&pod(json!({}), json!(null))).unwrap();
        unknown["spec"]["containers"][0]["gpuMemory"] = json!(1);
        let e = on_create(&k, Some("default"), &serde_json::to_vec(&unknown).unwrap()).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            e.message
                .contains("unknown field \"spec.containers[0].gpuMemory\""),
            "{}",
            e.message
        );
        let e = on_create(&k, Some("other"), &serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "namespace": "default"}, "spec": {"containers": []}})).unwrap()).unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn pod_specs_are_immutable_but_images() {
        let k = pod_kind();
        let old = on_create(
            &k,
            Some("default"),
            &pod(json!({"nvidia.com/gpumem": "8000"}), json!(null)),
        )
        .unwrap();
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("nvidia/cuda:12.6.0-base-ubuntu22.04");
        assert!(on_update(&k, &old, &new).is_ok());
        new["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpumem"] = json!("9000");
        new["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpumem"] = json!("9000");
        let e = on_update(&k, &old, &new).unwrap_err();
        assert!(
            e.message.contains("pod updates may not change"),
            "{}",
            e.message
        );
        let mut renamed = old.clone();
        renamed["metadata"]["uid"] = json!("other");
        assert!(on_update(&k, &json!({"metadata": {"uid": "a"}}), &renamed).is_err());
    }
}
