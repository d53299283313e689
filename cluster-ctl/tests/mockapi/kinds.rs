//! The resource types the mock serves: group, version, kind, plural, scope. Built-in kinds are
//! listed here; any other is served once its CustomResourceDefinition is stored (as a real server
//! starts serving a CRD's resource: [`Kind::from_crd`]), or when a test adds it with
//! [`super::MockApi::register_kind`]; its objects are then stored and served as dynamic JSON.

/// One served resource type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kind {
    /// API group, `""` for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    /// Plural resource name in URLs and RBAC rules.
    pub plural: String,
    pub namespaced: bool,
}

impl Kind {
    pub fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
        }
    }

    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The kind a CustomResourceDefinition object defines (its first served version).
    pub fn from_crd(crd: &serde_json::Value) -> Option<Self> {
        let spec = &crd["spec"];
        let version = spec["versions"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["served"] != false))
            .and_then(|v| v["name"].as_str())
            .or_else(|| spec["version"].as_str())?;
        Some(Self::new(
            spec["group"].as_str()?,
            version,
            spec["names"]["kind"].as_str()?,
            spec["names"]["plural"].as_str()?,
            spec["scope"].as_str() != Some("Cluster"),
        ))
    }

    pub fn is_crd(&self) -> bool {
        self.group == "apiextensions.k8s.io" && self.kind == "CustomResourceDefinition"
    }

    /// The store's key for the type: `pods`, `deployments.apps`.
    pub fn resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// The kinds every mock serves.
pub fn builtin() -> Vec<Kind> {
    let core = |kind: &str, plural: &str, namespaced| Kind::new("", "v1", kind, plural, namespaced);
    vec![
        core("Pod", "pods", true),
        core("Node", "nodes", false),
        core("Namespace", "namespaces", false),
        core("Event", "events", true),
        core("Endpoints", "endpoints", true),
        core("Service", "services", true),
        core("ServiceAccount", "serviceaccounts", true),
        core("ConfigMap", "configmaps", true),
        core("Secret", "secrets", true),
        Kind::new("apps", "v1", "Deployment", "deployments", true),
        Kind::new("apps", "v1", "DaemonSet", "daemonsets", true),
        Kind::new("batch", "v1", "Job", "jobs", true),
        Kind::new(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        ),
        Kind::new(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicy",
            "validatingadmissionpolicies",
            false,
        ),
        Kind::new(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings",
            false,
        ),
        Kind::new("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
        Kind::new(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
        ),
        Kind::new(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
        ),
        Kind::new(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
        ),
    ]
}
