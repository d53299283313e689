//! Plan tests: the pure planner on hand-built observations of typical hosts (fresh VM, toolkit
//! present, k3s without default-runtime, all done, MIG, no driver, not root), with k3s files from
//! the fixtures. Each asserts which steps appear, in which order, and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use host_setup::k3s;
use host_setup::observe::{
    Driver, FileState, Gpu, K3sInstall, KubeconfigUser, Observation, Toolkit,
};
use host_setup::plan::{self, InstallOptions, Plan, Readiness, Step};
use support::fixture;

fn file(path: &str, text: &str) -> FileState {
    FileState {
        path: path.to_owned(),
        text: text.to_owned(),
        mode: 0o600,
        uid: 0,
        gid: 0,
        link_target: None,
    }
}

fn fresh_vm() -> Observation {
    Observation {
        root: "/".to_owned(),
        euid: Some(0),
        os_pretty_name: Some("Debian GNU/Linux 12 (bookworm)".to_owned()),
        apt: true,
        driver: Driver::Ok {
            version: "570.133.20".to_owned(),
            gpus: vec![Gpu {
                index: "0".to_owned(),
                name: "NVIDIA H100 80GB HBM3".to_owned(),
                memory_mib: Some(81559),
                mig_mode: "Disabled".to_owned(),
            }],
        },
        cgroup_v2: true,
        free_disk_mib: Some(100_000),
        primary_address: Some("10.0.0.10".to_owned()),
        ..Observation::default()
    }
}

fn with_toolkit(mut o: Observation) -> Observation {
    o.toolkit = Some(Toolkit {
        runtime_path: "/usr/bin/nvidia-container-runtime".to_owned(),
        version: Some("1.17.8-1".to_owned()),
    });
    o.toolkit_repo = true;
    o
}

/// What k3s v3 renders without --default-runtime: the fixture minus the containerd table.
fn generated_without_default() -> String {
    fixture("k3s-containerd-v3-nvidia.toml").replace(
        "[plugins.'io.containerd.cri.v1.runtime'.containerd]\n  default_runtime_name = \"nvidia\"\n\n",
        "",
    )
}

fn with_k3s(mut o: Observation, config: &str, generated: &str) -> Observation {
    o.k3s = Some(K3sInstall {
        version: k3s::parse_version("v1.33.5+k3s1"),
        active: Some(true),
    });
    o.k3s_config = Some(file(k3s::CONFIG_YAML, config));
    o.k3s_generated = Some(file(k3s::GENERATED_CONTAINERD, generated));
    o
}

fn kinds(plan: &Plan) -> Vec<&'static str> {
    plan.steps
        .iter()
        .map(|s| match &s.step {
            Step::AddToolkitRepo { .. } => "repo",
            Step::InstallToolkit { .. } => "toolkit",
            Step::WriteFile(_) => "write",
            Step::InstallK3s { .. } => "k3s",
            Step::RestartService { .. } => "restart",
            Step::WaitReady { .. } => "wait",
            Step::CopyKubeconfig { .. } => "kubeconfig",
        })
        .collect()
}

fn written(plan: &Plan, path: &str) -> String {
    plan.steps
        .iter()
        .find_map(|s| match &s.step {
            Step::WriteFile(f) if f.path == path => Some(f.after.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{path} not written: {:?}", plan.steps))
}

#[test]
fn fresh_vm_installs_toolkit_before_k3s_with_merged_config() {
    let plan = plan::plan_install(&fresh_vm(), &InstallOptions::default());
    assert!(plan.blockers.is_empty(), "{:?}", plan.blockers);
    assert_eq!(kinds(&plan), ["repo", "toolkit", "write", "k3s", "wait"]);
    let yaml = written(&plan, k3s::CONFIG_YAML);
    assert_eq!(
        yaml,
        "default-runtime: nvidia\ntls-san:\n  - \"10.0.0.10\"\nnode-label:\n  - \"gpu=on\"\n"
    );
    assert!(
        !yaml.contains("write-kubeconfig-mode"),
        "mode must stay k3s's default 0600"
    );
    assert!(plan.steps.iter().all(|s| !s.why.is_empty()));
    assert!(
        plan.steps[1].why.contains("before k3s starts"),
        "{}",
        plan.steps[1].why
    );
}

#[test]
fn pinned_toolkit_version_is_passed_to_apt() {
    let opts = InstallOptions {
        toolkit_version: Some("1.17.8-1".to_owned()),
        ..InstallOptions::default()
    };
    let plan = plan::plan_install(&fresh_vm(), &opts);
    let Step::InstallToolkit { packages } = &plan.steps[1].step else {
        panic!("{:?}", plan.steps)
    };
    assert!(packages.contains(&"nvidia-container-toolkit=1.17.8-1".to_owned()));
    assert!(packages.contains(&"libnvidia-container1=1.17.8-1".to_owned()));
}

#[test]
fn toolkit_present_is_not_reinstalled() {
    let plan = plan::plan_install(&with_toolkit(fresh_vm()), &InstallOptions::default());
    assert_eq!(kinds(&plan), ["write", "k3s", "wait"]);
}

#[test]
fn k3s_present_without_default_runtime_merges_config_and_restarts() {
    let obs = with_k3s(
        with_toolkit(fresh_vm()),
        &fixture("k3s-config.yaml"),
        &generated_without_default(),
    );
    let plan = plan::plan_install(&obs, &InstallOptions::default());
    assert!(plan.blockers.is_empty(), "{:?}", plan.blockers);
    assert_eq!(kinds(&plan), ["write", "restart", "wait"]);
    let yaml = written(&plan, k3s::CONFIG_YAML);
    // Merged key by key: unknown keys and the comment kept, nothing duplicated.
    assert!(yaml.starts_with("# source: k3s-io/docs"));
    assert!(yaml.contains("cluster-init: true"));
    assert!(yaml.contains("  - \"foo.local\"\n  - \"10.0.0.10\"\n"));
    assert!(yaml.contains("  - \"something=amazing\"\n  - \"gpu=on\"\n"));
    assert!(yaml.contains("write-kubeconfig-mode: \"0600\""));
    assert_eq!(yaml.matches("default-runtime").count(), 1);
    assert!(matches!(&plan.steps[1].step, Step::RestartService { unit } if unit == "k3s"));
    assert!(matches!(
        &plan.steps[2].step,
        Step::WaitReady {
            target: Readiness::K3sNode,
            ..
        }
    ));

    // set-default-runtime --runtime k3s on the same host touches only default-runtime.
    let p = plan::plan_set_default_runtime(&obs, plan::Target::K3s, true, 60);
    assert_eq!(kinds(&p), ["write", "restart", "wait"]);
    let only = written(&p, k3s::CONFIG_YAML);
    assert!(only.contains("default-runtime: nvidia"));
    assert!(!only.contains("gpu=on"));
}

#[test]
fn all_done_host_has_an_empty_plan() {
    let merged = k3s::merge_config_yaml(
        Some(&fixture("k3s-config-gpu.yaml").replace("\"0644\"", "\"0600\"")),
        &k3s::Wanted {
            default_runtime: Some("nvidia".into()),
            tls_san: vec!["10.0.0.10".into()],
            node_labels: vec!["gpu=on".into()],
        },
    )
    .unwrap();
    assert!(merged.changes.is_empty(), "{:?}", merged.changes);
    let mut obs = with_k3s(
        with_toolkit(fresh_vm()),
        &merged.text,
        &fixture("k3s-containerd-v3-nvidia.toml"),
    );
    obs.kubeconfig_user = Some(KubeconfigUser {
        name: "lab".into(),
        uid: 1000,
        gid: 1000,
        home: "/home/lab".into(),
        in_sync: true,
    });
    let opts = InstallOptions {
        kubeconfig_user: Some("lab".into()),
        ..InstallOptions::default()
    };
    let plan = plan::plan_install(&obs, &opts);
    assert_eq!(plan, Plan::default());
    assert!(
        plan::plan_set_default_runtime(&obs, plan::Target::K3s, true, 60)
            .steps
            .is_empty()
    );
}

#[test]
fn config_right_but_k3s_not_restarted_yet_plans_only_a_restart() {
    let merged = fixture("k3s-config-gpu.yaml").replace("\"0644\"", "\"0600\"");
    let obs = with_k3s(
        with_toolkit(fresh_vm()),
        &merged,
        &generated_without_default(),
    );
    let plan = plan::plan_install(&obs, &InstallOptions::default());
    assert_eq!(kinds(&plan), ["restart", "wait"]);
    assert!(
        plan.steps[0].why.contains("has not applied it yet"),
        "{}",
        plan.steps[0].why
    );
}

#[test]
fn mig_enabled_warns_about_hami_core() {
    let mut obs = fresh_vm();
    if let Driver::Ok { gpus, .. } = &mut obs.driver {
        gpus[0].mig_mode = "Enabled".into();
    }
    let plan = plan::plan_install(&obs, &InstallOptions::default());
    assert!(plan.blockers.is_empty());
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("MIG") && w.contains("HAMi-core")),
        "{:?}",
        plan.warnings
    );
    let findings = host_setup::checks::preflight(&obs, true);
    assert!(
        findings
            .iter()
            .any(|f| f.level == host_setup::checks::Level::Warn && f.what.contains("MIG"))
    );
    assert_eq!(host_setup::checks::exit_code(&findings, 3), 0);
}

#[test]
fn no_driver_blocks_with_a_fix() {
    let mut obs = fresh_vm();
    obs.driver = Driver::Missing {
        why: "nvidia-smi not found".into(),
    };
    let plan = plan::plan_install(&obs, &InstallOptions::default());
    assert_eq!(plan.blockers.len(), 1);
    assert!(plan.blockers[0].problem.contains("NVIDIA driver"));
    assert!(plan.blockers[0].fix.contains("nvidia-smi"));
    assert_eq!(
        host_setup::checks::exit_code(&host_setup::checks::preflight(&obs, true), 3),
        3
    );
}

#[test]
fn not_root_blocks_and_apply_refuses_without_writing() {
    let mut obs = fresh_vm();
    obs.euid = Some(1000);
    let plan = plan::plan_install(&obs, &InstallOptions::default());
    assert!(
        plan.blockers
            .iter()
            .any(|b| b.problem.contains("not root") && b.fix.contains("sudo"))
    );
    let dir = tempfile::tempdir().unwrap();
    let root = host_setup::root::HostRoot::new(dir.path());
    let runner = lab_runner::RecordingRunner::new(&["apt-get", "sh", "systemctl"]);
    let opts = host_setup::apply::ApplyOptions {
        system: true,
        wait_attempts: 1,
        poll_interval: std::time::Duration::ZERO,
        validators: host_setup::validate::Validators::default(),
        stamp: "s".into(),
    };
    let err = host_setup::apply::apply(&plan, &runner, &root, &opts, &mut |_| {}).unwrap_err();
    assert!(matches!(err, host_setup::apply::ApplyError::Blocked(_)));
    assert!(runner.calls().is_empty());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // Under --root (not the running system) root is not required.
    assert!(plan::install_blockers(&obs, false).is_empty());
}

#[test]
fn old_k3s_without_default_runtime_option_is_refused_with_upgrade_fix() {
    let mut obs = with_k3s(
        with_toolkit(fresh_vm()),
        &fixture("k3s-config.yaml"),
        &fixture("k3s-containerd-v2-nvidia.toml"),
    );
    obs.k3s.as_mut().unwrap().version = k3s::parse_version("v1.28.4+k3s2");
    let plan = plan::plan_set_default_runtime(&obs, plan::Target::K3s, true, 60);
    assert!(plan.steps.is_empty());
    assert!(
        plan.blockers[0].problem.contains("redeclare"),
        "{:?}",
        plan.blockers
    );
}

#[test]
fn user_template_that_redeclares_the_containerd_table_blocks() {
    let mut obs = with_k3s(
        with_toolkit(fresh_vm()),
        &fixture("k3s-config.yaml"),
        &generated_without_default(),
    );
    obs.k3s_template_v3 = Some(file(
        k3s::TEMPLATE_V3,
        "{{ template \"base\" . }}\n[plugins.'io.containerd.cri.v1.runtime'.containerd]\n  default_runtime_name = \"nvidia\"\n",
    ));
    let plan = plan::plan_install(&obs, &InstallOptions::default());
    assert!(
        plan.blockers
            .iter()
            .any(|b| b.problem.contains("table containerd already exists"))
    );
    // The docs' template (a new runtime only) is fine.
    obs.k3s_template_v3 = Some(file(k3s::TEMPLATE_V3, &fixture("k3s-config-v3.toml.tmpl")));
    assert!(
        plan::plan_install(&obs, &InstallOptions::default())
            .blockers
            .is_empty()
    );
}

#[test]
fn dropin_overriding_default_runtime_blocks() {
    let mut obs = with_toolkit(fresh_vm());
    obs.k3s_config_dropins = vec![file(
        "/etc/rancher/k3s/config.yaml.d/50-x.yaml",
        "default-runtime: runc\n",
    )];
    let plan = plan::plan_install(&obs, &InstallOptions::default());
    assert!(
        plan.blockers
            .iter()
            .any(|b| b.problem.contains("50-x.yaml"))
    );
}

/// The only blocker of `plan`, which must exist.
fn only_blocker(plan: &Plan) -> &plan::Blocker {
    assert_eq!(plan.blockers.len(), 1, "{:?}", plan.blockers);
    assert!(plan.steps.is_empty() || !plan.blockers.is_empty());
    &plan.blockers[0]
}

/// One case per blocker message of the planner: the problem names what is wrong, the fix is the
/// fix for that case (not a generic "fix it").
#[test]
fn every_blocker_message_carries_the_fix_for_its_case() {
    let install = |obs: &Observation| plan::plan_install(obs, &InstallOptions::default());
    let k3s_host = || {
        with_k3s(
            with_toolkit(fresh_vm()),
            &fixture("k3s-config.yaml"),
            &generated_without_default(),
        )
    };
    let mut cases: Vec<(&str, Plan, &str, &str)> = Vec::new();

    let mut o = fresh_vm();
    o.apt = false;
    cases.push((
        "no apt",
        install(&o),
        "no apt-get",
        "install nvidia-container-toolkit by hand",
    ));

    let mut o = fresh_vm();
    o.euid = Some(1000);
    let p = plan::plan_set_default_runtime(&o, plan::Target::Containerd, true, 60);
    cases.push((
        "not root (set-default-runtime)",
        p,
        "not running as root",
        "sudo host-setup set-default-runtime",
    ));

    let p = plan::plan_install(
        &fresh_vm(),
        &InstallOptions {
            kubeconfig_user: Some("ghost".into()),
            ..InstallOptions::default()
        },
    );
    cases.push((
        "unknown kubeconfig user",
        p,
        "--kubeconfig-user ghost: no such user",
        "adduser",
    ));

    let mut o = k3s_host();
    o.k3s.as_mut().unwrap().version = k3s::parse_version("v1.28.4+k3s2");
    o.k3s_generated = Some(file(
        k3s::GENERATED_CONTAINERD,
        &fixture("k3s-containerd-v2-nvidia.toml"),
    ));
    cases.push((
        "old k3s (install)",
        install(&o),
        "predates the default-runtime option",
        "host-setup install --k3s-version",
    ));

    let p = plan::plan_set_default_runtime(&with_toolkit(fresh_vm()), plan::Target::K3s, true, 60);
    cases.push((
        "no k3s",
        p,
        "k3s is not installed",
        "run `host-setup install`",
    ));

    let mut o = k3s_host();
    o.toolkit = None;
    let p = plan::plan_set_default_runtime(&o, plan::Target::K3s, true, 60);
    cases.push((
        "no toolkit for k3s",
        p,
        "nvidia-container-runtime is missing",
        "install the NVIDIA Container Toolkit first",
    ));

    let mut o = k3s_host();
    o.k3s.as_mut().unwrap().version = k3s::parse_version("v1.28.4+k3s2");
    o.k3s_template_v3 = Some(file(
        k3s::TEMPLATE_V3,
        "{{ template \"base\" . }}\n# mine\n",
    ));
    let p = plan::plan_set_default_runtime(&o, plan::Target::K3s, true, 60);
    cases.push((
        "user template (old k3s, v3)",
        p,
        "exists with your own content",
        "add `[plugins.'io.containerd.cri.v1.runtime'.containerd] default_runtime_name",
    ));

    let mut o = k3s_host();
    o.k3s_config = Some(file(k3s::CONFIG_YAML, "- a\n"));
    cases.push((
        "config.yaml not a mapping",
        install(&o),
        "the top level is a list",
        "`flag: value` lines",
    ));

    let mut o = k3s_host();
    o.k3s_config_dropins = vec![file("/etc/rancher/k3s/config.yaml.d/50-x.yaml", "a: [b\n")];
    cases.push((
        "drop-in not YAML",
        install(&o),
        "50-x.yaml: not valid YAML",
        "or remove /etc/rancher/k3s/config.yaml.d/50-x.yaml",
    ));

    let mut o = k3s_host();
    o.k3s_config_dropins = vec![file(
        "/etc/rancher/k3s/config.yaml.d/50-x.yaml",
        "default-runtime: runc\n",
    )];
    cases.push((
        "drop-in overrides default-runtime",
        install(&o),
        "sets `default-runtime: runc`",
        "remove the `default-runtime: runc` line from /etc/rancher/k3s/config.yaml.d/50-x.yaml",
    ));

    let mut o = k3s_host();
    o.k3s_config_dropins = vec![file(
        "/etc/rancher/k3s/config.yaml.d/50-x.yaml",
        "write-kubeconfig-mode: \"0644\"\n",
    )];
    cases.push((
        "drop-in opens the kubeconfig",
        install(&o),
        "making the admin kubeconfig readable",
        "--kubeconfig-user",
    ));

    let mut o = k3s_host();
    o.k3s_template_v3 = Some(file(
        k3s::TEMPLATE_V3,
        "{{ template \"base\" . }}\n[plugins.'io.containerd.cri.v1.runtime'.containerd]\n",
    ));
    cases.push((
        "template redeclares containerd",
        install(&o),
        "table containerd already exists",
        "remove the [plugins.\"io.containerd.cri.v1.runtime\".containerd] table",
    ));

    let mut o = k3s_host();
    o.k3s_template_v3 = Some(file(
        k3s::TEMPLATE_V3,
        "{{ template \"base\" . }}\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n",
    ));
    cases.push((
        "template redeclares runc",
        install(&o),
        "declares runtimes.runc",
        "remove the runtimes.runc tables",
    ));

    let mut o = k3s_host();
    o.k3s_template_v3 = Some(file(
        k3s::TEMPLATE_V3,
        "{{ template \"base\" . }}\n[plugins\n",
    ));
    cases.push(("template not TOML", install(&o), "is not valid TOML", "correct /var/lib/rancher/k3s/agent/etc/containerd/config-v3.toml.tmpl at the position shown"));

    let mut o = with_toolkit(fresh_vm());
    o.containerd_config = Some(file(
        "/etc/containerd/config.toml",
        "version = 2\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n",
    ));
    o.containerd_imports = vec![file("/etc/containerd/conf.d/9.toml", "version = \"2\"\n")];
    let p = plan::plan_set_default_runtime(&o, plan::Target::Containerd, true, 60);
    cases.push(("drop-in with a string version", p, "9.toml: `version = \"2\"` is a string", "write it as a bare integer: `version = 2` (no quotes) (or remove the drop-in /etc/containerd/conf.d/9.toml), then run again"));

    let mut o = k3s_host();
    o.unreadable = vec![host_setup::root::Unreadable {
        path: k3s::CONFIG_YAML.into(),
        problem: host_setup::root::ReadProblem::NotUtf8 { valid_up_to: 3 },
    }];
    let p = install(&o);
    assert!(
        p.steps.is_empty(),
        "nothing is planned over an unreadable file"
    );
    cases.push((
        "unreadable config.yaml",
        p,
        "config.yaml cannot be read: it is not UTF-8 text",
        "grep -naxv",
    ));

    for (name, plan, problem, fix) in &cases {
        let b = only_blocker(plan);
        assert!(
            b.problem.contains(problem),
            "{name}: problem {:?} lacks {problem:?}",
            b.problem
        );
        assert!(b.fix.contains(fix), "{name}: fix {:?} lacks {fix:?}", b.fix);
        assert!(
            !b.problem.contains("fix:"),
            "{name}: the fix belongs in `fix`: {:?}",
            b.problem
        );
    }
}
