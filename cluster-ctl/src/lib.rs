//! `cluster-ctl` library: installs HAMi, runs the lab's five isolation exercises and diagnoses the
//! known failures, over the Kubernetes API (kube + k8s-openapi) and helm (through `lab-runner`).
//!
//! Layout: pure decisions (`register`, `podann`, `sizing`, `decide`, `doctor`, the `diagnose` engine,
//! `helm` planning, `manifests`) are unit-tested on the shared fixtures; `api` is the only module that talks to the
//! API server and is tested against a mock API server; `commands` ties them into subcommands.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api;
pub mod bypass;
pub mod commands;
pub mod decide;
pub mod diagnose;
pub mod doctor;
pub mod harden;
pub mod helm;
pub mod manifests;
pub mod plan;
pub mod podann;
pub mod register;
pub mod report;
pub mod sizing;

#[cfg(test)]
mod admission;
#[cfg(test)]
mod commands_tests;
#[cfg(test)]
mod execserver;
#[cfg(test)]
mod mockapi;
#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod testdata;
