//! gpu-probe: proves a process's GPU memory slice from the inside.
//!
//! Invariant: this crate never depends on kube, tokio or anything network-facing; it loads the CUDA
//! driver and NVML at run time, so it builds and its tests run on machines without CUDA.

pub mod audit;
pub mod bypass;
pub mod cap;
pub mod conformance;
pub mod ffi;
pub mod hamicore;
pub mod human;
pub mod kernels;
pub mod limits;
pub mod maps;
pub mod mechanism;
pub mod method;
pub mod overhead;
pub mod probe;
pub mod region;
/// The JSON report types, defined in lab-report (the contracts between the tools).
pub use lab_report::probe as report;
/// The conformance/method report types, defined in lab-report beside the report.
pub use lab_report::report_conformance;
pub mod robustness;
pub mod selftest;
pub mod smi;
pub mod view;
pub mod worker;

#[cfg(test)]
mod testdata;
