//! The HTTP face of the mock: routing as kube-apiserver resolves a request (its RequestInfo: verb,
//! group, resource, subresource, namespace, name), authentication by bearer token, fault
//! injection, RBAC, then the handler — get, list (selectors, `limit`/`continue`), watch
//! (streamed events, bookmarks, the server's lifetime, 410 Gone), create (validated), update,
//! merge patch, graceful delete, `pods/exec` (WebSocket upgrade), `pods/log`. Served over any
//! byte stream: an in-memory duplex for `kube::Client` in tests ([`MockApi::client`]) or TCP for
//! the real binary ([`MockApi::serve_tcp`]).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::DuplexStream;
use tokio::time::Instant;

use super::admission;
use super::exec::{self, ExecCall};
use super::faults::{self, Action};
use super::kinds::Kind;
use super::lifecycle::{self, Timeline};
use super::rbac::{Attributes, User, forbidden};
use super::selectors::Selectors;
use super::store::{ChangeType, ObjKey, timestamp};
use super::validate;
use super::{MockApi, Seen, TOKEN};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

fn full(code: u16, v: &Value) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(serde_json::to_vec(v).unwrap_or_default()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    full(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}),
    )
}

fn not_found(kind: &Kind, name: &str) -> Response<Body> {
    full(
        404,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("{} \"{name}\" not found", kind.resource()),
                "reason": "NotFound", "details": {"name": name, "group": kind.group, "kind": kind.plural}, "code": 404}),
    )
}

pub fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or(""), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query pairs; repeated keys (exec's `command`) keep every value.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(kv), String::new()),
        })
        .collect()
}

/// A request as the server resolves it.
struct Resolved {
    kind: Option<Kind>,
    attrs: Attributes,
    subresource: Option<String>,
    watch: bool,
}

fn resolve(
    mock: &MockApi,
    method: &Method,
    path: &str,
    q: &BTreeMap<String, String>,
) -> Result<Resolved, Box<Response<Body>>> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => {
            return Ok(Resolved {
                kind: None,
                attrs: Attributes {
                    verb: method.as_str().to_ascii_lowercase(),
                    group: None,
                    resource: String::new(),
                    namespace: None,
                    name: None,
                    path: Some(path.to_owned()),
                },
                subresource: None,
                watch: false,
            });
        }
    };
    let (namespace, rest): (Option<&str>, &[&str]) = match rest {
        ["namespaces", ns, more @ ..] if !more.is_empty() => (Some(*ns), more),
        other => (None, other),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(*n), None),
        [p, n, s] => (*p, Some(*n), Some(*s)),
        _ => {
            return Err(Box::new(status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )));
        }
    };
    let kind = mock
        .lock()
        .kinds
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
        .cloned()
        .ok_or_else(|| {
            Box::new(status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ))
        })?;
    let verb = match (method.as_str(), name, watch) {
        ("GET", Some(_), _) => "get",
        ("GET", None, true) => "watch",
        ("GET", None, false) => "list",
        ("POST", _, _) => "create",
        ("PUT", _, _) => "update",
        ("PATCH", _, _) => "patch",
        ("DELETE", Some(_), _) => "delete",
        ("DELETE", None, _) => "deletecollection",
        _ => {
            return Err(Box::new(status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )));
        }
    };
    // list and watch with a metadata.name field selector are authorized on that name.
    let name = name.map(str::to_owned).or_else(|| {
        Selectors::parse(None, q.get("fieldSelector").map(String::as_str))
            .ok()
            .and_then(|s| s.name().map(str::to_owned))
    });
    Ok(Resolved {
        attrs: Attributes {
            verb: verb.into(),
            group: Some(group.into()),
            resource: match sub {
                Some(s) => format!("{plural}/{s}"),
                None => plural.into(),
            },
            namespace: namespace.map(str::to_owned),
            name,
            path: None,
        },
        kind: Some(kind),
        subresource: sub.map(str::to_owned),
        watch,
    })
}

/// Marks a request ended when dropped (the answer was sent, or the client gave up).
pub struct Open {
    mock: MockApi,
    id: usize,
}

impl Drop for Open {
    fn drop(&mut self) {
        let now = Instant::now();
        if let Some(s) = self.mock.lock().seen.get_mut(self.id)
            && s.ended.is_none()
        {
            s.ended = Some(now);
        }
    }
}

impl MockApi {
    fn set_status(&self, id: usize, code: u16) {
        if let Some(s) = self.lock().seen.get_mut(id) {
            s.status = code;
        }
    }

    fn user_of(&self, headers: &HeaderMap) -> Option<User> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))?;
        self.lock().tokens.get(token).cloned()
    }

    /// The first fault rule for this request, spent by one.
    fn take_fault(&self, a: &Attributes, created: Option<&str>) -> Option<Action> {
        let mut st = self.lock();
        for f in st.faults.iter_mut() {
            if f.times == 0 || !f.when.matches_request(a, created) {
                continue;
            }
            if f.skip > 0 {
                f.skip -= 1;
                continue;
            }
            f.times = f.times.saturating_sub(1);
            return Some(f.action.clone());
        }
        None
    }

    fn webhook_ready(&self) -> bool {
        let st = self.lock();
        !st.settings.webhook_fails
            && st.store.objects.iter().any(|(k, v)| {
                k.resource == "endpoints"
                    && k.name == "hami-scheduler"
                    && v["subsets"].as_array().is_some_and(|s| {
                        s.iter()
                            .any(|s| s["addresses"].as_array().is_some_and(|a| !a.is_empty()))
                    })
            })
    }
}

/// Serves one connection (HTTP/1.1 with upgrades).
pub fn serve_io<IO>(mock: MockApi, io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |req| handle(mock.clone(), req));
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades()
            .await;
    });
}

fn full_text(code: u16, text: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    r
}

fn respond_denied(
    mock: &MockApi,
    id: usize,
    user: &User,
    a: &Attributes,
) -> Result<Response<Body>, BoxError> {
    if let Some(s) = mock.lock().seen.get_mut(id) {
        s.denied = true;
        s.status = 403;
    }
    Ok(full(403, &forbidden(user, a)))
}

async fn handle(mock: MockApi, req: Request<Incoming>) -> Result<Response<Body>, BoxError> {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let pairs = query_pairs(uri.query());
    let q: BTreeMap<String, String> = pairs.iter().cloned().collect();
    let user = mock.user_of(req.headers());
    let resolved = resolve(&mock, &method, uri.path(), &q);
    let attrs = match &resolved {
        Ok(r) => r.attrs.clone(),
        Err(_) => Attributes {
            verb: method.as_str().to_ascii_lowercase(),
            group: None,
            resource: String::new(),
            namespace: None,
            name: None,
            path: Some(uri.path().to_owned()),
        },
    };
    let watch = resolved.as_ref().is_ok_and(|r| r.watch);
    let is_exec = resolved
        .as_ref()
        .is_ok_and(|r| r.subresource.as_deref() == Some("exec"));
    // An exec request stays whole: the upgrade needs it.
    let (exec_req, body) = if is_exec {
        (Some(req), Bytes::new())
    } else {
        (None, req.into_body().collect().await?.to_bytes())
    };
    let body_json = serde_json::from_slice::<Value>(&body).ok();
    let id = {
        let mut st = mock.lock();
        st.seen.push(Seen {
            method: method.to_string(),
            uri: uri.to_string(),
            attrs: attrs.clone(),
            watch,
            watch_timeout: q.get("timeoutSeconds").and_then(|t| t.parse().ok()),
            user: user.as_ref().map(|u| u.name.clone()),
            status: 0,
            fault: None,
            grants: Vec::new(),
            denied: false,
            body: if matches!(method, Method::POST | Method::PUT | Method::PATCH) {
                body_json
            } else {
                None
            },
            started: Instant::now(),
            ended: None,
        });
        st.seen.len() - 1
    };
    let open = Open {
        mock: mock.clone(),
        id,
    };
    let respond = |r: Response<Body>| -> Result<Response<Body>, BoxError> {
        mock.set_status(id, r.status().as_u16());
        Ok(r)
    };
    let Some(user) = user else {
        return respond(status(401, "Unauthorized", "Unauthorized"));
    };
    let resolved = match resolved {
        Ok(r) => r,
        Err(resp) => return respond(*resp),
    };
    let mut drop_after = None;
    let created = (method == Method::POST)
        .then(|| serde_json::from_slice::<Value>(&body).ok())
        .flatten()
        .and_then(|v| v["metadata"]["name"].as_str().map(str::to_owned));
    if let Some(action) = mock.take_fault(&attrs, created.as_deref()) {
        if let Some(s) = mock.lock().seen.get_mut(id) {
            s.fault = Some(action.name());
        }
        match action {
            Action::Status(code) => {
                return respond(full(code, &faults::status_body(code, &attrs, &user)));
            }
            Action::TooManyRequests { retry_after_secs } => {
                let mut r = full(429, &faults::too_many_requests(retry_after_secs));
                r.headers_mut()
                    .insert("retry-after", retry_after_secs.to_string().parse().unwrap());
                return respond(r);
            }
            Action::Stall => {
                futures::future::pending::<()>().await;
            }
            Action::Gone if watch => return respond(full_text(200, gone_line(1, 2))),
            Action::Gone => return respond(full(410, &faults::status_body(410, &attrs, &user))),
            Action::DropWatchAfter { events } if watch => drop_after = Some(events),
            Action::DropWatchAfter { .. } => return Err("connection reset by peer (mock)".into()),
        }
    }
    let policy = mock.lock().rbac.clone();
    if let Some(policy) = policy {
        let Some(grant) = policy.authorize(&user, &attrs) else {
            return respond_denied(&mock, id, &user, &attrs);
        };
        let mut grants = vec![grant];
        // Kubernetes ≥ 1.31 (AuthorizePodWebsocketUpgradeCreatePermission): a WebSocket exec is
        // also authorized as `create`.
        if is_exec {
            let create = Attributes {
                verb: "create".into(),
                ..attrs.clone()
            };
            match policy.authorize(&user, &create) {
                Some(g) => grants.push(g),
                None => return respond_denied(&mock, id, &user, &create),
            }
        }
        if let Some(s) = mock.lock().seen.get_mut(id) {
            s.grants = grants;
        }
    }
    let Some(kind) = resolved.kind.clone() else {
        return respond(non_resource(&mock, uri.path()));
    };
    let ns = resolved.attrs.namespace.clone();
    if let Some(req) = exec_req {
        return respond(exec_upgrade(
            &mock,
            ns.as_deref().unwrap_or(""),
            &resolved,
            &pairs,
            req,
            open,
        ));
    }
    let name = if resolved.subresource.is_none()
        && matches!(resolved.attrs.verb.as_str(), "list" | "watch")
    {
        None
    } else {
        resolved.attrs.name.clone()
    };
    let r = match (&method, name, resolved.subresource.as_deref()) {
        (&Method::GET, Some(n), Some("log")) => logs(&mock, &kind, ns.as_deref(), &n, &q),
        (_, _, Some(sub)) => status(
            404,
            "NotFound",
            &format!("subresource {sub} is not served by the mock"),
        ),
        (&Method::GET, None, _) if resolved.watch => {
            return respond(serve_watch(
                &mock,
                &kind,
                ns.as_deref(),
                &q,
                drop_after,
                open,
            ));
        }
        (&Method::GET, None, _) => list(&mock, &kind, ns.as_deref(), &q),
        (&Method::GET, Some(n), _) => get(&mock, &kind, ns.as_deref(), &n),
        (&Method::POST, None, _) => create(&mock, &kind, ns.as_deref(), &body),
        (&Method::PUT, Some(n), _) => update(&mock, &kind, ns.as_deref(), &n, &body),
        (&Method::PATCH, Some(n), _) => patch(&mock, &kind, ns.as_deref(), &n, &body),
        (&Method::DELETE, Some(n), _) => delete(&mock, &kind, ns.as_deref(), &n, &body),
        _ => status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ),
    };
    drop(open);
    respond(r)
}

fn non_resource(mock: &MockApi, path: &str) -> Response<Body> {
    match path {
        "/version" => full(200, &mock.lock().version),
        "/healthz" | "/livez" | "/readyz" => full_text(200, "ok".into()),
        _ => status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

fn key(kind: &Kind, ns: Option<&str>, name: &str) -> ObjKey {
    ObjKey::new(kind, ns.unwrap_or(""), name)
}

/// An object as the API returns it: with kind and apiVersion.
fn typed(kind: &Kind, mut v: Value) -> Value {
    v["kind"] = json!(kind.kind);
    v["apiVersion"] = json!(kind.api_version());
    v
}

fn get(mock: &MockApi, kind: &Kind, ns: Option<&str>, name: &str) -> Response<Body> {
    match mock.lock().store.get(&key(kind, ns, name)) {
        Some(v) => full(200, &typed(kind, v.clone())),
        None => not_found(kind, name),
    }
}

fn list(
    mock: &MockApi,
    kind: &Kind,
    ns: Option<&str>,
    q: &BTreeMap<String, String>,
) -> Response<Body> {
    let selectors = match Selectors::parse(
        q.get("labelSelector").map(String::as_str),
        q.get("fieldSelector").map(String::as_str),
    ) {
        Ok(s) => s,
        Err(e) => return status(400, "BadRequest", &e),
    };
    let st = mock.lock();
    // `continue` is `<resourceVersion>-<offset>`; a compacted one is 410 as on a real server.
    let (rv, offset) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(c) => match c
            .split_once('-')
            .and_then(|(r, o)| Some((r.parse::<u64>().ok()?, o.parse::<usize>().ok()?)))
        {
            Some((rv, _)) if rv < st.store.compacted_at => {
                return status(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                );
            }
            Some(p) => p,
            None => return status(400, "BadRequest", "invalid continue token"),
        },
        None => (st.store.rv, 0),
    };
    let all = st.store.list(kind, ns, &selectors);
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let end = limit.map_or(all.len(), |l| (offset + l).min(all.len()));
    let items: Vec<Value> = all[offset.min(all.len())..end]
        .iter()
        .map(|v| {
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            v
        })
        .collect();
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if end < all.len() {
        meta["continue"] = json!(format!("{rv}-{end}"));
        meta["remainingItemCount"] = json!(all.len() - end);
    }
    full(
        200,
        &json!({"kind": format!("{}List", kind.kind), "apiVersion": kind.api_version(), "metadata": meta, "items": items}),
    )
}

fn gone_line(asked: u64, oldest: u64) -> String {
    format!(
        "{}\n",
        json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {asked} ({oldest})"), "reason": "Expired", "code": 410}})
    )
}

/// A watch: changes after the asked resourceVersion (or the current objects as ADDED first when
/// none is given), filtered by kind, namespace and selectors (an object moving out of the
/// selector is DELETED for this watch, moving in is ADDED), BOOKMARKs when asked, closed at
/// `min(timeoutSeconds, the server's lifetime)`, or 410 Gone when the resourceVersion is older
/// than the last compaction.
fn serve_watch(
    mock: &MockApi,
    kind: &Kind,
    ns: Option<&str>,
    q: &BTreeMap<String, String>,
    drop_after: Option<usize>,
    open: Open,
) -> Response<Body> {
    let selectors = match Selectors::parse(
        q.get("labelSelector").map(String::as_str),
        q.get("fieldSelector").map(String::as_str),
    ) {
        Ok(s) => s,
        Err(e) => return status(400, "BadRequest", &e),
    };
    let from: Option<u64> = q
        .get("resourceVersion")
        .filter(|r| !r.is_empty() && *r != "0")
        .and_then(|r| r.parse().ok());
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let asked = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let (lifetime, every, chaos) = {
        let st = mock.lock();
        (
            st.settings.watch_lifetime,
            st.settings.bookmark_every,
            st.settings.chaos.clone(),
        )
    };
    let mut lifetime = asked.map_or(lifetime, |a| a.min(lifetime));
    if let Some(c) = &chaos {
        if mock.random() < c.gone {
            mock.compact();
        }
        let early =
            Duration::from_millis(500 + (mock.random() * c.close_within.as_millis() as f64) as u64);
        lifetime = lifetime.min(early);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(64);
    let mock = mock.clone();
    let kind = kind.clone();
    let ns = ns.map(str::to_owned);
    mock.lock().watch_stats.started += 1;
    tokio::spawn(async move {
        let _open = open;
        let deadline = Instant::now() + lifetime;
        let mut changes = mock.shared.changes.subscribe();
        let send = |line: String| {
            let tx = tx.clone();
            async move { tx.send(Ok(Frame::data(Bytes::from(line)))).await.is_ok() }
        };
        let resource = kind.resource();
        let in_scope =
            |k: &ObjKey| k.resource == resource && ns.as_ref().is_none_or(|n| k.namespace == *n);
        enum Start {
            Gone(u64, u64),
            From(u64),
            Current(Vec<Value>, u64),
        }
        let start = {
            let st = mock.lock();
            match from {
                Some(rv) if rv < st.store.compacted_at => Start::Gone(rv, st.store.compacted_at),
                Some(rv) => Start::From(rv),
                None => Start::Current(
                    st.store
                        .objects
                        .iter()
                        .filter(|(k, v)| in_scope(k) && selectors.matches(v))
                        .map(|(_, v)| v.clone())
                        .collect(),
                    st.store.rv,
                ),
            }
        };
        let mut sent = 0usize;
        let mut cursor = match start {
            Start::Gone(rv, oldest) => {
                mock.lock().watch_stats.gone += 1;
                let _ = send(gone_line(rv, oldest)).await;
                return;
            }
            Start::From(rv) => rv,
            Start::Current(current, rv) => {
                for v in current {
                    let line = format!("{}\n", json!({"type": "ADDED", "object": typed(&kind, v)}));
                    if !send(line).await {
                        return;
                    }
                    sent += 1;
                    if drop_after == Some(sent) {
                        // The events already sent reach the client before the connection breaks.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let _ = tx.send(Err("connection reset by peer (mock)".into())).await;
                        return;
                    }
                }
                rv
            }
        };
        let mut next_bookmark = Instant::now() + every;
        loop {
            let (lines, rv, gone) = {
                let st = mock.lock();
                if cursor < st.store.compacted_at {
                    (Vec::new(), st.store.rv, Some(st.store.compacted_at))
                } else {
                    let mut lines = Vec::new();
                    for c in st
                        .store
                        .log
                        .iter()
                        .filter(|c| c.rv > cursor && in_scope(&c.key))
                    {
                        let was = c.before.as_ref().is_some_and(|b| selectors.matches(b));
                        let is = selectors.matches(&c.after);
                        let t = match (c.kind, was, is) {
                            (ChangeType::Added, _, true) => "ADDED",
                            (ChangeType::Modified, true, true) => "MODIFIED",
                            (ChangeType::Modified, false, true) => "ADDED",
                            (ChangeType::Modified, true, false) => "DELETED",
                            (ChangeType::Deleted, true, _) => "DELETED",
                            _ => continue,
                        };
                        lines.push(format!(
                            "{}\n",
                            json!({"type": t, "object": typed(&kind, c.after.clone())})
                        ));
                    }
                    (lines, st.store.rv, None)
                }
            };
            if let Some(oldest) = gone {
                mock.lock().watch_stats.gone += 1;
                let _ = send(gone_line(cursor, oldest)).await;
                return;
            }
            for line in lines {
                if !send(line).await {
                    return;
                }
                sent += 1;
                if drop_after == Some(sent) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = tx.send(Err("connection reset by peer (mock)".into())).await;
                    return;
                }
            }
            cursor = cursor.max(rv);
            tokio::select! {
                // The client went away (as a real server notices a closed connection).
                _ = tx.closed() => return,
                r = changes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(deadline) => {
                    mock.lock().watch_stats.closed_by_server += 1;
                    return;
                }
                _ = tokio::time::sleep_until(next_bookmark), if bookmarks => {
                    next_bookmark += every;
                    let line = format!("{}\n", json!({"type": "BOOKMARK", "object": {
                        "kind": kind.kind, "apiVersion": kind.api_version(),
                        "metadata": {"resourceVersion": cursor.to_string()}}}));
                    if !send(line).await {
                        return;
                    }
                }
            }
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

fn create(mock: &MockApi, kind: &Kind, ns: Option<&str>, body: &[u8]) -> Response<Body> {
    let obj = match validate::on_create(kind, ns, body) {
        Ok(o) => o,
        Err(e) => {
            let name = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["metadata"]["name"].as_str().map(str::to_owned))
                .unwrap_or_default();
            return full(e.code, &e.status(kind, &name));
        }
    };
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if let Some(ns) = ns
        && !mock.has("namespaces", "", ns)
    {
        return full(
            404,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("namespaces \"{ns}\" not found"), "reason": "NotFound",
                    "details": {"name": ns, "kind": "namespaces"}, "code": 404}),
        );
    }
    let k = key(kind, ns, &name);
    if mock.lock().store.get(&k).is_some() {
        return full(
            409,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("{} \"{name}\" already exists", kind.resource()), "reason": "AlreadyExists",
                    "details": {"name": name, "group": kind.group, "kind": kind.plural}, "code": 409}),
        );
    }
    let is_pod = kind.kind == "Pod" && kind.group.is_empty();
    let mut obj = obj;
    // HAMi's mutating webhook (failurePolicy Ignore): only while its Service has endpoints.
    let webhook = is_pod && lifecycle::asks_gpu(&obj) && mock.webhook_ready();
    if webhook {
        obj["spec"]["schedulerName"] = json!("hami-scheduler");
    }
    // Validating admission runs after mutation: a stored policy whose binding selects the pod's
    // namespace and denies it refuses the create (403 with the policy's reason Forbidden).
    if is_pod && let Some(message) = admission::refusal_by_stored(&mock.lock().store, ns, &obj) {
        return full(
            403,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": message, "reason": "Forbidden",
                    "details": {"name": name, "kind": kind.plural}, "code": 403}),
        );
    }
    let now = mock.now_secs();
    let (stored, rv) = {
        let mut st = mock.lock();
        let stored = st.store.insert(k.clone(), obj, now);
        st.serve_crd(kind, &stored);
        (stored, st.store.rv)
    };
    mock.notify(rv);
    if is_pod {
        let script = mock.lock().pod_scripts.get(&name).cloned();
        match script {
            Some(t) => mock.spawn_timeline(k, t),
            None => mock.spawn_timeline(
                k,
                Timeline::default().at(
                    lifecycle::SCHEDULE_AFTER,
                    lifecycle::Step::Schedule { webhook },
                ),
            ),
        }
    }
    full(201, &typed(kind, stored))
}

fn update(
    mock: &MockApi,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    body: &[u8],
) -> Response<Body> {
    let Ok(new) = serde_json::from_slice::<Value>(body) else {
        return status(
            400,
            "BadRequest",
            "the body of the request was in an unknown format",
        );
    };
    let k = key(kind, ns, name);
    let Some(old) = mock.lock().store.get(&k).cloned() else {
        return not_found(kind, name);
    };
    // Optimistic concurrency: a stale resourceVersion is a conflict.
    if let Some(rv) = new["metadata"]["resourceVersion"].as_str()
        && Some(rv) != old["metadata"]["resourceVersion"].as_str()
    {
        return full(
            409,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", kind.resource()),
                    "reason": "Conflict", "details": {"name": name, "group": kind.group, "kind": kind.plural}, "code": 409}),
        );
    }
    if let Err(e) = validate::on_update(kind, &old, &new) {
        return full(e.code, &e.status(kind, name));
    }
    let mut new = new;
    for f in ["uid", "creationTimestamp", "namespace", "name"] {
        new["metadata"][f] = old["metadata"][f].clone();
    }
    let (stored, rv) = {
        let mut st = mock.lock();
        let s = st.store.replace(&k, new);
        (s, st.store.rv)
    };
    mock.notify(rv);
    full(200, &typed(kind, stored.unwrap_or_default()))
}

fn patch(mock: &MockApi, kind: &Kind, ns: Option<&str>, name: &str, body: &[u8]) -> Response<Body> {
    let Ok(p) = serde_json::from_slice::<Value>(body) else {
        return status(
            400,
            "BadRequest",
            "the body of the request was in an unknown format",
        );
    };
    let k = key(kind, ns, name);
    let Some(old) = mock.lock().store.get(&k).cloned() else {
        return not_found(kind, name);
    };
    let mut new = old.clone();
    super::store::merge_patch(&mut new, &p);
    if let Err(e) = validate::on_update(kind, &old, &new) {
        return full(e.code, &e.status(kind, name));
    }
    let (stored, rv) = {
        let mut st = mock.lock();
        let s = st.store.replace(&k, new);
        (s, st.store.rv)
    };
    mock.notify(rv);
    full(200, &typed(kind, stored.unwrap_or_default()))
}

/// Graceful deletion: a pod on a node gets `deletionTimestamp` and stays Terminating for its
/// grace period and the kubelet's stop time; an object with finalizers stays until they are
/// removed; anything else goes at once.
fn delete(
    mock: &MockApi,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    body: &[u8],
) -> Response<Body> {
    let opts: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let k = key(kind, ns, name);
    let Some(obj) = mock.lock().store.get(&k).cloned() else {
        return not_found(kind, name);
    };
    if let Some(uid) = opts["preconditions"]["uid"].as_str()
        && Some(uid) != obj["metadata"]["uid"].as_str()
    {
        return full(
            409,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {}", obj["metadata"]["uid"].as_str().unwrap_or("")),
                    "reason": "Conflict", "code": 409}),
        );
    }
    if !obj["metadata"]["deletionTimestamp"].is_null() {
        return full(200, &typed(kind, obj));
    }
    let is_pod = kind.kind == "Pod" && kind.group.is_empty();
    let on_node = is_pod
        && obj["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty());
    let finalizers = obj["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    let now = mock.now_secs();
    if on_node || finalizers {
        let grace = opts["gracePeriodSeconds"]
            .as_u64()
            .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_u64())
            .unwrap_or(30);
        let (stored, rv) = {
            let mut st = mock.lock();
            let s = st.store.merge(
                &k,
                &json!({"metadata": {"deletionTimestamp": timestamp(now + grace), "deletionGracePeriodSeconds": grace}}),
            );
            (s, st.store.rv)
        };
        mock.notify(rv);
        if on_node && !finalizers {
            let stop = mock.lock().settings.kubelet_stop;
            mock.spawn_timeline(
                k,
                Timeline::default().at(Duration::from_secs(grace) + stop, lifecycle::Step::Remove),
            );
        }
        return full(200, &typed(kind, stored.unwrap_or_default()));
    }
    let (removed, rv) = {
        let mut st = mock.lock();
        let r = st.store.remove(&k);
        (r, st.store.rv)
    };
    mock.notify(rv);
    full(200, &typed(kind, removed.unwrap_or_default()))
}

fn logs(
    mock: &MockApi,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    q: &BTreeMap<String, String>,
) -> Response<Body> {
    let Some(pod) = mock.lock().store.get(&key(kind, ns, name)).cloned() else {
        return not_found(kind, name);
    };
    let containers: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    let container = match q.get("container") {
        Some(c) => c.clone(),
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return status(
                400,
                "BadRequest",
                &format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                ),
            );
        }
    };
    if !containers.contains(&container) {
        return status(
            400,
            "BadRequest",
            &format!("container {container} is not valid for pod {name}"),
        );
    }
    // `previous=true`: the last terminated run's log, which only a restarted container has.
    let previous = q.get("previous").is_some_and(|p| p == "true");
    let stored = mock
        .lock()
        .logs
        .get(&(
            ns.unwrap_or("").into(),
            name.into(),
            if previous {
                format!("{container}{PREVIOUS}")
            } else {
                container.clone()
            },
        ))
        .cloned();
    let mut text = match stored {
        Some(t) => t,
        None if previous => {
            return status(
                400,
                "BadRequest",
                &format!(
                    "previous terminated container \"{container}\" in pod \"{name}\" not found"
                ),
            );
        }
        None => String::new(),
    };
    // `tailLines`, then `limitBytes`, as the kubelet applies them.
    if let Some(n) = q.get("tailLines").and_then(|t| t.parse::<usize>().ok()) {
        let lines: Vec<&str> = text.lines().collect();
        let kept = lines[lines.len().saturating_sub(n)..].join("\n");
        text = if kept.is_empty() { kept } else { kept + "\n" };
    }
    if let Some(limit) = q.get("limitBytes").and_then(|b| b.parse::<usize>().ok())
        && text.len() > limit
    {
        let mut cut = limit;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    full_text(200, text)
}

/// The key suffix of a container's previous run's log in [`super::State::logs`].
pub const PREVIOUS: &str = "#previous";

fn exec_upgrade(
    mock: &MockApi,
    ns: &str,
    resolved: &Resolved,
    pairs: &[(String, String)],
    req: Request<Incoming>,
    open: Open,
) -> Response<Body> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let name = resolved.attrs.name.clone().unwrap_or_default();
    let Some(kind) = resolved.kind.clone() else {
        return status(404, "NotFound", "no kind");
    };
    let Some(pod) = mock.lock().store.get(&key(&kind, Some(ns), &name)).cloned() else {
        return not_found(&kind, &name);
    };
    let mut command = Vec::new();
    let mut container = None;
    for (k, v) in pairs {
        match k.as_str() {
            "command" => command.push(v.clone()),
            "container" => container = Some(v.clone()),
            _ => {}
        }
    }
    if pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
        return status(
            400,
            "BadRequest",
            &format!("pod {name} does not have a host assigned"),
        );
    }
    let first = pod["spec"]["containers"][0]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let target = container.clone().unwrap_or(first);
    let running = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["name"] == target.as_str() && !c["state"]["running"].is_null());
    if !running {
        return status(
            400,
            "BadRequest",
            &format!("unable to upgrade connection: container not found (\"{target}\")"),
        );
    }
    if req
        .headers()
        .get("upgrade")
        .and_then(|u| u.to_str().ok())
        .map(str::to_ascii_lowercase)
        != Some("websocket".into())
    {
        return status(400, "BadRequest", "Upgrade request required");
    }
    let accept = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()))
        .unwrap_or_default();
    let offered = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let protocol = if offered.contains("v5.channel.k8s.io") {
        "v5.channel.k8s.io"
    } else {
        "v4.channel.k8s.io"
    };
    let call = ExecCall {
        namespace: ns.into(),
        pod: name,
        container,
        command,
        stdin: Vec::new(),
    };
    let mock = mock.clone();
    tokio::spawn(async move {
        let _open = open;
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                None,
            )
            .await;
            exec::serve(mock, ws, call).await;
        }
    });
    let mut resp = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert("upgrade", "websocket".parse().unwrap());
    h.insert("connection", "Upgrade".parse().unwrap());
    h.insert("sec-websocket-accept", accept.parse().unwrap());
    h.insert("sec-websocket-protocol", protocol.parse().unwrap());
    resp
}

// ---------------------------------------------------------------------------------------------
// Transports

/// One end of an in-memory connection, as hyper's client wants it.
pub struct MemIo(TokioIo<DuplexStream>);

impl hyper::rt::Read for MemIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for MemIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl Connection for MemIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// Opens an in-memory connection to the mock for every connection the client makes.
#[derive(Clone)]
pub struct MemConnector(pub MockApi);

impl tower::Service<http::Uri> for MemConnector {
    type Response = MemIo;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<MemIo, std::io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        if self.0.lock().settings.unreachable {
            return std::future::ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused",
            )));
        }
        let (client, server) = tokio::io::duplex(1 << 16);
        serve_io(self.0.clone(), server);
        std::future::ready(Ok(MemIo(TokioIo::new(client))))
    }
}

impl MockApi {
    /// A `kube::Client` whose connections go to this mock, in memory (real HTTP/1.1, upgrades
    /// included), authenticated with [`TOKEN`] and with cluster-ctl's response-header timeout.
    pub fn client(&self, api_timeout: Duration) -> kube::Client {
        self.client_as(TOKEN, api_timeout)
    }

    /// A client authenticated with `token`.
    pub fn client_as(&self, token: &str, api_timeout: Duration) -> kube::Client {
        let bearer = format!("Bearer {token}");
        let hyper_client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build::<_, kube::client::Body>(MemConnector(self.clone()));
        let svc = tower::ServiceBuilder::new()
            .layer(cluster_ctl::api::response_timeout_layer(api_timeout))
            .map_request(move |mut req: Request<kube::client::Body>| {
                let pq = req
                    .uri()
                    .path_and_query()
                    .map_or("/".to_owned(), |p| p.as_str().to_owned());
                *req.uri_mut() = format!("http://mock.invalid{pq}").parse().unwrap();
                req.headers_mut()
                    .insert("authorization", bearer.parse().unwrap());
                req
            })
            .service(hyper_client);
        kube::Client::new(svc, "default")
    }

    /// cluster-ctl's `Cluster` on this mock, every call bounded by `api_timeout`.
    pub fn cluster(&self, api_timeout: Duration) -> cluster_ctl::api::Cluster {
        cluster_ctl::api::Cluster::new(self.client(api_timeout), api_timeout)
    }

    /// cluster-ctl's `Cluster` authenticated with `token`.
    pub fn cluster_as(&self, token: &str, api_timeout: Duration) -> cluster_ctl::api::Cluster {
        cluster_ctl::api::Cluster::new(self.client_as(token, api_timeout), api_timeout)
    }

    /// Serves the mock on 127.0.0.1 (for the real binary, through a kubeconfig).
    pub async fn serve_tcp(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                serve_io(me.clone(), stream);
            }
        });
        addr
    }
}
