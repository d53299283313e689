//! cluster-ctl against the mock API server (`tests/mockapi`): the mock's own semantics, the `api`
//! seam (retries, timeouts, watches that survive), every subcommand, RBAC from
//! manifests/rbac.yaml, the fault matrix and the soak run. Time is tokio's paused clock: waits of
//! minutes take milliseconds, and their order is exactly what a real clock would give.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../mockapi/mod.rs"]
mod mockapi;

mod api;
mod bypass;
mod chart_install;
mod commands;
mod doctor_logs;
mod fault_matrix;
mod fleet;
mod harden;
mod mock_semantics;
mod rbac;
mod soak;
mod support;
