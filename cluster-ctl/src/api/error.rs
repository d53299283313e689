//! Why an API call failed, in words that say what to do. Every request is described by an [`Op`]
//! (its RBAC attributes: verb, group, resource, namespace, name), and every `kube::Error` is
//! classified once, here: credentials rejected (401), a permission missing (403, naming the rule
//! that would allow it), not found, the server unreachable, a timeout, or a status with its reason.

use std::fmt;

use kube::Resource;

use crate::manifests::GPUMEM;

/// One request cluster-ctl makes, by the attributes the API server authorizes it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// RBAC verb: `get`, `list`, `watch`, `create`, `delete`.
    pub verb: &'static str,
    /// API group (`""` for the core group).
    pub group: String,
    /// Plural resource, `resource/subresource` for a subresource (`pods/exec`).
    pub resource: String,
    /// `None` for cluster-scoped objects and for lists across all namespaces.
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Op {
    /// An operation on objects of type `K`.
    pub fn of<K: Resource<DynamicType = ()>>(
        verb: &'static str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Self {
        Self {
            verb,
            group: K::group(&()).into_owned(),
            resource: K::plural(&()).into_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
        }
    }

    /// An operation on a resource k8s-openapi has no type for (a CRD's objects).
    pub fn dynamic(
        verb: &'static str,
        group: &str,
        plural: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Self {
        Self {
            verb,
            group: group.to_owned(),
            resource: plural.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
        }
    }

    /// The same operation on a subresource (`pods` → `pods/exec`).
    pub fn subresource(mut self, sub: &str) -> Self {
        self.resource = format!("{}/{sub}", self.resource);
        self
    }

    /// A non-resource request (`GET /version`).
    pub fn version() -> Self {
        Self {
            verb: "get",
            group: String::new(),
            resource: "/version".into(),
            namespace: None,
            name: None,
        }
    }

    fn is_non_resource(&self) -> bool {
        self.resource.starts_with('/')
    }

    /// The RBAC rule that allows this operation, and where it must be granted.
    pub fn rule(&self) -> String {
        if self.is_non_resource() {
            return format!(
                "{{nonResourceURLs: [\"{}\"], verbs: [\"get\"]}} in a ClusterRole (Kubernetes grants it to every authenticated user by default)",
                self.resource
            );
        }
        let names = self
            .name
            .as_ref()
            .filter(|_| self.verb != "create")
            .map(|n| format!(", resourceNames: [\"{n}\"]"))
            .unwrap_or_default();
        // A WebSocket exec is a GET, authorized as `get`, and from Kubernetes 1.31 also `create`.
        let verbs = if self.resource.ends_with("/exec") {
            "\"get\", \"create\"".to_owned()
        } else {
            format!("\"{}\"", self.verb)
        };
        let rule = format!(
            "{{apiGroups: [\"{}\"], resources: [\"{}\"], verbs: [{verbs}]{names}}}",
            self.group, self.resource
        );
        match &self.namespace {
            Some(ns) => format!("{rule} in a Role of namespace {ns} (or a ClusterRole)"),
            None => format!("{rule} in a ClusterRole"),
        }
    }
}

impl fmt::Display for Op {
    /// `list pods in namespace default`, `get nodes gpu-vm-1`, `list daemonsets.apps in all namespaces`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_non_resource() {
            return write!(f, "GET {}", self.resource);
        }
        let resource = if self.group.is_empty() {
            self.resource.clone()
        } else {
            match self.resource.split_once('/') {
                Some((r, sub)) => format!("{r}.{}/{sub}", self.group),
                None => format!("{}.{}", self.resource, self.group),
            }
        };
        write!(f, "{} {resource}", self.verb)?;
        if let Some(n) = &self.name {
            write!(f, " {n}")?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " in namespace {ns}"),
            None if self.verb == "list" || self.verb == "watch" => {
                write!(f, " (cluster-wide)")
            }
            None => Ok(()),
        }
    }
}

/// Why an API operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "cannot reach the Kubernetes API server to {op} ({detail}); check that the cluster is up and that --kubeconfig / KUBECONFIG / --context point at it (`kubectl version` should answer)"
    )]
    Unreachable { op: Box<Op>, detail: String },
    #[error(
        "the API server rejected the credentials (401 Unauthorized) when cluster-ctl tried to {op}: the token or client certificate of the kubeconfig context is wrong, expired or revoked; get a fresh kubeconfig (k3s: /etc/rancher/k3s/k3s.yaml) or service account token and retry"
    )]
    Unauthorized { op: Box<Op> },
    #[error(
        "the API server refused to let cluster-ctl {op} (403 Forbidden: {message}); this needs the RBAC rule {rule}; `kubectl apply -f manifests/rbac.yaml` grants every permission cluster-ctl uses (cluster-ctl/README.md, \"Permissions\")"
    )]
    Forbidden {
        op: Box<Op>,
        message: String,
        rule: String,
    },
    #[error("{op}: not found (404): {message}")]
    NotFound { op: Box<Op>, message: String },
    #[error("the API server did not answer {op} within {secs} s (--api-timeout){attempts}")]
    Timeout {
        op: Box<Op>,
        secs: u64,
        attempts: String,
    },
    #[error("{op} failed: {code} {reason}: {message}{attempts}")]
    Status {
        op: Box<Op>,
        code: u16,
        reason: String,
        message: String,
        attempts: String,
    },
    #[error("{op}: the connection to the API server failed ({detail}){attempts}")]
    Transport {
        op: Box<Op>,
        detail: String,
        attempts: String,
    },
    #[error("timed out after {secs} s waiting for {what}{last}")]
    WaitTimeout {
        what: String,
        secs: u64,
        /// The watch's last error, when it kept failing.
        last: String,
    },
    #[error(
        "pod {name} already exists with {found} instead of {wanted} MiB of {GPUMEM}; run `cluster-ctl cleanup` first"
    )]
    Conflict {
        name: String,
        found: String,
        wanted: u64,
    },
    #[error("exec in pod {pod}: {what}")]
    Exec { pod: String, what: String },
    #[error("{op}: the request could not be built: {what}")]
    Request { op: Box<Op>, what: String },
}

impl ApiError {
    /// The HTTP status the server answered, when it did.
    pub fn code(&self) -> Option<u16> {
        match self {
            ApiError::Unauthorized { .. } => Some(401),
            ApiError::Forbidden { .. } => Some(403),
            ApiError::NotFound { .. } => Some(404),
            ApiError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What one failed attempt was, before it becomes an [`ApiError`].
#[derive(Debug)]
pub(crate) enum Attempt {
    Kube(kube::Error),
    /// The per-call bound elapsed.
    TimedOut,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attempt::Kube(e) => write!(f, "{}", describe(e)),
            Attempt::TimedOut => write!(f, "no answer in time"),
        }
    }
}

/// The status a failed call got, when the server answered one.
fn status(e: &kube::Error) -> Option<&kube::core::Status> {
    match e {
        kube::Error::Api(s) => Some(s),
        _ => None,
    }
}

/// A short text for an error (the server's message, or the transport failure).
pub(crate) fn describe(e: &kube::Error) -> String {
    match status(e) {
        Some(s) => format!("{} {}: {}", s.code, s.reason, s.message),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

fn is_header_timeout(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Service(b) if b.is::<tower::timeout::error::Elapsed>())
}

/// The connection could not be made at all (refused, DNS, TLS, connect timeout).
fn is_connect_failure(e: &kube::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(legacy) = s.downcast_ref::<hyper_util::client::legacy::Error>()
            && legacy.is_connect()
        {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = s.source();
    }
    false
}

impl Attempt {
    /// Worth another attempt: rate limiting, server errors, a dropped or slow connection.
    /// Never 4xx other than 429: the same request would get the same answer.
    pub(crate) fn transient(&self) -> bool {
        match self {
            Attempt::TimedOut => true,
            Attempt::Kube(e) => match status(e) {
                Some(s) => matches!(s.code, 429 | 500 | 502 | 503 | 504),
                None => !matches!(
                    e,
                    kube::Error::SerdeError(_)
                        | kube::Error::BuildRequest(_)
                        | kube::Error::HttpError(_)
                        | kube::Error::FromUtf8(_)
                ),
            },
        }
    }

    /// `Retry-After` as the server's Status carries it (`details.retryAfterSeconds`).
    pub(crate) fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Attempt::Kube(e) => status(e)
                .and_then(|s| s.details.as_ref())
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0)
                .map(|s| std::time::Duration::from_secs(u64::from(s))),
            Attempt::TimedOut => None,
        }
    }

    /// The error to report after `attempts` tries under a `secs` bound each.
    pub(crate) fn into_error(self, op: &Op, secs: u64, attempts: u32) -> ApiError {
        let after = if attempts > 1 {
            format!(" (after {attempts} attempts)")
        } else {
            String::new()
        };
        match self {
            Attempt::TimedOut => ApiError::Timeout {
                op: Box::new(op.clone()),
                secs,
                attempts: after,
            },
            Attempt::Kube(e) => from_kube(op, &e, secs, after),
        }
    }
}

/// Classifies one `kube::Error` for `op`.
pub(crate) fn from_kube(op: &Op, e: &kube::Error, secs: u64, attempts: String) -> ApiError {
    if let Some(s) = status(e) {
        return match s.code {
            401 => ApiError::Unauthorized {
                op: Box::new(op.clone()),
            },
            403 => ApiError::Forbidden {
                op: Box::new(op.clone()),
                message: s.message.clone(),
                rule: op.rule(),
            },
            404 => ApiError::NotFound {
                op: Box::new(op.clone()),
                message: s.message.clone(),
            },
            code => ApiError::Status {
                op: Box::new(op.clone()),
                code,
                reason: s.reason.clone(),
                message: s.message.clone(),
                attempts,
            },
        };
    }
    if is_header_timeout(e) {
        return ApiError::Timeout {
            op: Box::new(op.clone()),
            secs,
            attempts,
        };
    }
    if is_connect_failure(e) {
        return ApiError::Unreachable {
            op: Box::new(op.clone()),
            detail: describe(e),
        };
    }
    ApiError::Transport {
        op: Box::new(op.clone()),
        detail: describe(e),
        attempts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::core::v1::{Node, Pod};

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, reason)
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn ops_read_as_requests_and_name_their_rule() {
        let list = Op::of::<Pod>("list", Some("default"), None);
        assert_eq!(list.to_string(), "list pods in namespace default");
        assert_eq!(
            list.rule(),
            "{apiGroups: [\"\"], resources: [\"pods\"], verbs: [\"list\"]} in a Role of namespace default (or a ClusterRole)"
        );
        let ds = Op::of::<DaemonSet>("list", None, None);
        assert_eq!(ds.to_string(), "list daemonsets.apps (cluster-wide)");
        assert!(
            ds.rule()
                .starts_with("{apiGroups: [\"apps\"], resources: [\"daemonsets\"]")
        );
        assert!(ds.rule().ends_with("in a ClusterRole"));
        let node = Op::of::<Node>("get", None, Some("gpu-vm-1"));
        assert_eq!(node.to_string(), "get nodes gpu-vm-1");
        assert!(node.rule().contains("resourceNames: [\"gpu-vm-1\"]"));
        let exec = Op::of::<Pod>("create", Some("lab"), Some("p")).subresource("exec");
        assert_eq!(exec.to_string(), "create pods/exec p in namespace lab");
        assert!(
            !exec.rule().contains("resourceNames"),
            "create cannot be limited by name"
        );
    }

    #[test]
    fn statuses_become_errors_that_say_what_to_do() {
        let op = Op::of::<Pod>("list", Some("default"), None);
        let e = from_kube(
            &op,
            &api_error(401, "Unauthorized", "Unauthorized"),
            30,
            String::new(),
        );
        assert!(
            e.to_string().contains("rejected the credentials (401"),
            "{e}"
        );
        let e = from_kube(
            &op,
            &api_error(
                403,
                "Forbidden",
                "pods is forbidden: User \"system:serviceaccount:x:y\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"",
            ),
            30,
            String::new(),
        );
        let text = e.to_string();
        assert!(text.contains("list pods in namespace default"), "{text}");
        assert!(text.contains("verbs: [\"list\"]"), "{text}");
        assert!(text.contains("manifests/rbac.yaml"), "{text}");
        assert_eq!(e.code(), Some(403));
        let e = from_kube(
            &op,
            &api_error(500, "InternalError", "etcd"),
            30,
            " (after 4 attempts)".into(),
        );
        assert_eq!(
            e.to_string(),
            "list pods in namespace default failed: 500 InternalError: etcd (after 4 attempts)"
        );
    }

    #[test]
    fn only_rate_limits_server_errors_and_transport_are_retried() {
        let transient = |code| Attempt::Kube(api_error(code, "x", "y")).transient();
        for code in [429, 500, 502, 503, 504] {
            assert!(transient(code), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 410, 422] {
            assert!(!transient(code), "{code}");
        }
        assert!(Attempt::TimedOut.transient());
        let mut s = kube::core::Status::failure("slow down", "TooManyRequests").with_code(429);
        s.details = Some(kube::core::response::StatusDetails {
            name: String::new(),
            group: String::new(),
            kind: String::new(),
            uid: String::new(),
            causes: Vec::new(),
            retry_after_seconds: 3,
        });
        assert_eq!(
            Attempt::Kube(kube::Error::Api(s.boxed())).retry_after(),
            Some(std::time::Duration::from_secs(3))
        );
    }
}
