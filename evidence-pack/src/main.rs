//! `evidence-pack`: `pack DIR` builds the evidence bundle (and signs it with `--sign KEY`),
//! `verify FILE.tgz` checks one (and its signature with `--trust PUB`), `keygen -o DIR` writes a
//! minisign key pair.
//!
//! Exit codes: 0 ok (verify: intact and every claim passed), 1 a claim failed or was not run
//! (verify), or a claim recorded as passed is not supported by its evidence (pack and verify),
//! 2 usage or bad input, 3 damaged, unreadable or untrusted bundle, or a file could not be
//! read/written.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use evidence_pack::bundle::{self, Written};
use evidence_pack::claims;
use evidence_pack::model::{ClaimVerdict, Outcome};
use evidence_pack::{Limits, sign};

/// Packs the lab's outputs into a deterministic, checksummed evidence bundle with a readable
/// validation report, and verifies such a bundle.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Exit codes: 0 ok (verify: intact and every claim passed), 1 verify: a claim failed or was not run; pack and verify: a claim recorded as passed is UNSUPPORTED by its evidence (named with the file), 2 usage or bad input, 3 damaged, unreadable or untrusted bundle, or a file could not be read or written."
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

/// Size limits (the same for `pack` and `verify`; a bundle packed with higher limits needs them
/// for `verify` too).
#[derive(Debug, Clone, Copy, Args)]
struct LimitArgs {
    /// The most one file may hold, in MiB (default 64).
    #[arg(long, value_name = "MIB")]
    max_entry_mib: Option<u64>,
    /// The most all files together may hold, in MiB (default 512).
    #[arg(long, value_name = "MIB")]
    max_total_mib: Option<u64>,
}

impl LimitArgs {
    fn limits(self) -> Limits {
        Limits::from_mib(self.max_entry_mib, self.max_total_mib)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Packs DIR (what `cluster-ctl run --out DIR` or `cluster-ctl fleet --out DIR` wrote, or a
    /// directory of gpu-probe JSON reports) into hami-evidence-<UTC time>.tgz: raw outputs (secrets redacted), summary.json,
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
        /// Replace an earlier bundle (and its .minisig) at the output path. Never replaces one of
        /// the inputs, nor a file that is not an evidence bundle.
        #[arg(long)]
        force: bool,
        /// Sign the bundle with this minisign secret key (from `evidence-pack keygen`):
        /// writes <bundle>.minisig beside it.
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
        /// The secret key's password, on this file's first line (without it, an encrypted key
        /// is asked for only when stdin is a terminal).
        #[arg(long, value_name = "FILE", requires = "sign")]
        sign_password_file: Option<PathBuf>,
        #[command(flatten)]
        limits: LimitArgs,
        /// Human text or JSON on stdout.
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
    },
    /// Checks a bundle: with --trust its signature first, then each entry's path and size,
    /// checksums, summary schema, reports against the summary, evidence files; prints the claims
    /// table. Exit 0 intact and all claims pass, 1 a claim failed or was not run, 3 damaged,
    /// unreadable or untrusted (the damaged file, or the key that signed, is named).
    Verify {
        file: PathBuf,
        /// Require a signature by this minisign public key (`evidence.pub`): FILE.minisig, or
        /// --signature.
        #[arg(long, value_name = "PUB")]
        trust: Option<PathBuf>,
        /// The signature file (default: FILE.minisig).
        #[arg(long, value_name = "SIG", requires = "trust")]
        signature: Option<PathBuf>,
        #[command(flatten)]
        limits: LimitArgs,
        /// Human text or JSON on stdout.
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
    },
    /// Writes a new minisign key pair: DIR/evidence.key (secret, mode 0600) and
    /// DIR/evidence.pub. Never replaces an existing key. Without --password-file or
    /// --unencrypted it asks for a password, and only when stdin is a terminal.
    Keygen {
        /// The directory to write the key pair in (created if missing).
        #[arg(short = 'o', long = "out", value_name = "DIR")]
        out: PathBuf,
        /// Encrypt the secret key with the password on this file's first line.
        #[arg(long, value_name = "FILE", conflicts_with = "unencrypted")]
        password_file: Option<PathBuf>,
        /// Write the secret key unencrypted (protect the file itself).
        #[arg(long)]
        unencrypted: bool,
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
            force,
            sign,
            sign_password_file,
            limits,
            output,
        } => pack(PackArgs {
            dir,
            out,
            timestamp,
            dry_run,
            force,
            sign,
            sign_password_file,
            limits: limits.limits(),
            output,
        }),
        Command::Verify {
            file,
            trust,
            signature,
            limits,
            output,
        } => verify(&file, trust, signature, &limits.limits(), output),
        Command::Keygen {
            out,
            password_file,
            unencrypted,
            output,
        } => {
            let password = match (password_file, unencrypted) {
                (Some(f), _) => sign::Password::File(f),
                (None, true) => sign::Password::Unencrypted,
                (None, false) => sign::Password::Prompt,
            };
            let w = sign::keygen(&out, &password)?;
            match output {
                Output::Json => println!("{}", json_line(&w)),
                Output::Human => {
                    println!(
                        "wrote {} (secret key, {}; keep it private) and {} (public key {}: give it to whoever verifies)",
                        w.secret_key.display(),
                        if w.encrypted {
                            "encrypted with the password"
                        } else {
                            "NOT encrypted"
                        },
                        w.public_key.display(),
                        w.key_id
                    );
                    println!(
                        "sign: evidence-pack pack DIR --sign {}{}",
                        w.secret_key.display(),
                        if w.encrypted {
                            " --sign-password-file FILE"
                        } else {
                            ""
                        }
                    );
                    println!(
                        "check: evidence-pack verify BUNDLE.tgz --trust {}   (or: minisign -Vm BUNDLE.tgz -p {})",
                        w.public_key.display(),
                        w.public_key.display()
                    );
                }
            }
            Ok(0)
        }
    }
}

#[derive(Debug)]
struct PackArgs {
    dir: PathBuf,
    out: Option<PathBuf>,
    timestamp: Option<String>,
    dry_run: bool,
    force: bool,
    sign: Option<PathBuf>,
    sign_password_file: Option<PathBuf>,
    limits: Limits,
    output: Output,
}

fn pack(a: PackArgs) -> Result<u8, evidence_pack::Error> {
    let plan = bundle::plan_limited(&a.dir, a.timestamp.as_deref(), &a.limits)?;
    for b in &plan.skipped_bundles {
        eprintln!("note: {b} looks like an evidence bundle; not packed into another");
    }
    let path = bundle::output_path(&plan, a.out.as_deref());
    let bytes = bundle::archive_bytes(&plan)?;
    // Every decision is taken before anything is written.
    let decision = bundle::decide_output(&plan, &path, &bytes, a.force)?;
    let sig_path = sign::signature_path(&path);
    let signing = match &a.sign {
        Some(key) => {
            let sk = sign::load_secret_key(key, a.sign_password_file.as_deref())?;
            let pk = sign::public_of(&sk)?;
            let action = sign::decide_signature(&plan, &sig_path, &pk, &bytes, a.force)?;
            Some((sk, pk, action))
        }
        None => None,
    };
    if a.dry_run {
        let verb = match decision {
            Written::Created => "would write",
            Written::Replaced => "would replace",
            Written::Unchanged => "would leave unchanged",
        };
        match a.output {
            Output::Json => println!(
                "{}",
                json_line(&serde_json::json!({
                    "dry_run": true,
                    "would_write": path.display().to_string(),
                    "action": decision,
                    "signature": signing.as_ref().map(|(_, _, act)| serde_json::json!({"file": sig_path.display().to_string(), "action": act})),
                    "plan": &plan,
                    "redactions": &plan.summary.redactions,
                    "warnings": &plan.summary.warnings,
                }))
            ),
            Output::Human => {
                println!("{verb} {} ({} files):", path.display(), plan.entries.len());
                for e in &plan.entries {
                    println!("  {}/{}  {} bytes  {}", plan.name, e.path, e.size, e.why);
                }
                if let Some((_, pk, _)) = &signing {
                    println!(
                        "would sign it: {} (key {})",
                        sig_path.display(),
                        sign::key_id(pk.keynum())
                    );
                }
                print_redactions_warnings(&plan.summary);
                print!("{}", bundle::claims_table(&plan.summary));
                print!("{}", claims::measurements_text(&plan.summary));
            }
        }
        return Ok(unsupported_code(&plan.summary));
    }
    let sig_text = match &signing {
        Some((sk, _, sign::SigWrite::Created | sign::SigWrite::Replaced)) => {
            Some(sign::sign_bytes(
                sk,
                &bytes,
                &sign::trusted_comment(
                    plan.mtime,
                    &path
                        .file_name()
                        .map_or_else(|| plan.file_name(), |n| n.to_string_lossy().into_owned()),
                ),
            )?)
        }
        _ => None,
    };
    let written = bundle::write_bytes(&plan, &path, &bytes, a.force)?;
    if let Some(text) = &sig_text {
        bundle::write_atomic(&sig_path, text.as_bytes(), 0o644)?;
    } else if signing.is_none()
        && written == Written::Replaced
        && std::fs::symlink_metadata(&sig_path).is_ok()
    {
        eprintln!(
            "warning: {} is left from the bundle this one replaced and does not sign it; sign again with --sign KEY, or remove it",
            sig_path.display()
        );
    }
    let sig_action = signing.as_ref().map(|(_, _, act)| *act);
    match a.output {
        Output::Json => println!(
            "{}",
            json_line(&serde_json::json!({
                "file": path.display().to_string(),
                "written": written,
                "signature": signing.as_ref().map(|(_, pk, act)| serde_json::json!({
                    "file": sig_path.display().to_string(),
                    "written": act,
                    "key_id": sign::key_id(pk.keynum()),
                })),
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
            if let (Some(act), Some((_, pk, _))) = (sig_action, &signing) {
                let verb = match act {
                    sign::SigWrite::Created => "signed",
                    sign::SigWrite::Replaced => "signed again",
                    sign::SigWrite::Unchanged => "already signed",
                };
                println!(
                    "{verb}: {} (key {})",
                    sig_path.display(),
                    sign::key_id(pk.keynum())
                );
            }
            print_redactions_warnings(&plan.summary);
            print!("{}", bundle::claims_table(&plan.summary));
            print!("{}", claims::measurements_text(&plan.summary));
        }
    }
    Ok(unsupported_code(&plan.summary))
}

fn verify(
    file: &std::path::Path,
    trust: Option<PathBuf>,
    signature: Option<PathBuf>,
    limits: &Limits,
    output: Output,
) -> Result<u8, evidence_pack::Error> {
    let trust = trust.map(|public_key| bundle::Trust {
        public_key,
        signature,
    });
    let v = match bundle::verify_with(file, limits, trust.as_ref()) {
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
                        "trusted": if trust.is_some() { Some(!matches!(e, evidence_pack::Error::Untrusted { .. })) } else { None },
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
                "signed_by": v.signed_by,
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
            if let Some(s) = &v.signed_by {
                println!(
                    "{}: signed by the trusted key {} ({}; trusted comment: {})",
                    file.display(),
                    s.key_id,
                    s.signature.display(),
                    s.trusted_comment
                );
            }
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
