//! End-to-end tests of the `host-setup` binary on fixture trees (`--root`), run through
//! `lab_runner::SystemRunner`: the "done when" commands of issue 7, exit codes, JSON output, and
//! that secrets never reach the output. Under `--root` no service or package is touched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use lab_runner::{Cmd, Output, Runner, SystemRunner};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_host-setup");

fn host_setup(args: &[&str]) -> Output {
    SystemRunner::new(false)
        .run(&Cmd::new(BIN).args(args.iter().copied()))
        .expect("host-setup runs")
}

#[test]
fn install_dry_run_on_a_fresh_tree_prints_a_followable_plan_and_touches_nothing() {
    let t = tree(&["fresh-vm"]);
    let root = t.path().to_str().unwrap();
    let before = snapshot(t.path());
    let out = host_setup(&[
        "install",
        "--dry-run",
        "--root",
        root,
        "--tls-san",
        "10.0.0.10",
        "--kubeconfig-user",
        "lab",
    ]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let s = &out.stdout;
    let order = [
        "1. add NVIDIA's apt repository",
        "2. install the NVIDIA Container Toolkit",
        "3. create /etc/rancher/k3s/config.yaml",
        "+default-runtime: nvidia",
        "4. install k3s",
        "5. wait up to 300s for the node to be Ready",
        "6. copy the admin kubeconfig to /home/lab/.kube/config",
    ];
    let mut last = 0;
    for needle in order {
        let pos = s
            .find(needle)
            .unwrap_or_else(|| panic!("missing {needle:?} in\n{s}"));
        assert!(pos >= last, "{needle:?} out of order in\n{s}");
        last = pos;
    }
    assert!(s.contains("GPU 0 NVIDIA H100 80GB HBM3"), "{s}");
    assert_eq!(snapshot(t.path()), before, "dry-run changed the tree");
}

#[test]
fn install_dry_run_json_lists_typed_steps() {
    let t = tree(&["k3s-no-default"]);
    let out = host_setup(&[
        "install",
        "--dry-run",
        "--output",
        "json",
        "--root",
        t.path().to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let kinds: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["write-file", "restart-service", "wait-ready"]);
    assert!(
        v["steps"][0]["diff"]
            .as_str()
            .unwrap()
            .contains("+default-runtime: nvidia")
    );
    assert!(
        v["steps"][0]["why"]
            .as_str()
            .unwrap()
            .contains("key by key")
    );
}

#[test]
fn install_on_a_k3s_tree_twice_changes_nothing_the_second_time() {
    let t = tree(&["k3s-no-default"]);
    let root = t.path().to_str().unwrap();
    let first = host_setup(&["install", "--root", root, "--tls-san", "10.0.0.10"]);
    // Files only (k3s did not run): the post-apply verify skips what needs k3s.
    assert_eq!(first.code, Some(0), "{}{}", first.stdout, first.stderr);
    assert!(
        first
            .stderr
            .contains("skipped (--root is not the running system): systemctl restart k3s")
    );
    // What k3s writes when it restarts with default-runtime: nvidia (the tree has no k3s to do it).
    std::fs::write(
        t.path()
            .join("var/lib/rancher/k3s/agent/etc/containerd/config.toml"),
        fixture("k3s-containerd-v3-nvidia.toml"),
    )
    .unwrap();
    let after = snapshot(t.path());
    let second = host_setup(&["install", "--root", root, "--tls-san", "10.0.0.10"]);
    assert_eq!(second.code, Some(0), "{}{}", second.stdout, second.stderr);
    assert!(second.stdout.contains("Nothing to do"), "{}", second.stdout);
    assert_eq!(snapshot(t.path()), after, "second install changed bytes");
}

#[test]
fn set_default_runtime_containerd_on_each_fixture_is_accepted_and_idempotent() {
    let bins = containerd_bins();
    let v2 = bins.iter().find(|(_, m)| *m < 2).or(bins.first());
    let v3 = bins.iter().find(|(_, m)| *m >= 2);
    if v3.is_none() {
        lab_runner::tier::skipped(
            "containerd 2.x",
            "no containerd >= 2.0: version 3 fixtures are written with --no-validate (parsed only)",
        );
    }
    for name in containerd_fixtures()
        .into_iter()
        .filter(|n| !n.contains("dockerio-v1"))
    {
        let t = tree(&["containerd", &name]);
        let root = t.path().to_str().unwrap();
        let text = fixture(&name);
        let version = host_setup::containerd::file_version(&text, &name)
            .unwrap()
            .unwrap_or(2);
        let bin = if version >= 3 { v3 } else { v2 };
        let mut args = vec![
            "set-default-runtime",
            "--runtime",
            "containerd",
            "--root",
            root,
        ];
        match bin {
            Some((b, _)) => args.extend(["--containerd-bin", b.as_str()]),
            None => args.push("--no-validate"),
        }
        let first = host_setup(&args);
        assert_eq!(
            first.code,
            Some(0),
            "{name}: {}{}",
            first.stdout,
            first.stderr
        );
        let wrote = !first.stdout.contains("Nothing to do");
        match bin {
            Some((_, major)) => {
                assert!(
                    !wrote
                        || first.stdout.contains(&format!(
                            "validated by the real containerd {} (containerd {major}.",
                            lab_runner::which(&bin.unwrap().0).unwrap().display()
                        )),
                    "{name}: {}",
                    first.stdout
                );
                assert!(
                    first
                        .stdout
                        .contains("config dump` loads it: default runtime nvidia"),
                    "{name}: {}",
                    first.stdout
                );
            }
            None => assert!(
                !wrote
                    || first
                        .stdout
                        .contains("NOT validated by a real containerd (--no-validate given)"),
                "{name}: {}",
                first.stdout
            ),
        }
        let after = snapshot(t.path());
        let second = host_setup(&args);
        assert_eq!(second.code, Some(0), "{name}: {}", second.stderr);
        assert!(
            second.stdout.contains("Nothing to do"),
            "{name}: {}",
            second.stdout
        );
        assert_eq!(
            snapshot(t.path()),
            after,
            "{name}: second run changed bytes"
        );
    }
}

#[test]
fn without_a_containerd_that_reads_the_file_apply_refuses_unless_no_validate() {
    // An empty PATH: no containerd anywhere, so nothing can load the rendered config.
    let t = tree(&["containerd", "containerd-default-v3.toml"]);
    let root = t.path().to_str().unwrap();
    let before = snapshot(t.path());
    let run = |extra: &[&str]| {
        let mut cmd = Cmd::new(BIN)
            .args([
                "set-default-runtime",
                "--runtime",
                "containerd",
                "--root",
                root,
            ])
            .args(extra.iter().copied())
            .env("PATH", "/nonexistent");
        cmd = cmd.timeout(std::time::Duration::from_secs(60));
        SystemRunner::new(false).run(&cmd).expect("host-setup runs")
    };
    for extra in [&[][..], &["--dry-run"][..]] {
        let out = run(extra);
        assert_eq!(out.code, Some(3), "{extra:?}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stdout
                .contains("/etc/containerd/config.toml: not validated:")
                && out.stdout.contains("no containerd binary was found")
                && out.stdout.contains("fix: install a containerd >= 2.0"),
            "{}",
            out.stdout
        );
        assert_eq!(snapshot(t.path()), before, "a refused plan wrote something");
    }
    let out = run(&["--no-validate"]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("NOT validated by a real containerd (--no-validate given): the planned /etc/containerd/config.toml (with its drop-ins) is config version 3, and no containerd binary was found; it was only parsed"),
        "{}",
        out.stdout
    );
}

#[test]
fn version1_config_exits_3_with_a_fix() {
    let t = tree(&["containerd", "nvidia-ctk-v1.20.0-dockerio-v1-dropin.toml"]);
    let out = host_setup(&[
        "set-default-runtime",
        "--runtime",
        "containerd",
        "--root",
        t.path().to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(3));
    assert!(
        out.stdout
            .contains("`version = 1` is containerd's legacy config schema")
            && out.stdout.contains(
                "fix: regenerate it with `containerd config default > /etc/containerd/config.toml`"
            ),
        "{}",
        out.stdout
    );
}

#[test]
fn verify_exit_codes() {
    let done = tree(&["k3s-done"]);
    let ok = host_setup(&["verify", "--root", done.path().to_str().unwrap()]);
    assert_eq!(ok.code, Some(0), "{}", ok.stdout);
    let not = tree(&["k3s-no-default"]);
    let bad = host_setup(&["verify", "--root", not.path().to_str().unwrap()]);
    assert_eq!(bad.code, Some(1), "{}", bad.stdout);
    assert!(
        bad.stdout.contains("has no default_runtime_name"),
        "{}",
        bad.stdout
    );
}

#[test]
fn preflight_exit_codes_and_usage_errors() {
    let t = tree(&["mig"]);
    let out = host_setup(&["preflight", "--root", t.path().to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    assert!(
        out.stdout.contains("MIG Enabled") && out.stdout.contains("[WARN]"),
        "{}",
        out.stdout
    );
    let empty = tempfile::tempdir().unwrap();
    let out = host_setup(&["preflight", "--root", empty.path().to_str().unwrap()]);
    assert_eq!(out.code, Some(3), "{}", out.stdout);
    assert_eq!(host_setup(&["install", "--no-such-flag"]).code, Some(2));
    assert_eq!(
        host_setup(&["preflight", "--root", "/no/such/dir"]).code,
        Some(3)
    );
}

#[test]
fn secrets_in_config_yaml_never_reach_the_output() {
    let t = tree(&["k3s-no-default"]);
    let cfg = t.path().join("etc/rancher/k3s/config.yaml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("token: K10SECRETSECRET::server:abc\n");
    std::fs::write(&cfg, text).unwrap();
    for output in ["human", "json"] {
        let out = host_setup(&[
            "install",
            "--dry-run",
            "--output",
            output,
            "--root",
            t.path().to_str().unwrap(),
        ]);
        assert_eq!(out.code, Some(0));
        assert!(
            !out.stdout.contains("K10SECRET") && !out.stderr.contains("K10SECRET"),
            "{output}"
        );
    }
    // The token itself is kept in the file.
    let out = host_setup(&["install", "--root", t.path().to_str().unwrap()]);
    assert!(!out.stdout.contains("K10SECRET"));
    assert!(
        std::fs::read_to_string(&cfg)
            .unwrap()
            .contains("token: K10SECRETSECRET::server:abc")
    );
}

#[test]
fn finished_k3s_tree_has_an_empty_plan_and_install_changes_no_byte() {
    let t = tree(&["k3s-done"]);
    let root = t.path().to_str().unwrap();
    let before = snapshot(t.path());
    let dry = host_setup(&[
        "install",
        "--dry-run",
        "--root",
        root,
        "--tls-san",
        "10.0.0.10",
    ]);
    assert_eq!(dry.code, Some(0));
    assert!(
        dry.stdout.contains("(0 steps)") && dry.stdout.contains("Nothing to do"),
        "{}",
        dry.stdout
    );
    let real = host_setup(&["install", "--root", root, "--tls-san", "10.0.0.10"]);
    assert_eq!(real.code, Some(0), "{}{}", real.stdout, real.stderr);
    assert_eq!(
        snapshot(t.path()),
        before,
        "install on a finished host changed bytes"
    );
}
