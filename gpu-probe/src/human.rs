//! The report for people: one line per check (passed / failed / skipped, with why), the numbers
//! that matter, the verdict, and the scope note.

use std::fmt::Write as _;

use crate::report::{CheckStatus, Report, mib};

pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "gpu-probe {} — {}", r.tool_version, r.command);
    let driver = r.driver.driver_version.as_deref().unwrap_or("unknown");
    let cuda = r.driver.cuda_driver_version.map_or_else(
        || "unavailable".to_owned(),
        |v| format!("{}.{}", v / 1000, (v % 1000) / 10),
    );
    let _ = writeln!(s, "  driver {driver}, CUDA {cuda}");
    if let Some(e) = &r.driver.nvml_error {
        let _ = writeln!(s, "  NVML: {e}");
    }
    for e in &r.expected {
        let _ = writeln!(
            s,
            "  expected slice, device {}: {:.0} MiB (from {}={})",
            e.device,
            mib(e.bytes),
            e.source,
            e.raw
        );
    }
    if r.expected.is_empty() {
        let _ = writeln!(
            s,
            "  expected slice: none (no --expect-mib, no CUDA_DEVICE_MEMORY_LIMIT*)"
        );
    }
    if let Some(view) = &r.view {
        for d in &view.devices {
            let nvml = d
                .nvml
                .map_or_else(|| "-".into(), |m| format!("{:.0}", mib(m.total)));
            let total = d
                .cuda_total_mem
                .map_or_else(|| "-".into(), |t| format!("{:.0}", mib(t)));
            let info = d.cuda_mem_info.map_or_else(
                || "-".into(),
                |m| format!("{:.0}/{:.0}", mib(m.free), mib(m.total)),
            );
            let smi = d
                .nvidia_smi_total_mib
                .map_or_else(|| "-".into(), |t| t.to_string());
            let _ = writeln!(
                s,
                "  device {} {} {}: NVML total {nvml} MiB, cuDeviceTotalMem {total} MiB, cuMemGetInfo free/total {info} MiB, nvidia-smi {smi} MiB",
                d.index,
                d.name.as_deref().unwrap_or("?"),
                d.uuid.as_deref().unwrap_or("?"),
            );
        }
    }
    if let Some(cap) = &r.cap {
        for d in &cap.devices {
            let refusal = d.first_refusal.as_ref().map_or_else(
                || "no refusal".into(),
                |e| format!("first refusal {} ({})", e.name, e.code),
            );
            let _ = writeln!(
                s,
                "  cap device {}: held {:.0} MiB, ceiling {:.0} MiB ({}), {} calls, {refusal}, {} HAMi-core OOM lines, freed: {}",
                d.index,
                mib(d.held_bytes),
                mib(d.ceiling_bytes),
                d.ceiling_source,
                d.alloc_calls,
                d.hami_oom_lines.len(),
                if d.all_freed { "all" } else { "NOT all" }
            );
        }
    }
    if let Some(m) = &r.mechanism {
        for lib in &m.libraries {
            let exported: Vec<&str> = lib
                .symbols
                .iter()
                .filter(|x| x.exported)
                .map(|x| x.name.as_str())
                .collect();
            let _ = writeln!(
                s,
                "  injected {} (via {}): exists {}, mapped {}, hooks [{}]",
                lib.path,
                lib.named_in,
                lib.exists,
                lib.mapped_after_cuda_init
                    .map_or("unknown", |b| if b { "yes" } else { "no" }),
                exported.join(", ")
            );
        }
    }
    if let Some(a) = &r.audit {
        let slice = a
            .slice_bytes
            .map_or_else(|| "none".into(), |b| format!("{:.0} MiB", mib(b)));
        let _ = writeln!(
            s,
            "  audit device {} (slice {slice}, each path tries {:.0} MiB, {:.1}s):",
            a.device,
            mib(a.target_bytes),
            a.seconds
        );
        for p in &a.paths {
            let code = p
                .refusal
                .as_ref()
                .map_or_else(|| "-".into(), |e| format!("{} ({})", e.name, e.code));
            let _ = writeln!(
                s,
                "    {:<52} {:<14} held {:>7.0} MiB  past slice {:>6.0} MiB  refusal {code}",
                p.path,
                format!("{:?}", p.outcome),
                mib(p.held_bytes),
                mib(p.past_slice_bytes)
            );
        }
    }
    if let Some(o) = &r.overhead {
        let _ = writeln!(s, "  overhead device {}: {}", o.device, overhead_line(o));
    }
    if let Some(c) = &r.compute {
        let _ = writeln!(
            s,
            "  compute device {}: {:.1} busy kernels/s (spread {:.1}%) over {} windows of {}s; {}",
            c.device,
            c.kernels_per_second_mean,
            c.spread * 100.0,
            c.windows.len(),
            c.window_seconds,
            c.statement
        );
    }
    if let Some(t) = &r.selftest {
        let _ = writeln!(
            s,
            "  selftest {} with a {} MiB limit: {:?}",
            t.library, t.limit_mib, t.outcome
        );
        for reason in &t.reasons {
            let _ = writeln!(s, "    - {reason}");
        }
    }
    let _ = writeln!(s);
    for c in &r.checks {
        let tag = match c.status {
            CheckStatus::Passed => "PASS",
            CheckStatus::Failed if c.environment => "ENV ",
            CheckStatus::Failed => "FAIL",
            CheckStatus::Skipped => "SKIP",
        };
        let _ = writeln!(s, "[{tag}] {:<14} {}", c.id, c.claim);
        let _ = writeln!(s, "       {}", c.reason);
    }
    let _ = writeln!(s, "\n{}", r.verdict.summary);
    let _ = writeln!(s, "note: {}", r.scope_note);
    s
}

/// One line of the overhead numbers: p50/p99 per size, launch, copy bandwidth.
pub fn overhead_line(o: &crate::report::OverheadSection) -> String {
    let mut parts: Vec<String> = o
        .alloc
        .iter()
        .zip(&o.free)
        .map(|(a, f)| {
            format!(
                "alloc {} MiB p50 {:.0} µs p99 {:.0} µs / free p50 {:.0} µs",
                a.bytes / crate::report::MIB,
                a.p50_us,
                a.p99_us,
                f.p50_us
            )
        })
        .collect();
    if let Some(l) = &o.launch {
        parts.push(format!(
            "empty launch p50 {:.1} µs p99 {:.1} µs",
            l.p50_us, l.p99_us
        ));
    }
    if let Some(l) = &o.launch_sync {
        parts.push(format!("launch+sync p50 {:.1} µs", l.p50_us));
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    if !o.htod_gbps.is_empty() {
        parts.push(format!(
            "H→D {:.1} GB/s, D→H {:.1} GB/s (pinned, median)",
            median(&o.htod_gbps),
            median(&o.dtoh_gbps)
        ));
    }
    parts.extend(o.notes.iter().cloned());
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::*;

    #[test]
    fn shows_each_check_and_the_verdict() {
        let checks = vec![
            Check {
                id: "view.device0".into(),
                claim: "shows".into(),
                status: CheckStatus::Failed,
                reason: "full card".into(),
                environment: false,
            },
            Check {
                id: "cuda".into(),
                claim: "starts".into(),
                status: CheckStatus::Failed,
                reason: "no driver".into(),
                environment: true,
            },
        ];
        let r = Report::new("all", checks);
        let text = render(&r);
        assert!(text.contains("[FAIL] view.device0"), "{text}");
        assert!(text.contains("[ENV ] cuda"), "{text}");
        assert!(text.contains("ENVIRONMENT: cannot check (cuda)"), "{text}");
        assert!(text.contains("not a security boundary"), "{text}");
    }
}
