//! HAMi-core's own log lines, as it writes them to the process's stderr.
//!
//! Formats (shared/facts/hami.md §8, real captures in tests/data/h100-hami-core/):
//! `[HAMI-core ERROR (pid:429 thread=140165051598656 allocator.c:52)]: Device 0 OOM 11280580608 / 8388608000`
//! `[HAMI-core Msg(418:139924555888448:multiprocess_memory_limit.c:700)]: Cleanup on exit for PID 418`

use crate::report::OomLine;

const PREFIX: &str = "[HAMI-core ";

/// Whether `line` was written by HAMi-core (any level).
pub fn is_hami_core_line(line: &str) -> bool {
    line.trim_start().starts_with(PREFIX)
}

/// Parses an OOM line: `… Device <dev> OOM <usage+request> / <limit>`.
pub fn parse_oom_line(line: &str) -> Option<OomLine> {
    let line = line.trim();
    if !is_hami_core_line(line) {
        return None;
    }
    let (_, message) = line.split_once("]: ")?;
    let mut words = message.split_whitespace();
    if words.next()? != "Device" {
        return None;
    }
    let device = words.next()?.parse().ok()?;
    if words.next()? != "OOM" {
        return None;
    }
    let requested_total_bytes = words.next()?.parse().ok()?;
    if words.next()? != "/" {
        return None;
    }
    let limit_bytes = words.next()?.parse().ok()?;
    Some(OomLine {
        pid: header_pid(line),
        device,
        requested_total_bytes,
        limit_bytes,
        raw: line.to_owned(),
    })
}

/// The pid in either header form: `(pid:429 thread=…` or `Msg(418:…`.
fn header_pid(line: &str) -> Option<u32> {
    let after = &line[line.find('(')? + 1..];
    let after = after.strip_prefix("pid:").unwrap_or(after);
    let end = after.find(|c: char| !c.is_ascii_digit())?;
    after[..end].parse().ok()
}

/// Splits captured stderr into HAMi-core OOM lines and every other non-empty line.
pub fn split_stderr(stderr: &str) -> (Vec<OomLine>, Vec<String>) {
    let mut ooms = Vec::new();
    let mut other = Vec::new();
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        match parse_oom_line(line) {
            Some(oom) => ooms.push(oom),
            None => other.push(line.to_owned()),
        }
    }
    (ooms, other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::hami_fixture;
    use proptest::prelude::*;

    #[test]
    fn parses_the_real_oom_capture() {
        let text = hami_fixture("h100-hami-core/oom-stderr.txt");
        let (ooms, other) = split_stderr(&text);
        assert_eq!(ooms.len(), 6);
        assert!(other.is_empty());
        assert_eq!(ooms[0].device, 0);
        assert_eq!(ooms[0].pid, Some(429));
        assert_eq!(ooms[0].requested_total_bytes, 11_280_580_608);
        assert_eq!(ooms[0].limit_bytes, 8_388_608_000);
        assert_eq!(ooms[5].requested_total_bytes, 9_133_096_960);
    }

    #[test]
    fn msg_lines_are_hami_lines_but_not_ooms() {
        let text = hami_fixture("h100-hami-core/nvidia-smi-L-slice.txt");
        let hami: Vec<&str> = text.lines().filter(|l| is_hami_core_line(l)).collect();
        assert_eq!(hami.len(), 2);
        assert!(hami.iter().all(|l| parse_oom_line(l).is_none()));
        assert_eq!(header_pid(hami[0]), Some(418));
    }

    #[test]
    fn lookalikes_are_not_parsed() {
        assert!(parse_oom_line("Device 0 OOM 1 / 2").is_none());
        assert!(
            parse_oom_line("[HAMI-core ERROR (pid:1 thread=2 a.c:3)]: Device x OOM 1 / 2")
                .is_none()
        );
        assert!(
            parse_oom_line("[HAMI-core ERROR (pid:1 thread=2 a.c:3)]: Device 0 OOM 1 of 2")
                .is_none()
        );
    }

    proptest! {
        #[test]
        fn never_panics(line in "\\PC{0,120}") {
            let _ = parse_oom_line(&line);
            let _ = split_stderr(&line);
        }

        #[test]
        fn round_trips_numbers(pid in 1u32..4_000_000, dev in 0u32..16, used: u64, limit: u64) {
            let line = format!("[HAMI-core ERROR (pid:{pid} thread=1 allocator.c:52)]: Device {dev} OOM {used} / {limit}");
            let oom = parse_oom_line(&line).expect("well-formed");
            prop_assert_eq!((oom.pid, oom.device, oom.requested_total_bytes, oom.limit_bytes), (Some(pid), dev, used, limit));
        }
    }
}
