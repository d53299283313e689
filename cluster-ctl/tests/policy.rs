//! The GPU tenant policy (`manifests/policy.yaml`) tested by evaluating its OWN expressions (read
//! from the file cluster-ctl applies, evaluated by the mock API server's `admission` module with the
//! `cel` crate) against: every
//! bypass pod (B1–B4 and B6 denied, each by the rule that names its bypass; B5 admitted: nothing
//! in its spec gives it away), every lab pod as rendered (admitted, also after HAMi's webhook
//! added its own env), HAMi's own device plugin and scheduler pods (admitted in HAMi's namespace
//! only), and pods built to test each rule's edges. Also: both objects deserialize into
//! k8s-openapi's types without losing a field.
//!
//! Tier: the CEL semantics are cel-rust's, not kube-apiserver's (cel-go); the expressions use only
//! the standard macros and string functions both implement. No API server evaluated them here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use serde_json::{Value, json};

#[path = "mockapi/mod.rs"]
mod mockapi;

use cluster_ctl::manifests::{
    self, BASELINE_NAMESPACE, DEFAULT_IMAGE, POLICY, RenderedPod, render_bypasses,
};
use cluster_ctl::sizing::{Card, size};
use mockapi::admission::{Decision, Policy, decide, load, rule_tag};

fn policy() -> Policy {
    load(POLICY)
}

fn create(namespace: &str, pod: &Value) -> Decision {
    decide(&policy(), namespace, pod, "CREATE", "")
}

fn denied_by(tags: &[&str]) -> Decision {
    Decision::Denied(tags.iter().map(|t| (*t).to_owned()).collect())
}

fn json_of(p: &RenderedPod) -> Value {
    serde_json::to_value(&p.pod).unwrap()
}

fn sizing() -> cluster_ctl::sizing::Sizing {
    size(
        &[Card {
            uuid: None,
            devmem_mib: 143771,
        }],
        None,
        None,
    )
    .unwrap()
}

#[test]
fn every_bypass_pod_is_denied_by_the_rule_that_names_it_and_b5_is_admitted() {
    let expected = [
        ("B1", denied_by(&["visible-devices-env"])),
        ("B2", denied_by(&["hami-core-env"])),
        ("B3", denied_by(&["hami-core-env"])),
        ("B4", denied_by(&["visible-devices-env"])),
        // B5 tampers from inside; its spec is an ordinary slice pod's.
        ("B5", Decision::Admitted),
        ("B6", denied_by(&["privileged"])),
    ];
    let pods = render_bypasses(&sizing(), "lab", DEFAULT_IMAGE).unwrap();
    assert_eq!(pods.len(), expected.len());
    for (b, (id, want)) in pods.iter().zip(expected) {
        assert_eq!(b.bypass.id, id);
        assert_eq!(create("lab", &json_of(&b.pod)), want, "{id}");
        // In an exempt namespace the policy does not apply at all.
        assert_eq!(
            create("kube-system", &json_of(&b.pod)),
            Decision::Exempt,
            "{id}"
        );
    }
}

#[test]
fn every_lab_pod_is_admitted_also_after_hamis_webhook_added_its_env() {
    let s = sizing();
    let mut pods = manifests::render_all(&s, "default", DEFAULT_IMAGE).unwrap();
    let baseline = manifests::render(
        manifests::BASELINE_TEMPLATE,
        manifests::BASELINE,
        BASELINE_NAMESPACE,
        DEFAULT_IMAGE,
        manifests::BASELINE_MIB,
        None,
    )
    .unwrap();
    for p in &pods {
        assert_eq!(
            create("default", &json_of(p)),
            Decision::Admitted,
            "{}",
            p.name
        );
        // What HAMi's webhook appends (pkg/device/nvidia/device.go MutateAdmission) and the
        // scheduler name it sets: the policy sees the pod after mutation.
        let mut mutated = json_of(p);
        mutated["spec"]["schedulerName"] = json!("hami-scheduler");
        mutated["spec"]["containers"][0]["env"] = json!([
            {"name": "CUDA_TASK_PRIORITY", "value": "1"},
            {"name": "GPU_CORE_UTILIZATION_POLICY", "value": "force"}
        ]);
        assert_eq!(
            create("default", &mutated),
            Decision::Admitted,
            "{}",
            p.name
        );
    }
    // The baseline pod sets CUDA_DISABLE_CONTROL=true on purpose: admitted only in its exempt namespace.
    assert_eq!(
        create(BASELINE_NAMESPACE, &json_of(&baseline)),
        Decision::Exempt
    );
    assert_eq!(
        create("default", &json_of(&baseline)),
        denied_by(&["hami-core-env"])
    );
    // A non-GPU container to which HAMi's webhook (overwriteEnv) added NVIDIA_VISIBLE_DEVICES=none.
    pods.truncate(1);
    let mut none = json_of(&pods[0]);
    none["spec"]["containers"][0]["resources"] = json!({});
    none["spec"]["containers"][0]["env"] =
        json!([{"name": "NVIDIA_VISIBLE_DEVICES", "value": "none"}]);
    assert_eq!(create("default", &none), Decision::Admitted);
}

/// HAMi's device plugin DaemonSet (chart 2.10 `templates/device-plugin/daemonsetnvidia.yaml`,
/// default values) and scheduler Deployment, as the pods their controllers create.
fn hami_pods() -> Vec<(&'static str, Value)> {
    let device_plugin = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "hami-device-plugin-x7k2p", "labels": {"app.kubernetes.io/component": "hami-device-plugin", "hami.io/webhook": "ignore"}},
        "spec": {
            "hostPID": true,
            "nodeSelector": {"gpu": "on"},
            "containers": [
                {
                    "name": "device-plugin",
                    "image": "docker.io/projecthami/hami:v2.10.0",
                    "command": ["nvidia-device-plugin", "--config-file=/device-config.yaml", "--mig-strategy=none", "--disable-core-limit=false", "-v=4"],
                    "env": [
                        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "NVIDIA_MIG_MONITOR_DEVICES", "value": "all"},
                        {"name": "DEVICE_LIST_STRATEGY", "value": "envvar"},
                        {"name": "HOOK_PATH", "value": "/usr/local"}
                    ],
                    "securityContext": {"privileged": true, "allowPrivilegeEscalation": true, "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}},
                    "volumeMounts": [
                        {"name": "device-plugin", "mountPath": "/var/lib/kubelet/device-plugins"},
                        {"name": "lib", "mountPath": "/usr/local/vgpu"},
                        {"name": "usrbin", "mountPath": "/usrbin"},
                        {"name": "deviceconfig", "mountPath": "/config"},
                        {"name": "hosttmp", "mountPath": "/tmp"},
                        {"name": "device-config", "mountPath": "/device-config.yaml", "subPath": "device-config.yaml"},
                        {"name": "cdi-root", "mountPath": "/var/run/cdi"}
                    ]
                },
                {
                    "name": "vgpu-monitor",
                    "image": "docker.io/projecthami/hami:v2.10.0",
                    "command": ["vGPUmonitor", "-v=4"],
                    "env": [
                        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
                        {"name": "NVIDIA_MIG_MONITOR_DEVICES", "value": "all"},
                        {"name": "HOOK_PATH", "value": "/usr/local/vgpu"},
                        {"name": "HAMI_RESYNC_INTERVAL", "value": "5m"}
                    ],
                    "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}},
                    "volumeMounts": [
                        {"name": "ctrs", "mountPath": "/usr/local/vgpu/containers"},
                        {"name": "dockers", "mountPath": "/run/docker"},
                        {"name": "containerds", "mountPath": "/run/containerd"},
                        {"name": "sysinfo", "mountPath": "/sysinfo"},
                        {"name": "hostvar", "mountPath": "/hostvar"},
                        {"name": "hosttmp", "mountPath": "/tmp"}
                    ]
                }
            ],
            "volumes": [
                {"name": "ctrs", "hostPath": {"path": "/usr/local/vgpu/containers"}},
                {"name": "hosttmp", "hostPath": {"path": "/tmp"}},
                {"name": "dockers", "hostPath": {"path": "/run/docker"}},
                {"name": "containerds", "hostPath": {"path": "/run/containerd"}},
                {"name": "device-plugin", "hostPath": {"path": "/var/lib/kubelet/device-plugins"}},
                {"name": "lib", "hostPath": {"path": "/usr/local/vgpu"}},
                {"name": "cdi-root", "hostPath": {"path": "/var/run/cdi", "type": "DirectoryOrCreate"}},
                {"name": "usrbin", "hostPath": {"path": "/usr/bin"}},
                {"name": "sysinfo", "hostPath": {"path": "/sys"}},
                {"name": "hostvar", "hostPath": {"path": "/var"}},
                {"name": "deviceconfig", "configMap": {"name": "hami-device-plugin"}},
                {"name": "device-config", "configMap": {"name": "hami-scheduler-device"}}
            ]
        }
    });
    let scheduler = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "hami-scheduler-5c9d7b8f4-q2m8x", "labels": {"app.kubernetes.io/component": "hami-scheduler"}},
        "spec": {"containers": [
            {"name": "kube-scheduler", "image": "registry.k8s.io/kube-scheduler:v1.33.5"},
            {"name": "vgpu-scheduler-extender", "image": "docker.io/projecthami/hami:v2.10.0",
             "volumeMounts": [{"name": "tls-config", "mountPath": "/tls"}]}
        ],
        "volumes": [{"name": "tls-config", "secret": {"secretName": "hami-scheduler-tls"}}]}
    });
    vec![("device-plugin", device_plugin), ("scheduler", scheduler)]
}

#[test]
fn hamis_own_components_are_admitted_in_hamis_namespace_and_would_be_denied_elsewhere() {
    for (what, pod) in hami_pods() {
        assert_eq!(create("kube-system", &pod), Decision::Exempt, "{what}");
    }
    let (_, device_plugin) = &hami_pods()[0];
    // The exemption is what admits it: the same pod in a tenant namespace trips five rules.
    assert_eq!(
        create("tenant-a", device_plugin),
        denied_by(&[
            "visible-devices-env",
            "privileged",
            "host-path",
            "mount-path",
            "hami-webhook-skip"
        ])
    );
    let (_, scheduler) = &hami_pods()[1];
    assert_eq!(create("tenant-a", scheduler), Decision::Admitted);
}

#[test]
fn the_exempt_list_is_what_harden_renders() {
    let rendered = cluster_ctl::harden::render_policy(
        &["hami-system".to_owned(), "gpu-admin".to_owned()],
        "hami-system",
    )
    .unwrap();
    let p = Policy {
        policy: serde_json::to_value(&rendered.policy).unwrap(),
        binding: serde_json::to_value(&rendered.binding).unwrap(),
    };
    let (_, device_plugin) = &hami_pods()[0];
    for ns in [
        "kube-system",
        BASELINE_NAMESPACE,
        "hami-system",
        "gpu-admin",
    ] {
        assert_eq!(
            decide(&p, ns, device_plugin, "CREATE", ""),
            Decision::Exempt,
            "{ns}"
        );
    }
    assert!(matches!(
        decide(&p, "default", device_plugin, "CREATE", ""),
        Decision::Denied(_)
    ));
}

/// A one-container pod with `container` merged into the container and `spec` into the spec.
fn pod_with(container: Value, spec: Value) -> Value {
    let mut c = json!({"name": "main", "image": DEFAULT_IMAGE});
    for (k, v) in container.as_object().unwrap() {
        c[k] = v.clone();
    }
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t"}, "spec": {"containers": [c]}});
    for (k, v) in spec.as_object().unwrap() {
        pod["spec"][k] = v.clone();
    }
    pod
}

fn env(pairs: &[(&str, &str)]) -> Value {
    json!({"env": pairs.iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>()})
}

#[test]
fn control_variables_are_denied_by_name_in_every_kind_of_container() {
    for name in [
        "CUDA_DISABLE_CONTROL",
        "CUDA_DEVICE_MEMORY_LIMIT",
        "CUDA_DEVICE_MEMORY_LIMIT_0",
        "CUDA_DEVICE_MEMORY_LIMIT_15",
        "CUDA_DEVICE_SM_LIMIT",
        "CUDA_DEVICE_SM_LIMIT_1",
        "CUDA_DEVICE_MEMORY_SHARED_CACHE",
        "CUDA_OVERSUBSCRIBE",
        "CUDA_REDIRECT",
    ] {
        let e = env(&[(name, "x")]);
        assert_eq!(
            create("t", &pod_with(e.clone(), json!({}))),
            denied_by(&["hami-core-env"]),
            "{name}"
        );
        let init =
            json!({"initContainers": [{"name": "init", "image": "busybox", "env": e["env"]}]});
        assert_eq!(
            create("t", &pod_with(json!({}), init)),
            denied_by(&["hami-core-env"]),
            "{name} in an init container"
        );
        let eph = json!({"ephemeralContainers": [{"name": "debug", "image": "busybox", "env": e["env"]}]});
        assert_eq!(
            create("t", &pod_with(json!({}), eph)),
            denied_by(&["hami-core-env"]),
            "{name} in an ephemeral container"
        );
    }
    // Neither controls nor device requests: admitted (why: cluster-ctl/README.md).
    for name in [
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
        "LIBCUDA_LOG_LEVEL",
        "GPU_CORE_UTILIZATION_POLICY",
        "CUDA_TASK_PRIORITY",
        "LD_PRELOAD",
        "CUDA_DEVICE_MEMORY",
        "MY_CUDA_DISABLE_CONTROL",
    ] {
        assert_eq!(
            create("t", &pod_with(env(&[(name, "1")]), json!({}))),
            Decision::Admitted,
            "{name}"
        );
    }
}

#[test]
fn visible_devices_is_denied_unless_none_or_void() {
    for value in [
        "all",
        "0",
        "GPU-e0628ec7-253e-9593-877b-faac7911234e",
        "0,1",
        "",
        "NONE",
    ] {
        let p = pod_with(env(&[("NVIDIA_VISIBLE_DEVICES", value)]), json!({}));
        assert_eq!(
            create("t", &p),
            denied_by(&["visible-devices-env"]),
            "{value:?}"
        );
    }
    for value in ["none", "void"] {
        let p = pod_with(env(&[("NVIDIA_VISIBLE_DEVICES", value)]), json!({}));
        assert_eq!(create("t", &p), Decision::Admitted, "{value:?}");
    }
    let from_field = pod_with(
        json!({"env": [{"name": "NVIDIA_VISIBLE_DEVICES", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]}),
        json!({}),
    );
    assert_eq!(
        create("t", &from_field),
        denied_by(&["visible-devices-env"])
    );
}

#[test]
fn env_from_needs_a_safe_prefix_only_in_gpu_containers() {
    let gpu = json!({"limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "8000"}});
    let with = |env_from: Value, resources: Value| {
        pod_with(
            json!({"envFrom": env_from, "resources": resources}),
            json!({}),
        )
    };
    let cm = |prefix: Option<&str>| match prefix {
        Some(p) => json!([{"configMapRef": {"name": "c"}, "prefix": p}]),
        None => json!([{"configMapRef": {"name": "c"}}]),
    };
    for bad in [
        None,
        Some("CUDA_"),
        Some("C"),
        Some("NVIDIA_VIS"),
        Some("CUDA_DEVICE_MEMORY_LIMIT_"),
    ] {
        assert_eq!(
            create("t", &with(cm(bad), gpu.clone())),
            denied_by(&["gpu-env-from"]),
            "{bad:?}"
        );
    }
    for good in ["APP_", "X", "CUDA_X_"] {
        assert_eq!(
            create("t", &with(cm(Some(good)), gpu.clone())),
            Decision::Admitted,
            "{good}"
        );
    }
    // A request by gpumem alone counts; a container with no GPU request is not checked.
    let gpumem_only = json!({"requests": {"nvidia.com/gpumem": "8000"}});
    assert_eq!(
        create("t", &with(cm(None), gpumem_only)),
        denied_by(&["gpu-env-from"])
    );
    assert_eq!(
        create("t", &with(cm(None), json!({"limits": {"cpu": "1"}}))),
        Decision::Admitted
    );
}

#[test]
fn privileged_and_sys_admin_are_denied_in_any_spelling() {
    let sc = |v: Value| pod_with(json!({"securityContext": v}), json!({}));
    assert_eq!(
        create("t", &sc(json!({"privileged": true}))),
        denied_by(&["privileged"])
    );
    for cap in ["SYS_ADMIN", "sys_admin", "CAP_SYS_ADMIN", "ALL", "all"] {
        let p = sc(json!({"capabilities": {"add": ["NET_BIND_SERVICE", cap]}}));
        assert_eq!(create("t", &p), denied_by(&["privileged"]), "{cap}");
    }
    for ok in [
        json!({"privileged": false}),
        json!({"capabilities": {"add": ["NET_ADMIN", "SYS_PTRACE_X"], "drop": ["ALL"]}}),
        json!({"runAsNonRoot": true}),
    ] {
        assert_eq!(create("t", &sc(ok.clone())), Decision::Admitted, "{ok}");
    }
}

#[test]
fn host_paths_onto_hami_driver_or_runtime_files_are_denied_with_their_parents() {
    let hp = |path: &str| {
        pod_with(
            json!({}),
            json!({"volumes": [{"name": "h", "hostPath": {"path": path}}]}),
        )
    };
    for path in [
        "/usr/local/vgpu",
        "/usr/local/vgpu/",
        "/usr/local/vgpu/containers/uid_cuda",
        "/usr/local/vgpu/libvgpu.so",
        "/usr/local",
        "/usr",
        "/",
        "/tmp/vgpulock",
        "/tmp",
        "/dev/nvidia0",
        "/dev/nvidiactl",
        "/dev/nvidia-uvm",
        "/dev/nvidia-caps",
        "/dev",
        "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
        "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/bin/nvidia-smi",
        "/etc/nvidia-container-runtime/config.toml",
        "/etc/cdi",
        "/var/run/cdi/nvidia.yaml",
        "/var/lib/kubelet/device-plugins/kubelet.sock",
        "/var/lib/kubelet",
        "/run/nvidia/driver",
    ] {
        assert_eq!(create("t", &hp(path)), denied_by(&["host-path"]), "{path}");
    }
    for path in [
        "/usr//local/vgpu",
        "/usr/local/./vgpu",
        "/usr/local/vgpu/../vgpu",
        "usr/local/vgpu",
    ] {
        let Decision::Denied(tags) = create("t", &hp(path)) else {
            panic!("{path} admitted");
        };
        assert!(
            tags.contains(&"host-path-normal".to_owned()),
            "{path}: {tags:?}"
        );
    }
    for path in [
        "/data/models",
        "/usr/local/vgpux",
        "/dev/null",
        "/dev/shm",
        "/usr/lib/x86_64-linux-gnu/libssl.so.3",
        "/var/log",
        "/tmp2",
    ] {
        assert_eq!(create("t", &hp(path)), Decision::Admitted, "{path}");
    }
}

#[test]
fn mounts_over_what_the_device_plugin_mounts_are_denied_and_their_parents_allowed() {
    let mp = |path: &str| {
        pod_with(
            json!({"volumeMounts": [{"name": "v", "mountPath": path}]}),
            json!({"volumes": [{"name": "v", "emptyDir": {}}]}),
        )
    };
    for path in [
        "/etc/ld.so.preload",
        "/usr/local/vgpu",
        "/usr/local/vgpu/libvgpu.so",
        "/var/run/nvidia-container-devices/all",
        "/var/run/nvidia-container-devices",
        "/run/nvidia-container-devices/GPU-0",
        "/overrideEnv",
    ] {
        assert_eq!(create("t", &mp(path)), denied_by(&["mount-path"]), "{path}");
    }
    // Shallower paths are mounted first by containerd's CRI (it sorts mounts by depth), so a
    // volume at /etc or /var/run cannot cover the device plugin's files.
    for path in [
        "/etc",
        "/var/run",
        "/run",
        "/usr/local",
        "/tmp",
        "/etc/ld.so.preload.d",
        "/data",
    ] {
        assert_eq!(create("t", &mp(path)), Decision::Admitted, "{path}");
    }
    let Decision::Denied(tags) = create("t", &mp("/etc//ld.so.preload")) else {
        panic!("admitted");
    };
    assert!(tags.contains(&"mount-path-normal".to_owned()), "{tags:?}");
}

#[test]
fn the_webhook_skip_label_is_denied() {
    let mut p = pod_with(json!({}), json!({}));
    p["metadata"]["labels"] = json!({"hami.io/webhook": "ignore"});
    assert_eq!(create("t", &p), denied_by(&["hami-webhook-skip"]));
    p["metadata"]["labels"] = json!({"hami.io/webhook": "on", "app": "x"});
    assert_eq!(create("t", &p), Decision::Admitted);
}

#[test]
fn updates_are_checked_only_when_they_add_an_ephemeral_container() {
    let bad = pod_with(env(&[("CUDA_DISABLE_CONTROL", "true")]), json!({}));
    let p = policy();
    assert_eq!(decide(&p, "t", &bad, "UPDATE", ""), Decision::NotMatched);
    assert_eq!(
        decide(&p, "t", &bad, "UPDATE", "status"),
        Decision::NotMatched
    );
    assert_eq!(
        decide(&p, "t", &bad, "UPDATE", "ephemeralcontainers"),
        denied_by(&["hami-core-env"])
    );
}

#[test]
fn the_objects_are_valid_k8s_openapi_types_with_no_field_lost() {
    let p = policy();
    let vap: ValidatingAdmissionPolicy = serde_json::from_value(p.policy.clone()).unwrap();
    let binding: ValidatingAdmissionPolicyBinding =
        serde_json::from_value(p.binding.clone()).unwrap();
    // k8s-openapi ignores unknown fields; a round trip that loses none shows there were none.
    assert_eq!(serde_json::to_value(&vap).unwrap(), p.policy);
    assert_eq!(serde_json::to_value(&binding).unwrap(), p.binding);
    let spec = vap.spec.as_ref().unwrap();
    assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
    let b = binding.spec.as_ref().unwrap();
    assert_eq!(b.policy_name.as_deref(), vap.metadata.name.as_deref());
    assert_eq!(
        b.validation_actions.as_deref(),
        Some(&["Deny".to_owned()][..])
    );
    // The API server refuses a message with a line break; every rule has a tag and a fix.
    for v in spec.validations.as_ref().unwrap() {
        let msg = v.message.as_deref().unwrap();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(!v.expression.contains('\n'), "{}", v.expression);
        assert_eq!(v.reason.as_deref(), Some("Forbidden"));
        rule_tag(msg);
    }
}
