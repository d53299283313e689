//! The one way every tool of the lab runs a subprocess.
//!
//! Why a crate of its own: host-setup, cluster-ctl (helm), gpu-probe (nvidia-smi) and xtask all run
//! programs, and all of them need the same three things: the command line logged before it runs,
//! stderr kept so an error can say *why* a command failed, and a seam so tests can replace the real
//! host with a [`RecordingRunner`] that answers from a script and records every call.
//!
//! The real implementation, [`SystemRunner`], is a thin layer over `duct`.
//!
//! [`progress`] shows long work (bars on a terminal, plain lines in logs, event lines from a child
//! to its parent); a child's events reach the parent through [`Runner::run_streaming`].

pub mod progress;

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod tier;

/// A command to run: program, arguments, extra environment and optional stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
    /// Killed when it runs longer than this.
    pub timeout: Option<Duration>,
    /// Let stdout and stderr through to the terminal instead of capturing them (for long steps
    /// whose own progress output the user should see). The error then points at that output.
    pub stream: bool,
    /// Working directory (default: the caller's).
    pub dir: Option<PathBuf>,
    /// Start from an empty environment: only `env` is passed.
    pub clear_env: bool,
}

impl Cmd {
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            timeout: None,
            stream: false,
            dir: None,
            clear_env: false,
        }
    }

    /// Starts the program with only the variables given by [`Cmd::env`].
    #[must_use]
    pub fn clear_env(mut self) -> Self {
        self.clear_env = true;
        self
    }

    #[must_use]
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    #[must_use]
    pub fn streamed(mut self) -> Self {
        self.stream = true;
        self
    }

    #[must_use]
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    #[must_use]
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    #[must_use]
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }
}

impl fmt::Display for Cmd {
    /// Shell-like rendering, for logs and error messages (values of `env` are not shown: they may
    /// be secrets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, _) in &self.env {
            write!(f, "{key}=… ")?;
        }
        write!(f, "{}", shell_quote(&self.program))?;
        for arg in &self.args {
            write!(f, " {}", shell_quote(arg))?;
        }
        Ok(())
    }
}

fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// What a finished command gave back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Output {
    /// Exit code; `None` when the process was killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Why a command could not be run, or failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("`{program}` was not found on PATH; {hint}")]
    NotFound { program: String, hint: String },
    #[error("could not start `{cmd}`: {source}")]
    Spawn { cmd: String, source: io::Error },
    #[error("`{cmd}` did not finish within {}s and was killed", .after.as_secs())]
    TimedOut { cmd: String, after: Duration },
    #[error("`{cmd}` failed with {}: {}", exit_text(*.code), stderr_tail(.stderr))]
    Failed {
        cmd: String,
        code: Option<i32>,
        stderr: String,
    },
}

fn exit_text(code: Option<i32>) -> String {
    code.map_or_else(|| "a signal".to_owned(), |c| format!("exit code {c}"))
}

/// The last lines of stderr, enough to explain a failure without flooding the terminal.
fn stderr_tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    let start = lines.len().saturating_sub(8);
    let tail = lines[start..].join("\n");
    if tail.is_empty() {
        "(no stderr)".to_owned()
    } else {
        tail
    }
}

/// Runs commands. Implemented by [`SystemRunner`] (the real host) and [`RecordingRunner`] (tests).
pub trait Runner: Send + Sync {
    /// Runs `cmd` to completion and returns its output whatever the exit code.
    fn run(&self, cmd: &Cmd) -> Result<Output, RunError>;

    /// Whether `program` can be found (on PATH, or as a path).
    fn exists(&self, program: &str) -> bool;

    /// Runs `cmd` like [`Runner::run`], handing each line of its stderr (without the newline) to
    /// `on_stderr` while it runs; the output still holds all of stderr. For a child whose
    /// progress events the caller shows ([`progress::Progress::relay`]). This default hands the
    /// lines over once the command has ended.
    fn run_streaming(
        &self,
        cmd: &Cmd,
        on_stderr: &mut dyn FnMut(&str),
    ) -> Result<Output, RunError> {
        let out = self.run(cmd)?;
        out.stderr.lines().for_each(&mut *on_stderr);
        Ok(out)
    }

    /// Runs `cmd` and turns a non-zero exit into [`RunError::Failed`] carrying stderr.
    fn run_checked(&self, cmd: &Cmd) -> Result<Output, RunError> {
        let out = self.run(cmd)?;
        if out.success() {
            Ok(out)
        } else {
            Err(RunError::Failed {
                cmd: cmd.to_string(),
                code: out.code,
                stderr: out.stderr,
            })
        }
    }
}

/// Runs commands on this machine through `duct`, logging each command line to stderr when
/// `verbose` is set.
#[derive(Debug, Clone, Default)]
pub struct SystemRunner {
    pub verbose: bool,
    /// Hints shown when a program is missing, e.g. `("helm", "install it: https://helm.sh")`.
    pub install_hints: Vec<(String, String)>,
}

impl SystemRunner {
    pub fn new(verbose: bool) -> Self {
        Self {
            verbose,
            install_hints: Vec::new(),
        }
    }

    #[must_use]
    pub fn with_hint(mut self, program: &str, hint: &str) -> Self {
        self.install_hints
            .push((program.to_owned(), hint.to_owned()));
        self
    }

    fn hint_for(&self, program: &str) -> String {
        self.install_hints
            .iter()
            .find(|(p, _)| p == program)
            .map_or_else(|| "install it or fix PATH".to_owned(), |(_, h)| h.clone())
    }
}

impl Runner for SystemRunner {
    fn run(&self, cmd: &Cmd) -> Result<Output, RunError> {
        if !self.exists(&cmd.program) {
            return Err(RunError::NotFound {
                program: cmd.program.clone(),
                hint: self.hint_for(&cmd.program),
            });
        }
        if self.verbose {
            eprintln!("+ {cmd}");
        }
        let mut expr = expression(cmd);
        if !cmd.stream {
            expr = expr.stdout_capture().stderr_capture();
        }
        if let Some(dir) = &cmd.dir {
            expr = expr.dir(dir);
        }
        expr = with_env(expr, cmd);
        expr = match &cmd.stdin {
            Some(bytes) => expr.stdin_bytes(bytes.clone()),
            None => expr.stdin_null(),
        };
        let spawn_err = |source| RunError::Spawn {
            cmd: cmd.to_string(),
            source,
        };
        let out = match cmd.timeout {
            None => expr.run().map_err(spawn_err)?,
            Some(limit) => {
                let handle = expr.start().map_err(spawn_err)?;
                let started = Instant::now();
                loop {
                    if let Some(out) = handle.try_wait().map_err(spawn_err)? {
                        break out.clone();
                    }
                    if started.elapsed() >= limit {
                        let _ = handle.kill();
                        return Err(RunError::TimedOut {
                            cmd: cmd.to_string(),
                            after: limit,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        if let Some(path) = which(&cmd.program) {
            let status = out
                .status
                .code()
                .map_or_else(|| "exit=signal".to_owned(), |c| format!("exit={c}"));
            tier::exec(&path, cmd.args.first().map(String::as_str), &status);
        }
        Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn exists(&self, program: &str) -> bool {
        which(program).is_some()
    }

    fn run_streaming(
        &self,
        cmd: &Cmd,
        on_stderr: &mut dyn FnMut(&str),
    ) -> Result<Output, RunError> {
        if !self.exists(&cmd.program) {
            return Err(RunError::NotFound {
                program: cmd.program.clone(),
                hint: self.hint_for(&cmd.program),
            });
        }
        if self.verbose {
            eprintln!("+ {cmd}");
        }
        let spawn_err = |source| RunError::Spawn {
            cmd: cmd.to_string(),
            source,
        };
        let (reader, writer) = std::io::pipe().map_err(spawn_err)?;
        let handle = {
            let mut expr = expression(cmd).stdout_capture().stderr_file(writer);
            if let Some(dir) = &cmd.dir {
                expr = expr.dir(dir);
            }
            if cmd.clear_env {
                expr = expr.full_env(cmd.env.iter().cloned());
            } else {
                for (key, value) in &cmd.env {
                    expr = expr.env(key, value);
                }
            }
            expr = match &cmd.stdin {
                Some(bytes) => expr.stdin_bytes(bytes.clone()),
                None => expr.stdin_null(),
            };
            expr.start().map_err(spawn_err)?
            // `expr` ends here, and with it this process's copy of the pipe's write end.
        };
        let lines = stderr_lines(reader);
        let mut stderr = String::new();
        let mut take = |line: String, stderr: &mut String| {
            on_stderr(line.trim_end_matches(['\n', '\r']));
            stderr.push_str(&line);
        };
        let started = Instant::now();
        let out = loop {
            match lines.recv_timeout(Duration::from_millis(10)) {
                Ok(line) => take(line, &mut stderr),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // The child closed its stderr; it may still run.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            if let Some(out) = handle.try_wait().map_err(spawn_err)? {
                break out.clone();
            }
            if let Some(limit) = cmd.timeout
                && started.elapsed() >= limit
            {
                let _ = handle.kill();
                return Err(RunError::TimedOut {
                    cmd: cmd.to_string(),
                    after: limit,
                });
            }
        };
        drop(handle);
        // What the child wrote just before it ended. A process it left behind may hold the pipe
        // open: its lines are not waited for past a short grace.
        let grace = Instant::now() + Duration::from_secs(2);
        while let Ok(line) = lines.recv_timeout(grace.saturating_duration_since(Instant::now())) {
            take(line, &mut stderr);
        }
        Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        })
    }
}

/// Reads `pipe` line by line on a thread of its own; the channel closes at end of file.
fn stderr_lines(pipe: std::io::PipeReader) -> mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// The command's environment, plus the test-tier origin when a tier log is being written (so a
/// CLI started by a test attributes its own program runs to that test; see [`tier`]).
/// The one place of the workspace that makes a process: root clippy.toml's `disallowed-methods`
/// forbids `duct::cmd` and `std::process::Command::new` everywhere else, so every spawn goes
/// through a `Runner` (a deadline, the install hint, the tier log). Exit codes are the caller's to
/// judge (`unchecked`).
#[allow(clippy::disallowed_methods)]
fn expression(cmd: &Cmd) -> duct::Expression {
    duct::cmd(&cmd.program, &cmd.args).unchecked()
}

fn with_env(mut expr: duct::Expression, cmd: &Cmd) -> duct::Expression {
    if cmd.clear_env {
        return expr.full_env(cmd.env.iter().cloned());
    }
    for (key, value) in &cmd.env {
        expr = expr.env(key, value);
    }
    if let Some((key, value)) = tier::child_env() {
        expr = expr.env(key, value);
    }
    expr
}

/// A process left running in the background; killed on drop.
#[derive(Debug)]
pub struct Background {
    handle: duct::Handle,
    cmd: String,
}

impl Background {
    /// Whether it has exited (and with what output).
    pub fn try_wait(&self) -> Result<Option<Output>, RunError> {
        let done = self.handle.try_wait().map_err(|source| RunError::Spawn {
            cmd: self.cmd.clone(),
            source,
        })?;
        Ok(done.map(|o| Output {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }))
    }

    /// Kills it (and waits for it to be gone).
    pub fn kill(&self) {
        let _ = self.handle.kill();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

impl SystemRunner {
    /// Starts `cmd` and returns at once; output is captured, the process is killed on drop.
    pub fn start(&self, cmd: &Cmd) -> Result<Background, RunError> {
        if !self.exists(&cmd.program) {
            return Err(RunError::NotFound {
                program: cmd.program.clone(),
                hint: self.hint_for(&cmd.program),
            });
        }
        if self.verbose {
            eprintln!("+ {cmd} &");
        }
        let mut expr = expression(cmd)
            .stdout_capture()
            .stderr_capture()
            .stdin_null();
        expr = with_env(expr, cmd);
        if let Some(dir) = &cmd.dir {
            expr = expr.dir(dir);
        }
        let handle = expr.start().map_err(|source| RunError::Spawn {
            cmd: cmd.to_string(),
            source,
        })?;
        if let Some(path) = which(&cmd.program) {
            tier::exec(&path, cmd.args.first().map(String::as_str), "started");
        }
        Ok(Background {
            handle,
            cmd: cmd.to_string(),
        })
    }
}

/// Finds `program` the way a shell would: as a path when it contains `/`, else on `PATH`
/// (the `which` crate: executable regular files only, as `command -v` finds them).
pub fn which(program: &str) -> Option<PathBuf> {
    which::which(program).ok()
}

/// A scripted answer of the [`RecordingRunner`].
#[derive(Debug, Clone)]
pub struct Reply {
    /// The call is answered when its rendered command line contains this text.
    pub matches: String,
    pub output: Output,
}

/// A fake runner for tests: answers from a script of [`Reply`]s (first match wins, each used once
/// unless it is the last for its pattern) and records every command it was asked to run.
#[derive(Debug, Default)]
pub struct RecordingRunner {
    replies: Mutex<VecDeque<Reply>>,
    calls: Mutex<Vec<Cmd>>,
    /// Programs that `exists` reports as present; everything else is missing.
    pub present: Vec<String>,
}

impl RecordingRunner {
    pub fn new(present: &[&str]) -> Self {
        Self {
            present: present.iter().map(|s| (*s).to_owned()).collect(),
            ..Self::default()
        }
    }

    /// Adds a reply for commands whose rendered line contains `matches`.
    pub fn reply(&self, matches: &str, code: i32, stdout: &str, stderr: &str) -> &Self {
        let output = Output {
            code: Some(code),
            stdout: stdout.to_owned(),
            stderr: stderr.to_owned(),
        };
        self.replies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(Reply {
                matches: matches.to_owned(),
                output,
            });
        self
    }

    /// Every command run so far, in order.
    pub fn calls(&self) -> Vec<Cmd> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Every command line run so far, rendered as in logs.
    pub fn lines(&self) -> Vec<String> {
        self.calls().iter().map(ToString::to_string).collect()
    }
}

impl Runner for RecordingRunner {
    fn run(&self, cmd: &Cmd) -> Result<Output, RunError> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(cmd.clone());
        if !self.exists(&cmd.program) {
            return Err(RunError::NotFound {
                program: cmd.program.clone(),
                hint: "not present in this test".to_owned(),
            });
        }
        let line = cmd.to_string();
        let mut replies = self
            .replies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(pos) = replies.iter().position(|r| line.contains(&r.matches)) else {
            // An unscripted command succeeds silently: tests assert on `calls()` for what ran.
            return Ok(Output {
                code: Some(0),
                ..Output::default()
            });
        };
        let is_last_for_pattern = !replies
            .iter()
            .skip(pos + 1)
            .any(|r| r.matches == replies[pos].matches);
        // The last reply for a pattern stays, so it answers every later call too.
        let reply = if is_last_for_pattern {
            replies.get(pos).cloned()
        } else {
            replies.remove(pos)
        };
        Ok(reply.map(|r| r.output).unwrap_or_default())
    }

    fn exists(&self, program: &str) -> bool {
        self.present.iter().any(|p| p == program)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_runner_keeps_stdout_stderr_and_code() {
        let runner = SystemRunner::new(false);
        let out = runner
            .run(&Cmd::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]))
            .expect("sh runs");
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    fn run_checked_puts_stderr_into_the_error() {
        let runner = SystemRunner::new(false);
        let err = runner
            .run_checked(&Cmd::new("sh").args(["-c", "echo 'disk is full' >&2; exit 1"]))
            .expect_err("exit 1 is an error");
        let text = err.to_string();
        assert!(text.contains("exit code 1"), "{text}");
        assert!(text.contains("disk is full"), "{text}");
    }

    #[test]
    fn missing_program_is_not_found_with_hint() {
        let runner = SystemRunner::new(false).with_hint("no-such-tool-xyz", "apt-get install xyz");
        let err = runner
            .run(&Cmd::new("no-such-tool-xyz"))
            .expect_err("missing");
        assert!(matches!(err, RunError::NotFound { .. }));
        assert!(err.to_string().contains("apt-get install xyz"));
    }

    #[test]
    fn stdin_and_env_reach_the_child() {
        let runner = SystemRunner::new(false);
        let out = runner
            .run(
                &Cmd::new("sh")
                    .args(["-c", "cat; printf %s \"$FOO\""])
                    .env("FOO", "bar")
                    .stdin("in:"),
            )
            .expect("runs");
        assert_eq!(out.stdout, "in:bar");
    }

    #[test]
    fn timeout_kills_a_hung_command() {
        let runner = SystemRunner::new(false);
        let err = runner
            .run(
                &Cmd::new("sleep")
                    .arg("30")
                    .timeout(Duration::from_millis(200)),
            )
            .expect_err("killed");
        assert!(matches!(err, RunError::TimedOut { .. }), "{err}");
        let ok = runner
            .run(&Cmd::new("true").timeout(Duration::from_secs(30)))
            .expect("fast");
        assert!(ok.success());
    }

    #[test]
    fn streaming_hands_over_stderr_lines_while_the_command_runs() {
        let runner = SystemRunner::new(false);
        let started = Instant::now();
        let mut seen = Vec::new();
        let out = runner
            .run_streaming(
                &Cmd::new("sh")
                    .args(["-c", "echo one >&2; sleep 1; echo two >&2; echo out"])
                    .timeout(Duration::from_secs(30)),
                &mut |line| seen.push((line.to_owned(), started.elapsed())),
            )
            .expect("sh runs");
        let ended = started.elapsed();
        assert_eq!(out.code, Some(0));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "one\ntwo\n");
        let lines: Vec<&str> = seen.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(lines, ["one", "two"]);
        // The first line arrived while the command was still sleeping, not at its end.
        assert!(
            seen[0].1 + Duration::from_millis(500) < ended,
            "{seen:?} {ended:?}"
        );
    }

    #[test]
    fn streaming_keeps_the_timeout_and_the_lines_before_it() {
        let runner = SystemRunner::new(false);
        let mut seen = Vec::new();
        let err = runner
            .run_streaming(
                &Cmd::new("sh")
                    .args(["-c", "echo started >&2; sleep 30"])
                    .timeout(Duration::from_millis(500)),
                &mut |line| seen.push(line.to_owned()),
            )
            .expect_err("killed");
        assert!(matches!(err, RunError::TimedOut { .. }), "{err}");
        assert_eq!(seen, ["started"]);
        let fake = RecordingRunner::new(&["x"]);
        fake.reply("x", 0, "", "a\nb\n");
        let mut replayed = Vec::new();
        fake.run_streaming(&Cmd::new("x"), &mut |l| replayed.push(l.to_owned()))
            .expect("scripted");
        assert_eq!(replayed, ["a", "b"], "a runner that cannot stream replays");
    }

    #[test]
    fn cleared_env_passes_only_what_is_given() {
        let runner = SystemRunner::new(false);
        let out = runner
            .run(&Cmd::new("/usr/bin/env").env("ONLY", "this").clear_env())
            .expect("env runs");
        assert_eq!(out.stdout, "ONLY=this\n");
    }

    #[test]
    fn background_processes_run_and_are_killed() {
        let runner = SystemRunner::new(false);
        let bg = runner.start(&Cmd::new("sleep").arg("30")).expect("starts");
        assert!(bg.try_wait().expect("poll").is_none(), "still running");
        bg.kill();
        let quick = runner
            .start(&Cmd::new("sh").args(["-c", "echo hi"]))
            .expect("starts");
        let out = loop {
            if let Some(o) = quick.try_wait().expect("poll") {
                break o;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(out.stdout, "hi\n");
    }

    #[test]
    fn display_quotes_and_hides_env_values() {
        let cmd = Cmd::new("helm")
            .args(["--set", "a=b c"])
            .env("TOKEN", "secret");
        let text = cmd.to_string();
        assert_eq!(text, "TOKEN=… helm --set 'a=b c'");
        assert!(!text.contains("secret"));
    }

    #[test]
    fn recording_runner_scripts_and_records() {
        let fake = RecordingRunner::new(&["helm"]);
        fake.reply("helm status", 1, "", "release: not found")
            .reply("helm status", 0, "deployed", "");
        let first = fake
            .run(&Cmd::new("helm").args(["status", "hami"]))
            .expect("scripted");
        let second = fake
            .run(&Cmd::new("helm").args(["status", "hami"]))
            .expect("scripted");
        let third = fake
            .run(&Cmd::new("helm").args(["status", "hami"]))
            .expect("last reply repeats");
        assert_eq!(first.code, Some(1));
        assert_eq!(second.stdout, "deployed");
        assert_eq!(third.stdout, "deployed");
        assert!(matches!(
            fake.run(&Cmd::new("kubectl")),
            Err(RunError::NotFound { .. })
        ));
        assert_eq!(fake.lines().len(), 4);
    }
}
