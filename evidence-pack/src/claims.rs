//! From inputs to [`Summary`]: the environment table, one claim per exercise (cluster mode) or per
//! probe check (local mode), the cap searches for the chart, and the scope limits.
//!
//! Pure functions over parsed documents; no I/O. Invariant: a pass is never copied on trust. A
//! claim passes only when the tool that checked it recorded a pass (cluster-ctl's `result`,
//! gpu-probe's check status) AND lab-report's judge, run here over the evidence files, finds the
//! evidence shows it; otherwise it fails as UNSUPPORTED, naming the file. `verify` runs the same
//! judge again over the files inside the bundle ([`recheck`]). Measurements (overhead, compute
//! without a band) are listed apart and never count as a pass; anything unrecognised counts
//! against the bundle (an unknown result is a failure).

use std::collections::BTreeMap;

use lab_report::check::{CheckId, LocalClaimId};
use lab_report::judge::{self, EvidenceFile, Judgement, RunContext, Support};
use lab_report::probe::{self, CheckStatus, Report, ViewOutcome};
use lab_report::run::ExerciseResult;
use serde_json::{Value, json};

use crate::input::{Inputs, RunDoc};
use crate::model::{
    CapSearch, Claim, ClaimVerdict, Environment, GpuEnv, Measurement, Mode, Outcome, SCHEMA,
    SCHEMA_VERSION, Scope, Step, Summary, Totals,
};

/// What kind of isolation HAMi gives, stated in every report.
pub const SCOPE_STATEMENT: &str = "HAMi isolates GPU memory in software: HAMi-core, preloaded into \
each container through /etc/ld.so.preload, intercepts CUDA and NVML calls and refuses allocations \
beyond the slice. It is not a security boundary like MIG: code that bypasses the interception (a \
static binary, an allocation path HAMi-core does not hook) is not held to the slice.";

/// Where raw inputs live inside the bundle.
pub const RAW_DIR: &str = "raw";

pub fn raw_path(rel: &str) -> String {
    format!("{RAW_DIR}/{rel}")
}

/// Builds the summary. `timestamp` is RFC 3339 UTC, `bundle` the bundle's name.
pub fn summarize(inputs: &Inputs, timestamp: &str, bundle: &str) -> Summary {
    let mut warnings = inputs.warnings.clone();
    let mut measurements = Vec::new();
    let mut fleet_rows = Vec::new();
    let claims = match (&inputs.mode, &inputs.run, &inputs.fleet) {
        (Mode::Cluster, Some(run), _) => cluster_claims(run, inputs, &mut warnings),
        (Mode::Fleet, _, Some(fleet)) => {
            let (claims, rows) = crate::fleet::claims(fleet, &inputs.files, &mut warnings);
            fleet_rows = rows;
            claims
        }
        _ => local_claims(inputs, &mut measurements, &mut warnings),
    };
    let environment = environment(inputs);
    let cap_searches = cap_searches(inputs, &environment);
    let mut probe_notes: Vec<String> = Vec::new();
    for (_, report) in &inputs.probes {
        if !probe_notes.contains(&report.scope_note) {
            probe_notes.push(report.scope_note.clone());
        }
    }
    let scope = Scope {
        statement: SCOPE_STATEMENT.to_owned(),
        probe_notes,
        not_measured: not_measured(inputs.mode, &claims),
    };
    Summary {
        schema: SCHEMA.to_owned(),
        schema_version: SCHEMA_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        renderer: crate::render::renderer_id(),
        mode: inputs.mode,
        timestamp: timestamp.to_owned(),
        bundle: bundle.to_owned(),
        environment,
        totals: Totals::of(&claims),
        outcome: Outcome::from_claims(&claims),
        claims,
        scope,
        cap_searches,
        redactions: inputs.redactions.clone(),
        warnings,
        raw_files: inputs.files.keys().map(|k| raw_path(k)).collect(),
        measurements,
        conformance: crate::matrix::from_probes(&inputs.probes),
        fleet: fleet_rows,
    }
}

/// A claim's evidence as the judge reads it: paths relative to the run's folder, bytes from the
/// inputs (`None` when a named file is not there).
fn evidence_of<'a>(
    paths: &'a [String],
    files: &'a BTreeMap<String, Vec<u8>>,
) -> Vec<EvidenceFile<'a>> {
    paths
        .iter()
        .map(|p| {
            let path = p.trim_start_matches("./");
            EvidenceFile {
                path,
                bytes: files.get(path).map(Vec::as_slice),
            }
        })
        .collect()
}

/// The verdict of a claim the tool recorded as passed: pass only when the judge agrees.
fn judged_pass(
    id: &str,
    who: &str,
    j: &Judgement,
    warnings: &mut Vec<String>,
) -> (ClaimVerdict, Option<String>) {
    if j.is_supported() {
        return (ClaimVerdict::Pass, None);
    }
    let why = format!("UNSUPPORTED: {who} says pass, but {}", j.reason);
    warnings.push(format!("{id}: {why}"));
    (ClaimVerdict::Fail, Some(why))
}

fn cluster_claims(run: &RunDoc, inputs: &Inputs, warnings: &mut Vec<String>) -> Vec<Claim> {
    let ctx = run.context();
    run.exercises
        .iter()
        .map(|ex| {
            let id = ex.id.to_string();
            let mut reason = ex.reason.clone();
            let verdict = match ex.result {
                ExerciseResult::Pass => {
                    let j = judge::judge_exercise(&ex.id, &ctx, &evidence_of(&ex.evidence, &inputs.files));
                    let (verdict, why) = judged_pass(&id, "run.json", &j, warnings);
                    if let Some(why) = why {
                        reason = why;
                    }
                    verdict
                }
                ExerciseResult::Fail => ClaimVerdict::Fail,
                ExerciseResult::NotRun => ClaimVerdict::NotRun,
                ExerciseResult::Unknown => {
                    warnings.push(format!(
                        "{id}: unknown result in run.json, counted as a failure"
                    ));
                    ClaimVerdict::Fail
                }
            };
            let mut evidence = Vec::new();
            for path in &ex.evidence {
                let clean = path.trim_start_matches("./");
                if inputs.files.contains_key(clean) {
                    evidence.push(raw_path(clean));
                } else {
                    warnings.push(format!(
                        "{id}: evidence file `{path}` named in run.json is not in the input directory"
                    ));
                }
            }
            Claim {
                id,
                claim: ex.claim.clone(),
                verdict,
                reason,
                numbers: ex
                    .numbers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                evidence,
            }
        })
        .collect()
}

fn local_claims(
    inputs: &Inputs,
    measurements: &mut Vec<Measurement>,
    warnings: &mut Vec<String>,
) -> Vec<Claim> {
    let many = inputs.probes.len() > 1;
    let mut claims = Vec::new();
    for (path, report) in &inputs.probes {
        let stem = path.trim_end_matches(".json");
        let mut evidence = vec![path.clone()];
        let stderr = format!("{stem}.stderr");
        if inputs.files.contains_key(&stderr) {
            evidence.push(stderr);
        }
        let raw_evidence: Vec<String> = evidence.iter().map(|e| raw_path(e)).collect();
        for check in &report.checks {
            let id = LocalClaimId {
                report: many.then(|| stem.to_owned()),
                check: CheckId::parse(&check.id),
            };
            let mut reason = if check.environment && check.status == CheckStatus::Failed {
                format!("environment: {}", check.reason)
            } else {
                check.reason.clone()
            };
            let verdict = match check.status {
                CheckStatus::Passed => {
                    let j = judge::judge_local_claim(&id, &evidence_of(&evidence, &inputs.files));
                    if j.support == Support::Measured {
                        measurements.push(Measurement {
                            id: id.to_string(),
                            what: check.claim.clone(),
                            reason: j.reason,
                            numbers: probe_numbers(report, &check.id),
                            evidence: raw_evidence.clone(),
                        });
                        continue;
                    }
                    let (verdict, why) = judged_pass(&id.to_string(), path, &j, warnings);
                    if let Some(why) = why {
                        reason = why;
                    }
                    verdict
                }
                CheckStatus::Failed if check.environment => ClaimVerdict::NotRun,
                CheckStatus::Failed => ClaimVerdict::Fail,
                CheckStatus::Skipped => ClaimVerdict::NotRun,
            };
            claims.push(Claim {
                id: id.to_string(),
                claim: check.claim.clone(),
                verdict,
                reason,
                numbers: probe_numbers(report, &check.id),
                evidence: raw_evidence.clone(),
            });
        }
    }
    claims
}

/// A passing claim of a bundle whose evidence does not show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unsupported {
    pub claim: String,
    /// The evidence file at fault (archive path), when one is.
    pub file: Option<String>,
    pub why: String,
}

/// `verify`'s half of the judgement: every claim the summary lists as passed is judged again by
/// lab-report's judge over the evidence files inside the bundle (`files`: archive path → bytes).
pub fn recheck(summary: &Summary, files: &BTreeMap<String, Vec<u8>>) -> Vec<Unsupported> {
    let raw: BTreeMap<String, Vec<u8>> = files
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("raw/")?.to_owned(), v.clone())))
        .collect();
    let run: Result<RunContext, String> = match raw.get("run.json") {
        None => Err("raw/run.json is missing".into()),
        Some(bytes) => serde_json::from_slice::<RunDoc>(bytes)
            .map(|r| r.context())
            .map_err(|e| format!("raw/run.json does not parse: {e}")),
    };
    if summary.mode == Mode::Fleet {
        return crate::fleet::recheck(summary, &raw);
    }
    let mut out = Vec::new();
    for c in summary
        .claims
        .iter()
        .filter(|c| c.verdict == ClaimVerdict::Pass)
    {
        let paths: Vec<String> = c
            .evidence
            .iter()
            .map(|e| e.strip_prefix("raw/").unwrap_or(e).to_owned())
            .collect();
        let evidence = evidence_of(&paths, &raw);
        let j = match summary.mode {
            Mode::Local | Mode::Fleet => {
                judge::judge_local_claim(&LocalClaimId::parse(&c.id), &evidence)
            }
            Mode::Cluster => match &run {
                Ok(ctx) => judge::judge_exercise(
                    &lab_report::run::ExerciseId::parse(&c.id),
                    ctx,
                    &evidence,
                ),
                Err(why) => {
                    out.push(Unsupported {
                        claim: c.id.clone(),
                        file: Some(raw_path("run.json")),
                        why: why.clone(),
                    });
                    continue;
                }
            },
        };
        if !j.is_supported() {
            out.push(Unsupported {
                claim: c.id.clone(),
                file: j
                    .file
                    .as_deref()
                    .map(raw_path)
                    .or_else(|| c.evidence.first().cloned()),
                why: j.reason,
            });
        }
    }
    out
}

/// The measurements, one line each, for the terminal (empty when there are none).
pub fn measurements_text(s: &Summary) -> String {
    let mut out = String::new();
    for m in &s.measurements {
        out.push_str(&format!("measured {}: {}\n", m.id, m.reason));
    }
    out
}

/// MiB with two decimals, as a JSON number.
fn mib(bytes: u64) -> Value {
    json!((probe::mib(bytes) * 100.0).round() / 100.0)
}

fn device_of(id: &str, prefix: &str) -> Option<u32> {
    id.strip_prefix(prefix)?.parse().ok()
}

fn kebab<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The numbers behind one gpu-probe check, looked up by its id (`view.deviceN`, `cap.deviceN`,
/// `mechanism`); other ids get none.
fn probe_numbers(report: &Report, id: &str) -> BTreeMap<String, Value> {
    let mut n = BTreeMap::new();
    if let Some(dev) = device_of(id, "view.device") {
        if let Some(d) = report
            .view
            .as_ref()
            .and_then(|v| v.devices.iter().find(|d| d.index == dev))
        {
            n.insert("outcome".into(), kebab(&d.outcome));
            if let Some(b) = d.expected_bytes {
                n.insert("slice_mib".into(), mib(b));
            }
            if let Some(m) = d.nvml {
                n.insert("nvml_total_mib".into(), mib(m.total));
            }
            if let Some(b) = d.cuda_total_mem {
                n.insert("cuda_total_mem_mib".into(), mib(b));
            }
            if let Some(m) = d.cuda_mem_info {
                n.insert("cuda_mem_info_total_mib".into(), mib(m.total));
            }
            if let Some(t) = d.nvidia_smi_total_mib {
                n.insert("nvidia_smi_total_mib".into(), json!(t));
            }
        }
    } else if let Some(dev) = device_of(id, "cap.device") {
        if let Some(d) = report
            .cap
            .as_ref()
            .and_then(|c| c.devices.iter().find(|d| d.index == dev))
        {
            n.insert("outcome".into(), kebab(&d.outcome));
            if let Some(b) = d.expected_bytes {
                n.insert("slice_mib".into(), mib(b));
            }
            n.insert("held_mib".into(), mib(d.held_bytes));
            n.insert("ceiling_mib".into(), mib(d.ceiling_bytes));
            n.insert("alloc_calls".into(), json!(d.alloc_calls));
            n.insert("stopped_because".into(), kebab(&d.stopped_because));
            if let Some(b) = d.context_overhead_bytes {
                n.insert("context_overhead_mib".into(), mib(b));
            }
            if let Some(e) = &d.first_refusal {
                n.insert(
                    "first_refusal".into(),
                    json!(format!("{} ({})", e.name, e.code)),
                );
            }
            n.insert("hami_oom_lines".into(), json!(d.hami_oom_lines.len()));
            if let Some(b) = d.region_charged_at_peak_bytes {
                n.insert("region_charged_at_peak_mib".into(), mib(b));
            }
            n.insert("all_freed".into(), json!(d.all_freed));
        }
    } else if let Some(word) = id.strip_prefix("audit.")
        && let Some(a) = &report.audit
        && let Some(p) = a
            .paths
            .iter()
            .find(|p| lab_report::check::audit_path_matches(&p.path, &format!("audit.{word}")))
    {
        n.insert("path".into(), json!(p.path));
        n.insert("outcome".into(), kebab(&p.outcome));
        n.insert("held_mib".into(), mib(p.held_bytes));
        n.insert("past_slice_mib".into(), mib(p.past_slice_bytes));
        if let Some(b) = a.slice_bytes {
            n.insert("slice_mib".into(), mib(b));
        }
        n.insert("calls".into(), json!(p.calls));
        if let Some(e) = &p.refusal {
            n.insert("refusal".into(), json!(format!("{} ({})", e.name, e.code)));
        }
    } else if id == "overhead"
        && let Some(o) = &report.overhead
    {
        for l in o
            .alloc
            .iter()
            .chain(&o.free)
            .chain(&o.launch)
            .chain(&o.launch_sync)
        {
            n.insert(format!("{} p50_us", l.what), json!(l.p50_us));
            n.insert(format!("{} p99_us", l.what), json!(l.p99_us));
        }
        let mean = |v: &[f64]| {
            (!v.is_empty())
                .then(|| (v.iter().sum::<f64>() / v.len() as f64 * 100.0).round() / 100.0)
        };
        if let Some(g) = mean(&o.htod_gbps) {
            n.insert("htod_gbps_mean".into(), json!(g));
        }
        if let Some(g) = mean(&o.dtoh_gbps) {
            n.insert("dtoh_gbps_mean".into(), json!(g));
        }
    } else if id == "compute"
        && let Some(c) = &report.compute
    {
        n.insert(
            "kernels_per_second_mean".into(),
            json!(c.kernels_per_second_mean.round()),
        );
        n.insert(
            "spread".into(),
            json!((c.spread * 10000.0).round() / 10000.0),
        );
        n.insert("seconds".into(), json!(c.seconds));
        if let Some(l) = c.sm_limit_percent {
            n.insert("sm_limit_percent".into(), json!(l));
        }
        n.insert("throttling_expected".into(), json!(c.throttling_expected));
    } else if id == "selftest"
        && let Some(t) = &report.selftest
    {
        n.insert("library".into(), json!(t.library));
        n.insert("limit_mib".into(), json!(t.limit_mib));
        if let Some(v) = t.view_outcome {
            n.insert("view".into(), kebab(&v));
        }
        if let Some(v) = t.cap_outcome {
            n.insert("cap".into(), kebab(&v));
        }
        if let Some(b) = t.cap_held_bytes {
            n.insert("cap_held_mib".into(), mib(b));
        }
        if let Some(v) = t.mechanism_outcome {
            n.insert("mechanism".into(), kebab(&v));
        }
        if let Some(v) = t.sharing_capped {
            n.insert("sharing_capped".into(), json!(v));
        }
    } else if id == "mechanism"
        && let Some(m) = &report.mechanism
    {
        n.insert("outcome".into(), kebab(&m.outcome));
        n.insert(
            "ld_so_preload".into(),
            if m.ld_so_preload.entries.is_empty() {
                json!("none")
            } else {
                json!(m.ld_so_preload.entries.join(" "))
            },
        );
        let mapped = m
            .libraries
            .iter()
            .filter(|l| l.mapped_after_cuda_init == Some(true))
            .count();
        n.insert("libraries_mapped".into(), json!(mapped));
        n.insert("shared_region_exists".into(), json!(m.shared_region.exists));
        if let Some(r) = &m.shared_region.region {
            let limits: Vec<Value> = r.limits.iter().map(|b| mib(*b)).collect();
            n.insert("region_limits_mib".into(), Value::Array(limits));
        }
    }
    n
}

fn environment(inputs: &Inputs) -> Environment {
    let mut env = Environment::default();
    if let Some(run) = &inputs.run {
        let c = &run.cluster;
        let given = |s: &String| (!s.is_empty()).then(|| s.clone());
        env.kubernetes = given(&c.server_version);
        env.node = given(&c.node);
        env.hami_chart = c.hami_chart_version.clone();
        env.hami_images = c.hami_images.clone();
        env.scheduler_image = c.scheduler_image.clone();
        env.slice_mib = run.slice_mib;
        env.oversubscribe_mib = run.oversubscribe_mib;
        env.gpus = c
            .gpus
            .iter()
            .map(|g| GpuEnv {
                model: given(&g.gpu_type),
                uuid: given(&g.uuid),
                memory_mib: g.devmem_mib,
                memory_source: if g.devmem_mib.is_some() {
                    "HAMi node registration, devmem".into()
                } else {
                    "not reported".into()
                },
            })
            .collect();
    }
    if let Some(fleet) = &inputs.fleet {
        let given = |s: &String| (!s.is_empty()).then(|| s.clone());
        env.kubernetes = given(&fleet.server_version);
        for card in fleet.nodes.iter().flat_map(|n| &n.cards) {
            if env
                .gpus
                .iter()
                .any(|g| g.uuid.as_deref() == Some(&card.uuid))
            {
                continue;
            }
            env.gpus.push(GpuEnv {
                model: given(&card.model),
                uuid: given(&card.uuid),
                memory_mib: Some(card.memory_mib),
                memory_source: "HAMi node registration (fleet.json)".into(),
            });
        }
        let mut slices: Vec<u64> = fleet
            .nodes
            .iter()
            .flat_map(|n| n.cards.iter().map(|c| c.slice_mib))
            .collect();
        slices.dedup();
        if let [one] = slices.as_slice() {
            env.slice_mib = Some(*one);
        }
        let mut versions: Vec<&String> = fleet
            .nodes
            .iter()
            .filter_map(|n| n.hami_version.as_ref())
            .collect();
        versions.sort();
        versions.dedup();
        env.hami_images = versions.into_iter().cloned().collect();
    }
    if let Some(v) = inputs
        .files
        .get("cluster/version.json")
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        && env.kubernetes.is_none()
    {
        env.kubernetes = v
            .get("gitVersion")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    env.k3s = env
        .kubernetes
        .as_ref()
        .filter(|v| v.contains("+k3s"))
        .cloned();
    if let Some(node_info) = first_node_info(inputs) {
        let get = |k: &str| node_info.get(k).and_then(Value::as_str).map(str::to_owned);
        env.containerd = get("containerRuntimeVersion");
        env.kernel = get("kernelVersion");
        env.os = get("osImage");
    }
    if env.hami_chart.is_none()
        && let Some(v) = inputs
            .files
            .get("cluster/helm-status.json")
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
    {
        env.hami_chart = helm_chart_version(&v);
    }
    for (_, report) in &inputs.probes {
        if env.driver_version.is_none() {
            env.driver_version = report.driver.driver_version.clone();
        }
        if env.cuda_driver.is_none() {
            env.cuda_driver = report
                .driver
                .cuda_driver_version
                .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10));
        }
        if env.kernel.is_none() {
            env.kernel = report.host.kernel.clone();
        }
        if env.gpu_probe_version.is_none() {
            env.gpu_probe_version = Some(report.tool_version.clone());
        }
        if inputs.run.is_none() && inputs.fleet.is_none() {
            for d in report.view.iter().flat_map(|v| v.devices.iter()) {
                if env
                    .gpus
                    .iter()
                    .any(|g| g.uuid.is_some() && g.uuid == d.uuid)
                {
                    continue;
                }
                let (memory_mib, memory_source) = card_memory(d);
                env.gpus.push(GpuEnv {
                    model: d.name.clone(),
                    uuid: d.uuid.clone(),
                    memory_mib,
                    memory_source,
                });
            }
        }
    }
    env
}

/// The card's memory as one probe device saw it: NVML's total is the card only when HAMi-core
/// did not virtualize it (the full card was visible, or no slice was set).
fn card_memory(d: &probe::ViewDevice) -> (Option<u64>, String) {
    let not_virtualized = matches!(
        d.outcome,
        ViewOutcome::ShowsFullCard | ViewOutcome::NoSliceExpected
    );
    match (d.nvml, not_virtualized) {
        (Some(m), true) => (
            Some(m.total / probe::MIB),
            "NVML total, not virtualized".into(),
        ),
        (Some(_), false) => (None, "unknown: NVML shows the slice under HAMi".into()),
        (None, _) => (None, "unknown: NVML gave no memory info".into()),
    }
}

fn first_node_info(inputs: &Inputs) -> Option<Value> {
    let v: Value = serde_json::from_slice(inputs.files.get("cluster/nodes.json")?).ok()?;
    // cluster-ctl writes a plain array of Nodes; `kubectl get -o json` a List with `items`.
    let node = if let Some(items) = v.as_array() {
        items.first()?.clone()
    } else if let Some(items) = v.get("items").and_then(Value::as_array) {
        items.first()?.clone()
    } else {
        v
    };
    node.get("status")?.get("nodeInfo").cloned()
}

/// `helm status -o json` (`chart.metadata.version`), `helm list -o json` (`chart: hami-2.10.0`), or
/// cluster-ctl's `{"releases": [<helm list entries>]}`; the release named `hami` when there are
/// several.
fn helm_chart_version(v: &Value) -> Option<String> {
    if let Some(releases) = v.get("releases").and_then(Value::as_array) {
        let hami = releases
            .iter()
            .find(|r| r.get("name").and_then(Value::as_str) == Some("hami"))
            .or_else(|| releases.first())?;
        return helm_chart_version(&Value::Array(vec![hami.clone()]));
    }
    if let Some(ver) = v.pointer("/chart/metadata/version").and_then(Value::as_str) {
        return Some(ver.to_owned());
    }
    let release = v.as_array().and_then(|a| a.first()).unwrap_or(v);
    let chart = release.get("chart")?.as_str()?;
    Some(chart.rsplit_once('-').map_or(chart, |(_, v)| v).to_owned())
}

fn cap_searches(inputs: &Inputs, env: &Environment) -> Vec<CapSearch> {
    let mut out = Vec::new();
    for (path, report) in &inputs.probes {
        for d in report.cap.iter().flat_map(|c| c.devices.iter()) {
            let view = report
                .view
                .as_ref()
                .and_then(|v| v.devices.iter().find(|v| v.index == d.index));
            let (mut card_mib, mut card_source) = view.map_or_else(
                || (None, "unknown: the report has no view section".to_owned()),
                card_memory,
            );
            if card_mib.is_none() {
                // The cluster's registration knows the card, matched by UUID (or the only GPU).
                let uuid = view.and_then(|v| v.uuid.clone());
                let gpu = env
                    .gpus
                    .iter()
                    .find(|g| g.uuid.is_some() && g.uuid == uuid)
                    .or_else(|| (env.gpus.len() == 1).then(|| &env.gpus[0]));
                if let Some(g) = gpu
                    && let Some(m) = g.memory_mib
                {
                    card_mib = Some(m);
                    card_source = g.memory_source.clone();
                }
            }
            out.push(CapSearch {
                source: raw_path(path),
                device: d.index,
                slice_bytes: d.expected_bytes,
                card_bytes: card_mib.map(|m| m * probe::MIB),
                card_source,
                held_bytes: d.held_bytes,
                outcome: kebab(&d.outcome).as_str().unwrap_or("unknown").to_owned(),
                steps: d
                    .steps
                    .iter()
                    .map(|s| Step {
                        request_bytes: s.request_bytes,
                        ok: s.ok,
                        code: s.code,
                        held_after_bytes: s.held_after_bytes,
                    })
                    .collect(),
            });
        }
    }
    out
}

fn not_measured(mode: Mode, claims: &[Claim]) -> Vec<String> {
    let mut out: Vec<String> = claims
        .iter()
        .filter(|c| c.verdict == ClaimVerdict::NotRun)
        .map(|c| format!("{}: {} (not run: {})", c.id, c.claim, c.reason))
        .collect();
    if mode == Mode::Fleet {
        out.push(
            "Sharing one card between several tenants' pods and refusing over-subscription: a \
fleet run checks each card with one probe pod held to a small slice; `cluster-ctl run` shows the rest \
on one card."
                .into(),
        );
    }
    if mode == Mode::Local {
        out.push(
            "Kubernetes scheduling, sharing one GPU between pods and refusing over-subscription: \
local mode runs no cluster exercises."
                .into(),
        );
    }
    out.push(
        "Compute (SM) limits, allocation paths other than cuMemAlloc_v2, and isolation against \
code that bypasses HAMi-core: not measured unless a claim above says so."
            .into(),
    );
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use super::*;
    use lab_report::run::{ClusterInfo as RunCluster, Exercise, ExerciseId, GpuEntry as RunGpu};

    const H100_BARE: &str = include_str!("../tests/data/local-h100-bare/gpu-probe.json");

    fn bare() -> Report {
        serde_json::from_str(H100_BARE).unwrap()
    }

    fn inputs(
        mode: Mode,
        run: Option<RunDoc>,
        probes: Vec<(String, Report)>,
        files: &[&str],
    ) -> Inputs {
        Inputs {
            mode,
            files: files
                .iter()
                .map(|f| ((*f).to_owned(), Vec::new()))
                .collect::<BTreeMap<_, _>>(),
            redactions: Vec::new(),
            run,
            fleet: None,
            probes,
            warnings: Vec::new(),
            skipped_bundles: Vec::new(),
        }
    }

    fn run_with(exercises: Vec<Exercise>) -> RunDoc {
        RunDoc {
            schema: crate::input::RUN_SCHEMA.into(),
            schema_version: 1,
            started_at: None,
            finished_at: Some("2026-11-25T10:16:40Z".into()),
            cluster: RunCluster {
                server_version: "v1.31.4+k3s1".into(),
                gpus: vec![RunGpu {
                    uuid: "GPU-x".into(),
                    gpu_type: "NVIDIA H100 80GB HBM3".into(),
                    devmem_mib: Some(81559),
                    ..RunGpu::default()
                }],
                ..RunCluster::default()
            },
            slice_mib: Some(8000),
            oversubscribe_mib: None,
            max_overhead_pct: None,
            exercises,
        }
    }

    fn ex(id: &str, result: &str, evidence: &[&str]) -> Exercise {
        Exercise {
            id: ExerciseId::parse(id),
            claim: format!("claim {id}"),
            result: serde_json::from_value(json!(result)).unwrap(),
            reason: String::new(),
            numbers: serde_json::Map::new(),
            evidence: evidence.iter().map(|e| (*e).to_owned()).collect(),
        }
    }

    #[test]
    fn unknown_result_fails_and_a_pass_without_its_evidence_is_unsupported() {
        let run = run_with(vec![
            ex("E1", "pass", &["probe/a.json", "probe/gone.json"]),
            ex("E2", "passed-ish", &[]),
            ex("E3", "not-run", &[]),
        ]);
        let i = inputs(
            Mode::Cluster,
            Some(run),
            Vec::new(),
            &["run.json", "probe/a.json"],
        );
        let s = summarize(&i, "2026-11-25T10:16:40Z", "b");
        let verdicts: Vec<ClaimVerdict> = s.claims.iter().map(|c| c.verdict).collect();
        assert_eq!(
            verdicts,
            [ClaimVerdict::Fail, ClaimVerdict::Fail, ClaimVerdict::NotRun]
        );
        // probe/a.json is there but empty: E1's pass is not supported, and the reason names it.
        assert!(
            s.claims[0]
                .reason
                .starts_with("UNSUPPORTED: run.json says pass, but probe/a.json is empty"),
            "{}",
            s.claims[0].reason
        );
        assert_eq!(s.claims[0].evidence, ["raw/probe/a.json"]);
        assert!(
            s.warnings.iter().any(|w| w.contains("probe/gone.json")),
            "{:?}",
            s.warnings
        );
        assert!(
            s.warnings
                .iter()
                .any(|w| w.starts_with("E2: unknown result")),
            "{:?}",
            s.warnings
        );
        assert_eq!(s.outcome, Outcome::ClaimFailed);
        assert!(s.scope.not_measured[0].starts_with("E3: claim E3"));
        assert_eq!(s.environment.k3s.as_deref(), Some("v1.31.4+k3s1"));
    }

    #[test]
    fn no_claims_is_incomplete_not_pass() {
        let i = inputs(
            Mode::Cluster,
            Some(run_with(Vec::new())),
            Vec::new(),
            &["run.json"],
        );
        assert_eq!(summarize(&i, "t", "b").outcome, Outcome::Incomplete);
    }

    #[test]
    fn local_claims_copy_check_status_and_environment_failures_are_not_run() {
        let mut r = bare();
        r.checks[2].environment = true;
        let i = inputs(Mode::Local, None, vec![("p.json".into(), r)], &["p.json"]);
        let s = summarize(&i, "t", "b");
        let got: Vec<(&str, ClaimVerdict)> = s
            .claims
            .iter()
            .map(|c| (c.id.as_str(), c.verdict))
            .collect();
        assert_eq!(
            got,
            [
                ("view.device0", ClaimVerdict::Fail),
                ("cap.device0", ClaimVerdict::Fail),
                ("mechanism", ClaimVerdict::NotRun)
            ]
        );
        assert!(s.claims[2].reason.starts_with("environment: "));
        assert_eq!(s.claims[1].numbers["held_mib"], json!(10000.0));
        assert_eq!(s.claims[1].evidence, ["raw/p.json"]);
    }

    #[test]
    fn several_reports_prefix_claim_ids_with_the_file() {
        let i = inputs(
            Mode::Local,
            None,
            vec![("a.json".into(), bare()), ("b.json".into(), bare())],
            &["a.json", "b.json", "b.stderr"],
        );
        let s = summarize(&i, "t", "b");
        assert_eq!(s.claims.len(), 6);
        assert_eq!(s.claims[3].id, "b:view.device0");
        assert_eq!(s.claims[3].evidence, ["raw/b.json", "raw/b.stderr"]);
        assert_eq!(s.environment.gpus.len(), 1, "same UUID listed once");
    }

    #[test]
    fn card_size_is_known_only_when_nvml_is_not_virtualized() {
        let r = bare();
        let mut d = r.view.unwrap().devices[0].clone();
        assert_eq!(card_memory(&d).0, Some(81559));
        d.outcome = ViewOutcome::ShowsSlice;
        let (mib, why) = card_memory(&d);
        assert_eq!(mib, None);
        assert!(why.contains("shows the slice"));
    }

    #[test]
    fn under_hami_the_chart_takes_the_card_from_the_node_registration() {
        let mut r = bare();
        if let Some(v) = r.view.as_mut() {
            v.devices[0].outcome = ViewOutcome::ShowsSlice;
        }
        let run = run_with(Vec::new());
        let i = inputs(
            Mode::Cluster,
            Some(run),
            vec![("probe/a.json".into(), r)],
            &["run.json"],
        );
        let s = summarize(&i, "t", "b");
        assert_eq!(s.cap_searches[0].card_bytes, Some(81559 * probe::MIB));
        assert_eq!(
            s.cap_searches[0].card_source,
            "HAMi node registration, devmem"
        );
        assert_eq!(s.cap_searches[0].steps.len(), 10);
    }

    #[test]
    fn audit_overhead_compute_selftest_checks_get_their_numbers() {
        let read = |f: &str| -> Report {
            serde_json::from_slice(
                &std::fs::read(format!(
                    "{}/tests/data/local-h100-more/{f}",
                    env!("CARGO_MANIFEST_DIR")
                ))
                .unwrap(),
            )
            .unwrap()
        };
        let audit = read("h100-bare-audit-expect-8000.json");
        let n = probe_numbers(&audit, "audit.child");
        assert_eq!(
            n["path"],
            json!("child with a cleared environment (cuMemAlloc_v2)")
        );
        assert_eq!(n["outcome"], json!("escaped"));
        assert_eq!(n["past_slice_mib"], json!(2000.0));
        let n = probe_numbers(&read("h100-bare-overhead.json"), "overhead");
        assert!(
            n.contains_key("cuMemAlloc_v2 p50_us") && n.contains_key("htod_gbps_mean"),
            "{n:?}"
        );
        let n = probe_numbers(&read("h100-bare-compute-5s.json"), "compute");
        assert_eq!(n["throttling_expected"], json!(false));
        let n = probe_numbers(&read("h100-selftest-libz-not-hami.json"), "selftest");
        assert_eq!(
            (n["cap"].clone(), n["sharing_capped"].clone()),
            (json!("not-enforced"), json!(false))
        );
    }

    #[test]
    fn helm_chart_version_from_status_or_list() {
        let list: Value = serde_json::from_str(include_str!(
            "../../cluster-ctl/tests/data/k8s/helm-list-deployed.json"
        ))
        .unwrap();
        assert_eq!(helm_chart_version(&list).as_deref(), Some("2.10.0"));
        let ctl = json!({"releases": [{"name": "other", "chart": "x-1.0.0"}, {"name": "hami", "chart": "hami-2.8.1"}]});
        assert_eq!(helm_chart_version(&ctl).as_deref(), Some("2.8.1"));
        assert_eq!(
            helm_chart_version(&json!({"error": "helm not available"})),
            None
        );
        let status = json!({"chart": {"metadata": {"version": "2.9.0"}}});
        assert_eq!(helm_chart_version(&status).as_deref(), Some("2.9.0"));
        assert_eq!(helm_chart_version(&json!({"name": "x"})), None);
    }
}
