//! Apply against the recording fake runner: a restart whose service does not come back makes
//! apply restore every backup byte for byte and restart the service again; a good restart keeps
//! the new files. Also checks what observe asks the host (commands) on a real-system run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use host_setup::apply::{self, ApplyError, ApplyOptions};
use host_setup::k3s;
use host_setup::observe::{CONTAINERD_CONFIG, Observer};
use host_setup::plan::{self, Target};
use host_setup::root::HostRoot;
use lab_runner::RecordingRunner;
use support::*;

fn opts() -> ApplyOptions {
    apply_opts(true, 3, waived())
}

/// The tree observed as a root-run on a GPU host (the driver itself is covered in tests/plan.rs).
fn root_obs(root: &HostRoot) -> host_setup::observe::Observation {
    let mut obs = observe_tree(root);
    obs.euid = Some(0);
    obs.apt = true;
    obs.containerd = Some(host_setup::observe::ContainerdInstall {
        major: Some(1),
        version: Some("1.6.20".into()),
        active: Some(true),
    });
    obs.driver = host_setup::observe::parse_nvidia_smi(
        "0, NVIDIA H100 80GB HBM3, 81559, Disabled, 570.133.20\n",
    );
    obs
}

#[test]
fn containerd_not_coming_back_restores_backups_byte_for_byte() {
    let t = tree(&["containerd", "nvidia-ctk-v1.20.0-v3-toplevel.toml"]);
    // Make the drop-in need an edit too, so two files are written and both must come back.
    let dropin = t.path().join("etc/containerd/conf.d/99-nvidia.toml");
    let text = std::fs::read_to_string(&dropin).unwrap().replace(
        "default_runtime_name = \"nvidia\"",
        "default_runtime_name = \"runc\"",
    );
    std::fs::write(&dropin, text).unwrap();
    let root = HostRoot::new(t.path());
    let before_root = read(t.path(), CONTAINERD_CONFIG);
    let before_dropin = std::fs::read(&dropin).unwrap();

    let plan = plan::plan_set_default_runtime(&root_obs(&root), Target::Containerd, true, 1);
    assert_eq!(
        plan.steps
            .iter()
            .filter(|s| matches!(s.step, plan::Step::WriteFile(_)))
            .count(),
        2
    );
    let runner = RecordingRunner::new(&["systemctl"]);
    runner.reply("systemctl is-active containerd", 3, "failed\n", "");
    let mut log = Vec::new();
    let err = apply::apply(&plan, &runner, &root, &opts(), &mut |l| {
        log.push(l.to_owned())
    })
    .unwrap_err();
    assert!(
        matches!(err, ApplyError::RolledBack { ref unit, .. } if unit == "containerd"),
        "{err}"
    );
    assert!(err.to_string().contains("journalctl -u containerd"));
    assert_eq!(
        read(t.path(), CONTAINERD_CONFIG),
        before_root,
        "config.toml not restored"
    );
    assert_eq!(
        std::fs::read(&dropin).unwrap(),
        before_dropin,
        "drop-in not restored"
    );
    let lines = runner.lines();
    assert_eq!(
        lines,
        [
            "systemctl restart containerd",
            "systemctl is-active containerd",
            "systemctl is-active containerd",
            "systemctl is-active containerd",
            "systemctl restart containerd",
        ]
    );
    assert!(
        log.iter().any(|l| l.starts_with("waiting for containerd")),
        "{log:?}"
    );
}

#[test]
fn k3s_node_not_ready_restores_config_yaml() {
    let t = tree(&["k3s-no-default"]);
    let root = HostRoot::new(t.path());
    let before = read(t.path(), k3s::CONFIG_YAML);
    let plan = plan::plan_install(
        &root_obs(&root),
        &plan::InstallOptions {
            tls_san: vec!["10.0.0.10".into()],
            ..plan::InstallOptions::default()
        },
    );
    assert!(plan.blockers.is_empty(), "{:?}", plan.blockers);
    let runner = RecordingRunner::new(&["systemctl", "k3s"]);
    runner.reply("kubectl get nodes", 0, "gpu-vm=False\n", "");
    let err = apply::apply(&plan, &runner, &root, &opts(), &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, ApplyError::RolledBack { ref unit, ref why } if unit == "k3s" && why.contains("gpu-vm=False")),
        "{err}"
    );
    assert_eq!(read(t.path(), k3s::CONFIG_YAML), before);
    let lines = runner.lines();
    assert_eq!(
        lines.first().map(String::as_str),
        Some("systemctl restart k3s")
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("systemctl restart k3s")
    );
}

#[test]
fn no_containerd_installed_means_no_restart() {
    let t = tree(&["containerd", "containerd-default-v2.toml"]);
    let root = HostRoot::new(t.path());
    let mut obs = root_obs(&root);
    obs.containerd = None;
    let plan = plan::plan_set_default_runtime(&obs, Target::Containerd, true, 1);
    assert!(
        plan.steps
            .iter()
            .all(|s| !matches!(s.step, plan::Step::RestartService { .. }))
    );
    assert!(plan.warnings.iter().any(|w| w.contains("not installed")));
}

#[test]
fn failing_restart_command_also_rolls_back() {
    let t = tree(&["containerd", "containerd-default-v2.toml"]);
    let root = HostRoot::new(t.path());
    let before = read(t.path(), CONTAINERD_CONFIG);
    let plan = plan::plan_set_default_runtime(&root_obs(&root), Target::Containerd, true, 1);
    let runner = RecordingRunner::new(&["systemctl"]);
    runner
        .reply(
            "systemctl restart containerd",
            1,
            "",
            "Job for containerd.service failed",
        )
        .reply("systemctl restart containerd", 0, "", "");
    let err = apply::apply(&plan, &runner, &root, &opts(), &mut |_| {}).unwrap_err();
    assert!(matches!(err, ApplyError::RolledBack { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("Job for containerd.service failed")
    );
    assert_eq!(read(t.path(), CONTAINERD_CONFIG), before);
}

#[test]
fn good_restart_keeps_new_files_and_backups() {
    let t = tree(&["k3s-no-default"]);
    let root = HostRoot::new(t.path());
    let before = read(t.path(), k3s::CONFIG_YAML);
    let plan = plan::plan_install(
        &root_obs(&root),
        &plan::InstallOptions {
            tls_san: vec!["10.0.0.10".into()],
            ..plan::InstallOptions::default()
        },
    );
    let runner = RecordingRunner::new(&["systemctl", "k3s"]);
    runner
        .reply("kubectl get nodes", 0, "gpu-vm=False\n", "")
        .reply("kubectl get nodes", 0, "gpu-vm=True\n", "");
    let report = apply::apply(&plan, &runner, &root, &opts(), &mut |_| {}).unwrap();
    let after = String::from_utf8(read(t.path(), k3s::CONFIG_YAML)).unwrap();
    assert!(after.contains("default-runtime: nvidia"));
    let backup = report.written[0].1.clone().unwrap();
    assert_eq!(std::fs::read(backup).unwrap(), before);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(t.path().join("etc/rancher/k3s/config.yaml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode of config.yaml kept");
}

#[test]
fn install_on_fresh_vm_runs_toolkit_then_k3s_and_copies_kubeconfig() {
    let t = tree(&["fresh-vm"]);
    let root = HostRoot::new(t.path());
    // The host before install: no k3s on PATH yet.
    let before =
        RecordingRunner::new(&["id", "hostname", "df", "systemctl", "apt-get", "nvidia-smi"]);
    before
        .reply("id -u", 0, "0\n", "")
        .reply("hostname -I", 0, "10.0.0.10 fd00::1\n", "")
        .reply(
            "nvidia-smi --query-gpu",
            0,
            "0, NVIDIA H100 80GB HBM3, 81559, Disabled, 570.133.20\n",
            "",
        );
    let obs = Observer {
        runner: &before,
        root: &root,
        probes_in_root: false,
        system: true,
    }
    .observe(Some("lab"));
    assert_eq!(obs.euid, Some(0));
    assert!(obs.k3s.is_none());
    assert_eq!(obs.primary_address.as_deref(), Some("10.0.0.10"));
    assert!(before.lines().iter().any(|l| l.starts_with(
        "nvidia-smi --query-gpu=index,name,memory.total,mig.mode.current,driver_version"
    )));
    let plan = plan::plan_install(
        &obs,
        &plan::InstallOptions {
            kubeconfig_user: Some("lab".into()),
            ..plan::InstallOptions::default()
        },
    );
    assert!(plan.blockers.is_empty(), "{:?}", plan.blockers);
    // During apply k3s appears (the installer puts it there).
    let runner = RecordingRunner::new(&["systemctl", "k3s", "apt-get", "sh", "curl", "gpg"]);
    runner
        .reply(
            "curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey",
            0,
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n",
            "",
        )
        .reply(
            "nvidia-container-toolkit.list",
            0,
            "deb https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /\n",
            "",
        )
        .reply("kubectl get nodes", 0, "gpu-vm=True\n", "");
    // k3s.yaml appears when k3s starts; the fake installer does not create it, so put it there.
    std::fs::create_dir_all(t.path().join("etc/rancher/k3s")).unwrap();
    std::fs::write(
        t.path().join("etc/rancher/k3s/k3s.yaml"),
        b"apiVersion: v1\n",
    )
    .unwrap();
    apply::apply(&plan, &runner, &root, &opts(), &mut |_| {}).unwrap();
    let lines = runner.lines();
    let pos = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not run: {lines:#?}"))
    };
    assert!(
        pos("apt-get install") < pos("get.k3s.io"),
        "toolkit must come before k3s"
    );
    assert!(pos("gpg --dearmor") < pos("apt-get update"));
    let list = std::fs::read_to_string(
        t.path()
            .join("etc/apt/sources.list.d/nvidia-container-toolkit.list"),
    )
    .unwrap();
    assert!(list.starts_with(
        "deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://"
    ));
    let yaml = std::fs::read_to_string(t.path().join("etc/rancher/k3s/config.yaml")).unwrap();
    assert!(yaml.contains("default-runtime: nvidia") && yaml.contains("10.0.0.10"));
    let kube = t.path().join("home/lab/.kube/config");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&kube).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read(&kube).unwrap(),
        std::fs::read(t.path().join("etc/rancher/k3s/k3s.yaml")).unwrap()
    );
}

#[test]
fn a_failing_command_after_a_write_restores_the_written_files() {
    // A GPU host with the toolkit and no k3s: install writes config.yaml, then the k3s installer
    // fails. The new config.yaml must go again (restored to "absent"), and the error says so.
    let t = tree(&["toolkit"]);
    let root = HostRoot::new(t.path());
    let plan = plan::plan_install(
        &root_obs(&root),
        &plan::InstallOptions {
            tls_san: vec!["10.0.0.10".into()],
            ..plan::InstallOptions::default()
        },
    );
    assert!(plan.writes(k3s::CONFIG_YAML), "{:?}", plan.steps);
    let runner = RecordingRunner::new(&["sh", "systemctl", "k3s"]);
    runner.reply(
        "get.k3s.io",
        1,
        "",
        "curl: (6) Could not resolve host: get.k3s.io",
    );
    let err = apply::apply(&plan, &runner, &root, &opts(), &mut |_| {}).unwrap_err();
    assert!(matches!(err, ApplyError::Restored { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("Could not resolve host"), "{text}");
    assert!(
        text.contains("every file this run had written was restored byte for byte"),
        "{text}"
    );
    assert!(!t.path().join("etc/rancher/k3s/config.yaml").exists());
    assert!(
        !runner
            .lines()
            .iter()
            .any(|l| l.starts_with("systemctl restart")),
        "nothing was restarted, so nothing is restarted again: {:?}",
        runner.lines()
    );
}

#[test]
fn a_rollback_that_cannot_restart_the_service_names_the_backups() {
    let t = tree(&["containerd", "containerd-default-v2.toml"]);
    let root = HostRoot::new(t.path());
    let before = read(t.path(), CONTAINERD_CONFIG);
    let plan = plan::plan_set_default_runtime(&root_obs(&root), Target::Containerd, true, 1);
    let runner = RecordingRunner::new(&["systemctl"]);
    // Every restart fails, the one of the rollback too.
    runner.reply(
        "systemctl restart containerd",
        1,
        "",
        "Job for containerd.service failed",
    );
    let err = apply::apply(&plan, &runner, &root, &opts(), &mut |_| {}).unwrap_err();
    assert!(matches!(err, ApplyError::RestoreFailed { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("restoring failed"), "{text}");
    assert!(
        text.contains("config.toml.host-setup-20260101T000000Z.bak"),
        "the backups are named so a person can put them back: {text}"
    );
    // The files themselves were restored; only the restart failed.
    assert_eq!(read(t.path(), CONTAINERD_CONFIG), before);
}
