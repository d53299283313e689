//! `host-setup harden` on trees holding each NVIDIA Container Toolkit config of `tests/data/toolkit`
//! (the toolkit's own default, one written out by hand, one already hardened): golden bytes,
//! comments and every other setting kept, the old file backed up with its mode, a second run
//! plans nothing and changes no byte; a missing toolkit or an unreadable config blocks with the
//! fix and writes nothing. Then the binary: `--dry-run` prints the diff and touches nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use host_setup::apply::{self, ApplyOptions};
use host_setup::checks::Level;
use host_setup::root::HostRoot;
use host_setup::toolkit::{self, CONFIG, RUNTIME_BIN};
use lab_runner::{Cmd, RecordingRunner, Runner, SystemRunner};
use support::{assert_golden, golden_path, snapshot};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/toolkit");
const BIN: &str = env!("CARGO_BIN_EXE_host-setup");

fn opts() -> ApplyOptions {
    support::apply_opts(false, 1, support::waived())
}

/// A tree with the toolkit's runtime binary and, when given, `config` as its config.toml.
fn tree(config: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join(RUNTIME_BIN.trim_start_matches('/'));
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::write(&bin, "#!/bin/sh\n").unwrap();
    if let Some(text) = config {
        let path = dir.path().join(CONFIG.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    dir
}

fn config_path(dir: &Path) -> std::path::PathBuf {
    dir.join(CONFIG.trim_start_matches('/'))
}

fn apply_plan(root: &HostRoot) -> host_setup::plan::Plan {
    let plan = toolkit::plan_harden(root);
    if plan.blockers.is_empty() && !plan.steps.is_empty() {
        let runner = RecordingRunner::new(&[]);
        apply::apply(&plan, &runner, root, &opts(), &mut |_| {}).expect("apply");
        assert!(runner.calls().is_empty(), "harden runs no command");
    }
    plan
}

#[test]
fn every_toolkit_config_golden_idempotent_backed_up() {
    let mut names: Vec<String> = std::fs::read_dir(DATA)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}");
    for name in names {
        let before = std::fs::read_to_string(Path::new(DATA).join(&name)).unwrap();
        let t = tree(Some(&before));
        let root = HostRoot::new(t.path());
        let plan = apply_plan(&root);
        assert!(plan.blockers.is_empty(), "{name}: {:?}", plan.blockers);
        let after = std::fs::read_to_string(config_path(t.path())).unwrap();
        let golden = format!("toolkit/{name}");
        if name == "config-hardened.toml" {
            assert!(plan.steps.is_empty(), "{name}: {plan:?}");
            assert_eq!(after, before);
            assert!(
                !golden_path(&golden).exists(),
                "{name}: unchanged but a golden file exists"
            );
        } else {
            assert_eq!(plan.steps.len(), 1, "{name}");
            assert_golden(&golden, &after);
            // Every line that is not one of the two settings is kept, comments included.
            for line in before
                .lines()
                .filter(|l| !l.starts_with("accept-nvidia-visible-devices-"))
            {
                assert!(after.lines().any(|a| a == line), "{name}: lost {line:?}");
            }
            // The old bytes are in the backup, and the file kept its mode.
            let backup =
                config_path(t.path()).with_file_name("config.toml.host-setup-20260101T000000Z.bak");
            assert_eq!(std::fs::read_to_string(backup).unwrap(), before, "{name}");
            let mode = std::fs::metadata(config_path(t.path()))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777;
            assert_eq!(mode, 0o640, "{name}");
        }
        assert!(
            toolkit::verify(&root).iter().all(|f| f.level == Level::Ok),
            "{name}"
        );
        // A second run plans nothing and changes no byte.
        let snap = snapshot(t.path());
        let again = apply_plan(&root);
        assert!(
            again.steps.is_empty() && again.blockers.is_empty(),
            "{name}: {again:?}"
        );
        assert_eq!(snapshot(t.path()), snap, "{name}");
    }
}

#[test]
fn a_missing_config_is_created_with_both_settings() {
    let t = tree(None);
    let root = HostRoot::new(t.path());
    let plan = apply_plan(&root);
    assert_eq!(plan.steps.len(), 1);
    let after = std::fs::read_to_string(config_path(t.path())).unwrap();
    assert_eq!(
        after,
        "accept-nvidia-visible-devices-envvar-when-unprivileged = false\naccept-nvidia-visible-devices-as-volume-mounts = true\n"
    );
    let mode = std::fs::metadata(config_path(t.path()))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o644);
}

#[test]
fn no_toolkit_or_an_unparsable_config_blocks_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let plan = toolkit::plan_harden(&HostRoot::new(dir.path()));
    assert_eq!(plan.blockers.len(), 1);
    assert!(
        plan.blockers[0].fix.contains("host-setup install"),
        "{:?}",
        plan.blockers
    );

    let t = tree(Some("[nvidia-container-cli\n"));
    let snap = snapshot(t.path());
    let plan = apply_plan(&HostRoot::new(t.path()));
    assert_eq!(plan.blockers.len(), 1, "{plan:?}");
    assert!(
        plan.blockers[0].problem.contains("not valid TOML"),
        "{:?}",
        plan.blockers
    );
    assert_eq!(snapshot(t.path()), snap);
}

fn host_setup(args: &[&str]) -> lab_runner::Output {
    SystemRunner::new(false)
        .run(&Cmd::new(BIN).args(args.iter().copied()))
        .expect("host-setup runs")
}

#[test]
fn the_binary_prints_the_diff_on_dry_run_then_applies_then_has_nothing_to_do() {
    let default =
        std::fs::read_to_string(Path::new(DATA).join("config-default-v1.20.toml")).unwrap();
    let t = tree(Some(&default));
    let root = t.path().to_str().unwrap();
    let snap = snapshot(t.path());
    let out = host_setup(&["harden", "--dry-run", "--root", root]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    for want in [
        "update /etc/nvidia-container-runtime/config.toml",
        "+accept-nvidia-visible-devices-envvar-when-unprivileged = false",
        "+accept-nvidia-visible-devices-as-volume-mounts = true",
        "devicePlugin.deviceListStrategy=volume-mounts",
        "checked by parsing only: parses as TOML with both settings in effect",
    ] {
        assert!(
            out.stdout.contains(want),
            "{want:?} missing:\n{}",
            out.stdout
        );
    }
    assert_eq!(snapshot(t.path()), snap, "--dry-run wrote something");

    let out = host_setup(&["harden", "--root", root]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("accept-nvidia-visible-devices-as-volume-mounts = true"),
        "{}",
        out.stdout
    );
    let out = host_setup(&["harden", "--root", root, "--output", "json"]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(plan["steps"].as_array().unwrap().len(), 0, "{}", out.stdout);
}
