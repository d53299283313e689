//! The judgement of each claim from its evidence, in one place: pure functions from the evidence
//! files (path and bytes, as written beside `run.json` or stored in a bundle) to [`Judgement`]:
//! the evidence shows the claim ([`Support::Supported`]), it does not ([`Support::Unsupported`],
//! naming the file and why: missing, empty, unreadable, of the wrong kind, or saying otherwise),
//! or it is a measurement that claims nothing ([`Support::Measured`]).
//!
//! cluster-ctl decides every exercise with [`judge_exercise`] over the files it has just written;
//! evidence-pack `pack` and `verify` run the same function over the same files (inside the bundle),
//! so a pass cannot survive without the evidence that shows it. In local mode (a folder of
//! gpu-probe reports) [`judge_check`] re-judges each check from the report's own numbers.
//!
//! The rules read numbers, never a verdict word (`verified`, `enforced`, `shows-slice`, a check's
//! `passed`):
//! - E1: two Pod objects, both `schedulerName: hami-scheduler`, the same `nodeName`, and a GPU UUID
//!   common to their `hami.io/vgpu-devices-allocated` annotations.
//! - E2 / E3: one gpu-probe report with view and cap sections whose expected slice is the run's;
//!   for every device: every view source (NVML total, `cuDeviceTotalMem_v2`, `cuMemGetInfo_v2`
//!   total, nvidia-smi total) ≤ the slice; the cap search held ≤ the slice, its held bytes agree with
//!   its steps, an allocation was refused, and HAMi-core's `Device N OOM … / <limit>` line names the
//!   slice (the refusal is HAMi-core's).
//! - E4: the oversubscribe Pod is `Pending` and hami-scheduler's `FilteringFailed` event about it
//!   (by name and uid) names `CardInsufficientMemory`.
//! - E5: E1 over the two Pods, E2 over both probe reports, and in each report's mechanism section
//!   a library preloaded (`/etc/ld.so.preload` or `LD_PRELOAD`), present, mapped after CUDA init and
//!   exporting `cuMemAlloc_v2` itself, with a readable HAMi-core shared region whose limit per
//!   device is the slice; both reports probed the same GPU UUID, one the Pods were given.
//! - A1: the `audit` report's rows: none held more than the slice, and at least one was refused at
//!   or below it (rows not tried, or stopped without a refusal, show nothing either way).
//! - A2: the two `overhead` reports (share pod A, the baseline pod): every median latency with
//!   HAMi-core within `--max-overhead-pct` of the same one without.
//! - B1–B6 (bypass pods, [`crate::run::BYPASSES`]): contained when the API server refused the pod
//!   at admission (a `Status` with a policy's or webhook's denial), or when the pod was admitted
//!   and its probe report shows no GPU (CUDA and NVML see no device), or shows it held to what it
//!   was given (nothing for B1 and B6; the run's slice for B2–B5) by E2's rule or, for an `audit`
//!   report, A1's. Escaped when any view source or any held amount is more than it was given
//!   (the judgement names the memory it reached).
//! - Local checks: `view.deviceN`, `cap.deviceN`, `mechanism`, `audit.<path>`, `selftest` by the
//!   same rules; `overhead` and `compute` are measurements; any other id cannot pass.

use serde_json::{Map, Value, json};

use crate::MIB;
use crate::check::{CheckId, audit_path_matches};
use crate::k8s::{
    EventFacts, HAMI_SCHEDULER, OversubscribeEvidence, PodFacts, StatusFacts, describe_json,
    match_insufficient_memory,
};
use crate::probe::{self, AuditPath, LatencyStats, Report};
use crate::run::{self, ExerciseId};

/// Within a MiB counts as equal: nvidia-smi rounds to MiB.
pub const TOLERANCE: u64 = MIB;

/// What the evidence says about a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// The evidence shows the claim.
    Supported,
    /// The evidence is missing, unreadable, of the wrong kind, or shows otherwise.
    Unsupported,
    /// Numbers were measured; they claim nothing (never a pass).
    Measured,
}

/// A judgement: the support, why, the file it turned on and the numbers behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub support: Support,
    /// One line; for an unsupported claim it starts with the file at fault when there is one.
    pub reason: String,
    /// The evidence file (as named in the claim's evidence) the judgement turned on.
    pub file: Option<String>,
    pub numbers: Map<String, Value>,
}

impl Judgement {
    fn supported(reason: impl Into<String>) -> Self {
        Self {
            support: Support::Supported,
            reason: reason.into(),
            file: None,
            numbers: Map::new(),
        }
    }

    fn unsupported(file: Option<&str>, why: impl Into<String>) -> Self {
        let why = why.into();
        Self {
            support: Support::Unsupported,
            reason: match file {
                Some(f) => format!("{f} {why}"),
                None => why,
            },
            file: file.map(str::to_owned),
            numbers: Map::new(),
        }
    }

    fn measured(reason: impl Into<String>) -> Self {
        Self {
            support: Support::Measured,
            reason: reason.into(),
            file: None,
            numbers: Map::new(),
        }
    }

    fn with(mut self, key: &str, value: Value) -> Self {
        self.numbers.insert(key.to_owned(), value);
        self
    }

    pub fn is_supported(&self) -> bool {
        self.support == Support::Supported
    }
}

/// What the judge needs from `run.json` besides the evidence files.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RunContext {
    pub slice_mib: Option<u64>,
    pub max_overhead_pct: Option<f64>,
}

/// One evidence file: its path (relative to the run's folder) and its bytes (`None`: missing).
#[derive(Debug, Clone, Copy)]
pub struct EvidenceFile<'a> {
    pub path: &'a str,
    pub bytes: Option<&'a [u8]>,
}

/// An evidence file, read.
#[derive(Debug, Clone)]
pub enum Doc {
    Probe(Box<Report>),
    Pod(PodFacts),
    Events(Vec<EventFacts>),
    /// The API server's `Status` answer to a refused request.
    Status(StatusFacts),
    /// JSON of a kind no claim uses; the text says what it is.
    Other(String),
    /// Not JSON (stderr, manifests): kept for people, not judged.
    Text,
}

impl Doc {
    fn describe(&self) -> String {
        match self {
            Self::Probe(r) => format!("is a gpu-probe `{}` report", r.command),
            Self::Pod(p) => format!("is the Pod {}", p.name),
            Self::Events(_) => "is a list of Kubernetes Events".into(),
            Self::Status(st) => format!("is the API server's Status {} {}", st.code, st.reason),
            Self::Other(what) => what.clone(),
            Self::Text => "is not JSON".into(),
        }
    }
}

/// Reads one evidence file; `Err` says why it cannot be evidence (the caller names the file).
pub fn read_doc(path: &str, bytes: Option<&[u8]>) -> Result<Doc, String> {
    let Some(bytes) = bytes else {
        return Err("is missing".into());
    };
    if !path.ends_with(".json") {
        return Ok(Doc::Text);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(format!("is empty ({} bytes)", bytes.len()));
    }
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("is not valid JSON (cut off or damaged?): {e}"))?;
    if v.get("schema").and_then(Value::as_str) == Some(probe::SCHEMA) {
        return serde_json::from_value::<Report>(v)
            .map(|r| Doc::Probe(Box::new(r)))
            .map_err(|e| format!("does not follow the gpu-probe report schema: {e}"));
    }
    match crate::k8s::kind_of(&v) {
        Some("Pod") => return PodFacts::from_json(&v).map(Doc::Pod),
        Some("Status") => return StatusFacts::from_json(&v).map(Doc::Status),
        Some(k) if k.ends_with("List") && k != "PodList" => {
            return EventFacts::list_from_json(&v).map(Doc::Events);
        }
        _ => {}
    }
    if let Value::Array(items) = &v
        && items
            .iter()
            .all(|i| crate::k8s::kind_of(i) == Some("Event"))
    {
        return EventFacts::list_from_json(&v).map(Doc::Events);
    }
    Ok(Doc::Other(describe_json(&v)))
}

/// The evidence of one claim, read; the first file that cannot be read makes it unsupported.
struct Loaded<'a> {
    docs: Vec<(&'a str, Doc)>,
}

impl<'a> Loaded<'a> {
    fn read(files: &[EvidenceFile<'a>]) -> Result<Self, Judgement> {
        if files.is_empty() {
            return Err(Judgement::unsupported(None, "no evidence file is named"));
        }
        let mut docs = Vec::new();
        for f in files {
            let doc = read_doc(f.path, f.bytes)
                .map_err(|why| Judgement::unsupported(Some(f.path), why))?;
            docs.push((f.path, doc));
        }
        Ok(Self { docs })
    }

    /// Every JSON file must be of a kind `accepts` takes; the first other one is named.
    fn only(&self, accepts: impl Fn(&Doc) -> bool, what: &str) -> Result<(), Judgement> {
        for (path, doc) in &self.docs {
            if !matches!(doc, Doc::Text) && !accepts(doc) {
                return Err(Judgement::unsupported(
                    Some(path),
                    format!("{}, not {what}", doc.describe()),
                ));
            }
        }
        Ok(())
    }

    fn probes(&self, kind: fn(&Report) -> bool) -> Vec<(&'a str, &Report)> {
        self.docs
            .iter()
            .filter_map(|(p, d)| match d {
                Doc::Probe(r) if kind(r) => Some((*p, r.as_ref())),
                _ => None,
            })
            .collect()
    }

    fn pods(&self) -> Vec<(&'a str, &PodFacts)> {
        self.docs
            .iter()
            .filter_map(|(p, d)| match d {
                Doc::Pod(pod) => Some((*p, pod)),
                _ => None,
            })
            .collect()
    }

    fn statuses(&self) -> Vec<(&'a str, &StatusFacts)> {
        self.docs
            .iter()
            .filter_map(|(p, d)| match d {
                Doc::Status(st) => Some((*p, st)),
                _ => None,
            })
            .collect()
    }

    fn events(&self) -> Vec<(&'a str, &[EventFacts])> {
        self.docs
            .iter()
            .filter_map(|(p, d)| match d {
                Doc::Events(e) => Some((*p, e.as_slice())),
                _ => None,
            })
            .collect()
    }
}

/// Exactly `n` of `found`, else unsupported.
fn exactly<T: Copy>(found: &[T], n: usize, what: &str) -> Result<(), Judgement> {
    if found.len() == n {
        Ok(())
    } else {
        Err(Judgement::unsupported(
            None,
            format!("needs {n} {what} among its evidence, found {}", found.len()),
        ))
    }
}

fn is_all_report(r: &Report) -> bool {
    r.view.is_some() && r.cap.is_some()
}

fn is_audit_report(r: &Report) -> bool {
    r.audit.is_some()
}

fn is_overhead_report(r: &Report) -> bool {
    r.overhead.is_some()
}

fn is_compute_report(r: &Report) -> bool {
    r.compute.is_some()
}

fn m(bytes: u64) -> String {
    format!("{:.0} MiB", probe::mib(bytes))
}

fn mib_value(bytes: u64) -> Value {
    json!((probe::mib(bytes) * 100.0).round() / 100.0)
}

// ---------------------------------------------------------------------------------------------
// Exercises

/// Judges one exercise of a run from its evidence files.
pub fn judge_exercise(id: &ExerciseId, ctx: &RunContext, files: &[EvidenceFile<'_>]) -> Judgement {
    let loaded = match Loaded::read(files) {
        Ok(l) => l,
        Err(j) => return j,
    };
    let result = match id {
        ExerciseId::E1 => e1(&loaded),
        ExerciseId::E2 | ExerciseId::E3 => e2(&loaded, ctx),
        ExerciseId::E4 => e4(&loaded),
        ExerciseId::E5 => e5(&loaded, ctx),
        ExerciseId::A1 => a1(&loaded, ctx),
        ExerciseId::A2 => a2(&loaded, ctx),
        ExerciseId::B1
        | ExerciseId::B2
        | ExerciseId::B3
        | ExerciseId::B4
        | ExerciseId::B5
        | ExerciseId::B6 => bypass_exercise(id, &loaded, ctx),
        ExerciseId::Other(other) => Err(Judgement::unsupported(
            None,
            format!("no rule judges exercise {other} in this version, so it cannot pass"),
        )),
    };
    result.unwrap_or_else(|j| j)
}

/// E1 over two pods: who placed them, on which node, on which GPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoResidency {
    pub schedulers: Vec<String>,
    pub nodes: Vec<Option<String>>,
    pub gpu_uuids: Vec<Vec<String>>,
    /// GPU UUIDs both pods hold.
    pub common: Vec<String>,
    /// Why it does not hold (empty: it holds).
    pub problems: Vec<String>,
}

impl CoResidency {
    pub fn holds(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn reason(&self) -> String {
        if self.holds() {
            format!(
                "both pods scheduled by {HAMI_SCHEDULER} on node {} and GPU {}",
                self.nodes[0].as_deref().unwrap_or("?"),
                self.common.first().map_or("?", String::as_str)
            )
        } else {
            self.problems.join("; ")
        }
    }
}

/// Both pods scheduled by hami-scheduler, on one node and one GPU UUID.
pub fn co_residency(a: &PodFacts, b: &PodFacts) -> CoResidency {
    let pods = [a, b];
    let mut problems = Vec::new();
    let gpu_uuids: Vec<Vec<String>> = pods
        .iter()
        .map(|p| match &p.gpu_uuids {
            Some(Ok(u)) => u.clone(),
            Some(Err(e)) => {
                problems.push(format!("pod {}: {e}", p.name));
                Vec::new()
            }
            None => Vec::new(),
        })
        .collect();
    for p in pods {
        if p.scheduler_name != HAMI_SCHEDULER {
            problems.push(format!(
                "pod {} has schedulerName {}, not {HAMI_SCHEDULER} (the webhook missed it)",
                p.name, p.scheduler_name
            ));
        }
    }
    let nodes: Vec<Option<String>> = pods.iter().map(|p| p.node_name.clone()).collect();
    if nodes[0].is_none() || nodes[0] != nodes[1] {
        problems.push(format!(
            "pods are on nodes {:?} and {:?}, not one node",
            nodes[0], nodes[1]
        ));
    }
    let common: Vec<String> = gpu_uuids[0]
        .iter()
        .filter(|u| gpu_uuids[1].contains(u))
        .cloned()
        .collect();
    if gpu_uuids.iter().any(Vec::is_empty) {
        problems.push(format!(
            "a pod has no {} GPU",
            crate::k8s::ALLOCATED_ANNOTATION
        ));
    } else if common.is_empty() {
        problems.push(format!(
            "pods hold different GPUs {:?} and {:?}",
            gpu_uuids[0], gpu_uuids[1]
        ));
    }
    CoResidency {
        schedulers: pods.iter().map(|p| p.scheduler_name.clone()).collect(),
        nodes,
        gpu_uuids,
        common,
        problems,
    }
}

fn two_pods(l: &Loaded<'_>) -> Result<CoResidency, Judgement> {
    let pods = l.pods();
    exactly(&pods, 2, "Pod objects (the two share pods)")?;
    let c = co_residency(pods[0].1, pods[1].1);
    if c.holds() {
        Ok(c)
    } else {
        Err(Judgement::unsupported(
            None,
            format!("{} and {}: {}", pods[0].0, pods[1].0, c.reason()),
        ))
    }
}

fn e1(l: &Loaded<'_>) -> Result<Judgement, Judgement> {
    l.only(|d| matches!(d, Doc::Pod(_)), "a Pod object")?;
    let c = two_pods(l)?;
    Ok(Judgement::supported(c.reason())
        .with("gpu_uuids", json!(c.gpu_uuids))
        .with("nodes", json!(c.nodes)))
}

/// The run's slice in bytes, when it has one.
fn run_slice(ctx: &RunContext) -> Option<u64> {
    ctx.slice_mib.map(|s| s * MIB)
}

fn e2(l: &Loaded<'_>, ctx: &RunContext) -> Result<Judgement, Judgement> {
    l.only(
        |d| matches!(d, Doc::Probe(r) if is_all_report(r)),
        "a gpu-probe `all` report",
    )?;
    let reports = l.probes(is_all_report);
    exactly(&reports, 1, "gpu-probe `all` report")?;
    let (path, report) = reports[0];
    let slice = run_slice(ctx).ok_or_else(|| {
        Judgement::unsupported(
            None,
            "run.json gives no slice_mib to hold the report against",
        )
    })?;
    let reason = held_to_slice(path, report, Some(slice))?;
    Ok(Judgement::supported(format!("{path}: {reason}")).with("slice_mib", json!(slice / MIB)))
}

fn e4(l: &Loaded<'_>) -> Result<Judgement, Judgement> {
    l.only(
        |d| matches!(d, Doc::Pod(_) | Doc::Events(_)),
        "the oversubscribe Pod or its Events",
    )?;
    let pods = l.pods();
    let events = l.events();
    if let (true, Some((path, extra))) = (events.is_empty(), pods.get(1)) {
        // A second Pod where the Events should be.
        return Err(Judgement::unsupported(
            Some(path),
            format!("is the Pod {}, not a list of Events", extra.name),
        ));
    }
    exactly(&events, 1, "list of Events")?;
    exactly(&pods, 1, "Pod object (the oversubscribe pod)")?;
    let (pod_path, pod) = pods[0];
    let (events_path, events) = events[0];
    let evidence = match_insufficient_memory(events, &pod.name, pod.uid.as_deref());
    match (&evidence, pod.phase.as_str()) {
        (OversubscribeEvidence::Named { message, .. }, "Pending") => {
            Ok(Judgement::supported(format!(
                "{} is Pending; {HAMI_SCHEDULER} FilteringFailed: {message}",
                pod.name
            )))
        }
        (OversubscribeEvidence::Named { message, .. }, phase) => Err(Judgement::unsupported(
            Some(pod_path),
            format!(
                "shows phase {phase:?}, not Pending, although {HAMI_SCHEDULER} refused it ({message})"
            ),
        )),
        (
            OversubscribeEvidence::GenericOnly { message }
            | OversubscribeEvidence::SummaryOnly { message },
            _,
        ) => Err(Judgement::unsupported(
            Some(events_path),
            format!(
                "holds no {HAMI_SCHEDULER} FilteringFailed naming CardInsufficientMemory for {} (only: {message}; HAMi < 2.7 emits no per-reason events)",
                pod.name
            ),
        )),
        (OversubscribeEvidence::Nothing, "Pending") => Err(Judgement::unsupported(
            Some(events_path),
            format!(
                "holds no FilteringFailed event from {HAMI_SCHEDULER} about {} (is the pod on default-scheduler? run `cluster-ctl doctor`)",
                pod.name
            ),
        )),
        (OversubscribeEvidence::Nothing, phase) => Err(Judgement::unsupported(
            Some(pod_path),
            format!(
                "shows phase {phase:?}: it was scheduled beside the two slices, so memory was not accounted per card"
            ),
        )),
    }
}

fn e5(l: &Loaded<'_>, ctx: &RunContext) -> Result<Judgement, Judgement> {
    l.only(
        |d| matches!(d, Doc::Pod(_)) || matches!(d, Doc::Probe(r) if is_all_report(r)),
        "a share Pod or a gpu-probe `all` report",
    )?;
    let placement = two_pods(l)?;
    let reports = l.probes(is_all_report);
    exactly(&reports, 2, "gpu-probe `all` reports (one per share pod)")?;
    let slice = run_slice(ctx).ok_or_else(|| {
        Judgement::unsupported(
            None,
            "run.json gives no slice_mib to hold the reports against",
        )
    })?;
    let mut libraries = Vec::new();
    let mut probed_gpus = Vec::new();
    for (path, report) in &reports {
        held_to_slice(path, report, Some(slice))?;
        let slices = expected_slices(report);
        libraries.push(
            mechanism(report, &slices).map_err(|why| Judgement::unsupported(Some(path), why))?,
        );
        let uuids: Vec<&str> = report
            .view
            .iter()
            .flat_map(|v| v.devices.iter())
            .filter_map(|d| d.uuid.as_deref())
            .collect();
        match uuids.as_slice() {
            [uuid] if placement.common.iter().any(|c| c == uuid) => {
                probed_gpus.push(uuid.to_string())
            }
            [uuid] => {
                return Err(Judgement::unsupported(
                    Some(path),
                    format!(
                        "probed GPU {uuid}, not the GPU the pods were given ({:?} in {})",
                        placement.common,
                        l.pods()
                            .iter()
                            .map(|(p, _)| *p)
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                ));
            }
            _ => {
                return Err(Judgement::unsupported(
                    Some(path),
                    format!("shows {} GPU UUIDs; a share pod is given one", uuids.len()),
                ));
            }
        }
    }
    Ok(Judgement::supported(format!(
        "both pods are on GPU {} of node {} (E1), each held to its {} slice with HAMi-core's refusal (E2, E3), and in both containers {}",
        probed_gpus[0],
        placement.nodes[0].as_deref().unwrap_or("?"),
        m(slice),
        libraries[0]
    ))
    .with("gpu_uuids", json!(placement.gpu_uuids))
    .with("slice_mib", json!(slice / MIB)))
}

fn a1(l: &Loaded<'_>, ctx: &RunContext) -> Result<Judgement, Judgement> {
    l.only(
        |d| matches!(d, Doc::Probe(r) if is_audit_report(r) || is_overhead_report(r) || is_compute_report(r)),
        "a gpu-probe `audit`, `overhead` or `compute` report",
    )?;
    let reports = l.probes(is_audit_report);
    if reports.is_empty() {
        let named: Vec<String> = l
            .docs
            .iter()
            .filter(|(_, d)| !matches!(d, Doc::Text))
            .map(|(p, d)| format!("{p} {}", d.describe()))
            .collect();
        return Err(Judgement::unsupported(
            None,
            format!(
                "needs a gpu-probe `audit` report among its evidence, found none ({})",
                named.join("; ")
            ),
        ));
    }
    exactly(&reports, 1, "gpu-probe `audit` report")?;
    let (path, report) = reports[0];
    audit(path, report, run_slice(ctx))
}

fn a2(l: &Loaded<'_>, ctx: &RunContext) -> Result<Judgement, Judgement> {
    l.only(
        |d| matches!(d, Doc::Probe(r) if is_overhead_report(r)),
        "a gpu-probe `overhead` report",
    )?;
    let max = ctx.max_overhead_pct.ok_or_else(|| {
        Judgement::unsupported(
            None,
            "run.json gives no max_overhead_pct: overhead is a measurement, not a claim",
        )
    })?;
    let find = |want: String| {
        l.probes(is_overhead_report)
            .into_iter()
            .find(|(p, _)| *p == want)
            .ok_or_else(|| {
                Judgement::unsupported(
                    None,
                    format!("needs the overhead report {want} among its evidence"),
                )
            })
    };
    let (with_path, with) = find(run::probe_file(run::SHARE_A, Some("overhead")))?;
    let (_, without) = find(run::probe_file(run::BASELINE, Some("overhead")))?;
    let (Some(w), Some(wo)) = (&with.overhead, &without.overhead) else {
        return Err(Judgement::unsupported(
            Some(with_path),
            "has no overhead section",
        ));
    };
    let mut pairs: Vec<(String, &LatencyStats, &LatencyStats)> = Vec::new();
    for (a, b) in w
        .alloc
        .iter()
        .zip(&wo.alloc)
        .chain(w.free.iter().zip(&wo.free))
    {
        if a.bytes == b.bytes && a.what == b.what {
            pairs.push((format!("{} {}", a.what, m(a.bytes)), a, b));
        }
    }
    if let (Some(a), Some(b)) = (&w.launch, &wo.launch) {
        pairs.push((a.what.clone(), a, b));
    }
    if pairs.is_empty() {
        return Err(Judgement::unsupported(
            Some(with_path),
            "shares no latency with the baseline report",
        ));
    }
    let mut j = Judgement::supported(String::new());
    let mut worst: Option<(String, f64)> = None;
    for (what, a, b) in &pairs {
        if b.p50_us <= 0.0 {
            return Err(Judgement::unsupported(
                Some(with_path),
                format!("{what}: the baseline's median is {} µs", b.p50_us),
            ));
        }
        let pct = (a.p50_us - b.p50_us) / b.p50_us * 100.0;
        j.numbers.insert(
            format!("{what} p50 overhead_pct"),
            json!((pct * 10.0).round() / 10.0),
        );
        if worst.as_ref().is_none_or(|(_, w)| pct > *w) {
            worst = Some((what.clone(), pct));
        }
    }
    let (what, pct) = worst.unwrap_or_default();
    if pct > max {
        return Err(Judgement::unsupported(
            Some(with_path),
            format!(
                "shows {what} {pct:+.1} % slower than without HAMi-core (median), more than the {max} % bound"
            ),
        ));
    }
    j.reason = format!(
        "the largest median overhead is {what} at {pct:+.1} %, within the {max} % bound ({} latencies compared)",
        pairs.len()
    );
    Ok(j.with("max_overhead_pct", json!(max)))
}

// ---------------------------------------------------------------------------------------------
// Bypass exercises

/// What a bypass pod's evidence shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BypassOutcome {
    /// The API server refused the pod at admission.
    Refused { by: String, message: String },
    /// Admitted, and the probe inside it saw no GPU.
    NoGpu { why: String },
    /// Admitted, and held to what it was given.
    Held { detail: String },
    /// Admitted, and it saw or held more than it was given.
    Escaped {
        given: u64,
        reached: u64,
        detail: String,
    },
}

impl BypassOutcome {
    pub fn contained(&self) -> bool {
        !matches!(self, Self::Escaped { .. })
    }

    /// `refused` / `no-gpu` / `held` / `escaped`.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Refused { .. } => "refused",
            Self::NoGpu { .. } => "no-gpu",
            Self::Held { .. } => "held",
            Self::Escaped { .. } => "escaped",
        }
    }
}

/// Judges a bypass pod from the API server's refusal (`status`) or the probe report from inside
/// it (`probe`), against the `given` bytes (0: no GPU was requested). `Err`: the evidence shows
/// neither containment nor an escape, naming the file.
pub fn bypass_outcome(
    status: Option<(&str, &StatusFacts)>,
    probe: Option<(&str, &Report)>,
    given: u64,
) -> Result<BypassOutcome, Judgement> {
    match (status, probe) {
        (Some((sp, _)), Some((pp, _))) => Err(Judgement::unsupported(
            Some(sp),
            format!(
                "says the pod was refused at admission, but {pp} is a probe report from inside it: the evidence contradicts itself"
            ),
        )),
        (Some((sp, st)), None) => match st.admission_denial() {
            Some(d) => Ok(BypassOutcome::Refused {
                by: d.by(),
                message: d.message().to_owned(),
            }),
            None => Err(Judgement::unsupported(
                Some(sp),
                format!(
                    "is a Status {} {} ({:?}), not a denial by an admission policy or webhook: the pod was not shown refused at admission",
                    st.code, st.reason, st.message
                ),
            )),
        },
        (None, Some((pp, r))) => probe_outcome(pp, r, given),
        (None, None) => Err(Judgement::unsupported(
            None,
            "needs the API server's refusal (admission/<pod>.json) or a gpu-probe report from inside the pod",
        )),
    }
}

/// An admitted bypass pod, judged from its probe report's numbers.
fn probe_outcome(path: &str, r: &Report, given: u64) -> Result<BypassOutcome, Judgement> {
    let escaped = |reached: u64, detail: String| BypassOutcome::Escaped {
        given,
        reached,
        detail,
    };
    if let Some(audit) = &r.audit {
        let rows: Vec<(&AuditPath, Row)> = audit
            .paths
            .iter()
            .map(|p| (p, audit_row(p, given)))
            .collect();
        if let Some((p, _)) = rows
            .iter()
            .filter(|(_, row)| matches!(row, Row::Escaped { .. }))
            .max_by_key(|(p, _)| p.held_bytes)
        {
            return Ok(escaped(
                p.held_bytes,
                format!("audit path {} held {}", p.path, m(p.held_bytes)),
            ));
        }
        let capped: Vec<&str> = rows
            .iter()
            .filter(|(_, row)| *row == Row::Capped)
            .map(|(p, _)| p.path.as_str())
            .collect();
        if capped.is_empty() {
            return Err(Judgement::unsupported(
                Some(path),
                "has no audit row that held more or was refused at or below what the pod was given: it shows neither",
            ));
        }
        return Ok(BypassOutcome::Held {
            detail: format!(
                "no audit path held more than {}; refused at or below it: {}",
                m(given),
                capped.join(", ")
            ),
        });
    }
    let (Some(viewsec), Some(capsec)) = (&r.view, &r.cap) else {
        return Err(Judgement::unsupported(
            Some(path),
            format!(
                "is a gpu-probe `{}` report with neither view and cap sections nor an audit",
                r.command
            ),
        ));
    };
    if viewsec.devices.is_empty() && capsec.devices.is_empty() {
        return match r
            .checks
            .iter()
            .find(|c| c.id == "cuda" && c.status == probe::CheckStatus::Failed)
        {
            Some(c) => Ok(BypassOutcome::NoGpu {
                why: c.reason.clone(),
            }),
            None => Err(Judgement::unsupported(
                Some(path),
                "shows no device, but no failed `cuda` check says why: not shown to see no GPU",
            )),
        };
    }
    // The most any view source shows, and the most any cap search held.
    let mut seen: Option<(u64, String)> = None;
    for d in &viewsec.devices {
        let sources = [
            d.nvml.map(|n| (n.total, "NVML total")),
            d.cuda_total_mem.map(|t| (t, "cuDeviceTotalMem_v2")),
            d.cuda_mem_info.map(|c| (c.total, "cuMemGetInfo_v2 total")),
            d.nvidia_smi_total_mib
                .map(|t| (t * MIB, "nvidia-smi total")),
        ];
        for (value, name) in sources.into_iter().flatten() {
            if seen.as_ref().is_none_or(|(v, _)| value > *v) {
                seen = Some((
                    value,
                    format!("device {}'s {name} is {}", d.index, m(value)),
                ));
            }
        }
    }
    let held = capsec.devices.iter().max_by_key(|c| c.held_bytes).map(|c| {
        (
            c.held_bytes,
            format!("device {} held {}", c.index, m(c.held_bytes)),
        )
    });
    let over = |v: u64| v > given + TOLERANCE || (given == 0 && v > 0);
    match (&seen, &held) {
        (Some((s, sd)), Some((h, _))) if over(*s) && s >= h => {
            return Ok(escaped(*s, sd.clone()));
        }
        (_, Some((h, hd))) if *h > given => return Ok(escaped(*h, hd.clone())),
        (Some((s, sd)), _) if over(*s) => return Ok(escaped(*s, sd.clone())),
        _ => {}
    }
    if given == 0 {
        return Err(Judgement::unsupported(
            Some(path),
            "lists a device but no source reported its memory: not shown to see no GPU",
        ));
    }
    let mut lines = Vec::new();
    for d in &viewsec.devices {
        let v = view(r, d.index, given).map_err(|why| Judgement::unsupported(Some(path), why))?;
        let c = cap(r, d.index, given).map_err(|why| Judgement::unsupported(Some(path), why))?;
        lines.push(format!("{v}; {c}"));
    }
    Ok(BypassOutcome::Held {
        detail: lines.join("; "),
    })
}

/// The audit row of the region tamper (gpu-probe's `bypass::ROWS`), B5's attempt.
pub const REGION_TAMPER_ROW: &str = "region tamper";

/// B1–B6 over their evidence: the refusal or the probe report, and optionally the Pod.
fn bypass_exercise(
    id: &ExerciseId,
    l: &Loaded<'_>,
    ctx: &RunContext,
) -> Result<Judgement, Judgement> {
    let Some(b) = run::bypass(id) else {
        return Err(Judgement::unsupported(
            None,
            format!("{id} is not a bypass exercise"),
        ));
    };
    l.only(
        |d| matches!(d, Doc::Probe(_) | Doc::Status(_) | Doc::Pod(_)),
        "the API server's Status, a Pod or a gpu-probe report",
    )?;
    let statuses = l.statuses();
    let probes = l.probes(|_| true);
    if statuses.len() > 1 || probes.len() > 1 {
        return Err(Judgement::unsupported(
            None,
            format!(
                "needs at most one Status and one probe report among its evidence, found {} and {}",
                statuses.len(),
                probes.len()
            ),
        ));
    }
    let given = match b.given {
        run::Given::Nothing => 0,
        run::Given::Slice => match ctx.slice_mib {
            Some(mib) => mib * MIB,
            None => {
                return Err(Judgement::unsupported(
                    None,
                    "run.json has no slice_mib: what the pod was given is unknown",
                ));
            }
        },
    };
    // B5's attempt is the region tamper: of an audit report, only that row is its evidence (the
    // other bypass rows are other ways around HAMi-core, judged by A1).
    let tamper_only;
    let probe = match probes.first().copied() {
        Some((path, r)) if *id == ExerciseId::B5 && r.audit.is_some() => {
            let mut only = r.clone();
            if let Some(a) = only.audit.as_mut() {
                a.paths.retain(|p| p.path.starts_with(REGION_TAMPER_ROW));
                if a.paths.is_empty() {
                    return Err(Judgement::unsupported(
                        Some(path),
                        format!(
                            "is an audit report without the `{REGION_TAMPER_ROW}` row, which is what B5 tries"
                        ),
                    ));
                }
            }
            tamper_only = only;
            Some((path, &tamper_only))
        }
        other => other,
    };
    let outcome = bypass_outcome(statuses.first().copied(), probe, given)?;
    let numbers = |j: Judgement| {
        j.with(
            "outcome",
            json!(if outcome.contained() {
                "contained"
            } else {
                "escaped"
            }),
        )
        .with("shown", json!(outcome.word()))
        .with("given_mib", mib_value(given))
    };
    match &outcome {
        BypassOutcome::Refused { by, message } => Ok(numbers(Judgement::supported(format!(
            "contained: refused at admission by {by}: {message}"
        )))
        .with("refused_by", json!(by))),
        BypassOutcome::NoGpu { why } => Ok(numbers(Judgement::supported(format!(
            "contained: admitted, but the pod sees no GPU ({why})"
        )))),
        BypassOutcome::Held { detail } => Ok(numbers(Judgement::supported(format!(
            "contained: held to the {} it was given: {detail}",
            m(given)
        )))),
        BypassOutcome::Escaped {
            given,
            reached,
            detail,
        } => Err(numbers(Judgement::unsupported(
            probes.first().map(|(p, _)| *p),
            format!(
                "shows the pod ESCAPED: it reached {} ({detail}), {} more than the {} it was given",
                m(*reached),
                m(reached.saturating_sub(*given)),
                m(*given)
            ),
        ))
        .with("reached_mib", mib_value(*reached))),
    }
}

// ---------------------------------------------------------------------------------------------
// The probe report's numbers

/// `(device, slice bytes)` of every slice the report expected.
pub fn expected_slices(report: &Report) -> Vec<(u32, u64)> {
    report
        .expected
        .iter()
        .map(|e| (e.device, e.bytes))
        .collect()
}

/// E2's rule over one report: every expected device's view and cap are held to the slice
/// (`run_slice`: the slice the run asked for, which each expected slice must equal).
fn held_to_slice(path: &str, report: &Report, run_slice: Option<u64>) -> Result<String, Judgement> {
    let slices = expected_slices(report);
    if slices.is_empty() {
        return Err(Judgement::unsupported(
            Some(path),
            "expects no slice (no --expect-mib, no CUDA_DEVICE_MEMORY_LIMIT*): nothing to hold its numbers against",
        ));
    }
    let mut lines = Vec::new();
    for (device, slice) in slices {
        if let Some(want) = run_slice
            && want != slice
        {
            return Err(Judgement::unsupported(
                Some(path),
                format!(
                    "expected {} on device {device}, not the run's {} slice",
                    m(slice),
                    m(want)
                ),
            ));
        }
        let v =
            view(report, device, slice).map_err(|why| Judgement::unsupported(Some(path), why))?;
        let c =
            cap(report, device, slice).map_err(|why| Judgement::unsupported(Some(path), why))?;
        lines.push(format!("{v}; {c}"));
    }
    Ok(lines.join("; "))
}

/// The view rule for one device: at least one source, every source ≤ the slice.
pub fn view(report: &Report, device: u32, slice: u64) -> Result<String, String> {
    let d = report
        .view
        .as_ref()
        .and_then(|v| v.devices.iter().find(|d| d.index == device))
        .ok_or_else(|| format!("has no view of device {device}"))?;
    let mut sources: Vec<(&str, u64)> = Vec::new();
    if let Some(n) = d.nvml {
        sources.push(("NVML total", n.total));
    }
    if let Some(t) = d.cuda_total_mem {
        sources.push(("cuDeviceTotalMem_v2", t));
    }
    if let Some(c) = d.cuda_mem_info {
        sources.push(("cuMemGetInfo_v2 total", c.total));
    }
    if let Some(s) = d.nvidia_smi_total_mib {
        sources.push(("nvidia-smi total", s * MIB));
    }
    if sources.is_empty() {
        return Err(format!("device {device}: no source reported its memory"));
    }
    if let Some((name, value)) = sources.iter().find(|(_, v)| *v > slice + TOLERANCE) {
        return Err(format!(
            "shows device {device}'s {name} as {}, more than the {} slice: the pod sees more than its slice",
            m(*value),
            m(slice)
        ));
    }
    let list: Vec<String> = sources
        .iter()
        .map(|(n, v)| format!("{n} {}", m(*v)))
        .collect();
    Ok(format!(
        "device {device}'s view is at most the {} slice ({})",
        m(slice),
        list.join(", ")
    ))
}

/// The cap rule for one device: held ≤ slice, held agrees with the steps, a refusal was seen, and
/// HAMi-core's OOM line names the slice.
pub fn cap(report: &Report, device: u32, slice: u64) -> Result<String, String> {
    let c = report
        .cap
        .as_ref()
        .and_then(|c| c.devices.iter().find(|d| d.index == device))
        .ok_or_else(|| format!("has no cap search of device {device}"))?;
    if c.expected_bytes != Some(slice) {
        return Err(format!(
            "held device {device}'s cap search against {}, not the {} slice",
            c.expected_bytes.map_or_else(|| "no slice".to_owned(), m),
            m(slice)
        ));
    }
    let peak = c
        .steps
        .iter()
        .map(|s| s.held_after_bytes)
        .max()
        .unwrap_or(0);
    if peak != c.held_bytes {
        return Err(format!(
            "says device {device} held {} but its allocation steps reach {}: the numbers disagree",
            m(c.held_bytes),
            m(peak)
        ));
    }
    if c.held_bytes > slice {
        return Err(format!(
            "shows device {device} held {}, more than the {} slice",
            m(c.held_bytes),
            m(slice)
        ));
    }
    let refused = c.steps.iter().any(|s| !s.ok);
    let Some(first) = c.first_refusal.as_ref().filter(|_| refused) else {
        return Err(format!(
            "shows no refused allocation on device {device}: the search never met a limit"
        ));
    };
    let ooms: Vec<&probe::OomLine> = c
        .hami_oom_lines
        .iter()
        .filter(|o| o.device == device)
        .collect();
    let Some(oom) = ooms
        .iter()
        .find(|o| o.limit_bytes.abs_diff(slice) <= TOLERANCE)
    else {
        return Err(match ooms.first() {
            Some(o) => format!(
                "shows HAMi-core refusing device {device} at a limit of {}, not the {} slice",
                m(o.limit_bytes),
                m(slice)
            ),
            None => format!(
                "shows no HAMi-core `Device {device} OOM … / <limit>` line: the refusal is not attributed to HAMi-core"
            ),
        });
    };
    Ok(format!(
        "device {device} held {} ≤ the slice, then was refused ({}); HAMi-core: Device {device} OOM {} / {} ({} lines)",
        m(c.held_bytes),
        first.name,
        oom.requested_total_bytes,
        oom.limit_bytes,
        ooms.len()
    ))
}

/// The mechanism rule: a preloaded library, present, mapped after CUDA init, exporting
/// `cuMemAlloc_v2` itself; a readable shared region whose limit for each slice's device is it.
pub fn mechanism(report: &Report, slices: &[(u32, u64)]) -> Result<String, String> {
    let mech = report
        .mechanism
        .as_ref()
        .ok_or("has no mechanism section")?;
    let injected: Vec<&probe::LibraryCheck> = mech
        .libraries
        .iter()
        .filter(|l| l.named_in == "/etc/ld.so.preload" || l.named_in == "LD_PRELOAD")
        .collect();
    if injected.is_empty() {
        return Err("names no library injected through /etc/ld.so.preload or LD_PRELOAD".into());
    }
    let hooks = |l: &probe::LibraryCheck| -> Vec<String> {
        l.symbols
            .iter()
            .filter(|s| s.exported && s.resolved_in.as_deref().is_none_or(|r| r == l.path))
            .map(|s| s.name.clone())
            .collect()
    };
    let Some(lib) = injected.iter().find(|l| {
        l.exists
            && l.mapped_after_cuda_init == Some(true)
            && hooks(l).iter().any(|h| h == "cuMemAlloc_v2")
    }) else {
        let l = injected[0];
        return Err(format!(
            "shows {} (from {}) {}",
            l.path,
            l.named_in,
            if !l.exists {
                "missing".to_owned()
            } else if l.mapped_after_cuda_init != Some(true) {
                "not mapped after CUDA init".to_owned()
            } else {
                "not exporting cuMemAlloc_v2 itself".to_owned()
            }
        ));
    };
    let region = &mech.shared_region;
    let Some(r) = region.region.as_ref().filter(|_| region.exists) else {
        return Err(format!(
            "shows no readable HAMi-core shared region at {}{}",
            region.path,
            region
                .error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    };
    if slices.is_empty() {
        return Err(
            "expects no slice: the shared region's limits cannot be held against one".into(),
        );
    }
    for (device, slice) in slices {
        let limit = r.limits.get(*device as usize).copied().unwrap_or(0);
        if limit.abs_diff(*slice) > TOLERANCE {
            return Err(format!(
                "shows HAMi-core's shared region limiting device {device} to {}, not the {} slice",
                m(limit),
                m(*slice)
            ));
        }
    }
    Ok(format!(
        "{} (from {}) is mapped after CUDA init and exports {}; shared region {} limits {}",
        lib.path,
        lib.named_in,
        hooks(lib).join(", "),
        region.path,
        slices
            .iter()
            .map(|(d, s)| format!("device {d} to {}", m(*s)))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// What one audit row shows, from its numbers (never its outcome word).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    /// Held more than the slice.
    Escaped { past: u64 },
    /// Refused at or below the slice.
    Capped,
    /// Not tried, or not supported by the driver.
    NotTried,
    /// Stopped below the slice without a refusal: shows nothing.
    Unshown,
}

/// CUDA_ERROR_NOT_SUPPORTED.
const NOT_SUPPORTED: i64 = 801;

pub fn audit_row(p: &AuditPath, slice: u64) -> Row {
    if p.held_bytes > slice {
        Row::Escaped {
            past: p.held_bytes - slice,
        }
    } else if p.calls == 0
        || (p.held_bytes == 0 && p.refusal.as_ref().is_some_and(|r| r.code == NOT_SUPPORTED))
    {
        Row::NotTried
    } else if p.refusal.is_some() {
        Row::Capped
    } else {
        Row::Unshown
    }
}

fn audit(path: &str, report: &Report, run_slice: Option<u64>) -> Result<Judgement, Judgement> {
    let a = report
        .audit
        .as_ref()
        .ok_or_else(|| Judgement::unsupported(Some(path), "has no audit section"))?;
    let slice = a.slice_bytes.ok_or_else(|| {
        Judgement::unsupported(
            Some(path),
            "ran with no slice: nothing can escape or be capped",
        )
    })?;
    if let Some(want) = run_slice
        && want != slice
    {
        return Err(Judgement::unsupported(
            Some(path),
            format!(
                "audited against {}, not the run's {} slice",
                m(slice),
                m(want)
            ),
        ));
    }
    let rows: Vec<(&AuditPath, Row)> = a.paths.iter().map(|p| (p, audit_row(p, slice))).collect();
    let names = |want: fn(&Row) -> bool| -> Vec<String> {
        rows.iter()
            .filter(|(_, r)| want(r))
            .map(|(p, _)| p.path.clone())
            .collect()
    };
    let escaped = names(|r| matches!(r, Row::Escaped { .. }));
    let capped = names(|r| matches!(r, Row::Capped));
    let max_past = rows
        .iter()
        .filter_map(|(_, r)| match r {
            Row::Escaped { past } => Some(*past),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let numbers = |j: Judgement| {
        j.with("escaped", json!(escaped))
            .with("capped", json!(capped))
            .with("not_tried", json!(names(|r| matches!(r, Row::NotTried))))
            .with("max_past_slice_mib", mib_value(max_past))
            .with("slice_mib", mib_value(slice))
    };
    if !escaped.is_empty() {
        return Err(numbers(Judgement::unsupported(
            Some(path),
            format!(
                "shows {} path(s) holding more than the {} slice: {}",
                escaped.len(),
                m(slice),
                escaped.join(", ")
            ),
        )));
    }
    if capped.is_empty() {
        return Err(numbers(Judgement::unsupported(
            Some(path),
            "shows no path refused at or below the slice: nothing was shown",
        )));
    }
    Ok(numbers(Judgement::supported(format!(
        "{path}: all {} tried paths were refused at or below the {} slice",
        capped.len(),
        m(slice)
    ))))
}

// ---------------------------------------------------------------------------------------------
// Local mode

/// Judges one check of a gpu-probe report from the report's own numbers.
pub fn judge_check(path: &str, report: &Report, check: &CheckId) -> Judgement {
    let slice_of = |device: u32| {
        report
            .expected
            .iter()
            .find(|e| e.device == device)
            .map(|e| e.bytes)
    };
    let no_slice = |device: u32| {
        Judgement::unsupported(
            Some(path),
            format!("expects no slice on device {device}: nothing to hold its numbers against"),
        )
    };
    let from = |r: Result<String, String>| match r {
        Ok(reason) => Judgement::supported(format!("{path}: {reason}")),
        Err(why) => Judgement::unsupported(Some(path), why),
    };
    match check {
        CheckId::View { device } => match slice_of(*device) {
            Some(slice) => from(view(report, *device, slice)),
            None => no_slice(*device),
        },
        CheckId::Cap { device } => match slice_of(*device) {
            Some(slice) => from(cap(report, *device, slice)),
            None => no_slice(*device),
        },
        CheckId::Mechanism => from(mechanism(report, &expected_slices(report))),
        CheckId::Audit(word) => {
            let id = check.to_string();
            let Some(a) = &report.audit else {
                return Judgement::unsupported(Some(path), "has no audit section");
            };
            let Some(slice) = a.slice_bytes else {
                return Judgement::unsupported(Some(path), "ran the audit with no slice");
            };
            let Some(p) = a.paths.iter().find(|p| audit_path_matches(&p.path, &id)) else {
                return Judgement::unsupported(Some(path), format!("has no audit path `{word}`"));
            };
            match audit_row(p, slice) {
                Row::Capped => Judgement::supported(format!(
                    "{path}: {} held {} ≤ the {} slice, then was refused",
                    p.path,
                    m(p.held_bytes),
                    m(slice)
                )),
                Row::Escaped { past } => Judgement::unsupported(
                    Some(path),
                    format!(
                        "shows {} holding {}, {} past the {} slice",
                        p.path,
                        m(p.held_bytes),
                        m(past),
                        m(slice)
                    ),
                ),
                Row::NotTried => {
                    Judgement::unsupported(Some(path), format!("shows {} not tried", p.path))
                }
                Row::Unshown => Judgement::unsupported(
                    Some(path),
                    format!(
                        "shows {} stopping without a refusal below the slice: nothing shown",
                        p.path
                    ),
                ),
            }
        }
        CheckId::Overhead => match &report.overhead {
            Some(_) => Judgement::measured(format!(
                "a measurement, not a pass: {}",
                recorded_reason(report, check)
            )),
            None => Judgement::unsupported(Some(path), "has no overhead section"),
        },
        CheckId::Compute => match &report.compute {
            // Under CUDA_DEVICE_SM_LIMIT with an unlimited baseline of the same run, the ratio is
            // judged against its band; without one the throughput claims nothing.
            Some(c) => match &c.comparison {
                Some(cmp) => from(sm_band(cmp)),
                None => Judgement::measured(format!(
                    "a measurement, not a pass (no band around the SM limit was judged): {}",
                    recorded_reason(report, check)
                )),
            },
            None => Judgement::unsupported(Some(path), "has no compute section"),
        },
        CheckId::Conformance(cell) => match per_device_cell(report, cell) {
            // Several devices' results live only in the cell's note: nothing structured to
            // re-judge, so the cell is reported as measured, never counted as a pass.
            Some(note) => Judgement::measured(format!(
                "a measurement, not a pass (per-device numbers are not recorded apart): {note}"
            )),
            None => from(conformance_cell(report, cell)),
        },
        CheckId::Selftest => from(selftest(report)),
        CheckId::Limits | CheckId::Cuda | CheckId::Other(_) => Judgement::unsupported(
            Some(path),
            format!("holds check `{check}`, which no rule judges as a pass"),
        ),
    }
}

fn recorded_reason(report: &Report, check: &CheckId) -> String {
    let id = check.to_string();
    report
        .checks
        .iter()
        .find(|c| c.id == id)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

/// The selftest rule: the library was found, the child's cap held ≤ the limit, and two processes
/// sharing the slice held ≤ it together.
pub fn selftest(report: &Report) -> Result<String, String> {
    let t = report.selftest.as_ref().ok_or("has no selftest section")?;
    let limit = t.limit_mib * MIB;
    if !t.library_found {
        return Err(format!("shows {} not found", t.library));
    }
    let held = t.cap_held_bytes.ok_or("shows no cap search of the child")?;
    if held > limit {
        return Err(format!(
            "shows the child holding {}, more than the {} limit",
            m(held),
            m(limit)
        ));
    }
    let together = t
        .sharing_prober_held_bytes
        .ok_or("shows no two-process sharing run")?;
    if together > limit {
        return Err(format!(
            "shows two processes holding {} together, more than the {} limit",
            m(together),
            m(limit)
        ));
    }
    Ok(format!(
        "{}: the child held {} and two processes {} together, both ≤ the {} limit",
        t.library,
        m(held),
        m(together),
        m(limit)
    ))
}

/// Judges one local-mode claim over its evidence: exactly one gpu-probe report (the one named by
/// the claim's prefix, when it has one).
pub fn judge_local_claim(
    claim: &crate::check::LocalClaimId,
    files: &[EvidenceFile<'_>],
) -> Judgement {
    let loaded = match Loaded::read(files) {
        Ok(l) => l,
        Err(j) => return j,
    };
    if let Err(j) = loaded.only(|d| matches!(d, Doc::Probe(_)), "a gpu-probe report") {
        return j;
    }
    let reports = loaded.probes(|_| true);
    if let Err(j) = exactly(&reports, 1, "gpu-probe report") {
        return j;
    }
    let (path, report) = reports[0];
    if let Some(stem) = &claim.report
        && path != format!("{stem}.json")
    {
        return Judgement::unsupported(
            Some(path),
            format!("is not {stem}.json, the report this claim is about"),
        );
    }
    if !report
        .checks
        .iter()
        .any(|c| c.id == claim.check.to_string())
    {
        return Judgement::unsupported(Some(path), format!("holds no check `{}`", claim.check));
    }
    judge_check(path, report, &claim.check)
}

/// Throughput under an SM limit against the unlimited baseline of the same run: the ratio is
/// recomputed from the two throughputs and must lie inside the stated band around the expected
/// ratio.
fn sm_band(c: &crate::report_conformance::ComputeComparison) -> Result<String, String> {
    if c.baseline_kernels_per_second.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return Err(format!(
            "has a baseline of {} kernels/s: no throughput to compare with",
            c.baseline_kernels_per_second
        ));
    }
    let ratio = c.limited_kernels_per_second / c.baseline_kernels_per_second;
    if (ratio - c.ratio).abs() > 0.005 {
        return Err(format!(
            "records a ratio of {:.3}, but its throughputs ({:.0} / {:.0} kernels/s) give {ratio:.3}",
            c.ratio, c.limited_kernels_per_second, c.baseline_kernels_per_second
        ));
    }
    let off_points = (ratio - c.expected_ratio).abs() * 100.0;
    if off_points > c.band_percentage_points {
        return Err(format!(
            "shows {:.0} % of the baseline's throughput, {off_points:.0} points from the expected {:.0} % (band ±{:.0})",
            ratio * 100.0,
            c.expected_ratio * 100.0,
            c.band_percentage_points
        ));
    }
    Ok(format!(
        "{:.0} % of the baseline's throughput, inside ±{:.0} points of the expected {:.0} %",
        ratio * 100.0,
        c.band_percentage_points,
        c.expected_ratio * 100.0
    ))
}

/// The note of a capped multi-device cell (`devices.*` without one slice), whose per-device
/// numbers the report does not keep apart.
fn per_device_cell(report: &Report, cell_id: &str) -> Option<String> {
    use crate::report_conformance::{CellGroup, CellOutcome};
    let c = report
        .conformance
        .as_ref()?
        .cells
        .iter()
        .find(|c| c.id == cell_id)?;
    (c.group == CellGroup::Devices && c.slice_bytes.is_none() && c.outcome == CellOutcome::Capped)
        .then(|| c.note.clone())
}

/// One cell of `gpu-probe conformance`, judged from its own numbers: a memory cell passes only
/// when it held no more than its slice and a refusal was seen; a spelling cell only when the
/// limit the library enforced is the one predicted; an SM-limit cell only inside its band;
/// a robustness cell only when the library's accounting stayed intact.
fn conformance_cell(report: &Report, cell_id: &str) -> Result<String, String> {
    use crate::report_conformance::{CellGroup, CellOutcome};
    let Some(conf) = &report.conformance else {
        return Err("has no conformance section".to_owned());
    };
    let Some(c) = conf.cells.iter().find(|c| c.id == cell_id) else {
        return Err(format!("has no conformance cell `{cell_id}`"));
    };
    match c.outcome {
        CellOutcome::Capped => {}
        CellOutcome::Intact => return Ok(format!("{}: intact ({})", c.id, c.note)),
        other => return Err(format!("shows cell {} {}: {}", c.id, other.word(), c.note)),
    }
    if let Some(cmp) = &c.compute {
        return sm_band(cmp).map(|why| format!("{}: {why}", c.id));
    }
    if let (CellGroup::Spellings, Some(p), Some(e)) =
        (c.group, c.predicted_limit_bytes, c.enforced_limit_bytes)
        && p != e
    {
        return Err(format!(
            "shows cell {} enforcing {} where {} was predicted",
            c.id,
            m(e),
            m(p)
        ));
    }
    let Some(slice) = c.slice_bytes else {
        return Err(format!(
            "shows cell {} capped with no slice to hold it against",
            c.id
        ));
    };
    let Some(held) = c.held_bytes else {
        return Err(format!(
            "shows cell {} capped but records nothing held",
            c.id
        ));
    };
    if held > slice + crate::MIB {
        return Err(format!(
            "shows cell {} holding {}, more than its {} slice",
            c.id,
            m(held),
            m(slice)
        ));
    }
    if c.refusal.is_none() {
        return Err(format!(
            "shows cell {} capped but no refusal was seen",
            c.id
        ));
    }
    Ok(format!(
        "{}: held {} ≤ the {} slice, then refused",
        c.id,
        m(held),
        m(slice)
    ))
}
