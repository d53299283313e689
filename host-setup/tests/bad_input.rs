//! The bad-input matrix: every way a host file can be wrong, through every command (the plan
//! with `--dry-run`, apply, `verify`, `preflight`), run as the real binary on `--root` trees.
//! Each case blocks or succeeds as host-setup/README.md ("Bad input") documents, and after a
//! blocked run the sha256 of every file of the tree (and of a file outside it that a link points
//! at) is what it was before: nothing was written, nothing was added.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::Duration;

use host_setup::observe::CONTAINERD_CONFIG;
use host_setup::plan::{self, Target};
use host_setup::root::HostRoot;
use lab_runner::{Cmd, Output, Runner, SystemRunner};
use sha2::{Digest, Sha256};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_host-setup");
const K3S_CONFIG: &str = "/etc/rancher/k3s/config.yaml";

/// sha256 of every entry under `dirs` (a link counts as its target's text, never followed into
/// a FIFO or out of the tree; a FIFO or directory as its kind).
fn hashes(dirs: &[&Path]) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().filter_map(Result::ok) {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let value = if meta.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if meta.is_dir() {
                stack.push(p.clone());
                "dir".to_owned()
            } else if meta.is_file() {
                let bytes = if meta.permissions().mode() & 0o444 == 0 && !is_root() {
                    b"(unreadable to this test)".to_vec()
                } else {
                    std::fs::read(&p).unwrap()
                };
                format!(
                    "{:x} mode {:o}",
                    Sha256::digest(bytes),
                    meta.permissions().mode()
                )
            } else {
                "special".to_owned()
            };
            out.insert(p, value);
        }
    }
    out
}

fn is_root() -> bool {
    SystemRunner::new(false)
        .run(&Cmd::new("id").arg("-u"))
        .is_ok_and(|o| o.stdout.trim() == "0")
}

/// Runs host-setup (as `user` when given, through setpriv), with a deadline.
fn run_as(user: Option<u32>, args: &[&str]) -> Output {
    let cmd = match user {
        None => Cmd::new(BIN).args(args.iter().copied()),
        Some(uid) => Cmd::new("setpriv")
            .args([
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".to_owned(),
                BIN.to_owned(),
            ])
            .args(args.iter().copied()),
    };
    SystemRunner::new(false)
        .run(&cmd.timeout(Duration::from_secs(120)))
        .expect("host-setup runs")
}

/// A real containerd for validation when this machine has one, else `--no-validate`.
fn validation_args() -> Vec<String> {
    match containerd_bins().into_iter().find(|(_, m)| *m < 2) {
        Some((bin, _)) => vec!["--containerd-bin".to_owned(), bin],
        None => vec!["--no-validate".to_owned()],
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// set-default-runtime --runtime containerd / verify --runtime containerd.
    Containerd,
    /// install / verify --runtime k3s.
    K3s,
}

/// What a case must give: blocked (with the reason and fix text the commands show) or not.
#[derive(Debug)]
enum Expect {
    Blocked {
        reason: &'static str,
        fix: &'static str,
        /// The file cannot be read at all: every command (plan, apply, verify, preflight) fails
        /// and shows the reason and fix. Otherwise it reads fine but its content is wrong: plan
        /// and apply show them and block (exit 3), verify fails (exit 1), and preflight, which
        /// does not judge config contents, passes.
        unreadable: bool,
    },
    Succeeds,
}

struct Case {
    name: &'static str,
    scenario: Scenario,
    /// Breaks the tree (returns an outside dir to watch, if any).
    setup: fn(&Path) -> Option<tempfile::TempDir>,
    expect: Expect,
    /// Run as this uid (the permission case, when the test runs as root).
    as_user: Option<u32>,
}

fn containerd_file(t: &Path) -> PathBuf {
    t.join("etc/containerd/config.toml")
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "non-UTF-8 config.toml",
            scenario: Scenario::Containerd,
            setup: |t| {
                let mut b = std::fs::read(containerd_file(t)).unwrap();
                b.extend_from_slice(b"# caf\xe9 au lait\n");
                std::fs::write(containerd_file(t), b).unwrap();
                None
            },
            expect: Expect::Blocked {
                reason: "/etc/containerd/config.toml cannot be read: it is not UTF-8 text",
                fix: "grep -naxv",
                unreadable: true,
            },
            as_user: None,
        },
        Case {
            name: "non-UTF-8 k3s config.yaml",
            scenario: Scenario::K3s,
            setup: |t| {
                let p = t.join("etc/rancher/k3s/config.yaml");
                let mut b = std::fs::read(&p).unwrap();
                b.extend_from_slice(b"node-label:\n  - \"owner=j\xf6rg\"\n");
                std::fs::write(&p, b).unwrap();
                None
            },
            expect: Expect::Blocked {
                reason: "/etc/rancher/k3s/config.yaml cannot be read: it is not UTF-8 text",
                fix: "grep -naxv",
                unreadable: true,
            },
            as_user: None,
        },
        Case {
            name: "binary junk",
            scenario: Scenario::Containerd,
            setup: |t| {
                // Deterministic junk (an LCG), NUL bytes included.
                let mut x: u32 = 12345;
                let junk: Vec<u8> = (0..4096)
                    .map(|_| {
                        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        (x >> 16) as u8
                    })
                    .collect();
                std::fs::write(containerd_file(t), junk).unwrap();
                None
            },
            expect: Expect::Blocked {
                reason: "it holds binary data",
                fix: "restore it from a backup",
                unreadable: true,
            },
            as_user: None,
        },
        Case {
            name: "empty config.toml",
            scenario: Scenario::Containerd,
            setup: |t| {
                std::fs::write(containerd_file(t), "").unwrap();
                None
            },
            expect: Expect::Succeeds,
            as_user: None,
        },
        Case {
            name: "truncated config.toml",
            scenario: Scenario::Containerd,
            setup: |t| {
                let text = std::fs::read_to_string(containerd_file(t)).unwrap();
                let cut = text
                    .find("[plugins.\"io.containerd.grpc.v1.cri\".containerd]")
                    .unwrap()
                    + 20;
                std::fs::write(containerd_file(t), &text[..cut]).unwrap();
                None
            },
            expect: Expect::Blocked {
                reason: "/etc/containerd/config.toml: not valid TOML",
                fix: "correct the TOML at the line and column shown",
                unreadable: false,
            },
            as_user: None,
        },
        Case {
            name: "version as a string",
            scenario: Scenario::Containerd,
            setup: |t| {
                let text = std::fs::read_to_string(containerd_file(t)).unwrap();
                std::fs::write(
                    containerd_file(t),
                    text.replace("version = 2", "version = \"2\""),
                )
                .unwrap();
                None
            },
            expect: Expect::Blocked {
                reason: "`version = \"2\"` is a string, but containerd needs an integer there",
                fix: "write it as a bare integer: `version = 2` (no quotes)",
                unreadable: false,
            },
            as_user: None,
        },
        Case {
            name: "a table key holding an integer",
            scenario: Scenario::Containerd,
            setup: |t| {
                std::fs::write(containerd_file(t), "version = 2\nplugins = 5\n").unwrap();
                None
            },
            expect: Expect::Blocked {
                reason: "`plugins` is an integer, but containerd expects a table there",
                fix: "replace it with a `[plugins]` section",
                unreadable: false,
            },
            as_user: None,
        },
        Case {
            name: "k3s tls-san of the wrong type",
            scenario: Scenario::K3s,
            setup: |t| {
                let p = t.join("etc/rancher/k3s/config.yaml");
                std::fs::write(&p, "tls-san:\n  host: a.example\n").unwrap();
                None
            },
            expect: Expect::Blocked {
                reason: "`tls-san` is a mapping, but k3s reads a string or a list of strings there",
                fix: "write it as a list of strings",
                unreadable: false,
            },
            as_user: None,
        },
        Case {
            name: "unknown version",
            scenario: Scenario::Containerd,
            setup: |t| {
                let text = std::fs::read_to_string(containerd_file(t)).unwrap();
                std::fs::write(
                    containerd_file(t),
                    text.replace("version = 2", "version = 99"),
                )
                .unwrap();
                None
            },
            expect: Expect::Blocked {
                reason: "`version = 99` is not a containerd config version",
                fix: "its tables are written for version 2 (io.containerd.grpc.v1.cri): set `version = 2`",
                unreadable: false,
            },
            as_user: None,
        },
        Case {
            name: "symlink inside the root",
            scenario: Scenario::Containerd,
            setup: |t| {
                std::fs::create_dir_all(t.join("srv/conf")).unwrap();
                std::fs::rename(containerd_file(t), t.join("srv/conf/containerd.toml")).unwrap();
                symlink("../../srv/conf/containerd.toml", containerd_file(t)).unwrap();
                None
            },
            expect: Expect::Succeeds,
            as_user: None,
        },
        Case {
            name: "symlink leading out of the root",
            scenario: Scenario::Containerd,
            setup: |t| {
                let outside = tempfile::tempdir().unwrap();
                std::fs::rename(containerd_file(t), outside.path().join("config.toml"))
                    .or_else(|_| {
                        std::fs::copy(containerd_file(t), outside.path().join("config.toml"))
                            .map(|_| ())
                            .and_then(|()| std::fs::remove_file(containerd_file(t)))
                    })
                    .unwrap();
                symlink(outside.path().join("config.toml"), containerd_file(t)).unwrap();
                Some(outside)
            },
            expect: Expect::Blocked {
                reason: "outside --root; host-setup touches nothing outside --root",
                fix: "replace the link with a copy of its target",
                unreadable: true,
            },
            as_user: None,
        },
        Case {
            name: "dangling symlink",
            scenario: Scenario::Containerd,
            setup: |t| {
                std::fs::remove_file(containerd_file(t)).unwrap();
                symlink("../../srv/gone.toml", containerd_file(t)).unwrap();
                None
            },
            expect: Expect::Blocked {
                reason: "is a symbolic link to ../../srv/gone.toml, which does not exist",
                fix: "remove the link",
                unreadable: true,
            },
            as_user: None,
        },
        Case {
            name: "a directory where the file belongs",
            scenario: Scenario::Containerd,
            setup: |t| {
                std::fs::remove_file(containerd_file(t)).unwrap();
                std::fs::create_dir(containerd_file(t)).unwrap();
                None
            },
            expect: Expect::Blocked {
                reason: "it is a directory, not a regular file",
                fix: "move it away",
                unreadable: true,
            },
            as_user: None,
        },
        Case {
            name: "a FIFO where the file belongs (must not hang)",
            scenario: Scenario::Containerd,
            setup: |t| {
                std::fs::remove_file(containerd_file(t)).unwrap();
                SystemRunner::new(false)
                    .run_checked(&Cmd::new("mkfifo").arg(containerd_file(t).to_str().unwrap()))
                    .unwrap();
                None
            },
            expect: Expect::Blocked {
                reason: "it is a named pipe (FIFO), not a regular file",
                fix: "move it away",
                unreadable: true,
            },
            as_user: None,
        },
        Case {
            name: "non-UTF-8 imported drop-in",
            scenario: Scenario::Containerd,
            setup: |t| {
                let text = std::fs::read_to_string(containerd_file(t)).unwrap();
                assert!(text.contains("imports = []"));
                std::fs::write(
                    containerd_file(t),
                    text.replace(
                        "imports = []",
                        "imports = [\"/etc/containerd/conf.d/*.toml\"]",
                    ),
                )
                .unwrap();
                std::fs::create_dir_all(t.join("etc/containerd/conf.d")).unwrap();
                std::fs::write(
                    t.join("etc/containerd/conf.d/50-x.toml"),
                    b"version = 2\n# \xff\n",
                )
                .unwrap();
                None
            },
            expect: Expect::Blocked {
                reason: "/etc/containerd/conf.d/50-x.toml cannot be read: it is not UTF-8 text",
                fix: "grep -naxv",
                unreadable: true,
            },
            as_user: None,
        },
        Case {
            name: "read-only file (mode 0444)",
            scenario: Scenario::Containerd,
            setup: |t| {
                std::fs::set_permissions(
                    containerd_file(t),
                    std::fs::Permissions::from_mode(0o444),
                )
                .unwrap();
                None
            },
            expect: Expect::Succeeds,
            as_user: None,
        },
        Case {
            name: "unreadable file (mode 000, not root)",
            scenario: Scenario::Containerd,
            setup: |t| {
                std::fs::set_permissions(
                    containerd_file(t),
                    std::fs::Permissions::from_mode(0o000),
                )
                .unwrap();
                None
            },
            expect: Expect::Blocked {
                reason: "/etc/containerd/config.toml cannot be read: permission denied",
                fix: "run host-setup as root",
                unreadable: true,
            },
            // root reads any file: run as `nobody` then.
            as_user: is_root().then_some(65534),
        },
    ]
}

fn tree_for(scenario: Scenario) -> tempfile::TempDir {
    let t = match scenario {
        Scenario::Containerd => {
            // A GPU host with the toolkit (so preflight passes) and a plain containerd config.
            let t = tree(&["toolkit"]);
            SystemRunner::new(false)
                .run_checked(
                    &Cmd::new("bash")
                        .arg(SCRIPT)
                        .arg(t.path().to_str().unwrap())
                        .args(["containerd", "containerd-default-v2.toml"]),
                )
                .unwrap();
            t
        }
        Scenario::K3s => tree(&["k3s-no-default"]),
    };
    // Readable by the unprivileged user of the permission case.
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    t
}

fn commands(scenario: Scenario, root: &str) -> Vec<(&'static str, Vec<String>)> {
    let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let validate = validation_args();
    let with = |mut v: Vec<String>| {
        v.extend(validate.iter().cloned());
        v
    };
    match scenario {
        Scenario::Containerd => vec![
            (
                "plan (--dry-run)",
                with(own(&[
                    "set-default-runtime",
                    "--runtime",
                    "containerd",
                    "--dry-run",
                    "--root",
                    root,
                ])),
            ),
            (
                "apply",
                with(own(&[
                    "set-default-runtime",
                    "--runtime",
                    "containerd",
                    "--root",
                    root,
                ])),
            ),
            (
                "verify",
                with(own(&["verify", "--runtime", "containerd", "--root", root])),
            ),
            ("preflight", own(&["preflight", "--root", root])),
        ],
        Scenario::K3s => vec![
            (
                "plan (--dry-run)",
                own(&[
                    "install",
                    "--dry-run",
                    "--tls-san",
                    "10.0.0.10",
                    "--root",
                    root,
                ]),
            ),
            (
                "apply",
                own(&["install", "--tls-san", "10.0.0.10", "--root", root]),
            ),
            (
                "verify",
                own(&["verify", "--runtime", "k3s", "--root", root]),
            ),
            ("preflight", own(&["preflight", "--root", root])),
        ],
    }
}

#[test]
fn every_bad_input_blocks_or_succeeds_as_documented_and_a_blocked_run_changes_no_byte() {
    let mut failures = Vec::new();
    for case in cases() {
        let t = tree_for(case.scenario);
        let outside = (case.setup)(t.path());
        let root = t.path().to_str().unwrap().to_owned();
        let watched: Vec<&Path> = std::iter::once(t.path())
            .chain(outside.as_ref().map(tempfile::TempDir::path))
            .collect();
        let before = hashes(&watched);
        for (what, args) in commands(case.scenario, &root) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run_as(case.as_user, &args);
            let text = format!("{}{}", out.stdout, out.stderr);
            match &case.expect {
                Expect::Blocked {
                    reason,
                    fix,
                    unreadable,
                } => {
                    let want = match what {
                        "verify" => 1,
                        "preflight" if !unreadable => 0,
                        _ => 3,
                    };
                    let must_explain = *unreadable || !matches!(what, "verify" | "preflight");
                    let explained = !must_explain
                        || (text.contains(reason) && text.contains(fix) && text.contains("fix:"));
                    if out.code != Some(want) || !explained {
                        failures.push(format!(
                            "{} / {what}: exit {:?} (want {want}), reason {reason:?} and fix {fix:?} expected in:\n{text}",
                            case.name, out.code
                        ));
                    }
                    if text.contains("create /etc/containerd/config.toml")
                        || text.contains("create /etc/rancher/k3s/config.yaml")
                    {
                        failures.push(format!(
                            "{} / {what}: a file it could not use was planned as new:\n{text}",
                            case.name
                        ));
                    }
                    let after = hashes(&watched);
                    if after != before {
                        failures.push(format!(
                            "{} / {what}: files changed after a blocked run: {:?}",
                            case.name,
                            after
                                .iter()
                                .filter(|(k, v)| before.get(*k) != Some(v))
                                .map(|(k, _)| k)
                                .chain(before.keys().filter(|k| !after.contains_key(*k)))
                                .collect::<Vec<_>>()
                        ));
                    }
                }
                Expect::Succeeds => {
                    if what != "preflight" && out.code != Some(0) {
                        failures.push(format!(
                            "{} / {what}: exit {:?}, want 0:\n{text}",
                            case.name, out.code
                        ));
                    }
                }
            }
        }
        if matches!(case.expect, Expect::Succeeds) {
            check_success(case.name, t.path(), &mut failures);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// What a successful bad-ish input must look like afterwards.
fn check_success(name: &str, t: &Path, failures: &mut Vec<String>) {
    let root = HostRoot::new(t.canonicalize().unwrap());
    let text = root
        .read_text(Path::new(CONTAINERD_CONFIG))
        .unwrap()
        .unwrap()
        .text;
    if host_setup::containerd::default_runtime(&text, CONTAINERD_CONFIG)
        .unwrap()
        .as_deref()
        != Some("nvidia")
    {
        failures.push(format!(
            "{name}: nvidia is not the default after apply:\n{text}"
        ));
    }
    let file = containerd_file(t);
    let meta = std::fs::symlink_metadata(&file).unwrap();
    match name {
        "symlink inside the root" => {
            if !meta.file_type().is_symlink() {
                failures.push(format!("{name}: the link was replaced by a file"));
            }
            let backups: Vec<_> = std::fs::read_dir(t.join("srv/conf"))
                .unwrap()
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().contains(".host-setup-"))
                .collect();
            if backups.len() != 1 {
                failures.push(format!(
                    "{name}: want one backup next to the target, got {backups:?}"
                ));
            }
        }
        "read-only file (mode 0444)" if meta.permissions().mode() & 0o777 != 0o444 => {
            failures.push(format!(
                "{name}: mode {:o} not kept",
                meta.permissions().mode()
            ));
        }
        _ => {}
    }
}

#[test]
fn a_file_replaced_between_plan_and_apply_is_not_overwritten() {
    let t = tree_for(Scenario::Containerd);
    let root = HostRoot::new(t.path());
    let obs = observe_tree(&root);
    let plan = plan::plan_set_default_runtime(&obs, Target::Containerd, false, 1);
    assert!(
        plan.blockers.is_empty() && !plan.steps.is_empty(),
        "{plan:?}"
    );
    // Someone edits the file after the plan was made.
    std::fs::write(
        containerd_file(t.path()),
        "version = 2\n# edited meanwhile\n",
    )
    .unwrap();
    let before = hashes(&[t.path()]);
    let err = host_setup::apply::apply(
        &plan,
        &lab_runner::RecordingRunner::new(&[]),
        &root,
        &apply_opts(false, 1, waived()),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(err, host_setup::apply::ApplyError::ChangedSincePlan { ref what, .. } if what.contains("content")),
        "{err}"
    );
    assert!(err.to_string().contains("run host-setup again"), "{err}");
    assert_eq!(hashes(&[t.path()]), before, "the replaced file was touched");

    // The same for a link that was made to point elsewhere after the plan.
    let t = tree_for(Scenario::Containerd);
    std::fs::create_dir_all(t.path().join("srv")).unwrap();
    std::fs::rename(containerd_file(t.path()), t.path().join("srv/a.toml")).unwrap();
    std::fs::copy(t.path().join("srv/a.toml"), t.path().join("srv/b.toml")).unwrap();
    symlink("../../srv/a.toml", containerd_file(t.path())).unwrap();
    let root = HostRoot::new(t.path());
    let plan = plan::plan_set_default_runtime(&observe_tree(&root), Target::Containerd, false, 1);
    std::fs::remove_file(containerd_file(t.path())).unwrap();
    symlink("../../srv/b.toml", containerd_file(t.path())).unwrap();
    let before = hashes(&[t.path()]);
    let err = host_setup::apply::apply(
        &plan,
        &lab_runner::RecordingRunner::new(&[]),
        &root,
        &apply_opts(false, 1, waived()),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(err, host_setup::apply::ApplyError::ChangedSincePlan { ref what, .. } if what.contains("link")),
        "{err}"
    );
    assert_eq!(hashes(&[t.path()]), before);
}

#[test]
fn a_link_target_is_edited_in_place_and_the_plan_says_so() {
    let t = tree_for(Scenario::Containerd);
    std::fs::create_dir_all(t.path().join("srv/conf")).unwrap();
    std::fs::rename(
        containerd_file(t.path()),
        t.path().join("srv/conf/containerd.toml"),
    )
    .unwrap();
    symlink("../../srv/conf/containerd.toml", containerd_file(t.path())).unwrap();
    let root = t.path().to_str().unwrap();
    let mut args = vec![
        "set-default-runtime",
        "--runtime",
        "containerd",
        "--dry-run",
        "--root",
        root,
    ];
    let validate = validation_args();
    args.extend(validate.iter().map(String::as_str));
    let out = run_as(None, &args);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(
            "/etc/containerd/config.toml is a symbolic link to /srv/conf/containerd.toml: the target is edited in place, the link is kept"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("update /etc/containerd/config.toml"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_blocked_k3s_plan_never_shows_the_file_as_new() {
    // The report: a non-UTF-8 config.yaml made `install --dry-run` plan a fresh file, and
    // its tls-san and labels vanished from the plan.
    let t = tree_for(Scenario::K3s);
    let p = t.path().join("etc/rancher/k3s/config.yaml");
    let mut b = std::fs::read(&p).unwrap();
    b.extend_from_slice(b"# \xff\n");
    std::fs::write(&p, b).unwrap();
    let out = run_as(
        None,
        &[
            "install",
            "--dry-run",
            "--root",
            t.path().to_str().unwrap(),
            "--tls-san",
            "10.0.0.10",
        ],
    );
    assert_eq!(out.code, Some(3), "{}", out.stdout);
    assert!(out.stdout.contains("(0 steps)"), "{}", out.stdout);
    assert!(!out.stdout.contains("/dev/null"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains(&format!("x {K3S_CONFIG} cannot be read")),
        "{}",
        out.stdout
    );
}
