//! Every containerd config host-setup produces is loaded by a REAL containerd
//! (`containerd -c FILE config dump`, drop-ins included) and must report `nvidia` as default.
//!
//! Binaries: `containerd` on PATH (Debian bookworm's 1.6, reads v2) and a v3-capable 2.x from
//! `$HOST_SETUP_CONTAINERD2` or /opt/containerd2/usr/bin/containerd (host-setup/README.md says
//! how CI installs it). Each run of them is recorded as the `containerd 1.x` / `containerd 2.x`
//! tier by lab-runner; a missing binary is reported with `lab_runner::tier::skipped`, which
//! `cargo xtask ci` counts as a failure under `CI=true`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use host_setup::apply::{self, ApplyOptions};
use host_setup::containerd;
use host_setup::observe::CONTAINERD_CONFIG;
use host_setup::plan::{self, Target};
use host_setup::root::HostRoot;
use host_setup::validate::{self, Validation, Validators};
use lab_runner::SystemRunner;
use lab_runner::tier;
use support::*;

fn apply_with(root: &HostRoot, validators: Validators) -> Result<apply::Report, apply::ApplyError> {
    let obs = observe_tree(root);
    let plan = plan::plan_set_default_runtime(&obs, Target::Containerd, false, 1);
    assert!(plan.blockers.is_empty(), "{:?}", plan.blockers);
    let opts: ApplyOptions = apply_opts(false, 1, validators);
    // system = false: only files under the tree change; the runner only runs `containerd`.
    apply::apply(&plan, &SystemRunner::new(false), root, &opts, &mut |_| {})
}

/// Reports the containerd tiers this machine cannot run (under CI=true that fails the run).
fn report_missing(bins: &[(String, u32)]) {
    if !bins.iter().any(|(_, m)| *m < 2) {
        tier::skipped(
            "containerd 1.x",
            "no containerd 1.x on PATH (Debian: apt-get install containerd)",
        );
    }
    if !bins.iter().any(|(_, m)| *m >= 2) {
        tier::skipped(
            "containerd 2.x",
            "no containerd >= 2.0 (bash host-setup/tests/install-containerd2.sh, or HOST_SETUP_CONTAINERD2)",
        );
    }
}

#[test]
fn real_containerd_loads_every_produced_config_with_nvidia_default() {
    let bins = containerd_bins();
    report_missing(&bins);
    if bins.is_empty() {
        return;
    }
    let runner = SystemRunner::new(false);
    let mut loaded = 0;
    for name in containerd_fixtures()
        .into_iter()
        .filter(|n| !n.contains("dockerio-v1"))
    {
        let t = tree(&["containerd", &name]);
        let root = HostRoot::new(t.path());
        apply_with(&root, waived()).expect("apply");
        let text = String::from_utf8(read(t.path(), CONTAINERD_CONFIG)).unwrap();
        let version = containerd::file_version(&text, CONTAINERD_CONFIG)
            .unwrap()
            .unwrap();
        for (bin, major) in &bins {
            if version >= 3 && *major < 2 {
                continue;
            }
            let got = validate::dump_with_containerd(&runner, bin, &root, CONTAINERD_CONFIG, &[]);
            assert_eq!(
                got.as_deref(),
                Ok("nvidia"),
                "{name} with {bin} ({major}.x)"
            );
            loaded += 1;
        }
    }
    println!("real containerd loaded {loaded} produced configs");
    assert!(loaded > 0);
}

#[test]
fn apply_validates_with_real_containerd_before_writing() {
    let bins = containerd_bins();
    report_missing(&bins);
    for (bin, major) in &bins {
        for fixture in [
            "containerd-debian-pkg-config.toml",
            "containerd-default-v3.toml",
        ] {
            let t = tree(&["containerd", fixture]);
            let root = HostRoot::new(t.path());
            let text = fixture_text_version(fixture);
            let containerds = validate::find_containerds(
                &SystemRunner::new(false),
                &root,
                Some(bin),
                "/var/lib/rancher/k3s",
            );
            let validators = Validators {
                containerds,
                ..Validators::default()
            };
            if text >= 3 && *major < 2 {
                // A 1.x containerd cannot vouch for a version 3 file: apply refuses, writes nothing.
                let before = snapshot(t.path());
                let err = apply_with_blockers(&root, validators);
                assert!(
                    err.contains("not validated") && err.contains(">= 2.0"),
                    "{err}"
                );
                assert_eq!(snapshot(t.path()), before);
                continue;
            }
            let report = apply_with(&root, validators).expect("apply");
            assert!(
                report.notes.iter().any(|n| n.contains(&format!(
                    "validated by the real containerd {} (containerd {major}.",
                    lab_runner::which(bin).unwrap().display()
                ))),
                "{fixture} with {bin}: {:?}",
                report.notes
            );
        }
    }
}

fn fixture_text_version(name: &str) -> i64 {
    containerd::file_version(&fixture(name), name)
        .unwrap()
        .unwrap_or(2)
}

/// Applies and returns the blocker text (the plan must be refused).
fn apply_with_blockers(root: &HostRoot, validators: Validators) -> String {
    let obs = observe_tree(root);
    let plan = plan::plan_set_default_runtime(&obs, Target::Containerd, false, 1);
    let opts = apply_opts(false, 1, validators);
    match apply::apply(&plan, &SystemRunner::new(false), root, &opts, &mut |_| {}) {
        Err(apply::ApplyError::Blocked(text)) => text,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_change_the_real_containerd_refuses_is_invalid_and_nothing_is_written() {
    // A wrongly typed CRI setting (a string where containerd wants a boolean): host-setup's edit
    // keeps it, the real containerd refuses the result, so nothing may be written.
    let bins = containerd_bins();
    report_missing(&bins);
    let Some((bin, _)) = bins.iter().find(|(_, m)| *m < 2).or(bins.first()) else {
        return;
    };
    let t = tree(&["containerd", "containerd-default-v2.toml"]);
    let dir = t.path().join("etc/containerd");
    let text = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        text.replace("enable_selinux = false", "enable_selinux = \"yes\""),
    )
    .unwrap();
    let root = HostRoot::new(t.path());
    let before = snapshot(t.path());
    let obs = observe_tree(&root);
    let mut plan = plan::plan_set_default_runtime(&obs, Target::Containerd, false, 1);
    let validators = Validators {
        containerds: validate::find_containerds(
            &SystemRunner::new(false),
            &root,
            Some(bin),
            "/var/lib/rancher/k3s",
        ),
        ..Validators::default()
    };
    validate::validate_plan(&mut plan, &SystemRunner::new(false), &root, &validators);
    let v = plan
        .steps
        .iter()
        .find_map(|s| match &s.step {
            plan::Step::WriteFile(f) => f.validation.clone(),
            _ => None,
        })
        .unwrap();
    assert!(
        matches!(&v, Validation::Invalid { why } if why.contains("refused")),
        "{v:?}"
    );
    let err = apply::apply(
        &plan,
        &SystemRunner::new(false),
        &root,
        &apply_opts(false, 1, validators),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, apply::ApplyError::Invalid { .. }), "{err}");
    assert_eq!(snapshot(t.path()), before, "a refused file was written");
}

#[test]
fn real_containerd_rejects_what_it_should() {
    let bins = containerd_bins();
    report_missing(&bins);
    let runner = SystemRunner::new(false);
    for (bin, major) in &bins {
        // A wrongly typed value: containerd refuses the file.
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("etc/containerd");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.toml"),
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  default_runtime_name = 5\n",
        )
        .unwrap();
        let root = HostRoot::new(t.path());
        let got = validate::dump_with_containerd(&runner, bin, &root, CONTAINERD_CONFIG, &[]);
        assert!(
            got.is_err(),
            "{bin}: accepted a number as runtime name: {got:?}"
        );

        // A v3 file on containerd 1.x is silently ignored by it: the dump check catches that.
        if *major < 2 {
            let v3 = fixture("k3s-containerd-v3-nvidia-pre-imports.toml");
            std::fs::write(dir.join("config.toml"), v3).unwrap();
            let got = validate::dump_with_containerd(&runner, bin, &root, CONTAINERD_CONFIG, &[]);
            assert!(
                got.as_ref().is_err_and(|e| e.contains("understand")),
                "{bin}: {got:?}"
            );
        }
    }
}
