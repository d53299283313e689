//! `cargo bench -p evidence-pack --bench pack_verify`: time and peak memory of `pack` and
//! `verify` over fleets of 100, 300 and 1,000 gpu-probe reports, generated from the real bare-H100
//! report in `tests/data/local-h100-bare` (each copy with its own GPU UUID and start time). Each
//! step runs in a fresh child process (this binary, re-run), so its peak resident memory
//! (`VmHWM`) is its own. Prints a table, the growth per report between sizes (linear if the
//! cost per report stays flat), and fails when a peak passes 1 GiB or the cost per report of
//! the largest fleet is more than twice that of the smallest.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lab_runner::{Cmd, Runner, SystemRunner};

const SIZES: &[usize] = &[100, 300, 1000];
const GIB: u64 = 1024 * 1024 * 1024;

/// This process's peak resident memory, from /proc/self/status (kB → bytes).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The child: runs one step and prints `seconds peak_bytes`.
fn child(step: &str, path: &Path, out: &Path) {
    let start = Instant::now();
    match step {
        "pack" => {
            let plan = evidence_pack::bundle::plan(path, None).unwrap();
            evidence_pack::bundle::write(&plan, out, true).unwrap();
        }
        "verify" => {
            let v = evidence_pack::bundle::verify(path).unwrap();
            assert!(v.files > 0);
        }
        other => panic!("unknown step {other}"),
    }
    println!("{} {}", start.elapsed().as_secs_f64(), peak_rss());
}

fn fleet(dir: &Path, n: usize) {
    let report = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/local-h100-bare/gpu-probe.json"
    ))
    .unwrap();
    let uuid = "GPU-e76c6d44-3fc6-be43-43a0-aac6aff8e787";
    assert!(report.contains(uuid));
    for i in 0..n {
        let text = report
            .replace(uuid, &format!("GPU-e76c6d44-3fc6-be43-43a0-{i:012x}"))
            .replace(
                "\"started_at_unix\": 17",
                &format!("\"started_at_unix\": {}", 17 + i % 7),
            );
        std::fs::write(dir.join(format!("node-{i:04}.json")), text).unwrap();
    }
}

struct Row {
    n: usize,
    input_bytes: u64,
    bundle_bytes: u64,
    /// The largest file inside the bundle (report.html), against the per-file limit.
    largest: (String, u64),
    pack: (f64, u64),
    verify: (f64, u64),
}

fn run_child(runner: &SystemRunner, step: &str, path: &Path, out: &Path) -> (f64, u64) {
    let exe = std::env::current_exe().unwrap();
    let cmd = Cmd::new(exe.to_str().unwrap())
        .args(["child", step, path.to_str().unwrap(), out.to_str().unwrap()])
        .timeout(Duration::from_secs(600));
    let o = runner.run_checked(&cmd).unwrap();
    let line = o.stdout.lines().last().unwrap_or_default().to_owned();
    let mut it = line.split_whitespace();
    (
        it.next().unwrap().parse().unwrap(),
        it.next().unwrap().parse().unwrap(),
    )
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        child(&args[2], Path::new(&args[3]), Path::new(&args[4]));
        return;
    }
    let runner = SystemRunner::new(false);
    let mut rows = Vec::new();
    for &n in SIZES {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("fleet");
        std::fs::create_dir(&dir).unwrap();
        fleet(&dir, n);
        let input_bytes: u64 = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        let bundle: PathBuf = work.path().join("bundle.tgz");
        let pack = run_child(&runner, "pack", &dir, &bundle);
        let verify = run_child(&runner, "verify", &bundle, &bundle);
        let (_, files) = evidence_pack::bundle::read_archive(&bundle).unwrap();
        let largest = files
            .iter()
            .max_by_key(|(_, b)| b.len())
            .map(|(n, b)| (n.clone(), b.len() as u64))
            .unwrap();
        rows.push(Row {
            n,
            input_bytes,
            bundle_bytes: std::fs::metadata(&bundle).unwrap().len(),
            largest,
            pack,
            verify,
        });
    }
    println!(
        "{:>7} {:>10} {:>8} {:>24} {:>7} {:>10} {:>9} {:>11}",
        "reports",
        "input MiB",
        "tgz MiB",
        "largest file (MiB)",
        "pack s",
        "pack peak",
        "verify s",
        "verify peak"
    );
    for r in &rows {
        println!(
            "{:>7} {:>10.1} {:>8.2} {:>24} {:>7.2} {:>6.0} MiB {:>9.2} {:>7.0} MiB",
            r.n,
            mib(r.input_bytes),
            mib(r.bundle_bytes),
            format!("{} {:.1}", r.largest.0, mib(r.largest.1)),
            r.pack.0,
            mib(r.pack.1),
            r.verify.0,
            mib(r.verify.1)
        );
    }
    let mut ok = true;
    for pair in rows.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let dn = (b.n - a.n) as f64;
        println!(
            "{} → {} reports, per added report: pack {:.2} ms, {:.1} KiB; verify {:.2} ms, {:.1} KiB",
            a.n,
            b.n,
            (b.pack.0 - a.pack.0) * 1000.0 / dn,
            (b.pack.1 as f64 - a.pack.1 as f64) / 1024.0 / dn,
            (b.verify.0 - a.verify.0) * 1000.0 / dn,
            (b.verify.1 as f64 - a.verify.1 as f64) / 1024.0 / dn,
        );
    }
    let (first, last) = (&rows[0], &rows[rows.len() - 1]);
    for (what, f, l) in [
        ("pack time", first.pack.0, last.pack.0),
        ("verify time", first.verify.0, last.verify.0),
    ] {
        let per_first = f / first.n as f64;
        let per_last = l / last.n as f64;
        if per_last > 2.0 * per_first {
            println!(
                "NOT LINEAR: {what} per report grew from {:.2} ms to {:.2} ms",
                per_first * 1000.0,
                per_last * 1000.0
            );
            ok = false;
        }
    }
    for r in &rows {
        if r.pack.1 > GIB || r.verify.1 > GIB {
            println!("OVER 1 GiB: {} reports", r.n);
            ok = false;
        }
    }
    println!(
        "{}",
        if ok {
            "within budget: linear, every peak under 1 GiB"
        } else {
            "OVER BUDGET"
        }
    );
    if !ok {
        std::process::exit(1);
    }
}
