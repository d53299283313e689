//! A mock Kubernetes API server for tests: a `tower` service that `kube::Client::new` accepts,
//! answering from an in-memory store seeded with the shared fixtures and recording every request.
//!
//! Supported: `GET /version`; list (with `fieldSelector` `metadata.name=`/`involvedObject.name=` and
//! a single `labelSelector` `k=v`), get, create (409 when present; optional replacement object to
//! simulate the scheduler and kubelet; a pod is refused with 403 and kube-apiserver's denial wording
//! when a stored ValidatingAdmissionPolicy and its binding deny it, evaluated by `admission`), replace (PUT: 404 when absent, 409 when the body's
//! resourceVersion is not the stored one; the stored resourceVersion is counted up), delete. Watch requests never answer (the caller's timeout or
//! the condition met on the initial list ends them). Exec (WebSocket) is not supported.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};

/// One request the mock saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub uri: String,
}

#[derive(Debug, Default)]
struct State {
    /// (plural, namespace, name) → object.
    objects: BTreeMap<(String, String, String), Value>,
    /// Objects stored instead of the posted body on create, by (plural, name).
    on_create: BTreeMap<(String, String), Value>,
    version: Value,
    seen: Vec<Seen>,
    unreachable: bool,
}

/// Handle to the mock server's state.
#[derive(Debug, Clone, Default)]
pub struct MockApi {
    state: Arc<Mutex<State>>,
}

fn plural_of(kind: &str) -> String {
    match kind {
        "Endpoints" => "endpoints".to_owned(),
        other => format!("{}s", other.to_ascii_lowercase()),
    }
}

impl MockApi {
    pub fn new() -> Self {
        let m = Self::default();
        m.lock().version = crate::testdata::fixture("version-k3s.json");
        m
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds an object (its `kind`, `metadata.namespace` and `metadata.name` place it).
    pub fn add(&self, obj: Value) -> &Self {
        let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.lock()
            .objects
            .insert((plural_of(&kind), ns, name), obj);
        self
    }

    /// Adds every item of a `*List` fixture, or a single-object fixture.
    pub fn add_fixture(&self, file: &str) -> &Self {
        let v: Value = crate::testdata::fixture(file);
        if let Some(items) = v["items"].as_array() {
            let item_kind = v["kind"]
                .as_str()
                .unwrap_or_default()
                .trim_end_matches("List")
                .to_owned();
            for mut item in items.clone() {
                if item["kind"].is_null() {
                    item["kind"] = json!(item_kind);
                }
                self.add(item);
            }
        } else {
            self.add(v);
        }
        self
    }

    /// On `POST` of a pod named `name`, store (and answer with) `obj` instead of the posted body.
    pub fn on_create(&self, plural: &str, name: &str, obj: Value) -> &Self {
        self.lock()
            .on_create
            .insert((plural.to_owned(), name.to_owned()), obj);
        self
    }

    /// Answer `GET /version` with `v` instead of the k3s fixture.
    pub fn set_version(&self, v: Value) {
        self.lock().version = v;
    }

    /// Make every request fail as if the server were down.
    pub fn set_unreachable(&self) {
        self.lock().unreachable = true;
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// `METHOD path` of every request (no query), for compact assertions.
    pub fn seen_paths(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .map(|s| {
                format!(
                    "{} {}",
                    s.method,
                    s.uri.split('?').next().unwrap_or_default()
                )
            })
            .collect()
    }

    pub fn has(&self, plural: &str, ns: &str, name: &str) -> bool {
        self.lock()
            .objects
            .contains_key(&(plural.to_owned(), ns.to_owned(), name.to_owned()))
    }

    /// A `kube::Client` whose every request is answered by this mock.
    pub fn client(&self) -> kube::Client {
        let me = self.clone();
        let svc = tower::service_fn(move |req: Request<Body>| {
            let me = me.clone();
            async move { me.handle(req).await }
        });
        kube::Client::new(svc, "default")
    }

    async fn handle(
        &self,
        req: Request<Body>,
    ) -> Result<Response<Body>, Box<dyn std::error::Error + Send + Sync>> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await?.to_bytes();
        self.handle_parts(&parts.method, &parts.uri, &body).await
    }

    /// Answers one request (also used by the real HTTP server in `execserver`).
    pub async fn handle_parts(
        &self,
        method: &Method,
        uri: &http::Uri,
        body: &[u8],
    ) -> Result<Response<Body>, Box<dyn std::error::Error + Send + Sync>> {
        let path = uri.path().to_owned();
        let query: BTreeMap<String, String> = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), percent_decode(v)))
            .collect();
        {
            let mut st = self.lock();
            st.seen.push(Seen {
                method: method.to_string(),
                uri: uri.to_string(),
            });
            if st.unreachable {
                return Err("connection refused (mock)".into());
            }
        }
        if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
            // A watch that never delivers: the caller's timeout (or an earlier list) ends it.
            futures::future::pending::<()>().await;
        }
        Ok(self.answer(method, &path, &query, body))
    }

    fn answer(
        &self,
        method: &Method,
        path: &str,
        query: &BTreeMap<String, String>,
        body: &[u8],
    ) -> Response<Body> {
        if path == "/version" {
            return respond(StatusCode::OK, &self.lock().version);
        }
        let Some((ns, plural, name)) = parse_path(path) else {
            return not_found(path);
        };
        let mut st = self.lock();
        match (method.clone(), name) {
            (Method::GET, None) => {
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|((p, n, _), _)| *p == plural && ns.as_ref().is_none_or(|ns| ns == n))
                    .map(|(_, v)| v.clone())
                    .filter(|v| selected(v, query))
                    .collect();
                respond(
                    StatusCode::OK,
                    &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            (Method::GET, Some(name)) => {
                match st
                    .objects
                    .get(&(plural, ns.unwrap_or_default(), name.clone()))
                {
                    Some(v) => respond(StatusCode::OK, v),
                    None => not_found(&name),
                }
            }
            (Method::POST, None) => {
                let Ok(mut obj) = serde_json::from_slice::<Value>(body) else {
                    return status(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON");
                };
                let name = obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let ns = ns.unwrap_or_default();
                let key = (plural.clone(), ns.clone(), name.clone());
                if st.objects.contains_key(&key) {
                    return status(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        &format!("{plural} \"{name}\" already exists"),
                    );
                }
                if plural == "pods"
                    && let Some(message) = admission_refusal(&st.objects, &ns, &obj)
                {
                    return status(StatusCode::FORBIDDEN, "Forbidden", &message);
                }
                if let Some(replacement) = st.on_create.get(&(plural.clone(), name.clone())) {
                    obj = replacement.clone();
                }
                obj["metadata"]["namespace"] = json!(ns);
                if obj["metadata"]["uid"].is_null() {
                    obj["metadata"]["uid"] = json!(format!("uid-{name}"));
                }
                if obj["metadata"]["resourceVersion"].is_null() {
                    obj["metadata"]["resourceVersion"] = json!("1");
                }
                st.objects.insert(key, obj.clone());
                respond(StatusCode::CREATED, &obj)
            }
            (Method::PUT, Some(name)) => {
                let Ok(mut obj) = serde_json::from_slice::<Value>(body) else {
                    return status(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON");
                };
                let ns = ns.unwrap_or_default();
                let key = (plural.clone(), ns.clone(), name.clone());
                let Some(stored) = st.objects.get(&key) else {
                    return not_found(&name);
                };
                let stored_rv = stored["metadata"]["resourceVersion"].clone();
                let sent_rv = &obj["metadata"]["resourceVersion"];
                if !sent_rv.is_null() && *sent_rv != stored_rv {
                    return status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        &format!(
                            "the object has been modified; resourceVersion {sent_rv} is not {stored_rv}"
                        ),
                    );
                }
                let next = stored_rv
                    .as_str()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
                    + 1;
                obj["metadata"]["uid"] = stored["metadata"]["uid"].clone();
                obj["metadata"]["resourceVersion"] = json!(next.to_string());
                if !ns.is_empty() {
                    obj["metadata"]["namespace"] = json!(ns);
                }
                st.objects.insert(key, obj.clone());
                respond(StatusCode::OK, &obj)
            }
            (Method::DELETE, Some(name)) => {
                match st
                    .objects
                    .remove(&(plural, ns.unwrap_or_default(), name.clone()))
                {
                    Some(v) => respond(StatusCode::OK, &v),
                    None => not_found(&name),
                }
            }
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "not supported by the mock",
            ),
        }
    }
}

/// The refusal of `pod` by a stored policy whose binding names it, as kube-apiserver words it.
fn admission_refusal(
    objects: &BTreeMap<(String, String, String), Value>,
    namespace: &str,
    pod: &Value,
) -> Option<String> {
    let kind = |plural: &'static str| {
        objects
            .iter()
            .filter(move |((p, _, _), _)| p == plural)
            .map(|(_, v)| v)
    };
    kind("validatingadmissionpolicybindings").find_map(|binding| {
        let policy = kind("validatingadmissionpolicies")
            .find(|p| p["metadata"]["name"] == binding["spec"]["policyName"])?;
        let p = crate::admission::Policy {
            policy: policy.clone(),
            binding: binding.clone(),
        };
        crate::admission::refusal(&p, namespace, pod)
    })
}

pub fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/api/v1[/namespaces/NS]/PLURAL[/NAME]` or `/apis/G/V[/namespaces/NS]/PLURAL[/NAME]`.
fn parse_path(path: &str) -> Option<(Option<String>, String, Option<String>)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match *segs.first()? {
        "api" => segs.get(2..)?,
        "apis" => segs.get(3..)?,
        _ => return None,
    };
    let (ns, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        (Some(rest[1].to_owned()), &rest[2..])
    } else {
        (None, rest)
    };
    let plural = (*rest.first()?).to_owned();
    Some((ns, plural, rest.get(1).map(|s| (*s).to_owned())))
}

fn field(v: &Value, dotted: &str) -> Option<String> {
    let mut cur = v;
    for part in dotted.split('.') {
        cur = cur.get(part)?;
    }
    cur.as_str().map(str::to_owned)
}

fn selected(v: &Value, query: &BTreeMap<String, String>) -> bool {
    let fields_ok = query.get("fieldSelector").is_none_or(|sel| {
        sel.split(',').filter(|s| !s.is_empty()).all(|cond| {
            cond.split_once('=')
                .is_some_and(|(k, want)| field(v, k).as_deref() == Some(want))
        })
    });
    let labels_ok = query.get("labelSelector").is_none_or(|sel| {
        sel.split(',').filter(|s| !s.is_empty()).all(|cond| {
            cond.split_once('=')
                .is_some_and(|(k, want)| v["metadata"]["labels"][k].as_str() == Some(want))
        })
    });
    fields_ok && labels_ok
}

fn respond(code: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = code;
    r
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    respond(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "reason": reason, "message": message, "code": code.as_u16()}),
    )
}

fn not_found(what: &str) -> Response<Body> {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("\"{what}\" not found"),
    )
}
