//! `evidence-pack`: `pack DIR` builds the evidence bundle, `verify FILE.tgz` checks one.
//!
//! Exit codes: 0 ok (verify: intact and every claim passed), 1 a claim failed or was not run
//! (verify), or a claim recorded as passed is not supported by its evidence (pack and verify),
//! 2 usage or bad input, 3 damaged or unreadable bundle, or a file could not be read/written.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use evidence_pack::bundle::{self, Written};
use evidence_pack::claims;
use evidence_pack::model::{ClaimVerdict, Outcome};

/// Packs the lab's outputs into a deterministic, checksummed evidence bundle with a readable
/// validation report, and verifies such a bundle.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Exit codes: 0 ok (verify: intact and every claim passed), 1 verify: a claim failed or was not run; pack and verify: a claim recorded as passed is UNSUPPORTED by its evidence (named with the file), 2 usage or bad input, 3 damaged or unreadable bundle, or a file could not be read or written."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Packs DIR (what `cluster-ctl run --out DIR` wrote, or a directory of gpu-probe JSON
    /// reports) into hami-evidence-<UTC time>.tgz: raw outputs (secrets redacted), summary.json,
    /// report.md, report.html, junit.xml and SHA256SUMS. The time comes from the inputs, so the
    /// same inputs give the same bytes.
    Pack {
        /// The input directory.
        dir: PathBuf,
        /// Output file, or an existing directory to put hami-evidence-<time>.tgz in
        /// (default: that name in the current directory).
        #[arg(short = 'o', long = "out")]
        out: Option<PathBuf>,
        /// The bundle's time instead of the inputs' (RFC 3339, e.g. 2026-11-25T10:30:00Z, or Unix
        /// seconds).
        #[arg(long)]
        timestamp: Option<String>,
        /// Print what would be packed (files, sizes, why, redactions) and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Human text or JSON on stdout.
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
    },
    /// Checks a bundle: checksums, summary schema, reports against the summary, evidence files;
    /// prints the claims table. Exit 0 intact and all claims pass, 1 a claim failed or was not
    /// run, 3 damaged or unreadable (the damaged file is named).
    Verify {
        file: PathBuf,
        /// Human text or JSON on stdout.
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("evidence-pack: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn json_line(v: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

fn run(cli: Cli) -> Result<u8, evidence_pack::Error> {
    match cli.command {
        Command::Pack {
            dir,
            out,
            timestamp,
            dry_run,
            output,
        } => {
            let plan = bundle::plan(&dir, timestamp.as_deref())?;
            for b in &plan.skipped_bundles {
                eprintln!("note: {b} looks like an evidence bundle; not packed into another");
            }
            let path = bundle::output_path(&plan, out.as_deref());
            if dry_run {
                match output {
                    Output::Json => println!(
                        "{}",
                        json_line(&serde_json::json!({
                            "dry_run": true,
                            "would_write": path.display().to_string(),
                            "plan": &plan,
                            "redactions": &plan.summary.redactions,
                            "warnings": &plan.summary.warnings,
                        }))
                    ),
                    Output::Human => {
                        println!(
                            "would write {} ({} files):",
                            path.display(),
                            plan.entries.len()
                        );
                        for e in &plan.entries {
                            println!("  {}/{}  {} bytes  {}", plan.name, e.path, e.size, e.why);
                        }
                        print_redactions_warnings(&plan.summary);
                        print!("{}", bundle::claims_table(&plan.summary));
                        print!("{}", claims::measurements_text(&plan.summary));
                    }
                }
                return Ok(unsupported_code(&plan.summary));
            }
            let written = bundle::write(&plan, &path)?;
            match output {
                Output::Json => println!(
                    "{}",
                    json_line(&serde_json::json!({
                        "file": path.display().to_string(),
                        "written": written,
                        "files": plan.entries.len(),
                        "outcome": plan.summary.outcome,
                        "totals": plan.summary.totals,
                        "redactions": &plan.summary.redactions,
                        "warnings": &plan.summary.warnings,
                    }))
                ),
                Output::Human => {
                    let verb = match written {
                        Written::Created => "wrote",
                        Written::Replaced => "replaced",
                        Written::Unchanged => "unchanged (same bytes already there):",
                    };
                    println!("{verb} {} ({} files)", path.display(), plan.entries.len());
                    print_redactions_warnings(&plan.summary);
                    print!("{}", bundle::claims_table(&plan.summary));
                    print!("{}", claims::measurements_text(&plan.summary));
                }
            }
            Ok(unsupported_code(&plan.summary))
        }
        Command::Verify { file, output } => {
            let v = match bundle::verify(&file) {
                Ok(v) => v,
                Err(e) => {
                    if matches!(output, Output::Json) {
                        let damaged = match &e {
                            evidence_pack::Error::Damaged { file, .. } => Some(file.clone()),
                            _ => None,
                        };
                        println!(
                            "{}",
                            json_line(&serde_json::json!({
                                "intact": false,
                                "damaged_file": damaged,
                                "error": e.to_string(),
                                "exit_code": e.exit_code(),
                            }))
                        );
                    }
                    return Err(e);
                }
            };
            let code = match v.outcome {
                Outcome::AllPass => 0,
                Outcome::ClaimFailed | Outcome::Incomplete => 1,
            };
            match output {
                Output::Json => println!(
                    "{}",
                    json_line(&serde_json::json!({
                        "bundle": v.name,
                        "intact": true,
                        "reports_compared": v.reports_compared,
                        "files": v.files,
                        "outcome": v.outcome,
                        "totals": v.summary.totals,
                        "claims": v.summary.claims.iter().map(|c| serde_json::json!({"id": c.id, "verdict": c.verdict, "claim": c.claim})).collect::<Vec<_>>(),
                        "unsupported": v.unsupported,
                        "measurements": v.summary.measurements,
                        "exit_code": code,
                    }))
                ),
                Output::Human => {
                    let reports = if v.reports_compared {
                        "reports match summary.json".to_owned()
                    } else {
                        format!(
                            "reports not re-rendered: made by another renderer (evidence-pack {}, renderer {}; this is {} {})",
                            v.summary.tool_version,
                            if v.summary.renderer.is_empty() {
                                "unknown"
                            } else {
                                v.summary.renderer.as_str()
                            },
                            env!("CARGO_PKG_VERSION"),
                            evidence_pack::render::renderer_id()
                        )
                    };
                    println!(
                        "{}: intact ({} files, every SHA-256 matches, {reports})",
                        v.name, v.files
                    );
                    print!("{}", bundle::claims_table(&v.summary));
                    print!("{}", claims::measurements_text(&v.summary));
                    print_failed_reasons(&v.summary);
                    for u in &v.unsupported {
                        println!(
                            "UNSUPPORTED {}: {} (evidence file {})",
                            u.claim,
                            u.why,
                            u.file.as_deref().unwrap_or("none")
                        );
                    }
                }
            }
            Ok(code)
        }
    }
}

/// 1 when a claim the inputs recorded as passed is not supported by its evidence (the bundle is
/// written, with that claim failed and why), else 0.
fn unsupported_code(s: &evidence_pack::model::Summary) -> u8 {
    let unsupported = s.claims.iter().any(|c| c.reason.starts_with("UNSUPPORTED"));
    u8::from(unsupported)
}

/// Why each failed claim failed, one line each.
fn print_failed_reasons(s: &evidence_pack::model::Summary) {
    for c in s.claims.iter().filter(|c| c.verdict == ClaimVerdict::Fail) {
        println!("  {} failed: {}", c.id, c.reason);
    }
}

fn print_redactions_warnings(s: &evidence_pack::model::Summary) {
    for r in &s.redactions {
        println!("redacted {} × {} in raw/{}", r.count, r.kind, r.file);
    }
    for w in &s.warnings {
        eprintln!("warning: {w}");
    }
}
