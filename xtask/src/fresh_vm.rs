//! `cargo xtask fresh-vm-test`: README's VM commands, as written, on a fresh machine.
//!
//! A minimal Debian root is built with `debootstrap` from the Debian mirror this machine's apt
//! uses, modelled on a rented VM: a user with sudo, this repository's files in its home, and the
//! host's Rust toolchain mounted in where rustup would have put it (`~/.rustup`, `~/.cargo/bin`,
//! `~/.cargo/env`; rustup's own download server is not the thing under test). README's block
//! after the `<!-- fresh-vm-test` marker is then run in one login shell, line by line, as that
//! user. Nothing else is installed: every prerequisite must come from README's own commands.
//!
//! There is no GPU, so the lab must stop at preflight with exit 3 and exactly one problem,
//! `no-driver` — plus, for each download source the host phase uses, `<id>-unreachable` when this
//! machine itself cannot reach it (probed from outside the root first, so a source that is
//! reachable must also be found reachable inside). Every other line must exit 0.
//!
//! `--drop-line N` runs the block without its N-th command, to show the test fails when a setup
//! command is missing; `--measure-build` also times the lab's build phase there.
//!
//! [`vm_commands`], [`script`] and [`judge`] are pure and unit-tested on the real README.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lab_runner::{Cmd, Runner, SystemRunner};

use crate::lab::preflight::{self, NETWORK_SOURCES};

/// Starts the block of README that is run.
pub const MARKER: &str = "<!-- fresh-vm-test";
/// README's placeholders and what the test types for them (203.0.113.0/24 is for documentation).
pub const PLACEHOLDERS: [(&str, &str); 1] = [("<public-ip-or-name>", "203.0.113.7")];
/// The rustup line is recognised by this and replaced by the mounted toolchain.
pub const RUSTUP_LINE: &str = "sh.rustup.rs";
/// The test's user (a cloud image's default user has sudo without a password, as here).
pub const USER: &str = "dev";
/// Where the repository goes in the user's home.
pub const CLONE: &str = "hami-isolation-lab";
/// Each line's exit status goes to this file in the user's home.
const EXITS: &str = ".fresh-vm-exits";
/// Everything the block printed.
const LOG: &str = ".fresh-vm.log";
/// The whole block, apt and the first xtask build included, gets this long.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(45 * 60);
/// How long the test takes with an empty crate cache: measured 5 to 8.5 minutes on a shared
/// 2-core machine (debootstrap 0.5–3 min, then README's block — apt, the xtask build, preflight —
/// 3–5.5 min); with margin. `cargo xtask ci` runs it only when this still fits its budget.
pub const ESTIMATE: Duration = Duration::from_secs(12 * 60);
/// What the root itself takes by the time the lab's preflight looks at the disk (Debian with the
/// README's packages about 0.6 GiB, the crates and the xtask build about 0.7 GiB), with margin.
pub const ROOT_BYTES: u64 = 3 << 30;

/// Free space the test needs here: the root, and then what the lab's preflight asks of a VM
/// (this machine's disk is the root's disk).
pub fn bytes_needed() -> u64 {
    ROOT_BYTES + preflight::BUILD_BYTES + preflight::K3S_BYTES
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct FreshVmArgs {
    /// Run README's block without its N-th command (1-based): the test must then fail.
    #[arg(long)]
    pub drop_line: Option<usize>,
    /// Also run and time the lab's build phase in the root (the first build on this machine).
    #[arg(long)]
    pub measure_build: bool,
    /// Keep the root afterwards (in target/fresh-vm/root).
    #[arg(long)]
    pub keep: bool,
    /// Debian suite (default: this machine's, else bookworm).
    #[arg(long)]
    pub suite: Option<String>,
    /// Debian mirror (default: the one apt here uses).
    #[arg(long)]
    pub mirror: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// README (pure)

/// The commands of README's fresh-VM block: the shell fence after [`MARKER`], without blank lines
/// and full-line comments.
pub fn vm_commands(readme: &str) -> Result<Vec<String>> {
    let Some(at) = readme.find(MARKER) else {
        bail!(
            "README.md has no `{MARKER}` block: the fresh-machine test runs the commands that follow it"
        );
    };
    let mut lines = readme[at..].lines().skip(1);
    let fence = lines
        .by_ref()
        .find(|l| l.trim_start().starts_with("```"))
        .context("no code block after the fresh-vm-test marker")?;
    if !matches!(fence.trim(), "```sh" | "```bash" | "```console") {
        bail!("the block after the fresh-vm-test marker is `{fence}`, not a shell block");
    }
    let mut out = Vec::new();
    for l in lines {
        if l.trim_start().starts_with("```") {
            return Ok(out);
        }
        let t = l.trim();
        if !t.is_empty() && !t.starts_with('#') {
            out.push(t.to_owned());
        }
    }
    bail!("the fresh-vm-test block in README.md is not closed")
}

/// Stands in for the rustup line: the toolchain is already mounted where rustup puts it, and
/// rustup's installer would also add `. "$HOME/.cargo/env"` to the shell's profile files.
const RUSTUP_STAND_IN: &str = r#"for f in ~/.profile ~/.bashrc; do echo '. "$HOME/.cargo/env"' >> "$f"; done; ~/.cargo/bin/rustc --version"#;

/// The script the user's login shell runs: `cd` into the clone, then each command (placeholders
/// filled in, the rustup line replaced) followed by a line that records its exit status.
pub fn script(commands: &[String], drop_line: Option<usize>) -> Result<String> {
    if let Some(n) = drop_line
        && (n == 0 || n > commands.len())
    {
        bail!(
            "--drop-line {n}: README's block has commands 1 to {}",
            commands.len()
        );
    }
    // One group in one shell (what `. "$HOME/.cargo/env"` does stays for the later lines), its
    // output both shown and kept.
    let mut s = format!(
        "# README.md's fresh-VM block, run by `cargo xtask fresh-vm-test`.\n{{\ncd ~/{CLONE} || exit 99\n"
    );
    for (i, c) in commands.iter().enumerate() {
        let n = i + 1;
        if Some(n) == drop_line {
            s.push_str(&format!(
                "echo '==> [{n}] dropped: {}'\n",
                c.replace('\'', "")
            ));
            continue;
        }
        let mut line = if c.contains(RUSTUP_LINE) {
            RUSTUP_STAND_IN.to_owned()
        } else {
            c.clone()
        };
        for (ph, value) in PLACEHOLDERS {
            line = line.replace(ph, value);
        }
        if let Some(left) = line.find('<').filter(|&i| line[i..].contains('>')) {
            bail!(
                "README command {n} has a placeholder the test does not know: {}",
                &line[left..]
            );
        }
        s.push_str(&format!(
            "echo '==> [{n}] {}'\n{line}\necho \"{n} $?\" >> ~/{EXITS}\n",
            c.replace('\'', "")
        ));
    }
    s.push_str(&format!("}} 2>&1 | tee -a ~/{LOG}\n"));
    Ok(s)
}

/// `N STATUS` lines of the exits file.
pub fn parse_exits(text: &str) -> Vec<(usize, i32)> {
    text.lines()
        .filter_map(|l| {
            let (n, c) = l.trim().split_once(' ')?;
            Some((n.parse().ok()?, c.parse().ok()?))
        })
        .collect()
}

/// The problem ids the lab printed at preflight (`  - [id] what`).
pub fn problem_ids(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- ["))
        .filter_map(|l| l.split_once(']'))
        .map(|(id, _)| id.to_owned())
        .collect()
}

/// Pure: the test's verdict. Every command but the last exits 0; the last (the lab) exits 3 with
/// exactly the expected problems.
pub fn judge(
    commands: usize,
    dropped: Option<usize>,
    exits: &[(usize, i32)],
    problems: &[String],
    expected: &BTreeSet<String>,
) -> Result<(), String> {
    let mut errors = Vec::new();
    for n in (1..=commands).filter(|n| Some(*n) != dropped) {
        let want = if n == commands { 3 } else { 0 };
        match exits.iter().find(|(i, _)| *i == n) {
            None => errors.push(format!(
                "command {n} did not finish (no exit status recorded)"
            )),
            Some((_, c)) if *c != want => {
                errors.push(format!("command {n} exited {c}, expected {want}"));
            }
            Some(_) => {}
        }
    }
    let got: BTreeSet<String> = problems.iter().cloned().collect();
    if &got != expected {
        errors.push(format!(
            "preflight problems {:?}, expected exactly {:?}",
            got, expected
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// The Debian mirror of apt's sources (deb822 `.sources` or one-line `.list`), the first one
/// serving `suite` itself (not `-security`/`-updates`).
pub fn mirror_for(sources: &str, suite: &str) -> Option<String> {
    // One-line format.
    for l in sources.lines() {
        let mut w = l.split_whitespace();
        if w.next() == Some("deb") {
            let mut rest: Vec<&str> = w.collect();
            if rest.first().is_some_and(|r| r.starts_with('[')) {
                let end = rest.iter().position(|r| r.ends_with(']')).unwrap_or(0);
                rest.drain(..=end);
            }
            if rest.get(1) == Some(&suite) {
                return rest.first().map(|u| (*u).to_owned());
            }
        }
    }
    // deb822 stanzas.
    for stanza in sources.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).map(str::trim).map(str::to_owned))
        };
        let types = field("Types:").unwrap_or_default();
        let suites = field("Suites:").unwrap_or_default();
        if types.split_whitespace().any(|t| t == "deb")
            && suites.split_whitespace().any(|s| s == suite)
            && let Some(uris) = field("URIs:")
        {
            return uris.split_whitespace().next().map(str::to_owned);
        }
    }
    None
}

/// The expected problems: `no-driver`, and each download source this machine cannot reach.
pub fn expected_problems(unreachable_here: &[&str]) -> BTreeSet<String> {
    std::iter::once("no-driver")
        .chain(unreachable_here.iter().copied())
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// the run

/// Mounts made in the root, undone in reverse order however the run ends.
struct Mounts<'a> {
    runner: &'a dyn Runner,
    points: Vec<PathBuf>,
}

impl Mounts<'_> {
    fn mount(&mut self, args: &[&str], point: &Path) -> Result<()> {
        std::fs::create_dir_all(point).with_context(|| format!("creating {}", point.display()))?;
        self.runner
            .run_checked(
                &Cmd::new("mount")
                    .args(args.iter().copied())
                    .arg(point.display().to_string())
                    .timeout(Duration::from_secs(30)),
            )
            .with_context(|| format!("mounting {}", point.display()))?;
        self.points.push(point.to_path_buf());
        Ok(())
    }

    /// A read-only bind mount (two steps: a bind mount ignores `ro` on older util-linux).
    fn bind_ro(&mut self, from: &Path, point: &Path) -> Result<()> {
        self.mount(&["--bind", &from.display().to_string()], point)?;
        self.runner
            .run_checked(
                &Cmd::new("mount")
                    .args(["-o", "remount,ro,bind"])
                    .arg(point.display().to_string())
                    .timeout(Duration::from_secs(30)),
            )
            .with_context(|| format!("making {} read-only", point.display()))?;
        Ok(())
    }
}

impl Drop for Mounts<'_> {
    fn drop(&mut self) {
        for p in self.points.iter().rev() {
            let point = p.display().to_string();
            let umount = |lazy: bool| {
                let mut c = Cmd::new("umount").timeout(Duration::from_secs(30));
                if lazy {
                    c = c.arg("-l");
                }
                self.runner
                    .run(&c.arg(point.clone()))
                    .is_ok_and(|o| o.success())
            };
            if !umount(false) && !umount(true) {
                eprintln!(
                    "warning: could not unmount {point}; unmount it by hand before deleting the root"
                );
            }
        }
    }
}

/// Mount points at or under `dir` in /proc/mounts text.
fn mounts_under_in(proc_mounts: &str, dir: &Path) -> Vec<PathBuf> {
    proc_mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Mount points at or under `dir`. When /proc/mounts cannot be read, `dir` itself is returned,
/// so nothing is deleted on a guess.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_to_string("/proc/mounts") {
        Ok(text) => mounts_under_in(&text, dir),
        Err(_) => vec![dir.to_path_buf()],
    }
}

/// Deletes the root, never while anything is still mounted in it (a bind mount of /dev or of the
/// host's toolchain would be deleted through it).
fn remove_root(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let left = mounts_under(dir);
    if !left.is_empty() {
        bail!(
            "{} still has mounts ({}); unmount them first (`umount -R {}`)",
            dir.display(),
            left.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            dir.display()
        );
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

fn root_run(runner: &dyn Runner, root: &Path, cmd: &str, timeout: Duration) -> Result<String> {
    let out = runner.run_checked(
        &Cmd::new("chroot")
            .arg(root.display().to_string())
            .args(["sh", "-c", cmd])
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .timeout(timeout),
    )?;
    Ok(out.stdout)
}

/// The command line that runs `inner` as the user in a login shell, with nothing of this
/// machine's environment (no host PATH, no pyenv, no cargo).
fn as_user(root: &Path, inner: &[&str]) -> Cmd {
    Cmd::new("chroot")
        .arg(root.display().to_string())
        .args(["runuser", "-u", USER, "--"])
        .args(inner.iter().copied())
        .clear_env()
        .env("HOME", format!("/home/{USER}"))
        .env("USER", USER)
        .env("LOGNAME", USER)
        .env("LANG", "C.UTF-8")
        .env("TERM", "dumb")
        // For chroot to find runuser; the login shell sets the user's own PATH.
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
}

fn host_suite() -> String {
    std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|s| s.trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "bookworm".to_owned())
}

fn apt_sources() -> String {
    let mut text = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<PathBuf> = dir.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let name = f.to_string_lossy();
            if name.ends_with(".list") || name.ends_with(".sources") {
                text.push_str("\n\n");
                text.push_str(&std::fs::read_to_string(&f).unwrap_or_default());
            }
        }
    }
    text
}

/// Copies what git would give a clone (tracked files and untracked ones not ignored).
fn copy_repo(runner: &dyn Runner, from: &Path, to: &Path) -> Result<usize> {
    let out = runner.run_checked(
        &Cmd::new("git")
            .args(["ls-files", "-z", "-co", "--exclude-standard"])
            .dir(from)
            .timeout(Duration::from_secs(60)),
    )?;
    let mut n = 0;
    for rel in out.stdout.split('\0').filter(|r| !r.is_empty()) {
        let src = from.join(rel);
        if !src.is_file() {
            continue; // deleted in the work tree, or a submodule
        }
        let dst = to.join(rel);
        if let Some(p) = dst.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::copy(&src, &dst).with_context(|| format!("copying {rel}"))?;
        n += 1;
    }
    Ok(n)
}

fn toolchain_homes() -> Result<(PathBuf, PathBuf)> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let pick = |var: &str, dir: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(dir)))
    };
    let rustup = pick("RUSTUP_HOME", ".rustup").context("no RUSTUP_HOME or HOME")?;
    let cargo = pick("CARGO_HOME", ".cargo").context("no CARGO_HOME or HOME")?;
    for need in [
        rustup.join("toolchains"),
        rustup.join("settings.toml"),
        cargo.join("bin/rustup"),
        cargo.join("env"),
    ] {
        if !need.exists() {
            bail!(
                "{} is missing: the test mounts this machine's rustup toolchain into the root",
                need.display()
            );
        }
    }
    Ok((rustup, cargo))
}

/// Runs the test; returns the exit code (0 passed, 1 failed, 3 cannot run here).
pub fn run(args: &FreshVmArgs) -> Result<u8> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("fresh-vm-test needs root (debootstrap, chroot, mounts): run it with sudo");
        return Ok(3);
    }
    let runner = SystemRunner::new(true);
    let repo = crate::workspace_root();
    let commands = vm_commands(
        &std::fs::read_to_string(repo.join("README.md")).context("reading README.md")?,
    )?;
    let text = script(&commands, args.drop_line)?;
    let suite = args.suite.clone().unwrap_or_else(host_suite);
    let mirror = match &args.mirror {
        Some(m) => m.clone(),
        None => mirror_for(&apt_sources(), &suite)
            .with_context(|| format!("apt here has no source for {suite}; pass --mirror"))?,
    };
    let (rustup_home, cargo_home) = toolchain_homes()?;
    for tool in ["chroot", "mount", "umount", "git"] {
        if !runner.exists(tool) {
            eprintln!("fresh-vm-test: `{tool}` is missing");
            return Ok(3);
        }
    }
    if !runner.exists("debootstrap") {
        eprintln!("==> installing debootstrap");
        runner
            .run_checked(
                &Cmd::new("apt-get")
                    .args([
                        "install",
                        "-y",
                        "-qq",
                        "--no-install-recommends",
                        "debootstrap",
                    ])
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .timeout(Duration::from_secs(600)),
            )
            .context("installing debootstrap (Debian package)")?;
    }
    // What this machine cannot reach, the root cannot either: those problems are expected.
    let unreachable: Vec<&str> = NETWORK_SOURCES
        .iter()
        .filter(|(_, _, url)| preflight::probe(&runner, url).is_err())
        .map(|(id, _, _)| *id)
        .collect();
    let expected = expected_problems(&unreachable);

    let work = repo.join("target/fresh-vm");
    let root = work.join("root");
    std::fs::create_dir_all(&work)?;
    // One run at a time: a second would delete the first one's root under it.
    let lock = std::fs::File::create(work.join("lock")).context("creating the lock file")?;
    // SAFETY: flock on a file descriptor this process holds open for the whole run.
    if unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&lock),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    } != 0
    {
        eprintln!(
            "fresh-vm-test: another run holds {}; wait for it",
            work.join("lock").display()
        );
        return Ok(3);
    }
    remove_root(&root)?;
    let free = preflight::disk(&work).map_or(0, |d| d.free_bytes);
    if free < bytes_needed() {
        eprintln!(
            "fresh-vm-test: {:.1} GiB free under {}, but the root and then the lab's preflight need {:.1} GiB: free space first",
            free as f64 / f64::from(1u32 << 30),
            work.display(),
            bytes_needed() as f64 / f64::from(1u32 << 30)
        );
        return Ok(3);
    }
    let started = Instant::now();
    eprintln!("==> debootstrap --variant=minbase {suite} from {mirror}");
    runner
        .run_checked(
            &Cmd::new("debootstrap")
                .args(["--variant=minbase", "--include=sudo", &suite])
                .arg(root.display().to_string())
                .arg(&mirror)
                .timeout(Duration::from_secs(20 * 60)),
        )
        .context("debootstrap")?;
    let bootstrapped = started.elapsed();
    let outcome = (|| -> Result<(u8, Duration)> {
        // The VM: this machine's network (resolver, host name — a chroot shares it — and the
        // local CA certificates of /usr/local/share/ca-certificates, e.g. a TLS-inspecting
        // proxy's, which Debian's ca-certificates picks up when README installs it), a sudo
        // user, the repository, the toolchain.
        std::fs::copy("/etc/resolv.conf", root.join("etc/resolv.conf")).context("resolv.conf")?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        std::fs::write(root.join("etc/hostname"), format!("{host}\n"))?;
        std::fs::write(
            root.join("etc/hosts"),
            format!("127.0.0.1 localhost\n127.0.1.1 {host}\n"),
        )?;
        let local_cas = Path::new("/usr/local/share/ca-certificates");
        if let Ok(dir) = std::fs::read_dir(local_cas) {
            let dest = root.join("usr/local/share/ca-certificates");
            std::fs::create_dir_all(&dest)?;
            for e in dir.filter_map(Result::ok).filter(|e| e.path().is_file()) {
                std::fs::copy(e.path(), dest.join(e.file_name()))?;
                eprintln!(
                    "==> this network's CA {} goes into the root",
                    e.path().display()
                );
            }
        }
        root_run(
            &runner,
            &root,
            &format!("useradd -m -s /bin/bash {USER}"),
            Duration::from_secs(60),
        )?;
        std::fs::write(
            root.join(format!("etc/sudoers.d/{USER}")),
            format!("{USER} ALL=(ALL) NOPASSWD:ALL\n"),
        )?;
        let home = root.join(format!("home/{USER}"));
        let files = copy_repo(&runner, &repo, &home.join(CLONE))?;
        eprintln!("==> {files} files of this repository copied to ~{USER}/{CLONE}");
        std::fs::create_dir_all(home.join(".rustup/toolchains"))?;
        std::fs::create_dir_all(home.join(".cargo/bin"))?;
        std::fs::copy(
            rustup_home.join("settings.toml"),
            home.join(".rustup/settings.toml"),
        )?;
        std::fs::copy(cargo_home.join("env"), home.join(".cargo/env"))?;
        root_run(
            &runner,
            &root,
            &format!("chown -R {USER}:{USER} /home/{USER}"),
            Duration::from_secs(120),
        )?;
        // A pty of the root's own for sudo (Debian's sudoers says use_pty).
        let ptmx = root.join("dev/ptmx");
        if ptmx.exists() || ptmx.is_symlink() {
            std::fs::remove_file(&ptmx)?;
        }
        std::os::unix::fs::symlink("pts/ptmx", &ptmx)?;
        let mut mounts = Mounts {
            runner: &runner,
            points: Vec::new(),
        };
        mounts.mount(&["-t", "proc", "proc"], &root.join("proc"))?;
        mounts.mount(&["-t", "sysfs", "-o", "ro", "sysfs"], &root.join("sys"))?;
        mounts.mount(
            &[
                "-t",
                "devpts",
                "-o",
                "newinstance,ptmxmode=0666,mode=620",
                "devpts",
            ],
            &root.join("dev/pts"),
        )?;
        mounts.bind_ro(
            &rustup_home.join("toolchains"),
            &home.join(".rustup/toolchains"),
        )?;
        mounts.bind_ro(&cargo_home.join("bin"), &home.join(".cargo/bin"))?;
        std::fs::write(home.join("readme-vm-commands.sh"), &text)?;
        eprintln!(
            "==> README's VM commands as {USER} in {} (one login shell):",
            root.display()
        );
        for (i, c) in commands.iter().enumerate() {
            eprintln!(
                "    {}{}. {c}",
                if Some(i + 1) == args.drop_line {
                    "DROPPED "
                } else {
                    ""
                },
                i + 1
            );
        }
        let block_started = Instant::now();
        let out = runner.run(
            &as_user(
                &root,
                &["bash", "-l", &format!("/home/{USER}/readme-vm-commands.sh")],
            )
            .streamed()
            .timeout(BLOCK_TIMEOUT),
        );
        let block = block_started.elapsed();
        if let Err(e) = &out {
            eprintln!("the block did not finish: {e}");
        }
        let exits = parse_exits(&std::fs::read_to_string(home.join(EXITS)).unwrap_or_default());
        let log = std::fs::read_to_string(home.join(LOG)).unwrap_or_default();
        let problems = problem_ids(&log);
        eprintln!("\n==> the lab's preflight reported: {problems:?}");
        eprintln!(
            "    expected: {expected:?}{}",
            if unreachable.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} cannot be reached from this machine either)",
                    unreachable.join(", ")
                )
            }
        );
        let verdict = judge(commands.len(), args.drop_line, &exits, &problems, &expected);
        if args.measure_build {
            measure_build(&runner, &root, &home)?;
        }
        drop(mounts);
        match verdict {
            Ok(()) => {
                eprintln!(
                    "fresh-vm-test PASSED: README's commands set up a fresh Debian {suite}; the lab stopped at preflight on the missing driver only{} (debootstrap {:.0}s, README block {:.0}s)",
                    if unreachable.is_empty() {
                        ""
                    } else {
                        " and the download sources this machine cannot reach either"
                    },
                    bootstrapped.as_secs_f64(),
                    block.as_secs_f64()
                );
                Ok((0, block))
            }
            Err(why) => {
                eprintln!("fresh-vm-test FAILED: {why}");
                Ok((1, block))
            }
        }
    })();
    let leftover = mounts_under(&root);
    let keep = args.keep || !leftover.is_empty();
    if keep {
        eprintln!("root kept in {}", root.display());
    } else {
        remove_root(&root)?;
    }
    outcome.map(|(code, _)| code)
}

/// Runs the lab's build phase (the plan's own commands) in the root as the lab would, as root
/// through sudo, and prints the time of each and the size of `target/`.
fn measure_build(runner: &dyn Runner, root: &Path, home: &Path) -> Result<()> {
    let layout = crate::lab::Layout::new(Path::new("."), Path::new("lab-out"));
    let lab_args = crate::lab::LabArgs::default();
    let steps: Vec<String> = crate::lab::plan(&lab_args, &layout)
        .into_iter()
        .filter(|s| s.phase == crate::lab::Phase::Build)
        .map(|s| s.cmd.to_string())
        .collect();
    let mut total = Duration::ZERO;
    for cmd in &steps {
        eprintln!("==> timing the lab's build step: {cmd}");
        let line =
            format!(". \"$HOME/.cargo/env\" && cd ~/{CLONE} && sudo -E env PATH=\"$PATH\" {cmd}");
        let started = Instant::now();
        let out = runner.run(
            &as_user(root, &["bash", "-lc", &line])
                .streamed()
                .timeout(Duration::from_secs(90 * 60)),
        )?;
        let took = started.elapsed();
        total += took;
        eprintln!(
            "    {:.1} min, exit {:?}",
            took.as_secs_f64() / 60.0,
            out.code
        );
        if !out.success() {
            bail!("the build step `{cmd}` failed in the root");
        }
    }
    let size = runner
        .run(
            &Cmd::new("du")
                .args(["-sh"])
                .arg(home.join(CLONE).join("target").display().to_string()),
        )
        .map(|o| o.stdout.trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "==> the lab's first build took {:.1} min on {cores} cores (load average now: {}); target/: {size}",
        total.as_secs_f64() / 60.0,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

/// `cargo xtask ci`'s step: the test runs when root and when it still fits the CI budget.
/// Returns why it was skipped, or runs it.
pub fn ci_decision(
    root: bool,
    elapsed: Duration,
    budget: Duration,
    free_bytes: u64,
) -> Result<(), String> {
    if !root {
        return Err("not root (debootstrap, chroot and mounts need it)".into());
    }
    if free_bytes < bytes_needed() {
        return Err(format!(
            "disk: {:.1} GiB free, the root and the lab's preflight need {:.1} GiB",
            free_bytes as f64 / f64::from(1u32 << 30),
            bytes_needed() as f64 / f64::from(1u32 << 30)
        ));
    }
    // Keep a tenth of the budget as margin for a slow mirror.
    let limit = budget.saturating_sub(budget / 10);
    if elapsed + ESTIMATE > limit {
        return Err(format!(
            "time: {:.0} min of the {:.0} min CI budget are used and the test takes about {:.0} min (it runs while elapsed + estimate ≤ 90 % of the budget; set HAMI_CI_BUDGET_MIN to change the budget)",
            elapsed.as_secs_f64() / 60.0,
            budget.as_secs_f64() / 60.0,
            ESTIMATE.as_secs_f64() / 60.0
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readme() -> String {
        std::fs::read_to_string(crate::workspace_root().join("README.md")).expect("README.md")
    }

    #[test]
    fn the_readme_block_is_found_and_every_placeholder_is_known() {
        let cmds = vm_commands(&readme()).expect("block");
        assert!(cmds.len() >= 4, "{cmds:?}");
        assert!(
            cmds.last()
                .expect("some")
                .contains("cargo xtask lab --tls-san"),
            "the block ends with the lab: {cmds:?}"
        );
        assert_eq!(
            cmds.iter().filter(|c| c.contains(RUSTUP_LINE)).count(),
            1,
            "one rustup line: {cmds:?}"
        );
        let s = script(&cmds, None).expect("script");
        assert!(
            s.contains("--tls-san 203.0.113.7 --kubeconfig-user $USER"),
            "{s}"
        );
        assert!(
            !s.lines()
                .any(|l| !l.starts_with("echo") && l.contains(RUSTUP_LINE)),
            "the rustup line is replaced: {s}"
        );
        assert!(s.contains(RUSTUP_STAND_IN), "{s}");
        assert_eq!(s.matches(EXITS).count(), cmds.len());
    }

    #[test]
    fn the_readme_installs_every_package_preflight_asks_for_on_debian() {
        use crate::lab::preflight::{Distro, Facts, preflight};
        let bare = Facts {
            os_linux: true,
            root: true,
            distro: Distro::parse("ID=debian\n"),
            rustc: Some("rustc 1.95.0".into()),
            apt: true,
            ..Facts::default()
        };
        let problems = preflight(
            &bare,
            &crate::lab::tests::args(&[]),
            &[crate::lab::Phase::Build, crate::lab::Phase::Host],
        );
        let asked: BTreeSet<String> = problems
            .iter()
            .filter_map(|p| p.fix.split("`sudo apt-get install ").nth(1))
            .filter_map(|rest| rest.split('`').next())
            .flat_map(|pkgs| {
                pkgs.split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(
            asked.contains("python3-venv") && asked.contains("build-essential"),
            "{asked:?}"
        );
        let cmds = vm_commands(&readme()).expect("block");
        let apt: BTreeSet<String> = cmds
            .iter()
            .filter(|c| c.contains("apt-get install"))
            .flat_map(|c| {
                c.split('#')
                    .next()
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        // binutils (objdump) comes with build-essential, python3 with python3-venv.
        let missing: Vec<&String> = asked
            .iter()
            .filter(|p| !apt.contains(*p) && !["binutils", "python3"].contains(&p.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "README's apt line lacks {missing:?} that preflight asks for"
        );
    }

    #[test]
    fn dropping_a_line_drops_exactly_that_command() {
        let cmds: Vec<String> = [
            "sudo apt-get update",
            "sudo apt-get install -y curl",
            "cargo xtask lab --dry-run",
        ]
        .map(str::to_owned)
        .to_vec();
        let all = script(&cmds, None).expect("ok");
        let dropped = script(&cmds, Some(2)).expect("ok");
        assert!(all.contains("\nsudo apt-get install -y curl\n"));
        assert!(
            !dropped.contains("\nsudo apt-get install -y curl\n"),
            "{dropped}"
        );
        assert!(dropped.contains("dropped: sudo apt-get install -y curl"));
        assert_eq!(dropped.matches(EXITS).count(), 2);
        assert!(script(&cmds, Some(4)).is_err());
        assert!(script(&cmds, Some(0)).is_err());
        let unknown = vec!["ssh <host>".to_owned()];
        assert!(
            script(&unknown, None)
                .expect_err("unknown placeholder")
                .to_string()
                .contains("<host>")
        );
    }

    #[test]
    fn the_verdict_needs_every_setup_line_and_only_the_expected_problems() {
        let expected = expected_problems(&["toolkit-source-unreachable"]);
        let ok = [(1, 0), (2, 0), (3, 0), (4, 3)];
        let ids = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            judge(
                4,
                None,
                &ok,
                &ids(&["no-driver", "toolkit-source-unreachable"]),
                &expected
            ),
            Ok(())
        );
        // A missing package shows up as one more problem.
        let err = judge(
            4,
            None,
            &ok,
            &ids(&["no-driver", "no-python3-venv", "toolkit-source-unreachable"]),
            &expected,
        )
        .expect_err("extra problem");
        assert!(err.contains("no-python3-venv"), "{err}");
        // A failed command.
        let err = judge(
            4,
            None,
            &[(1, 0), (2, 100), (3, 0), (4, 3)],
            &ids(&["no-driver", "toolkit-source-unreachable"]),
            &expected,
        )
        .expect_err("apt failed");
        assert!(err.contains("command 2 exited 100"), "{err}");
        // The lab did not run to preflight at all (e.g. cargo missing): no exit 3, no problems.
        let err =
            judge(4, Some(1), &[(2, 0), (3, 127), (4, 127)], &[], &expected).expect_err("no lab");
        assert!(err.contains("command 4 exited 127, expected 3"), "{err}");
        // A source reachable here must be found reachable inside too.
        assert!(
            judge(
                4,
                None,
                &ok,
                &ids(&["no-driver", "toolkit-source-unreachable"]),
                &expected_problems(&[])
            )
            .is_err()
        );
    }

    #[test]
    fn output_parsers() {
        assert_eq!(
            parse_exits("1 0\n2 100\ngarbage\n3 3\n"),
            vec![(1, 0), (2, 100), (3, 3)]
        );
        let out = "lab stopped at preflight:\n  - [no-driver] no NVIDIA driver: nvidia-smi is not installed\n    fix: run …\n  - [disk] 3.0 GiB free\n    fix: x\n";
        assert_eq!(
            problem_ids(out),
            vec!["no-driver".to_owned(), "disk".to_owned()]
        );
    }

    #[test]
    fn the_mirror_is_the_one_apt_uses() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_for(deb822, "bookworm").as_deref(),
            Some("http://deb.debian.org/debian")
        );
        let one_line = "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian trixie main\ndeb http://security.debian.org trixie-security main\n";
        assert_eq!(
            mirror_for(one_line, "trixie").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(mirror_for(one_line, "bookworm"), None);
    }

    #[test]
    fn ci_runs_it_only_as_root_and_when_it_fits_the_budget() {
        let budget = Duration::from_secs(90 * 60);
        let roomy = 100 << 30;
        assert_eq!(
            ci_decision(true, Duration::from_secs(30 * 60), budget, roomy),
            Ok(())
        );
        assert!(ci_decision(false, Duration::ZERO, budget, roomy).is_err());
        let late = ci_decision(true, Duration::from_secs(70 * 60), budget, roomy)
            .expect_err("70 + 12 > 81");
        assert!(late.contains("HAMI_CI_BUDGET_MIN"), "{late}");
        let full = ci_decision(true, Duration::ZERO, budget, 8 << 30).expect_err("8 < 17 GiB");
        assert!(full.contains("17.0 GiB"), "{full}");
    }

    #[test]
    fn a_root_with_a_mount_in_it_is_never_deleted() {
        let mounts = "proc /proc proc rw 0 0\nproc /w/target/fresh-vm/root/proc proc rw 0 0\ntmpfs /w/target/fresh-vm/root/home/dev/my\\040dir tmpfs rw 0 0\n";
        assert_eq!(
            mounts_under_in(mounts, Path::new("/w/target/fresh-vm/root")),
            vec![
                PathBuf::from("/w/target/fresh-vm/root/proc"),
                PathBuf::from("/w/target/fresh-vm/root/home/dev/my dir")
            ]
        );
        assert!(mounts_under_in(mounts, Path::new("/w/target/fresh-vm/other")).is_empty());
        let dir = tempfile::tempdir().expect("tmp");
        let r = dir.path().join("root");
        std::fs::create_dir_all(r.join("etc")).expect("mkdir");
        remove_root(&r).expect("no mounts under a fresh temporary folder: removed");
        assert!(!r.exists());
    }
}
