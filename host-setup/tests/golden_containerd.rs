//! Golden tests over every containerd config fixture in tests/data/host: set-default-runtime
//! --runtime containerd on a tree holding the fixture (and its drop-in) must give the golden
//! bytes, put `default_runtime_name = "nvidia"` in the table of the file's own version, keep every
//! comment, and a second run must plan nothing and change no byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use host_setup::apply::{self, ApplyOptions};
use host_setup::containerd;
use host_setup::observe::CONTAINERD_CONFIG;
use host_setup::plan::{self, Target};
use host_setup::root::HostRoot;
use lab_runner::RecordingRunner;
use support::*;

const DROPIN: &str = "/etc/containerd/conf.d/99-nvidia.toml";

fn opts() -> ApplyOptions {
    apply_opts(false, 1, waived())
}

fn apply_once(root: &HostRoot) -> host_setup::plan::Plan {
    let obs = observe_tree(root);
    let plan = plan::plan_set_default_runtime(&obs, Target::Containerd, false, 1);
    if plan.blockers.is_empty() {
        let runner = RecordingRunner::new(&[]);
        apply::apply(&plan, &runner, root, &opts(), &mut |_| {}).expect("apply");
        assert!(runner.calls().is_empty(), "no command may run under --root");
    }
    plan
}

#[test]
fn every_containerd_fixture_golden_idempotent_comments_kept() {
    let mut checked = 0;
    for name in containerd_fixtures() {
        let t = tree(&["containerd", &name]);
        let root = HostRoot::new(t.path());
        let before = String::from_utf8(read(t.path(), CONTAINERD_CONFIG)).unwrap();
        let before_dropin = String::from_utf8(read(t.path(), DROPIN)).unwrap();

        let plan = apply_once(&root);
        if name.contains("dockerio-v1") {
            // A `version = 1` file is refused with a fix, and nothing is written.
            assert_eq!(plan.blockers.len(), 1, "{name}");
            assert!(
                plan.blockers[0].problem.contains("`version = 1`"),
                "{name}: {:?}",
                plan.blockers
            );
            assert_eq!(read(t.path(), CONTAINERD_CONFIG), before.as_bytes());
            continue;
        }
        assert!(plan.blockers.is_empty(), "{name}: {:?}", plan.blockers);

        let after = String::from_utf8(read(t.path(), CONTAINERD_CONFIG)).unwrap();
        let after_dropin = String::from_utf8(read(t.path(), DROPIN)).unwrap();
        let golden = format!("containerd/{name}");
        if after == before {
            assert!(
                !golden_path(&golden).exists() || std::env::var_os("UPDATE_GOLDEN").is_some(),
                "{name}: unchanged but a golden file exists"
            );
        } else {
            assert_golden(&golden, &after);
        }
        if after_dropin != before_dropin {
            assert_golden(&format!("containerd/{name}.dropin.toml"), &after_dropin);
        }

        // nvidia is the default in the table of the file's own version, root and effective.
        let version = containerd::file_version(&after, CONTAINERD_CONFIG)
            .unwrap()
            .unwrap();
        assert_eq!(
            containerd::default_runtime(&after, CONTAINERD_CONFIG)
                .unwrap()
                .as_deref(),
            Some("nvidia"),
            "{name}: no nvidia default in [{}]",
            containerd::default_runtime_table(version)
        );
        assert!(
            containerd::has_runtime(&after, CONTAINERD_CONFIG, "nvidia").unwrap(),
            "{name}"
        );
        let obs = observe_tree(&root);
        let mut files = vec![(CONTAINERD_CONFIG.to_owned(), after.clone())];
        files.extend(
            obs.containerd_imports
                .iter()
                .map(|f| (f.path.clone(), f.text.clone())),
        );
        for major in [1, 2] {
            assert_eq!(
                containerd::effective_default_runtime(&files, Some(major))
                    .unwrap()
                    .as_deref(),
                Some("nvidia"),
                "{name}: effective default with containerd {major}.x"
            );
        }

        // Comments survive (nvidia-ctk loses them all).
        for line in before.lines().filter(|l| l.trim_start().starts_with('#')) {
            assert!(after.contains(line), "{name}: comment lost: {line}");
        }

        // Second run: empty plan, no byte changes, no new backup.
        let files_before: Vec<_> = files_under(t.path());
        let plan2 = apply_once(&root);
        assert!(
            plan2.steps.is_empty(),
            "{name}: second plan not empty: {:?}",
            plan2.steps
        );
        assert_eq!(
            read(t.path(), CONTAINERD_CONFIG),
            after.as_bytes(),
            "{name}"
        );
        assert_eq!(read(t.path(), DROPIN), after_dropin.as_bytes(), "{name}");
        assert_eq!(
            files_under(t.path()),
            files_before,
            "{name}: files appeared or vanished"
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} fixtures checked");
}

#[test]
fn changed_files_are_backed_up_with_old_bytes_and_mode() {
    let t = tree(&["containerd", "containerd-default-v2.toml"]);
    let root = HostRoot::new(t.path());
    let before = read(t.path(), CONTAINERD_CONFIG);
    apply_once(&root);
    let backup = t
        .path()
        .join("etc/containerd/config.toml.host-setup-20260101T000000Z.bak");
    assert_eq!(std::fs::read(&backup).unwrap(), before);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(t.path().join("etc/containerd/config.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
}

#[test]
fn missing_config_is_created_with_the_version_of_the_installed_containerd() {
    for (major, version) in [(1, 2), (2, 3)] {
        let t = tempfile::tempdir().unwrap();
        let root = HostRoot::new(t.path());
        let mut obs = observe_tree(&root);
        obs.containerd = Some(host_setup::observe::ContainerdInstall {
            major: Some(major),
            version: Some(format!("{major}.0.0")),
            active: None,
        });
        let plan = plan::plan_set_default_runtime(&obs, Target::Containerd, false, 1);
        apply::apply(
            &plan,
            &RecordingRunner::new(&[]),
            &root,
            &opts(),
            &mut |_| {},
        )
        .unwrap();
        let text = String::from_utf8(read(t.path(), CONTAINERD_CONFIG)).unwrap();
        assert_eq!(
            containerd::file_version(&text, "c").unwrap(),
            Some(version),
            "{text}"
        );
        assert_eq!(
            containerd::default_runtime(&text, "c").unwrap().as_deref(),
            Some("nvidia")
        );
    }
}

#[test]
fn a_dropin_that_overrides_the_cri_section_is_edited_too() {
    // nvidia-ctk's v3 top-level + drop-in, with the drop-in's default switched back to runc:
    // containerd reads the drop-in last, so editing only config.toml would not be enough.
    let t = tree(&["containerd", "nvidia-ctk-v1.20.0-v3-toplevel.toml"]);
    let dropin = t.path().join("etc/containerd/conf.d/99-nvidia.toml");
    let text = std::fs::read_to_string(&dropin).unwrap().replace(
        "default_runtime_name = \"nvidia\"",
        "default_runtime_name = \"runc\"",
    );
    std::fs::write(&dropin, &text).unwrap();
    let root = HostRoot::new(t.path());
    let plan = apply_once(&root);
    assert!(plan.writes(DROPIN), "{:?}", plan.steps);
    let after = std::fs::read_to_string(&dropin).unwrap();
    assert_eq!(
        containerd::default_runtime(&after, DROPIN)
            .unwrap()
            .as_deref(),
        Some("nvidia")
    );
}
