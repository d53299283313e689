//! Every containerd config host-setup produces is loaded by a REAL containerd
//! (`containerd -c FILE config dump`, drop-ins included) and must report `nvidia` as default.
//!
//! Binaries: `containerd` on PATH (Debian bookworm's 1.6, reads v2) and a v3-capable 2.x from
//! `$HOST_SETUP_CONTAINERD2` or /opt/containerd2/usr/bin/containerd (host-setup/README.md says
//! how CI installs it). Missing binaries are reported as `SKIPPED:` lines, never silently.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use host_setup::apply::{self, ApplyOptions};
use host_setup::containerd;
use host_setup::observe::CONTAINERD_CONFIG;
use host_setup::plan::{self, Target};
use host_setup::root::HostRoot;
use lab_runner::SystemRunner;
use support::*;

fn apply_with(root: &HostRoot, bin: Option<&str>) -> Result<apply::Report, apply::ApplyError> {
    let obs = observe_tree(root);
    let plan = plan::plan_set_default_runtime(&obs, Target::Containerd, false, 1);
    assert!(plan.blockers.is_empty(), "{:?}", plan.blockers);
    let opts = ApplyOptions {
        system: false,
        wait_attempts: 1,
        poll_interval: Duration::ZERO,
        containerd_bin: bin.map(str::to_owned),
        stamp: "20260101T000000Z".to_owned(),
    };
    // system = false: only files under the tree change; the runner only runs `containerd`.
    apply::apply(&plan, &SystemRunner::new(false), root, &opts, &mut |_| {})
}

#[test]
fn real_containerd_loads_every_produced_config_with_nvidia_default() {
    let bins = containerd_bins();
    if bins.is_empty() {
        println!(
            "SKIPPED: no containerd binary (apt-get install containerd; see host-setup/README.md for 2.x)"
        );
        return;
    }
    if !bins.iter().any(|(_, m)| *m >= 2) {
        println!(
            "SKIPPED (partly): no containerd >= 2.0, so version 3 configs are checked structurally only"
        );
    }
    let runner = SystemRunner::new(false);
    let mut loaded = 0;
    for name in containerd_fixtures()
        .into_iter()
        .filter(|n| !n.contains("dockerio-v1"))
    {
        let t = tree(&["containerd", &name]);
        let root = HostRoot::new(t.path());
        apply_with(&root, None).expect("apply");
        let text = String::from_utf8(read(t.path(), CONTAINERD_CONFIG)).unwrap();
        let version = containerd::file_version(&text, CONTAINERD_CONFIG)
            .unwrap()
            .unwrap();
        for (bin, major) in &bins {
            if version >= 3 && *major < 2 {
                continue;
            }
            let got = apply::dump_with_containerd(&runner, bin, &root, CONTAINERD_CONFIG, &[]);
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
    let Some((bin, _)) = bins.first() else {
        println!("SKIPPED: no containerd binary (apt-get install containerd)");
        return;
    };
    let t = tree(&["containerd", "containerd-debian-pkg-config.toml"]);
    let root = HostRoot::new(t.path());
    let report = apply_with(&root, Some(bin)).expect("apply");
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("loaded the new /etc/containerd/config.toml")),
        "{:?}",
        report.notes
    );
}

#[test]
fn real_containerd_rejects_what_it_should() {
    let bins = containerd_bins();
    if bins.is_empty() {
        println!("SKIPPED: no containerd binary (apt-get install containerd)");
        return;
    }
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
        let got = apply::dump_with_containerd(&runner, bin, &root, CONTAINERD_CONFIG, &[]);
        assert!(
            got.is_err(),
            "{bin}: accepted a number as runtime name: {got:?}"
        );

        // A v3 file on containerd 1.x is silently ignored by it: the dump check catches that.
        if *major < 2 {
            let v3 = fixture("k3s-containerd-v3-nvidia-pre-imports.toml");
            std::fs::write(dir.join("config.toml"), v3).unwrap();
            let got = apply::dump_with_containerd(&runner, bin, &root, CONTAINERD_CONFIG, &[]);
            assert!(
                got.as_ref().is_err_and(|e| e.contains("understand")),
                "{bin}: {got:?}"
            );
        }
    }
}
