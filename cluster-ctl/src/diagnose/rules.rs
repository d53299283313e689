//! The rules, as data: each names one failure mode, the signals that identify it (line patterns
//! over any text, or facts over parsed objects), its cause, its fix (steps and commands with
//! `<placeholders>` filled from the evidence), the HAMi versions it applies to, and where upstream
//! it was reported or fixed. Order matters only for ties: causes before their consequences.
//!
//! Every rule with a real capture is tested on it (`tests/real_captures.rs`); README's
//! troubleshooting table is generated from this table (`tests/readme_rules.rs`).

use serde::Serialize;

use super::facts::Fact;
use crate::doctor::Severity;

/// How sure a finding is, when its rule matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// What a matched signal contributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Names the failure on its own.
    Alone,
    /// Names it only together with every other `Together` signal of the rule.
    Together,
    /// Never names it; quoted as further evidence when the rule matched.
    Support,
}

/// A pattern over the lines of every document.
#[derive(Debug, Clone, Copy)]
pub struct LinePattern {
    /// Regexes that must all match one line (or one line joined with the next: pastes wrap).
    pub all: &'static [&'static str],
    /// A line matching any of these is not evidence (e.g. the lab's own Pending pod).
    pub none: &'static [&'static str],
    /// Only the last N non-empty lines of a document count (a hang shows as the last line); 0: any.
    pub last_lines: usize,
    /// Fewer matching lines than this are not evidence (a one-off wait is normal).
    pub min_count: usize,
    /// Also look at gpu-probe's own stderr.
    pub in_probe_output: bool,
}

/// How a signal is detected.
#[derive(Debug, Clone, Copy)]
pub enum Matcher {
    Line(LinePattern),
    Fact(Fact),
}

const fn lines(all: &'static [&'static str]) -> Matcher {
    Matcher::Line(LinePattern {
        all,
        none: &[],
        last_lines: 0,
        min_count: 1,
        in_probe_output: true,
    })
}

const fn lines_unless(all: &'static [&'static str], none: &'static [&'static str]) -> Matcher {
    Matcher::Line(LinePattern {
        all,
        none,
        last_lines: 0,
        min_count: 1,
        in_probe_output: true,
    })
}

/// Not in gpu-probe's stderr: there, an out-of-memory refusal is the cap working.
const fn workload_lines(all: &'static [&'static str]) -> Matcher {
    Matcher::Line(LinePattern {
        all,
        none: &[],
        last_lines: 0,
        min_count: 1,
        in_probe_output: false,
    })
}

const fn last_lines(all: &'static [&'static str], n: usize) -> Matcher {
    Matcher::Line(LinePattern {
        all,
        none: &[],
        last_lines: n,
        min_count: 1,
        in_probe_output: true,
    })
}

const fn repeated(all: &'static [&'static str], min_count: usize) -> Matcher {
    Matcher::Line(LinePattern {
        all,
        none: &[],
        last_lines: 0,
        min_count,
        in_probe_output: true,
    })
}

/// One signal of a rule.
#[derive(Debug, Clone, Copy)]
pub struct Signal {
    pub id: &'static str,
    /// What it looks for, in words (shown when nothing matched).
    pub what: &'static str,
    pub role: Role,
    pub matcher: Matcher,
}

/// The fix: steps in words, then commands. `<name>` placeholders are filled from the evidence
/// (`<node>`, `<pod>`, `<ns>`, `<hami_ns>`, `<kube_version>`, `<plain_tag>`, `<chart_version>`);
/// unfilled ones stay for the reader to fill.
#[derive(Debug, Clone, Copy)]
pub struct Fix {
    pub steps: &'static [&'static str],
    pub commands: &'static [&'static str],
}

/// The HAMi versions a rule applies to.
#[derive(Debug, Clone, Copy)]
pub struct Versions {
    /// In words, e.g. "charts < 2.5.0".
    pub affected: &'static str,
    /// The first HAMi release with the fix, when there is one.
    pub fixed_in: Option<&'static str>,
}

const ANY: Versions = Versions {
    affected: "all",
    fixed_in: None,
};

/// An upstream issue, pull request or commit.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Upstream {
    pub what: &'static str,
    pub url: &'static str,
}

/// One failure mode and how to recognise it.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The failure mode's id (stable: tests, JSON, `run`'s blockers use it).
    pub mode: &'static str,
    /// What the user sees, in a few words (README's "symptom").
    pub symptom: &'static str,
    pub cause: &'static str,
    pub fix: Fix,
    pub severity: Severity,
    /// Confidence when it matched.
    pub confidence: Confidence,
    pub signals: &'static [Signal],
    pub versions: Versions,
    pub upstream: &'static [Upstream],
    /// Modes this one causes: when both match, theirs is quoted as a consequence of this one.
    pub explains: &'static [&'static str],
    /// Whether a real capture of it is in `tests/data/real-captures`.
    pub captured: bool,
}

const fn sig(id: &'static str, what: &'static str, role: Role, matcher: Matcher) -> Signal {
    Signal {
        id,
        what,
        role,
        matcher,
    }
}

const fn up(what: &'static str, url: &'static str) -> Upstream {
    Upstream { what, url }
}

use Role::{Alone, Support, Together};

/// The webhook-call line of kube-apiserver (`failed calling webhook "vgpu.hami.io"`).
const WEBHOOK_CALL: &str = r#"(?i)failed calling webhook "?vgpu\.hami\.io"#;

const NOT_FROM_HAMI_SCHEDULER: &[&str] = &[
    "recreate the pods once the cause is fixed (a pod is mutated only when it is created): `kubectl -n <ns> delete pod <pod>` (lab pods: `cluster-ctl cleanup && cluster-ctl run`)",
];

/// Every rule, causes before consequences.
pub const RULES: &[Rule] = &[
    Rule {
        mode: "hami-not-installed",
        symptom: "no `hami-scheduler` Deployment",
        cause: "HAMi is not installed in this namespace (or is installed in another one)",
        fix: Fix {
            steps: &["install HAMi, or pass --hami-namespace where it is installed"],
            commands: &["cluster-ctl install-hami"],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[sig(
            "no-scheduler-deployment",
            "the cluster has no hami-scheduler Deployment in the HAMi namespace (live only)",
            Alone,
            Matcher::Fact(Fact::HamiNotInstalled),
        )],
        versions: ANY,
        upstream: &[up(
            "HAMi install guide",
            "https://github.com/Project-HAMi/HAMi#quick-start",
        )],
        explains: &["webhook-no-endpoints", "default-scheduler-pods"],
        captured: false,
    },
    Rule {
        mode: "helm-kubeversion-prerelease",
        symptom: "`helm install`: chart requires kubeVersion … incompatible with Kubernetes v1.x.y-<vendor>",
        cause: "Helm reads a vendor suffix (`-gke.…`, `-eks-…`) as a pre-release, which the chart's `>= 1.x.0` constraint excludes",
        fix: Fix {
            steps: &[
                "install a chart ≥ 2.6.0, whose constraint is `>= 1.18.0-0` (PR #1072)",
                "with an older chart: give helm the plain version with --kube-version",
            ],
            commands: &[
                "cluster-ctl install-hami --chart-version 2.10.0",
                "helm install hami hami --repo https://project-hami.github.io/HAMi/ -n kube-system --kube-version <kube_version>",
            ],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[sig(
            "helm-kubeversion-refused",
            "helm: `chart requires kubeVersion: … which is incompatible with Kubernetes vX.Y.Z-…`",
            Alone,
            lines(&[
                r"chart requires kubeVersion: .+? which is incompatible with Kubernetes (?P<kube_version>v\d+\.\d+\.\d+)-",
            ]),
        )],
        versions: Versions {
            affected: "charts < 2.6.0",
            fixed_in: Some("2.6.0"),
        },
        upstream: &[
            up(
                "HAMi#1071",
                "https://github.com/Project-HAMi/HAMi/issues/1071",
            ),
            up(
                "HAMi#744",
                "https://github.com/Project-HAMi/HAMi/issues/744",
            ),
            up(
                "fix: PR #1072",
                "https://github.com/Project-HAMi/HAMi/pull/1072",
            ),
        ],
        explains: &[],
        captured: true,
    },
    Rule {
        mode: "two-device-plugins",
        symptom: "a second NVIDIA device plugin / GPU Operator / GFD beside HAMi's",
        cause: "two plugins advertise `nvidia.com/gpu`, so pods may get whole cards without HAMi-core",
        fix: Fix {
            steps: &[
                "remove the other plugin (or disable the GPU Operator's: --set devicePlugin.enabled=false), then restart hami-device-plugin",
            ],
            commands: &[
                "kubectl get ds -A | grep -i -e nvidia-device-plugin -e gpu-feature-discovery",
            ],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[sig(
            "coexisting-nvidia-components",
            "DaemonSets or pods of the NVIDIA device plugin, GFD or the GPU Operator",
            Alone,
            Matcher::Fact(Fact::CoexistingDevicePlugin),
        )],
        versions: ANY,
        upstream: &[
            up(
                "HAMi#661",
                "https://github.com/Project-HAMi/HAMi/issues/661",
            ),
            up(
                "HAMi#2076",
                "https://github.com/Project-HAMi/HAMi/issues/2076",
            ),
        ],
        explains: &["default-scheduler-pods"],
        captured: false,
    },
    Rule {
        mode: "gpu-operator-cdi-conflict",
        symptom: "container start fails: `unknown device` / `unresolvable CDI devices` after HAMi bound the pod",
        cause: "the GPU Operator's CDI injection and HAMi's device injection disagree, so the runtime cannot resolve the GPU HAMi allocated",
        fix: Fix {
            steps: &[
                "disable CDI in the GPU Operator, or run HAMi's device plugin and pods with the nvidia RuntimeClass (devicePlugin.runtimeClassName=nvidia); keep the Operator's own device plugin off",
            ],
            commands: &["cluster-ctl install-hami --set devicePlugin.runtimeClassName=nvidia"],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[
            sig(
                "nvidia-container-cli-unknown-device",
                "`nvidia-container-cli: device error: GPU-…: unknown device`",
                Alone,
                lines(&[r"nvidia-container-cli: device error: GPU-[0-9a-fA-F-]+: unknown device"]),
            ),
            sig(
                "unresolvable-cdi-devices",
                "`failed to inject CDI devices: unresolvable CDI devices`",
                Alone,
                lines(&[r"failed to inject CDI devices: unresolvable CDI devices"]),
            ),
            sig(
                "cdi-management-device",
                "a `management.nvidia.com/gpu=GPU-…` CDI name",
                Support,
                lines(&[r"management\.nvidia\.com/gpu=GPU-"]),
            ),
            sig(
                "hami-bind-succeeded",
                "the pod annotation `hami.io/bind-phase: success` (HAMi did its part)",
                Support,
                lines(&[r#"hami\.io/bind-phase"?:\s*"?success"#]),
            ),
        ],
        versions: ANY,
        upstream: &[up(
            "HAMi#1106",
            "https://github.com/Project-HAMi/HAMi/issues/1106",
        )],
        explains: &[],
        captured: true,
    },
    Rule {
        mode: "gpu-driver-not-ready",
        symptom: "GPU Operator `nvidia-driver-daemonset` pod not Running (CrashLoopBackOff, Init:…)",
        cause: "no working NVIDIA driver on that node: HAMi's device plugin there fails, and the node's last registration may still look usable",
        fix: Fix {
            steps: &[
                "repair the driver on that node until the driver pod is Running, then restart hami-device-plugin there so the node registers again",
            ],
            commands: &[
                "kubectl -n gpu-operator logs <pod> --all-containers --tail=50",
                "kubectl -n <hami_ns> delete pod -l app.kubernetes.io/component=hami-device-plugin --field-selector spec.nodeName=<node>",
            ],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[sig(
            "driver-pod-failing",
            "a `nvidia-driver-daemonset-…` pod in CrashLoopBackOff, Error, Init:… or an image pull error",
            Alone,
            lines(&[
                r"(?P<pod>nvidia-driver-daemonset-\S+)\s+\d+/\d+\s+(Init:)?(CrashLoopBackOff|Error|ImagePullBackOff|ErrImagePull|RunContainerError|CreateContainerError|CreateContainerConfigError)",
            ]),
        )],
        versions: ANY,
        upstream: &[up(
            "HAMi#272",
            "https://github.com/Project-HAMi/HAMi/issues/272",
        )],
        explains: &["node-unregistered"],
        captured: true,
    },
    Rule {
        mode: "device-plugin-no-nvidia-runtime",
        symptom: "hami-device-plugin log: could not load NVML library `libnvidia-ml.so.1`",
        cause: "the device-plugin container runs without the NVIDIA runtime, so the driver libraries are not injected and NVML cannot load",
        fix: Fix {
            steps: &[
                "run the device plugin under the nvidia runtime: devicePlugin.runtimeClassName=nvidia (the RuntimeClass must exist), or make nvidia containerd's default runtime on GPU nodes; then restart the DaemonSet",
            ],
            commands: &[
                "cluster-ctl install-hami --set devicePlugin.runtimeClassName=nvidia",
                "host-setup set-default-runtime",
            ],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[
            sig(
                "nvml-not-loaded",
                "`could not load NVML library: libnvidia-ml.so.1`",
                Alone,
                lines(&[r"could not load NVML library: libnvidia-ml\.so\.1"]),
            ),
            sig(
                "toolkit-question",
                "`If this is a GPU node, did you configure the NVIDIA Container Toolkit?`",
                Alone,
                lines(&[r"did you configure the NVIDIA Container Toolkit"]),
            ),
            sig(
                "incompatible-platform",
                "`Incompatible platform detected`",
                Support,
                lines(&[r"Incompatible platform detected"]),
            ),
        ],
        versions: ANY,
        upstream: &[
            up(
                "HAMi#1568",
                "https://github.com/Project-HAMi/HAMi/issues/1568",
            ),
            up(
                "HAMi#861",
                "https://github.com/Project-HAMi/HAMi/issues/861",
            ),
        ],
        explains: &["node-unregistered"],
        captured: true,
    },
    Rule {
        mode: "node-unlabelled",
        symptom: "no node labelled `gpu=on`",
        cause: "HAMi's device plugin DaemonSet only runs on nodes labelled gpu=on",
        fix: Fix {
            steps: &["label the GPU nodes"],
            commands: &["kubectl label node <node> gpu=on --overwrite"],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[sig(
            "no-gpu-on-node",
            "none of the listed nodes carries the label gpu=on",
            Alone,
            Matcher::Fact(Fact::NoNodeLabelled),
        )],
        versions: ANY,
        upstream: &[up(
            "HAMi#2280",
            "https://github.com/Project-HAMi/HAMi/issues/2280",
        )],
        explains: &["node-unregistered"],
        captured: false,
    },
    Rule {
        mode: "node-unregistered",
        symptom: "`0/N nodes are available: N node unregistered`, or a gpu=on node without GPUs",
        cause: "hami-scheduler has no device registration for the node: hami-device-plugin is not running or not registering there (no fresh hami.io/node-nvidia-register)",
        fix: Fix {
            steps: &[
                "make hami-device-plugin run and register on the GPU node: label it gpu=on, give the plugin the nvidia runtime, read its log",
            ],
            commands: &[
                "kubectl -n <hami_ns> get pods -o wide -l app.kubernetes.io/component=hami-device-plugin",
                "kubectl -n <hami_ns> logs ds/hami-device-plugin -c device-plugin --tail=50",
            ],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[
            sig(
                "labelled-node-not-registered",
                "a gpu=on node with no registered GPU or nvidia.com/gpu allocatable 0",
                Alone,
                Matcher::Fact(Fact::NodeUnregistered),
            ),
            sig(
                "scheduler-says-unregistered",
                "hami-scheduler: `… N node unregistered`",
                Alone,
                lines(&[r"\b\d+ nodes? (?:is |are )?unregistered"]),
            ),
            sig(
                "no-available-node",
                "hami-scheduler FilteringFailed `no available node`",
                Support,
                lines(&[r"FilteringFailed.*no available node"]),
            ),
        ],
        versions: ANY,
        upstream: &[up(
            "HAMi#815",
            "https://github.com/Project-HAMi/HAMi/issues/815",
        )],
        explains: &[],
        captured: true,
    },
    Rule {
        mode: "gpu-marked-unhealthy",
        symptom: "the node's register annotation lists GPUs with health false",
        cause: "the device plugin marked the cards unhealthy (NVML health events, e.g. Xid) and does not recover them by itself; the scheduler skips them (CardNotHealth)",
        fix: Fix {
            steps: &[
                "check the node for Xid errors (`dmesg | grep -i xid`); if the cards are fine, restart hami-device-plugin on that node so it registers them healthy again",
            ],
            commands: &[
                "kubectl -n <hami_ns> delete pod -l app.kubernetes.io/component=hami-device-plugin --field-selector spec.nodeName=<node>",
            ],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[
            sig(
                "register-health-false",
                "a node whose hami.io/node-nvidia-register (any format) has a GPU with health false",
                Alone,
                Matcher::Fact(Fact::UnhealthyGpu),
            ),
            sig(
                "register-line-health-false",
                "a logged hami.io/node-nvidia-register value with a `…,false:` device",
                Alone,
                lines(&[
                    r"node-nvidia-register",
                    r"GPU-[0-9a-fA-F-]+,\d+,\d+,\d+,[^,:]*,\d+,false(,\d+,[A-Za-z-]+)?:",
                ]),
            ),
        ],
        versions: ANY,
        upstream: &[
            up(
                "HAMi#441",
                "https://github.com/Project-HAMi/HAMi/issues/441",
            ),
            up(
                "HAMi#169",
                "https://github.com/Project-HAMi/HAMi/issues/169",
            ),
            up(
                "PR #1336 (skip unhealthy cards)",
                "https://github.com/Project-HAMi/HAMi/pull/1336",
            ),
        ],
        explains: &[],
        captured: true,
    },
    Rule {
        mode: "scheduler-image-tag-invalid",
        symptom: "kube-scheduler `InvalidImageName`: `kube-scheduler:v1.x.y+k3sN`",
        cause: "the chart took the image tag from the server version, and `+` (k3s: `+k3s1`) is not allowed in an image tag",
        fix: Fix {
            steps: &[
                "install a chart ≥ 2.5.0, which strips the `+…` suffix (PR #623)",
                "with an older chart: set the kube-scheduler tag to the plain version",
            ],
            commands: &[
                "cluster-ctl install-hami --chart-version 2.10.0",
                "cluster-ctl install-hami --scheduler-tag <plain_tag>",
            ],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[
            sig(
                "kube-scheduler-invalid-image-name",
                "the hami-scheduler pod's kube-scheduler container waiting in InvalidImageName",
                Alone,
                Matcher::Fact(Fact::SchedulerInvalidImageName),
            ),
            sig(
                "unparsable-kube-scheduler-tag",
                "kubelet: `couldn't parse image name …kube-scheduler:vX.Y.Z+…`",
                Alone,
                lines(&[
                    r"couldn't parse image name .*kube-scheduler:(?P<plain_tag>v\d+\.\d+\.\d+)\+",
                ]),
            ),
            sig(
                "invalid-image-name",
                "`InvalidImageName` for kube-scheduler",
                Alone,
                lines(&[r"InvalidImageName", r"kube-scheduler"]),
            ),
            sig(
                "k3s-server-version",
                "`Server Version: vX.Y.Z+k3sN`",
                Support,
                lines(&[r"Server Version: v\d+\.\d+\.\d+\+k3s\d+"]),
            ),
        ],
        versions: Versions {
            affected: "charts < 2.5.0",
            fixed_in: Some("2.5.0"),
        },
        upstream: &[
            up(
                "HAMi#642",
                "https://github.com/Project-HAMi/HAMi/issues/642",
            ),
            up(
                "fix: PR #623",
                "https://github.com/Project-HAMi/HAMi/pull/623",
            ),
        ],
        explains: &["webhook-no-endpoints"],
        captured: true,
    },
    Rule {
        mode: "scheduler-image-pull",
        symptom: "kube-scheduler `ImagePullBackOff` / `ErrImagePull`",
        cause: "the chart's default registry (registry.cn-hangzhou.aliyuncs.com) is slow or unreachable from the node",
        fix: Fix {
            steps: &["pull kube-scheduler from registry.k8s.io (cluster-ctl's default)"],
            commands: &["cluster-ctl install-hami --scheduler-registry registry.k8s.io"],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[
            sig(
                "kube-scheduler-pull-backoff",
                "the hami-scheduler pod's kube-scheduler container waiting in ImagePullBackOff/ErrImagePull",
                Alone,
                Matcher::Fact(Fact::SchedulerImagePull),
            ),
            sig(
                "kube-scheduler-pull-failed",
                "kubelet: `Failed to pull image \"…kube-scheduler:…\"`",
                Alone,
                lines(&[r#"Failed to pull image "?[^"\s]*kube-scheduler:"#]),
            ),
        ],
        versions: ANY,
        upstream: &[up(
            "chart default kube-scheduler image",
            "https://github.com/Project-HAMi/HAMi/blob/v2.10.0/charts/hami/values.yaml",
        )],
        explains: &["webhook-no-endpoints"],
        captured: false,
    },
    Rule {
        mode: "scheduler-version-mismatch",
        symptom: "kube-scheduler container prints its usage (`kube-scheduler [flags]`) and exits",
        cause: "kube-scheduler was started with flags or a config its version does not know: charts < 2.6.0 read a vendor minor version (`25+`, `-eki…`) as 0 and render the pre-1.22 command line (--scheduler-name …), or the image was pinned to another minor than the cluster",
        fix: Fix {
            steps: &[
                "install a chart ≥ 2.6.0 (PR #845 reads vendor minor versions) and keep the kube-scheduler image at the cluster's version (no explicit tag)",
            ],
            commands: &["cluster-ctl install-hami --chart-version 2.10.0"],
        },
        severity: Severity::Problem,
        confidence: Confidence::Medium,
        signals: &[
            sig(
                "kube-scheduler-usage",
                "the kube-scheduler usage header `kube-scheduler [flags]`",
                Alone,
                lines(&[r"^\s*kube-scheduler \[flags\]\s*$"]),
            ),
            sig(
                "kube-scheduler-unknown-flag",
                "`unknown flag: --scheduler-name` (or another flag removed in 1.22+)",
                Alone,
                lines(&[
                    r"unknown flag: --(scheduler-name|policy-config-file|policy-configmap|algorithm-provider)",
                ]),
            ),
            sig(
                "kube-scheduler-config-kind",
                "`no kind \"KubeSchedulerConfiguration\" is registered for version …`",
                Alone,
                lines(&[r#"no kind "KubeSchedulerConfiguration" is registered for version"#]),
            ),
            sig(
                "usage-heading",
                "the `Usage:` heading above it",
                Support,
                lines(&[r"^Usage:\s*$"]),
            ),
            sig(
                "kube-scheduler-container-log",
                "`Defaulted container \"kube-scheduler\" out of: kube-scheduler, vgpu-scheduler-extender`",
                Support,
                lines(&[
                    r#"Defaulted container "kube-scheduler" out of: kube-scheduler, vgpu-scheduler-extender"#,
                ]),
            ),
        ],
        versions: Versions {
            affected: "charts < 2.6.0 on vendor Kubernetes versions",
            fixed_in: Some("2.6.0"),
        },
        upstream: &[
            up(
                "HAMi#782",
                "https://github.com/Project-HAMi/HAMi/issues/782",
            ),
            up(
                "fix: PR #845",
                "https://github.com/Project-HAMi/HAMi/pull/845",
            ),
        ],
        explains: &["webhook-no-endpoints"],
        captured: true,
    },
    Rule {
        mode: "tag-mismatch",
        symptom: "kube-scheduler image tag ≠ server version",
        cause: "an explicit tag, or a chart < 2.5 using `+k3sN`: kube-scheduler and the cluster differ",
        fix: Fix {
            steps: &[
                "do not set the kube-scheduler tag (charts ≥ 2.5 derive it from the server version without +k3sN)",
            ],
            commands: &["cluster-ctl install-hami"],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[sig(
            "scheduler-tag-differs",
            "the hami-scheduler Deployment's kube-scheduler tag differs from the server version",
            Alone,
            Matcher::Fact(Fact::SchedulerTagMismatch),
        )],
        versions: ANY,
        upstream: &[up(
            "HAMi#782",
            "https://github.com/Project-HAMi/HAMi/issues/782",
        )],
        explains: &[],
        captured: false,
    },
    Rule {
        mode: "webhook-tls-untrusted",
        symptom: "kube-apiserver: failed calling webhook \"vgpu.hami.io\": x509",
        cause: "the API server does not trust the certificate the hami-scheduler webhook serves (a caBundle that does not match, e.g. a stale hami-scheduler-tls Secret); failurePolicy Ignore lets GPU pods through unmutated",
        fix: Fix {
            steps: &[
                "re-issue the webhook certificate: delete the Secret so the chart's admission jobs create and patch a new one on the next helm upgrade (or use scheduler.certManager), restart hami-scheduler",
                "then recreate the GPU pods (a pod is mutated only when it is created)",
            ],
            commands: &[
                "kubectl -n <hami_ns> delete secret hami-scheduler-tls",
                "helm -n <hami_ns> upgrade hami hami --repo https://project-hami.github.io/HAMi/ --version <chart_version> --reuse-values",
                "kubectl -n <hami_ns> rollout restart deploy/hami-scheduler",
            ],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[
            sig(
                "webhook-x509",
                "kube-apiserver: `failed calling webhook \"vgpu.hami.io\" … x509: …`",
                Alone,
                lines(&[WEBHOOK_CALL, r"x509: "]),
            ),
            sig(
                "webhook-failing-open",
                "kube-apiserver: `failing open vgpu.hami.io` (the pod was admitted unmutated)",
                Support,
                lines(&[r"failing open vgpu\.hami\.io"]),
            ),
        ],
        versions: ANY,
        upstream: &[up(
            "HAMi#693",
            "https://github.com/Project-HAMi/HAMi/issues/693",
        )],
        explains: &["default-scheduler-pods"],
        captured: true,
    },
    Rule {
        mode: "webhook-unreachable",
        symptom: "kube-apiserver: failed calling webhook \"vgpu.hami.io\": timeout / no route / connection refused or reset",
        cause: "kube-apiserver cannot reach the hami-scheduler webhook Service in time; with failurePolicy Ignore the pod is admitted unmutated, goes to default-scheduler and fails at Allocate (UnexpectedAdmissionError) or stays Pending",
        fix: Fix {
            steps: &[
                "fix the path kube-apiserver → Service hami-scheduler:443 → scheduler pod (CNI, kube-proxy, firewall, an API server that cannot route to the pod network); check that the Service has a ready endpoint",
                "then recreate the GPU pods (a pod is mutated only when it is created)",
            ],
            commands: &[
                "kubectl -n <hami_ns> get svc,endpoints hami-scheduler -o wide",
                "kubectl -n <hami_ns> logs deploy/hami-scheduler -c vgpu-scheduler-extender --tail=50",
            ],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[
            sig(
                "webhook-network-error",
                "kube-apiserver: `failed calling webhook \"vgpu.hami.io\"` with a timeout, deadline, no route, refused or reset connection",
                Alone,
                lines(&[
                    WEBHOOK_CALL,
                    r"(Client\.Timeout exceeded|context deadline exceeded|no route to host|connection refused|connection reset by peer|i/o timeout)",
                ]),
            ),
            sig(
                "webhook-failing-open",
                "kube-apiserver: `failing open vgpu.hami.io` (the pod was admitted unmutated)",
                Support,
                lines(&[r"failing open vgpu\.hami\.io"]),
            ),
        ],
        versions: ANY,
        upstream: &[
            up(
                "HAMi#653",
                "https://github.com/Project-HAMi/HAMi/issues/653",
            ),
            up(
                "HAMi#661",
                "https://github.com/Project-HAMi/HAMi/issues/661",
            ),
            up(
                "HAMi#379",
                "https://github.com/Project-HAMi/HAMi/issues/379",
            ),
            up(
                "HAMi#1536",
                "https://github.com/Project-HAMi/HAMi/issues/1536",
            ),
            up(
                "HAMi#919",
                "https://github.com/Project-HAMi/HAMi/issues/919",
            ),
        ],
        explains: &["default-scheduler-pods"],
        captured: true,
    },
    Rule {
        mode: "webhook-no-endpoints",
        symptom: "`hami-scheduler` Service without endpoints",
        cause: "the scheduler pod is not ready or has not labelled itself leader yet (hami.io/scheduler-role, set on a 15 s tick); pods created meanwhile are not mutated (failurePolicy Ignore)",
        fix: Fix {
            steps: &[
                "wait until the Service lists an address; if it never does, read the extender's log and the kube-scheduler container's state",
                "then recreate the GPU pods created meanwhile",
            ],
            commands: &[
                "kubectl -n <hami_ns> get endpoints hami-scheduler",
                "kubectl -n <hami_ns> logs deploy/hami-scheduler -c vgpu-scheduler-extender --tail=50",
            ],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[
            sig(
                "scheduler-endpoints-empty",
                "the hami-scheduler Endpoints object lists no ready address",
                Alone,
                Matcher::Fact(Fact::WebhookNoEndpoints),
            ),
            sig(
                "webhook-no-endpoints-available",
                "kube-apiserver: `failed calling webhook \"vgpu.hami.io\" … no endpoints available for service`",
                Alone,
                lines(&[WEBHOOK_CALL, r"no endpoints available for service"]),
            ),
        ],
        versions: ANY,
        upstream: &[up(
            "PR #1677 (the Service selects the leader)",
            "https://github.com/Project-HAMi/HAMi/pull/1677",
        )],
        explains: &["default-scheduler-pods"],
        captured: false,
    },
    Rule {
        mode: "pod-has-node-name",
        symptom: "admission webhook \"vgpu.hami.io\" denied the request: pod has node assigned",
        cause: "the pod sets spec.nodeName, which skips scheduling, so HAMi cannot pick a card for it and its webhook refuses it",
        fix: Fix {
            steps: &[
                "remove spec.nodeName and choose the node with a nodeSelector or node affinity instead",
            ],
            commands: &[
                "nodeSelector: {kubernetes.io/hostname: <node>}   # in the pod spec, instead of nodeName",
            ],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[sig(
            "webhook-denied-node-name",
            "`admission webhook \"vgpu.hami.io\" denied the request: pod has node assigned`",
            Alone,
            lines(&[
                r#"(?i)admission webhook "?vgpu\.hami\.io"? denied the request: pod has node assigned"#,
            ]),
        )],
        versions: ANY,
        upstream: &[up(
            "HAMi#960",
            "https://github.com/Project-HAMi/HAMi/issues/960",
        )],
        explains: &[],
        captured: true,
    },
    Rule {
        mode: "default-scheduler-pods",
        symptom: "GPU pods on `default-scheduler`: `Insufficient nvidia.com/gpumem`, or `no binding pod found on node` at Allocate",
        cause: "the webhook did not mutate the pod (unreachable or without endpoints when it was created, a privileged container before v2.10, or the hami.io/webhook: ignore label), so hami-scheduler never placed it and HAMi-core limits do not apply",
        fix: Fix {
            steps: &[
                "make sure the hami-scheduler Service has endpoints and kube-apiserver can call the webhook",
                NOT_FROM_HAMI_SCHEDULER[0],
            ],
            commands: &[
                "kubectl -n <hami_ns> get endpoints hami-scheduler",
                "kubectl -n <ns> delete pod <pod>",
            ],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[
            sig(
                "pod-not-on-hami-scheduler",
                "a pod asking for HAMi resources whose schedulerName is not hami-scheduler",
                Alone,
                Matcher::Fact(Fact::PodsOnDefaultScheduler),
            ),
            sig(
                "no-binding-pod",
                "device plugin Allocate: `no binding pod found on node …`",
                Alone,
                lines(&[r"no binding pod found on node"]),
            ),
            sig(
                "default-scheduler-counts-gpumem",
                "kube-scheduler counting `Insufficient nvidia.com/gpumem|gpucores` (HAMi's extender makes it ignore them)",
                Alone,
                lines(&[r"Insufficient nvidia\.com/(gpumem|gpucores|gpumem-percentage)\b"]),
            ),
            sig(
                "unexpected-admission-error",
                "the pod failed with `UnexpectedAdmissionError`",
                Support,
                lines(&[r"UnexpectedAdmissionError"]),
            ),
        ],
        versions: ANY,
        upstream: &[
            up(
                "HAMi#661",
                "https://github.com/Project-HAMi/HAMi/issues/661",
            ),
            up(
                "HAMi#338",
                "https://github.com/Project-HAMi/HAMi/issues/338",
            ),
            up(
                "HAMi#536",
                "https://github.com/Project-HAMi/HAMi/issues/536",
            ),
            up(
                "HAMi#611 (privileged pods)",
                "https://github.com/Project-HAMi/HAMi/issues/611",
            ),
        ],
        explains: &[],
        captured: true,
    },
    Rule {
        mode: "node-lock-held",
        symptom: "kube-scheduler: `node X has been locked within 5 minutes`",
        cause: "hami-scheduler's node lock (annotation hami.io/mutex.lock, set at Bind, removed after the device plugin's Allocate) is still held: an earlier pod's Allocate never finished (device plugin restarting, pod deleted first), so every bind to that node waits for the lock to expire (nodeLockExpire, 5m)",
        fix: Fix {
            steps: &[
                "see which pod the lock names and why its Allocate did not finish (the device plugin's log on that node); remove a stale lock",
            ],
            commands: &[
                r"kubectl get node <node> -o jsonpath='{.metadata.annotations.hami\.io/mutex\.lock}'",
                "kubectl -n <hami_ns> get pods -o wide --field-selector spec.nodeName=<node>",
                "kubectl annotate node <node> hami.io/mutex.lock-",
            ],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[
            sig(
                "node-locked",
                "kube-scheduler: `… node X has been locked within N minutes`",
                Alone,
                lines(&[r"node (?P<node>\S+) has been locked within \d+ minutes"]),
            ),
            sig(
                "node-lock-annotation",
                "a node carrying the hami.io/mutex.lock annotation",
                Support,
                lines(&[r"annotation hami\.io/mutex\.lock: "]),
            ),
        ],
        versions: ANY,
        upstream: &[
            up(
                "HAMi#1130",
                "https://github.com/Project-HAMi/HAMi/issues/1130",
            ),
            up(
                "HAMi#1422",
                "https://github.com/Project-HAMi/HAMi/issues/1422",
            ),
            up("PR #273", "https://github.com/Project-HAMi/HAMi/pull/273"),
        ],
        explains: &[],
        captured: true,
    },
    Rule {
        mode: "request-exceeds-node-gpu-count",
        symptom: "`request devices nums cannot exceed the total number of devices on the node` / NodeInsufficientDevice",
        cause: "nvidia.com/gpu counts physical cards per container, not slices: the pod asks for more cards than any node has",
        fix: Fix {
            steps: &[
                "ask for at most the node's physical GPU count in nvidia.com/gpu and size memory with nvidia.com/gpumem",
            ],
            commands: &[],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[
            sig(
                "request-exceeds-devices",
                "hami-scheduler: `request devices nums cannot exceed the total number of devices on the node`",
                Alone,
                lines(&[
                    r"request devices nums cannot exceed the total number of devices on the node",
                ]),
            ),
            sig(
                "node-insufficient-device",
                "hami-scheduler reason `NodeInsufficientDevice` (v2.7+)",
                Alone,
                lines(&[r"\bNodeInsufficientDevice\b"]),
            ),
            sig(
                "request-and-node-counts",
                "`request devices nums=N node device nums=M`",
                Support,
                lines(&[r"request devices nums=\d+ node device nums=\d+"]),
            ),
            sig(
                "all-node-scores",
                "hami-scheduler ≤ v2.5: `no available node, all node scores do not meet`",
                Support,
                lines(&[r"no available node, all node scores do not meet"]),
            ),
        ],
        versions: ANY,
        upstream: &[up(
            "HAMi#591",
            "https://github.com/Project-HAMi/HAMi/issues/591",
        )],
        explains: &[],
        captured: true,
    },
    Rule {
        mode: "card-insufficient-memory",
        symptom: "pod Pending: CardInsufficientMemory, or `nvidia.com/gpu` alone on a card already in use",
        cause: "no card has the free memory the pod asks for; without nvidia.com/gpumem (or gpumem-percentage) HAMi reserves the whole card's memory per vGPU, which a card already in use cannot give",
        fix: Fix {
            steps: &[
                "give the container an explicit nvidia.com/gpumem (or nvidia.com/gpumem-percentage) that fits the card's free memory",
            ],
            commands: &["kubectl -n <ns> describe pod <pod>"],
        },
        severity: Severity::Problem,
        confidence: Confidence::Medium,
        signals: &[
            sig(
                "card-insufficient-memory-reason",
                "hami-scheduler reason `CardInsufficientMemory` (not for the lab's own hami-oversubscribe pod, where it is the expected result)",
                Alone,
                lines_unless(
                    &[
                        r"\bCardInsufficientMemory\b",
                        r#"(FilteringFailed|FailedScheduling|pod=")"#,
                    ],
                    &[r"hami-oversubscribe"],
                ),
            ),
            sig(
                "pending-whole-card-request",
                "a Pending pod asking nvidia.com/gpu without nvidia.com/gpumem or gpumem-percentage",
                Together,
                Matcher::Fact(Fact::PendingWholeCardRequest),
            ),
            sig(
                "node-gpus-in-use",
                "a node that already has nvidia.com/gpu allocated to running pods",
                Together,
                Matcher::Fact(Fact::NodeGpusInUse),
            ),
            sig(
                "scheduler-device-view",
                "hami-scheduler's view of a node's cards (`remainingDevices=[{\"id\":\"GPU-…`)",
                Support,
                lines(&[r#"remainingDevices=\[\{"id":"GPU-"#]),
            ),
        ],
        versions: ANY,
        upstream: &[up(
            "HAMi#1173",
            "https://github.com/Project-HAMi/HAMi/issues/1173",
        )],
        explains: &[],
        captured: true,
    },
    Rule {
        mode: "hami-core-driver-incompatible-hang",
        symptom: "CUDA/NVML programs in HAMi pods hang at start; the last HAMi-core line is `Hijacking nvmlInit…`",
        cause: "the HAMi-core build deadlocks in its nvmlInit_v2 → nvmlInitWithFlags hook with NVIDIA driver 570+",
        fix: Fix {
            steps: &[
                "upgrade HAMi to ≥ 2.5.1 (its HAMi-core has commit 0749777) before moving nodes to driver 570+; CUDA_DISABLE_CONTROL=true in a pod bypasses HAMi-core (and its isolation) meanwhile",
            ],
            commands: &["cluster-ctl install-hami --chart-version 2.10.0"],
        },
        severity: Severity::Problem,
        confidence: Confidence::Medium,
        signals: &[
            sig(
                "stuck-in-nvml-init",
                "a log ending (last 3 lines) in HAMi-core's `Hijacking nvmlInit_v2` / `nvmlInitWithFlags`",
                Alone,
                last_lines(&[r"Hijacking nvmlInit(_v2|WithFlags)"], 3),
            ),
            sig(
                "driver-570",
                "NVIDIA driver 570.x",
                Support,
                lines(&[r"Driver Version: 570\."]),
            ),
        ],
        versions: Versions {
            affected: "HAMi < 2.5.1 with driver ≥ 570",
            fixed_in: Some("2.5.1"),
        },
        upstream: &[
            up(
                "HAMi-core#59",
                "https://github.com/Project-HAMi/HAMi-core/issues/59",
            ),
            up(
                "HAMi-core#52",
                "https://github.com/Project-HAMi/HAMi-core/issues/52",
            ),
            up(
                "fix: HAMi-core 0749777",
                "https://github.com/Project-HAMi/HAMi-core/commit/0749777",
            ),
        ],
        explains: &[],
        captured: true,
    },
    Rule {
        mode: "hami-core-not-injected",
        symptom: "`ld.so: object '/usr/local/vgpu/libvgpu.so' from /etc/ld.so.preload cannot be preloaded`; the pod sees the whole card",
        cause: "the library /etc/ld.so.preload names is missing or unreadable in the container, so the loader ignores it and HAMi-core never intercepts CUDA/NVML: no memory limit",
        fix: Fix {
            steps: &[
                "make hami-device-plugin place a valid, non-empty libvgpu.so in /usr/local/vgpu on the node (restart or reinstall the device plugin), recreate the pod, and check that nvidia-smi in it shows the gpumem limit",
            ],
            commands: &[
                "kubectl -n <hami_ns> rollout restart ds/hami-device-plugin",
                "kubectl -n <ns> exec <pod> -- sh -c 'cat /etc/ld.so.preload; ls -l /usr/local/vgpu/'",
            ],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[
            sig(
                "preload-ignored",
                "ld.so: `object '…libvgpu.so' from /etc/ld.so.preload cannot be preloaded`",
                Alone,
                lines(&[
                    r"ld\.so: object '[^']*libvgpu[^']*' from /etc/ld\.so\.preload cannot be preloaded",
                ]),
            ),
            sig(
                "probe-preload-missing",
                "gpu-probe: the library named in /etc/ld.so.preload does not exist",
                Alone,
                Matcher::Fact(Fact::ProbePreloadMissingLibrary),
            ),
            sig(
                "nvidia-smi-memory",
                "the memory nvidia-smi shows (`…MiB / …MiB`)",
                Support,
                lines(&[r"\|\s+\d+MiB /\s+\d+MiB\s+\|"]),
            ),
        ],
        versions: ANY,
        upstream: &[
            up(
                "HAMi#777",
                "https://github.com/Project-HAMi/HAMi/issues/777",
            ),
            up(
                "HAMi#1346",
                "https://github.com/Project-HAMi/HAMi/issues/1346",
            ),
        ],
        explains: &["full-card-view"],
        captured: true,
    },
    Rule {
        mode: "full-card-view",
        symptom: "gpu-probe in the pod sees the full card (view FAIL)",
        cause: "HAMi-core is not active in the pod; with no library injected at all, `nvidia` is usually not containerd's default runtime (k3s), or the pod set CUDA_DISABLE_CONTROL=true",
        fix: Fix {
            steps: &[
                "make nvidia the default runtime (or install with devicePlugin.runtimeClassName=nvidia), then recreate the pods",
            ],
            commands: &[
                "host-setup set-default-runtime",
                "cluster-ctl install-hami --set devicePlugin.runtimeClassName=nvidia",
            ],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[
            sig(
                "probe-full-card",
                "a gpu-probe report whose view shows the full card",
                Alone,
                Matcher::Fact(Fact::ProbeFullCard),
            ),
            sig(
                "probe-nothing-injected",
                "gpu-probe: no library injected (no /etc/ld.so.preload, no LD_PRELOAD)",
                Support,
                Matcher::Fact(Fact::ProbeNothingInjected),
            ),
        ],
        versions: ANY,
        upstream: &[up(
            "HAMi#861",
            "https://github.com/Project-HAMi/HAMi/issues/861",
        )],
        explains: &[],
        captured: true,
    },
    Rule {
        mode: "hami-core-lock-dir-missing",
        symptom: "HAMi-core repeats `unified_lock locked, waiting …`",
        cause: "HAMi-core before 816630a takes the lock file /tmp/vgpulock/lock at start; without the /tmp/vgpulock directory (HAMi's device plugin mounts it into every pod; a hand-run container lacks it) every CUDA process waits and retries",
        fix: Fix {
            steps: &[
                "create or mount /tmp/vgpulock in the container (docker: -v /tmp/vgpulock:/tmp/vgpulock); HAMi ≥ 2.9.0 ships a HAMi-core that locks with flock instead",
            ],
            commands: &["mkdir -p /tmp/vgpulock"],
        },
        severity: Severity::Problem,
        confidence: Confidence::Medium,
        signals: &[sig(
            "unified-lock-waiting",
            "3 or more `unified_lock locked, waiting …` lines",
            Alone,
            repeated(&[r"unified_lock locked, waiting"], 3),
        )],
        versions: Versions {
            affected: "HAMi-core before 816630a (HAMi < 2.9.0)",
            fixed_in: Some("2.9.0"),
        },
        upstream: &[
            up(
                "HAMi#696",
                "https://github.com/Project-HAMi/HAMi/issues/696",
            ),
            up(
                "HAMi-core 816630a",
                "https://github.com/Project-HAMi/HAMi-core/commit/816630a",
            ),
        ],
        explains: &[],
        captured: true,
    },
    Rule {
        mode: "hami-core-shared-region-denied",
        symptom: "HAMi-core `Fail to open shrreg /tmp/cudevshr.cache: errno=13`, then a crash",
        cause: "the process runs in a session without the pod's environment (another user, an SSH login), so HAMi-core falls back to /tmp/cudevshr.cache, which another user created; opening it is denied and the process crashes (and such sessions are not limited even when they start)",
        fix: Fix {
            steps: &[
                "run GPU work in the container's own environment (kubectl exec), or export the pod's CUDA_DEVICE_MEMORY_* / LIBCUDA_LOG_LEVEL variables of PID 1 into the session",
            ],
            commands: &[
                "kubectl -n <ns> exec <pod> -- sh -c \"tr '\\0' '\\n' < /proc/1/environ | grep -E '^(CUDA_DEVICE_|LIBCUDA_)'\"",
            ],
        },
        severity: Severity::Problem,
        confidence: Confidence::Medium,
        signals: &[
            sig(
                "shrreg-open-denied",
                "HAMi-core: `Fail to open shrreg …: errno=13`",
                Alone,
                lines(&[r"Fail to open shrreg \S+: errno=13\b"]),
            ),
            sig(
                "shrreg-follow-up",
                "HAMi-core: `Fail to init|write|reseek|lock shrreg …`",
                Support,
                lines(&[r"Fail to (init|write|reseek|lock) shrreg"]),
            ),
            sig(
                "segfault",
                "`Segmentation fault`",
                Support,
                lines(&[r"Segmentation fault"]),
            ),
        ],
        versions: ANY,
        upstream: &[
            up(
                "HAMi#1090",
                "https://github.com/Project-HAMi/HAMi/issues/1090",
            ),
            up(
                "HAMi#1112",
                "https://github.com/Project-HAMi/HAMi/issues/1112",
            ),
        ],
        explains: &[],
        captured: true,
    },
    Rule {
        mode: "cuda-no-device",
        symptom: "HAMi-core `cuInit failed:100`; CUDA sees 0 devices",
        cause: "cuInit returned 100 (CUDA_ERROR_NO_DEVICE): no GPU is visible to the process, e.g. CUDA_VISIBLE_DEVICES set to an empty string, or the container was not given a device",
        fix: Fix {
            steps: &[
                "check the device variables in the container (CUDA_VISIBLE_DEVICES must not be empty; NVIDIA_VISIBLE_DEVICES names the allocated GPU) and that the pod was allocated a GPU by HAMi",
            ],
            commands: &[
                "kubectl -n <ns> exec <pod> -- sh -c 'env | grep -E \"^(CUDA|NVIDIA)_VISIBLE_DEVICES\"; nvidia-smi -L'",
            ],
        },
        severity: Severity::Problem,
        confidence: Confidence::Medium,
        signals: &[sig(
            "cuinit-100",
            "HAMi-core: `cuInit failed:100`",
            Alone,
            lines(&[r"cuInit failed:\s*100\b"]),
        )],
        versions: ANY,
        upstream: &[
            up(
                "HAMi#1202",
                "https://github.com/Project-HAMi/HAMi/issues/1202",
            ),
            up(
                "HAMi#1351",
                "https://github.com/Project-HAMi/HAMi/issues/1351",
            ),
        ],
        explains: &[],
        captured: true,
    },
    Rule {
        mode: "hami-core-usage-accounting-bug",
        symptom: "nvidia-smi in the pod shows ~17592186044000 MiB used; `Device 0 OOM 1844674407… / …`",
        cause: "HAMi-core's per-container usage went above the limit and `limit − usage` wrapped around: allocations fail with a bogus OOM although memory is free",
        fix: Fix {
            steps: &[
                "upgrade HAMi to ≥ 2.6.1 (HAMi-core usage-accounting fix) and restart the affected pods; the OOM is bogus, not a real gpumem limit hit",
            ],
            commands: &["cluster-ctl install-hami --chart-version 2.10.0"],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[
            sig(
                "wrapped-oom",
                "HAMi-core: `Device N OOM 18446744…… / …` (a usage near 2^64)",
                Alone,
                lines(&[r"Device \d+ OOM 18446744\d{12} / \d+"]),
            ),
            sig(
                "wrapped-usage-in-nvidia-smi",
                "nvidia-smi usage near 2^44 MiB (`1759218…MiB`)",
                Alone,
                lines(&[r"\b1759218\d{7}MiB"]),
            ),
        ],
        versions: Versions {
            affected: "HAMi < 2.6.1",
            fixed_in: Some("2.6.1"),
        },
        upstream: &[
            up(
                "HAMi#1181",
                "https://github.com/Project-HAMi/HAMi/issues/1181",
            ),
            up(
                "HAMi-core#200",
                "https://github.com/Project-HAMi/HAMi-core/issues/200",
            ),
        ],
        explains: &["gpumem-limit-exceeded"],
        captured: true,
    },
    Rule {
        mode: "gpumem-limit-exceeded",
        symptom: "workload log: HAMi-core `Device N OOM … / …` or `cuMemoryAllocate failed res=2`",
        cause: "the process asked for more GPU memory than its container's nvidia.com/gpumem: HAMi-core refused it (the slice working as set)",
        fix: Fix {
            steps: &[
                "raise the container's nvidia.com/gpumem (or gpumem-percentage), or make the workload use less (batch size, model size, the framework's memory fraction)",
            ],
            commands: &[
                "kubectl -n <ns> get pod <pod> -o jsonpath='{.spec.containers[*].resources.limits}'",
            ],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[
            sig(
                "hami-core-oom",
                "HAMi-core: `Device N OOM <bytes> / <limit>` (not in gpu-probe's own stderr, where it is the cap working)",
                Alone,
                workload_lines(&[r"Device \d+ OOM \d{1,19} / \d+\b"]),
            ),
            sig(
                "cumemoryallocate-res-2",
                "HAMi-core: `cuMemoryAllocate failed res=2` (CUDA_ERROR_OUT_OF_MEMORY)",
                Alone,
                workload_lines(&[r"cuMemoryAllocate failed res=2\b"]),
            ),
        ],
        versions: ANY,
        upstream: &[up(
            "HAMi#585",
            "https://github.com/Project-HAMi/HAMi/issues/585",
        )],
        explains: &[],
        captured: true,
    },
    Rule {
        mode: "hami-core-allocation-escapes",
        symptom: "gpu-probe audit: an allocation path holds more than the slice",
        cause: "HAMi-core does not count or cap every allocation API (cuMemAllocFromPoolAsync with an explicit pool, CUDA arrays) nor processes started without the pod's environment: software isolation with known gaps, not a misconfiguration",
        fix: Fix {
            steps: &[
                "treat the slice as not enforced for workloads that use the escaped paths; for explicit memory pools use a HAMi-core with PR #217 (pool tracking); keep CUDA work in the container's environment",
            ],
            commands: &[],
        },
        severity: Severity::Problem,
        confidence: Confidence::High,
        signals: &[sig(
            "audit-path-escaped",
            "a gpu-probe audit path whose outcome is escaped",
            Alone,
            Matcher::Fact(Fact::ProbeAuditEscape),
        )],
        versions: ANY,
        upstream: &[
            up(
                "HAMi-core#93",
                "https://github.com/Project-HAMi/HAMi-core/issues/93",
            ),
            up(
                "HAMi-core PR #217",
                "https://github.com/Project-HAMi/HAMi-core/pull/217",
            ),
            up(
                "HAMi#1607",
                "https://github.com/Project-HAMi/HAMi/issues/1607",
            ),
        ],
        explains: &[],
        captured: true,
    },
    Rule {
        mode: "gpumem-not-allocatable",
        symptom: "`nvidia.com/gpumem` absent from node allocatable",
        cause: "normal: HAMi's scheduler extender accounts for it, not the kubelet",
        fix: Fix {
            steps: &["nothing to do"],
            commands: &[],
        },
        severity: Severity::Info,
        confidence: Confidence::High,
        signals: &[sig(
            "gpumem-absent",
            "a registered node without nvidia.com/gpumem in allocatable",
            Alone,
            Matcher::Fact(Fact::GpumemNotAllocatable),
        )],
        versions: ANY,
        upstream: &[up(
            "scheduler config: managedResources ignoredByScheduler",
            "https://github.com/Project-HAMi/HAMi/blob/v2.10.0/charts/hami/templates/_helpers.tpl",
        )],
        explains: &[],
        captured: false,
    },
];

/// The rule of a mode.
pub fn rule(mode: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.mode == mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_unique_and_explained_modes_exist() {
        for (i, r) in RULES.iter().enumerate() {
            assert!(
                RULES[..i].iter().all(|o| o.mode != r.mode),
                "duplicate mode {}",
                r.mode
            );
            for e in r.explains {
                assert!(rule(e).is_some(), "{} explains unknown {e}", r.mode);
            }
            assert!(!r.signals.is_empty(), "{} has no signal", r.mode);
            assert!(
                r.signals.iter().any(|s| s.role != Role::Support),
                "{} can never match",
                r.mode
            );
            assert!(!r.upstream.is_empty(), "{} has no upstream source", r.mode);
            if let Some(v) = r.versions.fixed_in {
                assert!(super::super::version::Version::parse(v).is_some(), "{v}");
            }
        }
    }

    #[test]
    fn every_pattern_compiles() {
        for r in RULES {
            for s in r.signals {
                if let Matcher::Line(p) = s.matcher {
                    for pat in p.all.iter().chain(p.none) {
                        assert!(regex::Regex::new(pat).is_ok(), "{}: {pat}", r.mode);
                    }
                }
            }
        }
    }
}
