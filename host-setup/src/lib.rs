//! `host-setup` library: observe a GPU host, plan the changes that make `nvidia` its default
//! containerd runtime (through k3s or plain containerd), apply them safely, verify the result.
//!
//! The binary (`main.rs`) is a thin CLI over these modules; tests drive them directly with a
//! `lab_runner::RecordingRunner` and a `--root` tree so no test touches the real host.

pub mod containerd;
pub mod fsio;
pub mod k3s;
pub mod root;
