//! RBAC as kube-apiserver's authorizer evaluates it: Roles and ClusterRoles, bound by RoleBindings
//! (in their namespace) and ClusterRoleBindings (everywhere) to ServiceAccounts, users and groups;
//! rules match on API group, resource (`pods/exec` for a subresource), verb, and `resourceNames`
//! (for list and watch only through a `metadata.name` field selector, as the server does);
//! `nonResourceURLs` for `/version` and the like, which Kubernetes' default policy
//! (`system:public-info-viewer`, `system:discovery`) opens to every authenticated user.
//! Loaded from YAML (`manifests/rbac.yaml`); a denial is answered with the server's exact
//! Forbidden message.

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};
use serde_json::{Value, json};

/// Who is asking: a ServiceAccount is `system:serviceaccount:NS:NAME` in groups
/// `system:serviceaccounts`, `system:serviceaccounts:NS`, `system:authenticated`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        }
    }
}

/// The attributes a request is authorized on (the API server's RequestInfo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    /// `None` for a non-resource request; then `path` is set.
    pub group: Option<String>,
    /// `pods`, or `pods/exec` with the subresource.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub path: Option<String>,
}

impl Attributes {
    fn plain_resource(&self) -> &str {
        self.resource.split('/').next().unwrap_or_default()
    }
}

/// Which role, rule and verb allowed a request (for the "every permission is used" check).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    /// `ClusterRole/NAME` or `Role/NS/NAME`.
    pub role: String,
    pub rule: usize,
    pub verb: String,
}

/// A loaded policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    roles: Vec<Role>,
    cluster_roles: Vec<ClusterRole>,
    role_bindings: Vec<RoleBinding>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
}

impl Policy {
    /// Every Role, ClusterRole, RoleBinding and ClusterRoleBinding of a multi-document YAML file
    /// (other kinds are skipped).
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        use serde::Deserialize;
        let mut p = Self::default();
        for doc in serde_yaml_ng::Deserializer::from_str(text) {
            let v = Value::deserialize(doc).map_err(|e| e.to_string())?;
            let kind = v["kind"].as_str().unwrap_or_default().to_owned();
            let err = |e: serde_json::Error| format!("{kind}: {e}");
            match kind.as_str() {
                "Role" => p.roles.push(serde_json::from_value(v).map_err(err)?),
                "ClusterRole" => p
                    .cluster_roles
                    .push(serde_json::from_value(v).map_err(err)?),
                "RoleBinding" => p
                    .role_bindings
                    .push(serde_json::from_value(v).map_err(err)?),
                "ClusterRoleBinding" => p
                    .cluster_role_bindings
                    .push(serde_json::from_value(v).map_err(err)?),
                _ => {}
            }
        }
        Ok(p)
    }

    /// Every (role, rule index, verb) the policy grants.
    pub fn all_rules(&self) -> Vec<Grant> {
        let mut out = Vec::new();
        let mut add = |role: String, rules: Option<&Vec<PolicyRule>>| {
            for (i, r) in rules.into_iter().flatten().enumerate() {
                for verb in &r.verbs {
                    out.push(Grant {
                        role: role.clone(),
                        rule: i,
                        verb: verb.clone(),
                    });
                }
            }
        };
        for r in &self.cluster_roles {
            add(
                format!("ClusterRole/{}", r.metadata.name.as_deref().unwrap_or("")),
                r.rules.as_ref(),
            );
        }
        for r in &self.roles {
            add(
                format!(
                    "Role/{}/{}",
                    r.metadata.namespace.as_deref().unwrap_or(""),
                    r.metadata.name.as_deref().unwrap_or("")
                ),
                r.rules.as_ref(),
            );
        }
        out
    }

    fn cluster_role(&self, name: &str) -> Option<&ClusterRole> {
        self.cluster_roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
    }

    /// Allowed (by which grant), or denied.
    pub fn authorize(&self, user: &User, a: &Attributes) -> Option<Grant> {
        // Kubernetes' default policy: discovery and version for every authenticated user.
        if let Some(path) = &a.path
            && a.verb == "get"
            && user.groups.iter().any(|g| g == "system:authenticated")
            && ["/version", "/api", "/apis", "/healthz", "/livez", "/readyz"]
                .iter()
                .any(|p| path == p || path.starts_with(&format!("{p}/")))
        {
            return Some(Grant {
                role: "ClusterRole/system:public-info-viewer".into(),
                rule: 0,
                verb: a.verb.clone(),
            });
        }
        let subject_is = |s: &Subject| match s.kind.as_str() {
            "ServiceAccount" => {
                user.name
                    == format!(
                        "system:serviceaccount:{}:{}",
                        s.namespace.as_deref().unwrap_or(""),
                        s.name
                    )
            }
            "User" => user.name == s.name,
            "Group" => user.groups.contains(&s.name),
            _ => false,
        };
        let check = |role: String, rules: Option<&Vec<PolicyRule>>| {
            rules.into_iter().flatten().enumerate().find_map(|(i, r)| {
                rule_allows(r, a).then(|| Grant {
                    role: role.clone(),
                    rule: i,
                    verb: a.verb.clone(),
                })
            })
        };
        for b in &self.cluster_role_bindings {
            if !b.subjects.iter().flatten().any(subject_is) || b.role_ref.kind != "ClusterRole" {
                continue;
            }
            if let Some(r) = self.cluster_role(&b.role_ref.name)
                && let Some(g) = check(format!("ClusterRole/{}", b.role_ref.name), r.rules.as_ref())
            {
                return Some(g);
            }
        }
        let ns = a.namespace.as_deref()?;
        for b in &self.role_bindings {
            if b.metadata.namespace.as_deref() != Some(ns)
                || !b.subjects.iter().flatten().any(subject_is)
            {
                continue;
            }
            let found = match b.role_ref.kind.as_str() {
                "ClusterRole" => self.cluster_role(&b.role_ref.name).and_then(|r| {
                    check(format!("ClusterRole/{}", b.role_ref.name), r.rules.as_ref())
                }),
                "Role" => self
                    .roles
                    .iter()
                    .find(|r| {
                        r.metadata.name.as_deref() == Some(b.role_ref.name.as_str())
                            && r.metadata.namespace.as_deref() == Some(ns)
                    })
                    .and_then(|r| {
                        check(format!("Role/{ns}/{}", b.role_ref.name), r.rules.as_ref())
                    }),
                _ => None,
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

fn rule_allows(r: &PolicyRule, a: &Attributes) -> bool {
    let has = |list: &Option<Vec<String>>, want: &str| {
        list.iter().flatten().any(|v| v == "*" || v == want)
    };
    if !r.verbs.iter().any(|v| v == "*" || *v == a.verb) {
        return false;
    }
    let Some(group) = &a.group else {
        let path = a.path.as_deref().unwrap_or_default();
        return r
            .non_resource_urls
            .iter()
            .flatten()
            .any(|u| u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p)));
    };
    let resource_ok = has(&r.resources, &a.resource)
        || (!a.resource.contains('/') && has(&r.resources, a.plain_resource()))
        || a.resource
            .split_once('/')
            .is_some_and(|(_, sub)| has(&r.resources, &format!("*/{sub}")));
    let names_ok = r
        .resource_names
        .as_ref()
        .is_none_or(|names| names.is_empty() || a.name.as_ref().is_some_and(|n| names.contains(n)));
    has(&r.api_groups, group) && resource_ok && names_ok
}

/// The Forbidden Status a real server sends for a denied request.
pub fn forbidden(user: &User, a: &Attributes) -> Value {
    let Some(group) = &a.group else {
        return json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("forbidden: User \"{}\" cannot {} path \"{}\"", user.name, a.verb, a.path.as_deref().unwrap_or("")),
            "reason": "Forbidden", "details": {}, "code": 403
        });
    };
    let subject = match &a.name {
        Some(n) => format!("{} \"{n}\"", a.resource),
        None => a.resource.clone(),
    };
    let scope = match &a.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_owned(),
    };
    let mut details = json!({"kind": a.plain_resource()});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    if let Some(n) = &a.name {
        details["name"] = json!(n);
    }
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!(
            "{subject} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{group}\" {scope}",
            user.name, a.verb, a.resource
        ),
        "reason": "Forbidden", "details": details, "code": 403
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: runner, namespace: lab}
rules:
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get", "create"]
  - apiGroups: [""]
    resources: ["pods/exec"]
    verbs: ["create"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: view}
rules:
  - apiGroups: ["apps"]
    resources: ["deployments"]
    resourceNames: ["hami-scheduler"]
    verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: runner, namespace: lab}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: runner}
subjects: [{kind: ServiceAccount, name: ctl, namespace: tools}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: view}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{kind: Group, name: "system:serviceaccounts:tools"}]
"#;

    fn attrs(
        verb: &str,
        group: &str,
        resource: &str,
        ns: Option<&str>,
        name: Option<&str>,
    ) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: Some(group.into()),
            resource: resource.into(),
            namespace: ns.map(Into::into),
            name: name.map(Into::into),
            path: None,
        }
    }

    #[test]
    fn bindings_rules_names_and_subresources() {
        let p = Policy::from_yaml(POLICY).unwrap();
        let sa = User::service_account("tools", "ctl");
        assert!(
            p.authorize(&sa, &attrs("create", "", "pods", Some("lab"), None))
                .is_some()
        );
        assert!(
            p.authorize(&sa, &attrs("create", "", "pods", Some("other"), None))
                .is_none()
        );
        assert!(
            p.authorize(&sa, &attrs("delete", "", "pods", Some("lab"), Some("x")))
                .is_none()
        );
        assert!(
            p.authorize(
                &sa,
                &attrs("create", "", "pods/exec", Some("lab"), Some("x"))
            )
            .is_some()
        );
        assert!(
            p.authorize(
                &sa,
                &attrs("create", "", "pods/log", Some("lab"), Some("x"))
            )
            .is_none()
        );
        // resourceNames: a list only with the name (a metadata.name field selector).
        assert!(
            p.authorize(
                &sa,
                &attrs(
                    "list",
                    "apps",
                    "deployments",
                    Some("kube-system"),
                    Some("hami-scheduler")
                )
            )
            .is_some()
        );
        assert!(
            p.authorize(
                &sa,
                &attrs("list", "apps", "deployments", Some("kube-system"), None)
            )
            .is_none()
        );
        let other = User::service_account("elsewhere", "ctl");
        assert!(
            p.authorize(&other, &attrs("get", "", "pods", Some("lab"), Some("x")))
                .is_none()
        );
        let version = Attributes {
            verb: "get".into(),
            group: None,
            resource: String::new(),
            namespace: None,
            name: None,
            path: Some("/version".into()),
        };
        assert!(p.authorize(&other, &version).is_some());
        let metrics = Attributes {
            path: Some("/metrics".into()),
            ..version.clone()
        };
        assert!(p.authorize(&other, &metrics).is_none());
        let with_urls = Policy::from_yaml("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: m}\nrules: [{nonResourceURLs: [\"/metrics\"], verbs: [\"get\"]}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: m}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: m}\nsubjects: [{kind: ServiceAccount, name: ctl, namespace: elsewhere}]\n").unwrap();
        assert!(with_urls.authorize(&other, &metrics).is_some());
        assert_eq!(p.all_rules().len(), 6);
    }

    #[test]
    fn the_forbidden_message_is_the_servers() {
        let sa = User::service_account("tools", "ctl");
        let v = forbidden(&sa, &attrs("list", "", "pods", Some("default"), None));
        assert_eq!(
            v["message"],
            "pods is forbidden: User \"system:serviceaccount:tools:ctl\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let v = forbidden(&sa, &attrs("get", "", "nodes", None, Some("gpu-vm-1")));
        assert_eq!(
            v["message"],
            "nodes \"gpu-vm-1\" is forbidden: User \"system:serviceaccount:tools:ctl\" cannot get resource \"nodes\" in API group \"\" at the cluster scope"
        );
        assert_eq!(v["details"], json!({"kind": "nodes", "name": "gpu-vm-1"}));
    }
}
