//! Validation tiers: how every rendered file is checked before anything is written, and which
//! binary did it.
//!
//! Why a module of its own: the plan must say, per file, what vouches for it, and `apply` must
//! refuse what nothing vouched for. The tiers, strongest first:
//! - **real containerd**: the containerd found on this host (`--containerd-bin`, the one on PATH,
//!   or the one k3s ships under `<data-dir>/data/current/bin`) loads the rendered file with its
//!   drop-ins (`containerd -c FILE config dump` in a temp mirror) and must report `nvidia`;
//! - **parsed**: for files no real binary can check offline (k3s's `config.yaml`), the parse and
//!   the restart-with-rollback are the checks, and the plan says so;
//! - **unvalidated**: no containerd that reads the file's config version was found. This blocks
//!   the plan unless `--no-validate` is given, and then the plan says in words that the file was
//!   only parsed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lab_runner::{Cmd, Runner};
use serde::Serialize;

use crate::containerd;
use crate::k3s;
use crate::observe::CONTAINERD_CONFIG;
use crate::plan::{Blocker, Check, FileChange, Plan, Step};
use crate::root::HostRoot;

/// Time limit of one `containerd … config dump` / `--version`.
const CONTAINERD_LIMIT: Duration = Duration::from_secs(60);

/// Where a containerd binary was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// `--containerd-bin PATH`.
    Flag,
    /// Inside `--root DIR` (a tree that carries its own binaries).
    InRoot,
    /// `containerd` on PATH (the system's).
    Path,
    /// The one k3s unpacks under its data dir (`<data-dir>/data/current/bin/containerd`).
    K3s,
}

/// A real containerd binary that can load configs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Containerd {
    pub path: String,
    /// `containerd --version`'s number, e.g. `1.6.20`.
    pub version: String,
    pub major: u32,
    pub minor: u32,
    pub source: Source,
}

impl Containerd {
    /// Whether this containerd reads config `version` (1.x: 2; 2.x: 2 and 3; ≥ 2.3: also 4).
    pub fn reads(&self, config_version: i64) -> bool {
        match config_version {
            2 => true,
            3 => self.major >= 2,
            4 => (self.major, self.minor) >= (2, 3),
            _ => false,
        }
    }

    /// `/usr/bin/containerd (containerd 1.6.20, on PATH)`.
    pub fn label(&self) -> String {
        let from = match self.source {
            Source::Flag => "--containerd-bin",
            Source::InRoot => "inside --root",
            Source::Path => "on PATH",
            Source::K3s => "shipped with k3s",
        };
        format!("{} (containerd {}, {from})", self.path, self.version)
    }
}

/// What vouched for one rendered file (shown in the plan, checked by `apply`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "tier", rename_all = "kebab-case")]
pub enum Validation {
    /// A real containerd loaded it (with its drop-ins) and reported `nvidia` as default.
    RealContainerd { binary: String, detail: String },
    /// Only parsed: no real binary can check this kind of file offline.
    Parsed { what: String },
    /// The rendered file is wrong (a structural check or the real containerd refused it).
    Invalid { why: String },
    /// Nothing found that could load it: apply refuses unless `--no-validate`.
    Unvalidated { why: String, fix: String },
    /// `--no-validate`: written without a real check.
    Waived { why: String },
}

impl Validation {
    /// One line for the plan.
    pub fn describe(&self) -> String {
        match self {
            Self::RealContainerd { binary, detail } => {
                format!("validated by the real containerd {binary}: {detail}")
            }
            Self::Parsed { what } => format!("checked by parsing only: {what}"),
            Self::Invalid { why } => format!("INVALID: {why}; nothing will be written"),
            Self::Unvalidated { why, fix } => {
                format!("NOT validated: {why}; apply refuses it (fix: {fix})")
            }
            Self::Waived { why } => format!(
                "NOT validated by a real containerd (--no-validate given): {why}; it is written anyway"
            ),
        }
    }
}

/// The containerd binaries that can validate configs, best first: `--containerd-bin` alone when
/// given; else under `--root DIR` the tree's own, then the system's on PATH; on the running
/// system the one on PATH, then k3s's under `k3s_data_dir`.
pub fn find_containerds<R: Runner + ?Sized>(
    runner: &R,
    root: &HostRoot,
    flag: Option<&str>,
    k3s_data_dir: &str,
) -> Vec<Containerd> {
    let k3s_bin = format!(
        "{}/data/current/bin/containerd",
        k3s_data_dir.trim_end_matches('/')
    );
    let mut candidates: Vec<(String, Source)> = Vec::new();
    if let Some(f) = flag {
        candidates.push((f.to_owned(), Source::Flag));
    } else {
        if !root.is_system() {
            for host in ["/usr/bin/containerd", "/usr/local/bin/containerd"] {
                if let Ok(p) = root.path(Path::new(host)) {
                    candidates.push((p.to_string_lossy().into_owned(), Source::InRoot));
                }
            }
            if let Ok(p) = root.path(Path::new(&k3s_bin)) {
                candidates.push((p.to_string_lossy().into_owned(), Source::InRoot));
            }
        }
        candidates.push(("containerd".to_owned(), Source::Path));
        if root.is_system() {
            candidates.push((k3s_bin, Source::K3s));
        }
    }
    let mut found: Vec<Containerd> = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    for (path, source) in candidates {
        if !runner.exists(&path) {
            continue;
        }
        let real = lab_runner::which(&path)
            .and_then(|p| p.canonicalize().ok())
            .unwrap_or_else(|| PathBuf::from(&path));
        if seen.contains(&real) {
            continue;
        }
        seen.push(real);
        if let Some((version, major, minor)) = containerd_version(runner, &path) {
            found.push(Containerd {
                // Shown in plans: the file that really ran, not just `containerd`.
                path: lab_runner::which(&path).map_or(path, |p| p.to_string_lossy().into_owned()),
                version,
                major,
                minor,
                source,
            });
        }
    }
    found
}

/// `containerd --version` → (`1.6.20`, 1, 6).
pub fn containerd_version<R: Runner + ?Sized>(runner: &R, bin: &str) -> Option<(String, u32, u32)> {
    let out = runner
        .run(&Cmd::new(bin).arg("--version").timeout(CONTAINERD_LIMIT))
        .ok()
        .filter(lab_runner::Output::success)?;
    let version = crate::observe::containerd_version(&out.stdout)?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    Some((version, major, minor))
}

/// The major version of a containerd binary (`containerd --version`).
pub fn containerd_major<R: Runner + ?Sized>(runner: &R, bin: &str) -> Option<u32> {
    containerd_version(runner, bin).map(|(_, major, _)| major)
}

/// How validation is done for one run.
#[derive(Debug, Clone, Default)]
pub struct Validators {
    pub containerds: Vec<Containerd>,
    /// `--no-validate`: files nothing could load are written anyway (and the plan says so).
    pub waive: bool,
    /// The plan acts on the running system: a config version the host's own containerd cannot
    /// read is an error there, not just a missing validator.
    pub system: bool,
}

/// Validates every file the plan writes, records the result in each [`FileChange`], and adds a
/// blocker for each file nothing could validate (unless waived).
pub fn validate_plan<R: Runner + ?Sized>(
    plan: &mut Plan,
    runner: &R,
    root: &HostRoot,
    validators: &Validators,
) {
    let overrides: Vec<(String, String)> = plan
        .steps
        .iter()
        .filter_map(|s| match &s.step {
            Step::WriteFile(w) => Some((w.path.clone(), w.after.clone())),
            _ => None,
        })
        .collect();
    let mut blockers = Vec::new();
    for ps in &mut plan.steps {
        if let Step::WriteFile(f) = &mut ps.step {
            let v = validate_file(f, &overrides, runner, root, validators);
            if let Validation::Unvalidated { why, fix } = &v {
                blockers.push(Blocker {
                    problem: format!("{}: not validated: {why}", f.path),
                    fix: fix.clone(),
                });
            }
            f.validation = Some(v);
        }
    }
    plan.blockers.extend(blockers);
}

/// Validates one rendered file. `overrides` are the planned contents of every file the plan
/// writes (a drop-in is loaded with its root config as planned, and the other way round).
pub fn validate_file<R: Runner + ?Sized>(
    f: &FileChange,
    overrides: &[(String, String)],
    runner: &R,
    root: &HostRoot,
    validators: &Validators,
) -> Validation {
    let invalid = |why: String| Validation::Invalid { why };
    match f.check {
        Check::K3sYaml => match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&f.after) {
            Err(e) => invalid(format!("not YAML after the edit: {e}")),
            Ok(v) if !v.is_mapping() => invalid("not a YAML mapping after the edit".to_owned()),
            Ok(_) => Validation::Parsed {
                what: "parses as a YAML mapping; k3s has no offline config check, so the k3s restart is the real check, and a node that does not come back restores the backup".to_owned(),
            },
        },
        Check::K3sTemplate => {
            let problems = k3s::template_conflicts(&f.path, &f.after, true);
            if !problems.is_empty() {
                return invalid(
                    problems
                        .iter()
                        .map(|c| c.problem.as_str())
                        .collect::<Vec<_>>()
                        .join("; "),
                );
            }
            // What k3s will render: its current output (the base) plus this template's tables.
            let generated = overrides
                .iter()
                .find(|(p, _)| p == k3s::GENERATED_CONTAINERD)
                .map(|(_, t)| t.clone())
                .or_else(|| {
                    root.read_text(Path::new(k3s::GENERATED_CONTAINERD))
                        .ok()
                        .flatten()
                        .map(|t| t.text)
                });
            let Some(generated) = generated else {
                return unvalidated(
                    validators,
                    format!(
                        "{} does not exist yet, so the template cannot be loaded with k3s's base",
                        k3s::GENERATED_CONTAINERD
                    ),
                    "start k3s once so it renders its config, then run again (or pass --no-validate)",
                );
            };
            let tables: String = f
                .after
                .lines()
                .filter(|l| !l.contains("{{"))
                .collect::<Vec<_>>()
                .join("\n");
            let composed = format!("{generated}\n{tables}\n");
            with_containerd(
                &composed,
                k3s::GENERATED_CONTAINERD,
                &[(k3s::GENERATED_CONTAINERD.to_owned(), composed.clone())],
                "k3s's generated config.toml with this template's tables appended",
                runner,
                root,
                validators,
            )
        }
        Check::ToolkitConfig => match crate::toolkit::check(&f.after) {
            Err(why) => invalid(why),
            Ok(()) => Validation::Parsed {
                what: "parses as TOML with both settings in effect; the NVIDIA runtime has no offline config check and reads the file at the next container start".to_owned(),
            },
        },
        Check::ContainerdRoot | Check::ContainerdDropIn => {
            let root_text = overrides
                .iter()
                .find(|(p, _)| p == CONTAINERD_CONFIG)
                .map(|(_, t)| t.clone())
                .or_else(|| {
                    root.read_text(Path::new(CONTAINERD_CONFIG))
                        .ok()
                        .flatten()
                        .map(|t| t.text)
                })
                .unwrap_or_default();
            if f.check == Check::ContainerdRoot {
                match containerd::default_runtime(&f.after, &f.path) {
                    Err(e) => return invalid(e.to_string()),
                    Ok(Some(rt)) if rt == containerd::NVIDIA_RUNTIME => {}
                    Ok(other) => {
                        return invalid(format!(
                            "default_runtime_name is {other:?} after the edit"
                        ));
                    }
                }
            } else if let Err(e) = containerd::file_version(&f.after, &f.path) {
                return invalid(e.to_string());
            }
            with_containerd(
                &root_text,
                CONTAINERD_CONFIG,
                overrides,
                &format!("the planned {CONTAINERD_CONFIG} (with its drop-ins)"),
                runner,
                root,
                validators,
            )
        }
    }
}

fn unvalidated(validators: &Validators, why: String, fix: &str) -> Validation {
    if validators.waive {
        Validation::Waived {
            why: format!("{why}; it was only parsed"),
        }
    } else {
        Validation::Unvalidated {
            why,
            fix: fix.to_owned(),
        }
    }
}

/// Loads `root_config` (text `root_text`, with `overrides`) with the first containerd that reads
/// its config version.
fn with_containerd<R: Runner + ?Sized>(
    root_text: &str,
    root_config: &str,
    overrides: &[(String, String)],
    what: &str,
    runner: &R,
    root: &HostRoot,
    validators: &Validators,
) -> Validation {
    let version = match containerd::file_version(root_text, root_config) {
        Ok(v) => v.unwrap_or(2),
        Err(e) => return Validation::Invalid { why: e.to_string() },
    };
    let host_own = validators
        .containerds
        .iter()
        .find(|c| matches!(c.source, Source::Path | Source::Flag));
    if validators.system
        && root_config == CONTAINERD_CONFIG
        && let Some(c) = host_own.filter(|c| !c.reads(version))
    {
        return Validation::Invalid {
            why: format!(
                "{root_config} is config version {version}, which this host's containerd {} cannot read (it would ignore the CRI settings); fix: upgrade containerd to 2.x, or write a version 2 config",
                c.version
            ),
        };
    }
    let Some(bin) = validators.containerds.iter().find(|c| c.reads(version)) else {
        let found = if validators.containerds.is_empty() {
            "no containerd binary was found".to_owned()
        } else {
            format!(
                "only {} found, which cannot read it",
                validators
                    .containerds
                    .iter()
                    .map(Containerd::label)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let need = if version >= 3 {
            "a containerd >= 2.0"
        } else {
            "containerd"
        };
        return unvalidated(
            validators,
            format!("{what} is config version {version}, and {found}"),
            &format!(
                "install {need} (Debian: `apt-get install containerd`), or name one with --containerd-bin PATH; --no-validate writes it unvalidated"
            ),
        );
    };
    if validators.waive {
        return Validation::Waived {
            why: format!("{} was not asked to load it", bin.label()),
        };
    }
    match dump_with_containerd(runner, &bin.path, root, root_config, overrides) {
        Ok(rt) => Validation::RealContainerd {
            binary: bin.label(),
            detail: format!("`config dump` of {what} loads, default runtime {rt}"),
        },
        Err(why) => Validation::Invalid {
            why: format!("{} refused {what}: {why}", bin.label()),
        },
    }
}

/// Loads a root containerd config (and its drop-ins, with planned contents substituted) with
/// `containerd -c FILE config dump` inside a temp mirror of the tree, and returns the default
/// runtime containerd reports. Errors when containerd refuses the file or the default is not nvidia.
pub fn dump_with_containerd<R: Runner + ?Sized>(
    runner: &R,
    bin: &str,
    root: &HostRoot,
    root_config: &str,
    overrides: &[(String, String)],
) -> Result<String, String> {
    let mirror = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let text_of = |host: &str| -> Result<Option<String>, String> {
        if let Some((_, t)) = overrides.iter().find(|(p, _)| p == host) {
            return Ok(Some(t.clone()));
        }
        root.read_text(Path::new(host))
            .map(|f| f.map(|f| f.text))
            .map_err(|e| e.to_string())
    };
    let root_text = text_of(root_config)?.ok_or_else(|| format!("{root_config} does not exist"))?;
    let put = |host: &str, text: &str| -> Result<PathBuf, String> {
        let p = mirror.path().join(host.trim_start_matches('/'));
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
        }
        std::fs::write(&p, text).map_err(|e| e.to_string())?;
        Ok(p)
    };
    let patterns = containerd::imports(&root_text, root_config).map_err(|e| e.to_string())?;
    for pattern in &patterns {
        let host_pattern = containerd::import_host_pattern(Path::new(root_config), pattern);
        let rooted = root
            .path(&host_pattern)
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .into_owned();
        let mut hosts: Vec<String> = glob::glob(&rooted)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .filter_map(|p| root.host_path(&p))
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        // Planned new drop-ins that match the pattern exist only in the plan so far.
        for (p, _) in overrides {
            if glob::Pattern::new(&host_pattern.to_string_lossy()).is_ok_and(|g| g.matches(p))
                && !hosts.contains(p)
            {
                hosts.push(p.clone());
            }
        }
        for host in hosts.iter().filter(|h| h.as_str() != root_config) {
            if let Some(text) = text_of(host)? {
                put(host, &text)?;
            }
        }
    }
    let rewritten = containerd::rewrite_imports_into(&root_text, root_config, mirror.path())
        .map_err(|e| e.to_string())?;
    let file = put(root_config, &rewritten)?;
    let out = runner
        .run(
            &Cmd::new(bin)
                .args(["-c", &file.to_string_lossy(), "config", "dump"])
                .timeout(CONTAINERD_LIMIT),
        )
        .map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(format!(
            "`{bin} config dump` refused it: {}",
            out.stderr.lines().last().unwrap_or("").trim()
        ));
    }
    match containerd::default_runtime(&out.stdout, "containerd config dump")
        .map_err(|e| e.to_string())?
    {
        Some(rt) if rt == containerd::NVIDIA_RUNTIME => Ok(rt),
        other => Err(format!(
            "`{bin} config dump` reports default runtime {other:?} (does this containerd understand the file's config version?)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_runner::RecordingRunner;

    fn ctd(major: u32, minor: u32, source: Source) -> Containerd {
        Containerd {
            path: format!("/bin/c{major}"),
            version: format!("{major}.{minor}.0"),
            major,
            minor,
            source,
        }
    }

    #[test]
    fn which_containerd_reads_which_config_version() {
        let one = ctd(1, 6, Source::Path);
        let two = ctd(2, 1, Source::Path);
        let three = ctd(2, 3, Source::Path);
        assert!(one.reads(2) && !one.reads(3) && !one.reads(4));
        assert!(two.reads(2) && two.reads(3) && !two.reads(4));
        assert!(three.reads(4));
        assert!(!three.reads(1) && !three.reads(99));
    }

    fn v3_change() -> FileChange {
        let after = containerd::set_nvidia_default(
            "version = 3\n",
            CONTAINERD_CONFIG,
            containerd::Role::Root {
                version_if_missing: 3,
            },
            containerd::NVIDIA_BINARY,
        )
        .unwrap()
        .text;
        FileChange::new(
            CONTAINERD_CONFIG,
            None,
            after,
            0o644,
            Check::ContainerdRoot,
            vec![],
        )
    }

    #[test]
    fn no_containerd_that_reads_the_version_is_unvalidated_with_the_fix() {
        let f = v3_change();
        let overrides = [(f.path.clone(), f.after.clone())];
        let root = HostRoot::new("/nonexistent-tree");
        let runner = RecordingRunner::new(&[]);
        let only_old = Validators {
            containerds: vec![ctd(1, 6, Source::Path)],
            ..Validators::default()
        };
        let v = validate_file(&f, &overrides, &runner, &root, &only_old);
        let Validation::Unvalidated { why, fix } = &v else {
            panic!("{v:?}")
        };
        assert!(
            why.contains("config version 3") && why.contains("1.6.0"),
            "{why}"
        );
        assert!(
            fix.contains("containerd >= 2.0") && fix.contains("--no-validate"),
            "{fix}"
        );
        assert!(
            runner.calls().is_empty(),
            "a 1.x containerd must not be asked"
        );
        let waived = Validators {
            waive: true,
            ..only_old
        };
        let v = validate_file(&f, &overrides, &runner, &root, &waived);
        assert!(
            matches!(&v, Validation::Waived { why } if why.contains("only parsed")),
            "{v:?}"
        );
        assert!(
            v.describe().contains("--no-validate given"),
            "{}",
            v.describe()
        );
    }

    #[test]
    fn on_the_running_system_a_version_its_containerd_cannot_read_is_invalid() {
        let f = v3_change();
        let overrides = [(f.path.clone(), f.after.clone())];
        let v = validate_file(
            &f,
            &overrides,
            &RecordingRunner::new(&[]),
            &HostRoot::new("/nonexistent-tree"),
            &Validators {
                containerds: vec![ctd(1, 6, Source::Path), ctd(2, 1, Source::K3s)],
                system: true,
                ..Validators::default()
            },
        );
        assert!(
            matches!(&v, Validation::Invalid { why } if why.contains("upgrade containerd")),
            "{v:?}"
        );
    }

    #[test]
    fn a_refusal_by_the_real_binary_is_invalid_and_names_it() {
        let f = v3_change();
        let overrides = [(f.path.clone(), f.after.clone())];
        let runner = RecordingRunner::new(&["/bin/c2"]);
        runner.reply(
            "config dump",
            1,
            "",
            "containerd: failed to load TOML: boom\n",
        );
        let v = validate_file(
            &f,
            &overrides,
            &runner,
            &HostRoot::new("/nonexistent-tree"),
            &Validators {
                containerds: vec![ctd(2, 1, Source::Path)],
                ..Validators::default()
            },
        );
        assert!(
            matches!(&v, Validation::Invalid { why } if why.contains("/bin/c2 (containerd 2.1.0, on PATH) refused") && why.contains("boom")),
            "{v:?}"
        );
    }

    #[test]
    fn k3s_yaml_is_parsed_only_and_says_what_the_real_check_is() {
        let f = FileChange::new(
            k3s::CONFIG_YAML,
            None,
            "default-runtime: nvidia\n".into(),
            0o600,
            Check::K3sYaml,
            vec![],
        );
        let v = validate_file(
            &f,
            &[],
            &RecordingRunner::new(&[]),
            &HostRoot::new("/x"),
            &Validators::default(),
        );
        assert!(
            matches!(&v, Validation::Parsed { what } if what.contains("restart")),
            "{v:?}"
        );
    }
}
