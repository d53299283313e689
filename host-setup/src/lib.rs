//! `host-setup` library: observe a GPU host, plan the changes that make `nvidia` its default
//! containerd runtime (through k3s or plain containerd), apply them safely, verify the result.
//!
//! Flow: [`observe`] (read-only, through `lab_runner::Runner` and [`root::HostRoot`]) →
//! [`plan`] (pure) → [`validate`] (every rendered file checked, by the real containerd where one
//! exists) → [`render`] (dry-run output) or [`apply`] (back up, write atomically, restart, roll
//! back on failure; the commands come from [`actions`], the same ones the dry-run prints) →
//! [`checks`] (verify). The binary (`main.rs`) is a thin CLI over these modules; tests drive them
//! with a `RecordingRunner` and a `--root` tree so no test touches the real host. [`toolkit`] is
//! the opt-in `harden`: the NVIDIA Container Toolkit settings that stop device requests by
//! environment variable from unprivileged containers.

pub mod actions;
pub mod apply;
pub mod checks;
pub mod containerd;
pub mod fsio;
pub mod k3s;
pub mod observe;
pub mod plan;
pub mod render;
pub mod root;
pub mod toolkit;
pub mod validate;
