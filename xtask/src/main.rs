//! `cargo xtask`: one binary, one module per task (rust-analyzer style).
//!
//! - `lab`: the whole lab, resumable (see `lab.rs`);
//! - `ci`: what `.ci/run` runs — fmt check, clippy, tests, installing what the tests need, and
//!   the tier table of what the tests exercised (`tiers.rs`);
//! - `dist`: portable release binaries (glibc ≤ 2.28) and SHA256SUMS;
//! - `gpu-bundle`: the binaries to carry to a GPU host for the GPU tests;
//! - `hami-core`: `libvgpu.so` from a HAMi-core source folder, for `gpu-probe conformance`;
//! - `fresh-vm-test`: README's VM commands, as written, in a fresh Debian root (`fresh_vm.rs`);
//! - `tidy.rs` (tests only): the workspace's code rules — `//!` docs, workspace dependency
//!   versions, READMEs naming what exists, processes only through lab-runner.

mod ci;
mod dist;
mod fresh_vm;
mod hami_core;
mod lab;
mod tiers;
// The workspace's code rules, checked by `cargo test -p xtask` (no task of its own: tests only).
#[cfg(test)]
mod tidy;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Tasks of hami-isolation-lab")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Run the whole lab: preflight → host-setup → install HAMi → exercises → evidence bundle.
    Lab(lab::LabArgs),
    /// Format check, clippy -D warnings and all tests, installing what the tests need.
    Ci(ci::CiArgs),
    /// Release binaries of the four tools for x86_64 Linux, glibc ≤ 2.28, plus SHA256SUMS.
    Dist(dist::DistArgs),
    /// Build gpu-probe (portable), its GPU test and its benchmark into .carry/ for a GPU host.
    GpuBundle,
    /// Build libvgpu.so from a HAMi-core source folder (build.sh's options, the vgpu target only).
    HamiCore(hami_core::HamiCoreArgs),
    /// As root: README's VM commands in a fresh debootstrap Debian root; the lab must stop at
    /// preflight on the missing driver only.
    FreshVmTest(fresh_vm::FreshVmArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Lab(args) => lab::run(&args),
        Task::Ci(args) => ci::run(&args).map(|()| 0),
        Task::Dist(args) => dist::run(&args).map(|_| 0),
        Task::GpuBundle => dist::gpu_bundle().map(|()| 0),
        Task::HamiCore(args) => hami_core::run(&args),
        Task::FreshVmTest(args) => fresh_vm::run(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}
