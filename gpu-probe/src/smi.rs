//! `nvidia-smi --query-gpu=name,uuid,memory.total,memory.used,memory.free --format=csv`: run it
//! when it exists, keep its raw output, and parse the rows.
//!
//! Inside a HAMi pod nvidia-smi is itself intercepted, so its totals show the slice; its output can
//! also carry HAMi-core `Msg` lines (tests/data/h100-hami-core/nvidia-smi-query-slice.csv),
//! which are set aside rather than parsed as CSV.

use lab_runner::{Cmd, Runner};

use crate::hamicore::is_hami_core_line;
use crate::report::{NvidiaSmi, SmiRow};

pub const QUERY: &str = "name,uuid,memory.total,memory.used,memory.free";

/// Runs nvidia-smi through `runner`, killed past `timeout`; `None` when it is not installed.
pub fn query(runner: &dyn Runner, timeout: std::time::Duration) -> Option<NvidiaSmi> {
    if !runner.exists("nvidia-smi") {
        return None;
    }
    let cmd = Cmd::new("nvidia-smi")
        .arg(format!("--query-gpu={QUERY}"))
        .arg("--format=csv")
        .timeout(timeout);
    let command = cmd.to_string();
    match runner.run(&cmd) {
        Ok(out) => {
            let (rows, hami_core_lines) = parse_csv(&format!("{}\n{}", out.stdout, out.stderr));
            Some(NvidiaSmi {
                command,
                exit_code: out.code,
                stdout: out.stdout,
                stderr: out.stderr,
                rows,
                hami_core_lines,
            })
        }
        Err(e) => Some(NvidiaSmi {
            command,
            exit_code: None,
            stdout: String::new(),
            stderr: e.to_string(),
            rows: Vec::new(),
            hami_core_lines: Vec::new(),
        }),
    }
}

/// `nvidia-smi -L` (GPUs and MIG devices), raw; `None` when nvidia-smi is missing or fails.
pub fn list(runner: &dyn Runner, timeout: std::time::Duration) -> Option<String> {
    if !runner.exists("nvidia-smi") {
        return None;
    }
    let out = runner
        .run(&Cmd::new("nvidia-smi").arg("-L").timeout(timeout))
        .ok()?;
    out.success().then_some(out.stdout)
}

/// Parses the CSV (with header and units, or `noheader,nounits`), returning rows and the HAMi-core
/// lines found among them. Lines that fit neither are ignored.
pub fn parse_csv(text: &str) -> (Vec<SmiRow>, Vec<String>) {
    let mut rows = Vec::new();
    let mut hami = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if is_hami_core_line(line) {
            hami.push(line.to_owned());
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != 5 {
            continue;
        }
        let (Some(total), Some(used), Some(free)) = (
            parse_mib(fields[2]),
            parse_mib(fields[3]),
            parse_mib(fields[4]),
        ) else {
            continue; // the header, or "[N/A]"
        };
        rows.push(SmiRow {
            name: fields[0].to_owned(),
            uuid: fields[1].to_owned(),
            total_mib: total,
            used_mib: used,
            free_mib: free,
        });
    }
    (rows, hami)
}

fn parse_mib(field: &str) -> Option<u64> {
    field
        .strip_suffix("MiB")
        .unwrap_or(field)
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::hami_fixture;
    use lab_runner::RecordingRunner;

    #[test]
    fn parses_the_real_slice_capture_and_sets_hami_lines_aside() {
        let (rows, hami) = parse_csv(&hami_fixture("h100-hami-core/nvidia-smi-query-slice.csv"));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(rows[0].uuid, "GPU-4f7efa07-0f69-f62e-5958-365ed3785eb2");
        assert_eq!(
            (rows[0].total_mib, rows[0].used_mib, rows[0].free_mib),
            (8000, 0, 8000)
        );
        assert_eq!(hami.len(), 2);
    }

    #[test]
    fn parses_noheader_nounits_and_skips_na() {
        let text = "NVIDIA L4, GPU-1, 23034, 0, 22563\nNVIDIA L4, GPU-2, [N/A], [N/A], [N/A]\n";
        let (rows, _) = parse_csv(text);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].total_mib, 23034);
    }

    #[test]
    fn missing_nvidia_smi_gives_none() {
        assert!(
            query(
                &RecordingRunner::new(&[]),
                std::time::Duration::from_secs(5)
            )
            .is_none()
        );
    }

    #[test]
    fn query_keeps_raw_output_and_exit_code() {
        let fake = RecordingRunner::new(&["nvidia-smi"]);
        fake.reply(
            "nvidia-smi",
            0,
            &hami_fixture("h100-hami-core/nvidia-smi-query-slice.csv"),
            "",
        );
        let smi = query(&fake, std::time::Duration::from_secs(5)).expect("present");
        assert_eq!(smi.exit_code, Some(0));
        assert!(smi.stdout.contains("8000 MiB"));
        assert_eq!(smi.rows.len(), 1);
        assert_eq!(
            fake.lines(),
            vec![format!("nvidia-smi --query-gpu={QUERY} --format=csv")]
        );
    }
}
