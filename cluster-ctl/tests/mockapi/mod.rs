//! A mock Kubernetes API server with a real server's semantics, for tests only: real HTTP/1.1
//! (hyper) over an in-memory connection — or TCP for the real binary — that `kube::Client`
//! talks to exactly as to kube-apiserver, including the WebSocket upgrade of `pods/exec`.
//!
//! What it models (see cluster-ctl/README.md, "How this was tested", for the list of what it
//! does not): objects with uid, creationTimestamp and a resourceVersion that only grows
//! ([`store`]); strict decoding and validation of writes ([`validate`]); list and watch with label
//! and field selectors, bookmarks, a server-side watch lifetime, and 410 Gone below a compaction
//! ([`http`]); graceful deletion; the HAMi webhook, scheduler (with its node lock: one Bind per
//! node at a time, the others retried after kube-scheduler's backoff) and kubelet as timelines in
//! virtual time ([`lifecycle`]), and k3s's helm controller with the Job controller's part for its helm
//! Jobs (`lifecycle::HelmController`); CRDs served once their definition is stored ([`kinds`]);
//! bearer-token authentication and RBAC from YAML ([`rbac`]); per-request faults ([`faults`]);
//! exec with the channel protocol and scripted gpu-probe answers ([`exec`]); pod logs (current
//! and previous run, `tailLines`, `limitBytes`); ValidatingAdmissionPolicies: a pod created while
//! a stored policy and its binding deny it is refused as kube-apiserver words it, the policy's
//! own CEL evaluated by [`admission`]. Every request is recorded with its RBAC
//! attributes, answer and duration. Every mock reports the `mock API` test tier
//! (`lab_runner::tier`), for `cargo xtask ci`'s tier table.

#![allow(dead_code)]

pub mod admission;
pub mod exec;
pub mod faults;
pub mod gpu_cluster;
pub mod http;
pub mod kinds;
pub mod lifecycle;
pub mod rbac;
pub mod selectors;
pub mod store;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use self::exec::ExecState;
use self::faults::Fault;
use self::kinds::Kind;
use self::lifecycle::{Placement, Step, Timeline, WorldTimeline};
use self::rbac::{Attributes, Grant, Policy, User};
use self::store::{ObjKey, Store};

/// The bearer token of the lab's ServiceAccount in every test client.
pub const TOKEN: &str = "lab-token";
/// The bearer token of the installer ServiceAccount (manifests/rbac.yaml's `hami-installer`).
pub const INSTALLER_TOKEN: &str = "installer-token";
/// The ServiceAccount the token belongs to (manifests/rbac.yaml's).
pub const SA_NAMESPACE: &str = "hami-isolation-lab";
pub const SA_NAME: &str = "cluster-ctl";

/// One request the mock saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub attrs: Attributes,
    pub watch: bool,
    /// The watch's `timeoutSeconds`.
    pub watch_timeout: Option<u64>,
    pub user: Option<String>,
    /// HTTP status of the answer (101 for exec, 200 for a watch that started).
    pub status: u16,
    /// The fault injected instead of the real answer.
    pub fault: Option<String>,
    /// The RBAC grants that allowed it (empty: no policy loaded, or denied; two for a WebSocket
    /// exec, authorized as get and create).
    pub grants: Vec<Grant>,
    pub denied: bool,
    /// The body of a write.
    pub body: Option<Value>,
    pub started: Instant,
    /// When the answer was complete (for a watch: the stream ended; for a stalled request: the
    /// client gave up). `None` while it is still open.
    pub ended: Option<Instant>,
}

impl Seen {
    pub fn duration(&self) -> Option<Duration> {
        self.ended.map(|e| e - self.started)
    }
}

/// How the mock behaves; tests change it through [`MockApi`]'s methods.
#[derive(Debug)]
pub struct Settings {
    /// The longest a watch lives, whatever the client asks (kube-apiserver: 30–60 min).
    pub watch_lifetime: Duration,
    /// How often a watch that asked for them gets a BOOKMARK.
    pub bookmark_every: Duration,
    /// How long a deleted pod on a node stays Terminating beyond its grace period (kubelet).
    pub kubelet_stop: Duration,
    /// Keep the stdin of every exec in [`exec::ExecCall`] (off for the benchmark: thousands of
    /// copies of gpu-probe).
    pub keep_exec_stdin: bool,
    /// A scripted gpu-probe report run in a pod HAMi gave a card shows that card's UUID as its
    /// device 0, as the probe on that card would (many cards answered by one recorded report).
    pub probe_shows_its_card: bool,
    /// No connection can be made (the server is down).
    pub unreachable: bool,
    /// HAMi's webhook does not answer although its Service has endpoints (failurePolicy Ignore:
    /// pods are created unmutated, on default-scheduler).
    pub webhook_fails: bool,
    /// Compacts the store at random with this probability per watch (re)start, and closes watches
    /// early at random (the soak test); the seed keeps a failing run reproducible.
    pub chaos: Option<Chaos>,
}

#[derive(Debug, Clone)]
pub struct Chaos {
    pub seed: u64,
    /// Probability (0..1) that a watch start finds its resourceVersion compacted (410).
    pub gone: f64,
    /// Watches close after a random time up to this.
    pub close_within: Duration,
}

/// What the watches went through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchStats {
    pub started: usize,
    /// Ended by the server (its lifetime or the client's timeoutSeconds).
    pub closed_by_server: usize,
    /// Answered 410 Gone (a resourceVersion older than the last compaction).
    pub gone: usize,
}

#[derive(Debug)]
pub struct State {
    pub watch_stats: WatchStats,
    pub store: Store,
    pub kinds: Vec<Kind>,
    pub version: Value,
    pub tokens: BTreeMap<String, User>,
    pub rbac: Option<Policy>,
    pub faults: Vec<Fault>,
    pub seen: Vec<Seen>,
    pub placement: Option<Placement>,
    /// A cluster of many GPU nodes ([`MockApi::place_on_nodes`]): the pod goes to the node its
    /// `nodeSelector` names, as kube-scheduler filters, then HAMi picks the card.
    pub placements: Vec<Placement>,
    pub pod_scripts: BTreeMap<String, Timeline>,
    pub exec: ExecState,
    /// (namespace, pod, container) → log text.
    pub logs: BTreeMap<(String, String, String), String>,
    /// k3s's helm controller, when it runs (`MockApi::run_helm_controller`).
    pub helm: Option<lifecycle::HelmController>,
    /// HAMi's node locks: node → the pod whose Bind holds it, and since when.
    pub node_locks: BTreeMap<String, (ObjKey, Instant)>,
    /// Failed binds per pod (kube-scheduler's backoff grows with them).
    pub bind_attempts: BTreeMap<ObjKey, u32>,
    pub settings: Settings,
    rng: u64,
}

#[derive(Debug)]
pub struct Shared {
    pub state: Mutex<State>,
    /// Bumped with the resourceVersion after every change (watches wait on it).
    pub changes: tokio::sync::watch::Sender<u64>,
    pub start: Instant,
}

/// Handle to a mock API server.
#[derive(Debug, Clone)]
pub struct MockApi {
    pub shared: Arc<Shared>,
}

impl State {
    /// A stored CustomResourceDefinition makes its resource served.
    pub fn serve_crd(&mut self, kind: &Kind, obj: &Value) {
        if !kind.is_crd() {
            return;
        }
        if let Some(k) = Kind::from_crd(obj)
            && !self
                .kinds
                .iter()
                .any(|known| known.resource() == k.resource())
        {
            self.kinds.push(k);
        }
    }
}

impl Default for MockApi {
    fn default() -> Self {
        Self::new()
    }
}

impl MockApi {
    /// An empty cluster (namespaces `default`, `kube-system` and the ServiceAccount's), k3s'
    /// `/version`, the lab token accepted, no RBAC policy (every authenticated request allowed).
    pub fn new() -> Self {
        // For `cargo xtask ci`'s tier table: this test exercises the mock API server.
        lab_runner::tier::ran("mock API");
        let mut tokens = BTreeMap::new();
        tokens.insert(
            TOKEN.to_owned(),
            User::service_account(SA_NAMESPACE, SA_NAME),
        );
        tokens.insert(
            INSTALLER_TOKEN.to_owned(),
            User::service_account(SA_NAMESPACE, "hami-installer"),
        );
        let state = State {
            watch_stats: WatchStats::default(),
            store: Store::default(),
            kinds: kinds::builtin(),
            version: fixtures::fixture("version-k3s.json"),
            tokens,
            rbac: None,
            faults: Vec::new(),
            seen: Vec::new(),
            placement: None,
            placements: Vec::new(),
            pod_scripts: BTreeMap::new(),
            exec: ExecState::default(),
            logs: BTreeMap::new(),
            helm: None,
            node_locks: BTreeMap::new(),
            bind_attempts: BTreeMap::new(),
            settings: Settings {
                watch_lifetime: Duration::from_secs(1800),
                bookmark_every: Duration::from_secs(60),
                kubelet_stop: Duration::from_secs(2),
                keep_exec_stdin: true,
                probe_shows_its_card: false,
                unreachable: false,
                webhook_fails: false,
                chaos: None,
            },
            rng: 0x9e37_79b9_7f4a_7c15,
        };
        let (changes, _) = tokio::sync::watch::channel(0);
        let m = Self {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                changes,
                start: Instant::now(),
            }),
        };
        for ns in ["default", "kube-system", SA_NAMESPACE] {
            m.add(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}, "status": {"phase": "Active"}}));
        }
        m
    }

    /// Re-registers node `gpu-vm-1` (the H100 fixture) with the UUID of the H200 whose real
    /// gpu-probe reports the pods answer with, so what a probe saw is the GPU its pod was given.
    pub fn register_h200(&self) {
        let node: Value = fixtures::fixture("node-hami-v2.10-h100.json");
        let register = node["metadata"]["annotations"]["hami.io/node-nvidia-register"]
            .as_str()
            .unwrap_or_default()
            .replace(fixtures::FIXTURE_H100_UUID, fixtures::H200_UUID);
        self.patch(
            "nodes",
            "",
            "gpu-vm-1",
            json!({"metadata": {"annotations": {"hami.io/node-nvidia-register": register}}}),
        );
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seconds of (virtual) time since the mock started.
    pub fn now_secs(&self) -> u64 {
        (Instant::now() - self.shared.start).as_secs()
    }

    pub(crate) fn notify(&self, rv: u64) {
        self.shared.changes.send_replace(rv);
    }

    pub fn kind_of(&self, kind: &str, api_version: &str) -> Option<Kind> {
        self.lock()
            .kinds
            .iter()
            .find(|k| k.kind == kind && k.api_version() == api_version)
            .cloned()
    }

    /// Serves another resource type (a CRD): its objects are stored and served as JSON.
    pub fn register_kind(&self, kind: Kind) -> &Self {
        self.lock().kinds.push(kind);
        self
    }

    /// Adds an object as a controller would (no validation); kind, namespace and name place it.
    pub fn add(&self, obj: Value) -> &Self {
        let kind_name = obj["kind"].as_str().unwrap_or_default();
        let api_version = obj["apiVersion"].as_str().unwrap_or("v1");
        let Some(kind) = self.kind_of(kind_name, api_version) else {
            panic!("mock: kind {kind_name} ({api_version}) is not served; register_kind it first");
        };
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let key = ObjKey::new(&kind, ns, name);
        let now = self.now_secs();
        let rv = {
            let mut st = self.lock();
            let stored = st.store.insert(key, obj, now);
            st.serve_crd(&kind, &stored);
            st.store.rv
        };
        self.notify(rv);
        self
    }

    /// Adds every item of a `*List` fixture, or a single-object fixture.
    pub fn add_fixture(&self, file: &str) -> &Self {
        let v: Value = fixtures::fixture(file);
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
                if item["apiVersion"].is_null() {
                    item["apiVersion"] = v["apiVersion"].clone();
                }
                self.add(item);
            }
        } else {
            self.add(v);
        }
        self
    }

    pub fn get(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        self.lock()
            .store
            .get(&ObjKey {
                resource: resource.into(),
                namespace: ns.into(),
                name: name.into(),
            })
            .cloned()
    }

    pub fn has(&self, resource: &str, ns: &str, name: &str) -> bool {
        self.get(resource, ns, name).is_some()
    }

    /// Names of the stored objects of a resource in a namespace.
    pub fn names(&self, resource: &str, ns: &str) -> Vec<String> {
        self.lock()
            .store
            .objects
            .keys()
            .filter(|k| k.resource == resource && k.namespace == ns)
            .map(|k| k.name.clone())
            .collect()
    }

    /// Lab pods (label `app.kubernetes.io/part-of=hami-isolation-lab`) still stored, Terminating
    /// ones included.
    pub fn lab_pods(&self) -> Vec<String> {
        self.lock()
            .store
            .objects
            .iter()
            .filter(|(k, v)| {
                k.resource == "pods"
                    && v["metadata"]["labels"]["app.kubernetes.io/part-of"] == "hami-isolation-lab"
            })
            .map(|(k, _)| format!("{}/{}", k.namespace, k.name))
            .collect()
    }

    /// A JSON merge patch of a stored object, as a controller would make it.
    pub fn patch(&self, resource: &str, ns: &str, name: &str, patch: Value) {
        let key = ObjKey {
            resource: resource.into(),
            namespace: ns.into(),
            name: name.into(),
        };
        self.apply(&key, &Step::Patch(patch));
    }

    /// Applies one scripted step now.
    pub fn apply(&self, key: &ObjKey, step: &Step) -> bool {
        if let Step::Schedule { webhook } = step {
            return self.schedule(key, *webhook);
        }
        let now = self.now_secs();
        let mut st = self.lock();
        let done = match step {
            Step::Schedule { .. } => false,
            Step::Log {
                container,
                text,
                previous,
            } => {
                let exists = st.store.get(key).is_some();
                let c = if *previous {
                    format!("{container}{}", http::PREVIOUS)
                } else {
                    container.clone()
                };
                st.logs
                    .insert((key.namespace.clone(), key.name.clone(), c), text.clone());
                exists
            }
            Step::Patch(p) => st.store.merge(key, p).is_some(),
            Step::Remove => {
                let removed = st.store.remove(key).is_some();
                if removed && key.resource == "nodes" {
                    // The pod garbage collector deletes the pods bound to a node that is gone.
                    let orphans: Vec<ObjKey> = st
                        .store
                        .objects
                        .iter()
                        .filter(|(k, v)| {
                            k.resource == "pods" && v["spec"]["nodeName"] == key.name.as_str()
                        })
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in orphans {
                        st.store.remove(&k);
                    }
                }
                removed
            }
            Step::Event {
                type_,
                reason,
                message,
                component,
            } => {
                let Some(obj) = st.store.get(key).cloned() else {
                    return false;
                };
                let n = st.store.rv + 1;
                let ev = json!({
                    "apiVersion": "v1", "kind": "Event",
                    "metadata": {"name": format!("{}.{:012x}", key.name, 0x1815_91de_0000u64 + n), "namespace": key.namespace},
                    "involvedObject": {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": key.name,
                                       "namespace": key.namespace, "uid": obj["metadata"]["uid"]},
                    "reason": reason, "message": message, "type": type_,
                    "source": {"component": component}, "reportingComponent": component,
                    "firstTimestamp": store::timestamp(now), "lastTimestamp": store::timestamp(now),
                    "count": 1
                });
                let ev_key = ObjKey {
                    resource: "events".into(),
                    namespace: key.namespace.clone(),
                    name: ev["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                };
                st.store.insert(ev_key, ev, now);
                true
            }
        };
        let rv = st.store.rv;
        drop(st);
        self.notify(rv);
        done
    }

    /// The scheduler's decision for pod `key` on the cluster as it is now: the binding (or the
    /// refusal) is applied at once, the kubelet's part runs on in the background. A GPU pod that
    /// hami-scheduler binds takes the node's lock first ([`MockApi::take_node_lock`]).
    fn schedule(&self, key: &ObjKey, webhook: bool) -> bool {
        let now = self.now_secs();
        let mut locked: Option<String> = None;
        let plan = {
            let mut st = self.lock();
            let Some(pod) = st.store.get(key).cloned() else {
                return false;
            };
            let placement = if st.placements.is_empty() {
                st.placement.clone()
            } else {
                match lifecycle::pick_node(&st.placements, &pod, &st.store) {
                    Ok(p) => Some(p.clone()),
                    Err(refusal) => {
                        drop(st);
                        let steps = refusal.steps;
                        for (_, step) in &steps {
                            self.apply(key, step);
                        }
                        return true;
                    }
                }
            };
            let Some(placement) = placement else {
                return false;
            };
            if !pod["metadata"]["deletionTimestamp"].is_null() {
                return false;
            }
            let placed: Vec<Value> = st
                .store
                .objects
                .iter()
                .filter(|(k, v)| {
                    k.resource == "pods"
                        && *k != key
                        && v["metadata"]["deletionTimestamp"].is_null()
                })
                .map(|(_, v)| v.clone())
                .collect();
            let plan = placement.plan(&pod, webhook, &placed);
            let lock = if lifecycle::hami_binds(&plan, &pod) {
                Self::take_node_lock(&mut st, &placement.node, key, now)
            } else {
                Ok(false)
            };
            if let Err(held) = lock {
                let attempts = st.bind_attempts.entry(key.clone()).or_insert(0);
                *attempts += 1;
                let backoff = lifecycle::scheduler_backoff(*attempts);
                drop(st);
                for (_, step) in lifecycle::bind_refused(&held).steps {
                    self.apply(key, &step);
                }
                self.spawn_timeline(
                    key.clone(),
                    Timeline::default().at(backoff, Step::Schedule { webhook }),
                );
                return true;
            }
            if lock == Ok(true) {
                locked = Some(placement.node.clone());
            }
            plan
        };
        let rv = self.lock().store.rv;
        self.notify(rv);
        let (now, later): (Vec<_>, Vec<_>) = plan
            .steps
            .into_iter()
            .partition(|(d, _)| *d <= lifecycle::SCHEDULE_AFTER);
        for (_, step) in &now {
            self.apply(key, step);
        }
        let later = later.into_iter().fold(Timeline::default(), |t, (d, s)| {
            t.at(d - lifecycle::SCHEDULE_AFTER, s)
        });
        self.spawn_timeline(key.clone(), later);
        if let Some(node) = locked {
            // The device plugin's Allocate, when the kubelet admits the pod, releases the lock.
            let me = self.clone();
            let key = key.clone();
            tokio::spawn(async move {
                tokio::time::sleep(lifecycle::ALLOCATE_AFTER_BIND).await;
                me.release_node_lock(&node, &key);
            });
        }
        true
    }

    /// HAMi's node lock at Bind (`pkg/util/nodelock`): free, expired (5 min) or held by a pod
    /// that no longer exists → taken by `pod` (the node's `hami.io/mutex.lock` annotation set);
    /// held by another live pod → `Err(what its Bind error says)`. A node the store does not
    /// have is not locked (`Ok(false)`).
    fn take_node_lock(st: &mut State, node: &str, pod: &ObjKey, now: u64) -> Result<bool, String> {
        let node_key = ObjKey {
            resource: "nodes".into(),
            namespace: String::new(),
            name: node.into(),
        };
        if st.store.get(&node_key).is_none() {
            return Ok(false);
        }
        if let Some((holder, since)) = st.node_locks.get(node)
            && holder != pod
            && since.elapsed() < lifecycle::NODE_LOCK_EXPIRE
            && st.store.get(holder).is_some()
        {
            return Err(format!("node {node} has been locked within 5m0s"));
        }
        let value = format!("{},{},{}", store::timestamp(now), pod.namespace, pod.name);
        st.node_locks
            .insert(node.to_owned(), (pod.clone(), Instant::now()));
        st.bind_attempts.remove(pod);
        st.store.merge(
            &node_key,
            &json!({"metadata": {"annotations": {lifecycle::NODE_LOCK_KEY: value}}}),
        );
        Ok(true)
    }

    /// The device plugin's release of `node`'s lock after `pod`'s Allocate (only its own).
    fn release_node_lock(&self, node: &str, pod: &ObjKey) {
        let rv = {
            let mut st = self.lock();
            if st
                .node_locks
                .get(node)
                .is_none_or(|(holder, _)| holder != pod)
            {
                return;
            }
            st.node_locks.remove(node);
            let node_key = ObjKey {
                resource: "nodes".into(),
                namespace: String::new(),
                name: node.into(),
            };
            st.store.merge(
                &node_key,
                &json!({"metadata": {"annotations": {lifecycle::NODE_LOCK_KEY: null}}}),
            );
            st.store.rv
        };
        self.notify(rv);
    }

    /// Runs `timeline` on object `key` from now (in the background).
    pub fn spawn_timeline(&self, key: ObjKey, timeline: Timeline) {
        let me = self.clone();
        let start = Instant::now();
        tokio::spawn(async move {
            let mut steps = timeline.steps;
            steps.sort_by_key(|(d, _)| *d);
            for (after, step) in steps {
                tokio::time::sleep_until(start + after).await;
                if !me.apply(&key, &step) && step != Step::Remove {
                    return;
                }
            }
        });
    }

    /// Runs a timeline over named objects from now (a device-plugin restart, …).
    pub fn start_world(&self, timeline: WorldTimeline) {
        let me = self.clone();
        let start = Instant::now();
        tokio::spawn(async move {
            let mut steps = timeline.steps;
            steps.sort_by_key(|(d, _, _)| *d);
            for (after, key, step) in steps {
                tokio::time::sleep_until(start + after).await;
                me.apply(&key, &step);
            }
        });
    }

    /// Places GPU pods on many nodes: each pod on the node its `nodeSelector` names (by the
    /// node's `kubernetes.io/hostname` label), then on a card there with the HAMi model.
    pub fn place_on_nodes(&self, placements: Vec<Placement>) -> &Self {
        self.lock().placements = placements;
        self
    }

    /// Places GPU pods with the HAMi model of [`lifecycle`].
    pub fn place_on(&self, placement: Placement) -> &Self {
        self.lock().placement = Some(placement);
        self
    }

    /// Replaces the default lifecycle of pod `name` with `timeline`.
    pub fn script_pod(&self, name: &str, timeline: Timeline) -> &Self {
        self.lock().pod_scripts.insert(name.into(), timeline);
        self
    }

    /// Loads an RBAC policy (manifests/rbac.yaml); from now on every request is authorized.
    pub fn enforce_rbac(&self, yaml: &str) -> &Self {
        let policy = Policy::from_yaml(yaml).unwrap_or_else(|e| panic!("RBAC policy: {e}"));
        self.lock().rbac = Some(policy);
        self
    }

    /// Adds a fault rule (applied in order, first match wins).
    pub fn fault(&self, fault: Fault) -> &Self {
        self.lock().faults.push(fault);
        self
    }

    /// Answers `GET /version` with `v` instead of the k3s fixture.
    pub fn set_version(&self, v: Value) -> &Self {
        self.lock().version = v;
        self
    }

    /// Revokes every token: requests get 401 from now on.
    pub fn revoke_tokens(&self) {
        self.lock().tokens.clear();
    }

    pub fn settings(&self, f: impl FnOnce(&mut Settings)) -> &Self {
        f(&mut self.lock().settings);
        self
    }

    /// Forgets the change log: watches resuming from an older resourceVersion get 410.
    pub fn compact(&self) {
        self.lock().store.compact();
    }

    /// A pseudo-random number in 0..1 (xorshift, seeded by the chaos settings).
    pub fn random(&self) -> f64 {
        let mut st = self.lock();
        if st.rng == 0x9e37_79b9_7f4a_7c15
            && let Some(c) = &st.settings.chaos
        {
            st.rng ^= c.seed;
        }
        let mut x = st.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        st.rng = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// `METHOD path` of every request (no query).
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

    /// The requests RBAC refused.
    pub fn denied(&self) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.denied).collect()
    }

    /// Requests still open (a leak when the command has returned).
    pub fn open(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.ended.is_none())
            .collect()
    }

    /// The faults that fired, by name.
    pub fn fired(&self) -> Vec<String> {
        self.seen().into_iter().filter_map(|s| s.fault).collect()
    }

    /// Sets the log of a container (served on `GET …/pods/NAME/log?container=…`, with
    /// `tailLines` and `limitBytes` applied).
    pub fn set_log(&self, ns: &str, pod: &str, container: &str, text: &str) -> &Self {
        self.lock()
            .logs
            .insert((ns.into(), pod.into(), container.into()), text.into());
        self
    }

    /// Sets the log of a container's previous run (`previous=true`; without one the server
    /// answers 400, as for a container that never restarted).
    pub fn set_previous_log(&self, ns: &str, pod: &str, container: &str, text: &str) -> &Self {
        self.lock().logs.insert(
            (
                ns.into(),
                pod.into(),
                format!("{container}{}", http::PREVIOUS),
            ),
            text.into(),
        );
        self
    }

    /// `timeline` for a pod that gets no lifecycle at all (stays as created).
    pub fn no_lifecycle() -> Timeline {
        Timeline::default()
    }
}

#[path = "../common/fixtures.rs"]
pub mod fixtures;
