//! Test tiers: a record of which real things the tests exercised, for `cargo xtask ci`'s tier
//! table.
//!
//! Why here: every real program the lab runs goes through [`crate::SystemRunner`], so the runner
//! can record, with no help from the test, that a test really ran `chromium` or `containerd`.
//! Tests add what a program run cannot show: a tier with no program (`ran("mock API")`), or a
//! tier they could not exercise (`skipped("containerd 2.x", "no containerd >= 2.0 here")`).
//!
//! Nothing is recorded unless `LAB_TEST_TIER_LOG` names a file (`cargo xtask ci` sets it). Each
//! record is one line appended with a single `write` (O_APPEND), so parallel tests and the CLI
//! processes they start can share the file:
//!
//! ```text
//! TIER1<TAB>ran|skipped|exec<TAB>tier-or-program<TAB>test-binary<TAB>test-name<TAB>detail
//! ```
//!
//! `test-binary` is the file name of the test executable (`host_setup-1a2b3c…`, as in cargo's
//! `Running …` line) and `test-name` the test's thread name (libtest names each test's thread
//! after the test). A process started by a test inherits both through `LAB_TEST_TIER_ORIGIN`, so
//! what a CLI under test runs is counted for the test that started it. `detail` is the reason of
//! a skip, or `exit=<code> args=<first argument>` of a program run (`started` instead of
//! `exit=` for one left running).

use std::io::Write as _;
use std::path::Path;

/// The file records are appended to (unset: nothing is recorded).
pub const LOG_ENV: &str = "LAB_TEST_TIER_LOG";
/// `<test-binary>\t<test-name>` of the test that started this process.
pub const ORIGIN_ENV: &str = "LAB_TEST_TIER_ORIGIN";
const MAGIC: &str = "TIER1";

/// What a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A test exercised the tier.
    Ran,
    /// A test could not exercise the tier; `detail` says why.
    Skipped,
    /// A real program ran (name = its resolved path).
    Exec,
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub event: Event,
    /// The tier (ran, skipped) or the program's path (exec).
    pub name: String,
    pub binary: String,
    pub test: String,
    pub detail: String,
}

/// Records that the calling test exercised `tier` (for tiers no program run shows).
pub fn ran(tier: &str) {
    eprintln!("TIER {tier} ran");
    append(Event::Ran, tier, "");
}

/// Records that the calling test could not exercise `tier`, and why. Under `CI=true`, `cargo
/// xtask ci` fails on the skip of a tier it knows how to install.
pub fn skipped(tier: &str, why: &str) {
    eprintln!("SKIPPED ({tier}): {why}");
    append(Event::Skipped, tier, why);
}

/// Records a program run by [`crate::SystemRunner`]: `status` is its exit code (`exit=0`), or
/// `started` for a process left running in the background.
pub(crate) fn exec(program: &Path, first_arg: Option<&str>, status: &str) {
    if std::env::var_os(LOG_ENV).is_none() {
        return;
    }
    append(
        Event::Exec,
        &program.to_string_lossy(),
        &format!("{status} args={}", first_arg.unwrap_or("")),
    );
}

/// The environment a child process needs to attribute its own records to this test.
pub(crate) fn child_env() -> Option<(&'static str, String)> {
    std::env::var_os(LOG_ENV)?;
    let (binary, test) = origin();
    Some((ORIGIN_ENV, format!("{binary}\t{test}")))
}

/// (test binary, test name) of the current test, or of the test that started this process.
pub fn origin() -> (String, String) {
    if let Ok(o) = std::env::var(ORIGIN_ENV)
        && let Some((b, t)) = o.split_once('\t')
    {
        return (b.to_owned(), t.to_owned());
    }
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "?".to_owned());
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    (binary, test)
}

fn clean(field: &str) -> String {
    field.replace(['\t', '\n', '\r'], " ")
}

fn append(event: Event, name: &str, detail: &str) {
    let Some(path) = std::env::var_os(LOG_ENV) else {
        return;
    };
    let (binary, test) = origin();
    let event = match event {
        Event::Ran => "ran",
        Event::Skipped => "skipped",
        Event::Exec => "exec",
    };
    let line = format!(
        "{MAGIC}\t{event}\t{}\t{}\t{}\t{}\n",
        clean(name),
        clean(&binary),
        clean(&test),
        clean(detail)
    );
    // One write per line: appends of a short line do not interleave. A log that cannot be
    // written leaves the tier unrecorded, which `cargo xtask ci` reports; it never fails a test.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Parses a log; lines that are not records are ignored.
pub fn parse(text: &str) -> Vec<Record> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() != 6 || f[0] != MAGIC {
                return None;
            }
            let event = match f[1] {
                "ran" => Event::Ran,
                "skipped" => Event::Skipped,
                "exec" => Event::Exec,
                _ => return None,
            };
            Some(Record {
                event,
                name: f[2].to_owned(),
                binary: f[3].to_owned(),
                test: f[4].to_owned(),
                detail: f[5].to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_back_and_junk_is_ignored() {
        let text = "TIER1\tran\tmock API\tcluster_ctl-abc\tcommands_tests::x\t\n\
                    something else\n\
                    TIER1\tskipped\tchromium\tchromium-1\trender\tnot installed\n\
                    TIER1\texec\t/usr/bin/tar\tapi-2\treal_tar\texit=0 args=xmf\n\
                    TIER1\tbogus\tx\ty\tz\t\n";
        let r = parse(text);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].event, Event::Ran);
        assert_eq!(r[0].name, "mock API");
        assert_eq!(r[1].detail, "not installed");
        assert_eq!(r[2].event, Event::Exec);
        assert_eq!(r[2].test, "real_tar");
    }

    #[test]
    fn fields_cannot_break_the_line_format() {
        assert_eq!(clean("a\tb\nc"), "a b c");
    }
}
