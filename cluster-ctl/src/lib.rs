//! `cluster-ctl` library: installs HAMi, runs the lab's five isolation exercises and diagnoses the
//! known failures, over the Kubernetes API (kube + k8s-openapi) and helm (through `lab-runner`).
//!
//! Layout: pure decisions (`register`, `sizing`, `decide`, `doctor`, the `diagnose`
//! engine, `exercises`, `fleet` (discovery, probe pods, the CronJob), `helm` command lines, `helmchart` for k3s's HelmChart path, `manifests`, `wait_state`,
//! `plan`, `kubeconfig`) are unit-tested on the in-repo fixtures; `api` is the only module that
//! talks to the API server and is tested against the mock API server of `tests/mockapi`;
//! `pushgateway` pushes a fleet run's metrics to a Prometheus Pushgateway (tested against the real
//! one);
//! `commands` has one module per subcommand.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api;
pub mod bypass;
pub mod commands;
pub mod decide;
pub mod diagnose;
pub mod doctor;
pub mod exercises;
pub mod fleet;
pub mod harden;
pub mod helm;
pub mod helmchart;
pub mod kubeconfig;
pub mod manifests;
pub mod plan;
pub mod pushgateway;
pub mod register;
pub mod report;
pub mod sizing;
pub mod wait_state;

#[cfg(test)]
mod testdata;

/// A progress line on stderr (stdout carries the result).
pub fn progress(line: &str) {
    eprintln!("cluster-ctl: {line}");
}
