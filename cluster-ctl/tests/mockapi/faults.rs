//! Fault injection per request: a rule matches requests (by verb, resource, name, whether it is a
//! watch or an exec) and answers the next N of them with a fault instead of the real answer —
//! a status with the body a real server sends (401, 403 with an RBAC message, 404, 409, 422, 429
//! with `Retry-After`, 500), a watch whose connection drops after some events, a watch answered
//! 410 Gone (its resourceVersion too old), or a response that never comes (a stall).

use serde_json::{Value, json};

use super::rbac::{Attributes, User};

/// What the faulted request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// This HTTP status with the server's body for it.
    Status(u16),
    /// 429 Too Many Requests, `Retry-After: secs` (header and `details.retryAfterSeconds`).
    TooManyRequests { retry_after_secs: u32 },
    /// A watch that delivers `events` events, then its connection breaks (no clean end).
    DropWatchAfter { events: usize },
    /// A watch answered with one ERROR event, 410 Expired (the resourceVersion was compacted).
    Gone,
    /// No response at all: the request hangs until the client gives up.
    Stall,
}

impl Action {
    pub fn name(&self) -> String {
        match self {
            Action::Status(c) => format!("{c}"),
            Action::TooManyRequests { .. } => "429".into(),
            Action::DropWatchAfter { .. } => "drop-mid-watch".into(),
            Action::Gone => "410".into(),
            Action::Stall => "stall".into(),
        }
    }
}

/// Which requests a rule applies to (every field that is set must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    pub verb: Option<String>,
    /// Resource with subresource (`pods`, `pods/exec`, `daemonsets`).
    pub resource: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    /// A non-resource path (`/version`).
    pub path: Option<String>,
    /// A create of an object with this name (the name is in the body, not the URL).
    pub creating: Option<String>,
}

impl Match {
    pub fn verb(verb: &str) -> Self {
        Self {
            verb: Some(verb.into()),
            ..Self::default()
        }
    }
    pub fn any() -> Self {
        Self::default()
    }
    pub fn resource(mut self, r: &str) -> Self {
        self.resource = Some(r.into());
        self
    }
    pub fn name(mut self, n: &str) -> Self {
        self.name = Some(n.into());
        self
    }
    pub fn path(mut self, p: &str) -> Self {
        self.path = Some(p.into());
        self
    }
    pub fn creating(mut self, n: &str) -> Self {
        self.creating = Some(n.into());
        self
    }

    /// Whether a request (its attributes, and for a create the posted object's name) matches.
    pub fn matches_request(&self, a: &Attributes, created: Option<&str>) -> bool {
        self.matches(a) && self.creating.as_deref().is_none_or(|n| created == Some(n))
    }

    pub fn matches(&self, a: &Attributes) -> bool {
        self.verb.as_ref().is_none_or(|v| *v == a.verb)
            && self.resource.as_ref().is_none_or(|r| *r == a.resource)
            && self
                .name
                .as_ref()
                .is_none_or(|n| a.name.as_ref() == Some(n))
            && self
                .namespace
                .as_ref()
                .is_none_or(|n| a.namespace.as_ref() == Some(n))
            && self
                .path
                .as_ref()
                .is_none_or(|p| a.path.as_ref() == Some(p))
    }
}

/// One injection rule.
#[derive(Debug, Clone)]
pub struct Fault {
    pub when: Match,
    pub action: Action,
    /// Matching requests to let through first.
    pub skip: usize,
    /// How many matching requests get the fault (then the rule is spent).
    pub times: usize,
}

impl Fault {
    /// The next matching request gets `action`, once.
    pub fn once(when: Match, action: Action) -> Self {
        Self {
            when,
            action,
            skip: 0,
            times: 1,
        }
    }
    /// Every matching request gets `action`.
    pub fn always(when: Match, action: Action) -> Self {
        Self {
            when,
            action,
            skip: 0,
            times: usize::MAX,
        }
    }
}

/// The Status body a real server sends with `code` for this request.
pub fn status_body(code: u16, a: &Attributes, user: &User) -> Value {
    let what = match &a.name {
        Some(n) => format!("{} \"{n}\"", a.resource.split('/').next().unwrap_or("")),
        None => a.resource.clone(),
    };
    let (reason, message) = match code {
        401 => ("Unauthorized", "Unauthorized".to_owned()),
        403 => return super::rbac::forbidden(user, a),
        404 => ("NotFound", format!("{what} not found")),
        409 if a.verb == "create" => ("AlreadyExists", format!("{what} already exists")),
        409 => (
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {what}: the object has been modified; please apply your changes to the latest version and try again"
            ),
        ),
        410 => ("Expired", "too old resource version".to_owned()),
        422 => (
            "Invalid",
            format!(
                "{what} is invalid: spec.containers[0].resources.limits[nvidia.com/gpumem]: Invalid value: \"0\": must be greater than 0"
            ),
        ),
        500 => (
            "InternalError",
            "Internal error occurred: etcdserver: request timed out".to_owned(),
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request".to_owned(),
        ),
        c => ("Unknown", format!("status {c}")),
    };
    let mut details = json!({"kind": a.resource.split('/').next().unwrap_or("")});
    if let Some(n) = &a.name {
        details["name"] = json!(n);
    }
    if code == 422 {
        details["causes"] = json!([{"reason": "FieldValueInvalid", "message": "Invalid value: \"0\": must be greater than 0", "field": "spec.containers[0].resources.limits[nvidia.com/gpumem]"}]);
    }
    if code == 500 {
        details["causes"] = json!([{"message": "etcdserver: request timed out"}]);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "details": details, "code": code})
}

/// The 429 body (API Priority and Fairness' wording).
pub fn too_many_requests(retry_after_secs: u32) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": "Too many requests, please try again later.", "reason": "TooManyRequests",
           "details": {"retryAfterSeconds": retry_after_secs}, "code": 429})
}
