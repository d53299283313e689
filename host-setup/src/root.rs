//! `HostRoot`: the one place that turns a host path (`/etc/containerd/config.toml`) into the path
//! actually touched (`<root>/etc/containerd/config.toml`), and the one place that reads host files.
//!
//! Why: `--root DIR` must confine *every* file operation, so no module builds a file path by hand;
//! they all ask a `HostRoot`. Host paths with `..` are refused, and symbolic links are resolved
//! here: a link whose target lies inside DIR is followed (the target is what gets read and
//! edited, the link stays), a link leading out of DIR is refused. A file that exists but cannot be
//! read or decoded is an [`Unreadable`] with its reason and fix, never "absent": nothing may be
//! planned over a file host-setup could not read.

use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

/// The directory that stands for `/` of the host being configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    dir: PathBuf,
}

/// A host path that cannot be placed under the root.
#[derive(Debug, thiserror::Error)]
#[error("host path {0:?} must be absolute and must not contain `..`")]
pub struct BadHostPath(pub PathBuf);

/// Where a host path really leads: the file that is read and written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The path under the root that is read and written (a symlink's target, resolved).
    pub real: PathBuf,
    /// The host path of the target when `host` (or a directory above it) is a symbolic link.
    pub via_link: Option<PathBuf>,
}

/// Why an existing file could not be used. Each kind has its own fix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ReadProblem {
    /// The bytes are not UTF-8 text (`valid_up_to`: the offset of the first bad byte).
    NotUtf8 { valid_up_to: usize },
    /// NUL bytes: binary data, not a config file.
    Binary { nul_at: usize },
    /// A directory, FIFO, socket or device where a file is expected.
    NotRegular { what: String },
    /// The permissions do not let this process read it.
    PermissionDenied,
    /// A symbolic link (or a directory above the file) whose target is outside `--root`.
    OutsideRoot { target: String },
    /// A symbolic link whose target does not exist.
    DanglingLink { target: String },
    /// Any other read error, as the OS reported it.
    Io { message: String },
}

/// A host file that exists but cannot be read or decoded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unreadable {
    /// Host path as asked for.
    pub path: String,
    pub problem: ReadProblem,
}

impl Unreadable {
    /// What is wrong, naming the path.
    pub fn reason(&self) -> String {
        let p = &self.path;
        match &self.problem {
            ReadProblem::NotUtf8 { valid_up_to } => format!(
                "{p} cannot be read: it is not UTF-8 text (first invalid byte at offset {valid_up_to})"
            ),
            ReadProblem::Binary { nul_at } => format!(
                "{p} cannot be read: it holds binary data (a NUL byte at offset {nul_at}), not a text config"
            ),
            ReadProblem::NotRegular { what } => {
                format!("{p} cannot be read: it is {what}, not a regular file")
            }
            ReadProblem::PermissionDenied => {
                format!("{p} cannot be read: permission denied")
            }
            ReadProblem::OutsideRoot { target } => format!(
                "{p} is a symbolic link (or lies under one) leading to {target}, outside --root; host-setup touches nothing outside --root"
            ),
            ReadProblem::DanglingLink { target } => {
                format!("{p} is a symbolic link to {target}, which does not exist")
            }
            ReadProblem::Io { message } => format!("{p} cannot be read: {message}"),
        }
    }

    /// How to fix it, for this kind of problem.
    pub fn fix(&self) -> String {
        let p = &self.path;
        match &self.problem {
            ReadProblem::NotUtf8 { .. } => format!(
                "find the bad bytes with `grep -naxv '.*' {p}`, fix them (or restore a backup of {p}), then run again"
            ),
            ReadProblem::Binary { .. } => format!(
                "{p} was overwritten with binary data: restore it from a backup (or remove it to have it recreated), then run again"
            ),
            ReadProblem::NotRegular { .. } => format!(
                "move it away (`mv {p} {p}.old`) and put the config file there, then run again"
            ),
            ReadProblem::PermissionDenied => {
                format!("run host-setup as root (`sudo host-setup ...`), or check `ls -l {p}`")
            }
            ReadProblem::OutsideRoot { .. } => format!(
                "replace the link with a copy of its target (`cp --remove-destination \"$(readlink -f {p})\" {p}` inside the tree), or point --root at the directory that holds the target"
            ),
            ReadProblem::DanglingLink { target } => format!(
                "create {target}, or remove the link {p} (host-setup then creates the file), then run again"
            ),
            ReadProblem::Io { .. } => {
                format!("check the file and the disk (`ls -l {p}`, `dmesg`), then run again")
            }
        }
    }
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; fix: {}", self.reason(), self.fix())
    }
}

/// A text file read through the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextFile {
    pub text: String,
    pub resolved: Resolved,
}

impl HostRoot {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The real system: `/`.
    pub fn system() -> Self {
        Self::new("/")
    }

    /// Whether this is the running system's own `/` (then services and packages may be touched).
    pub fn is_system(&self) -> bool {
        self.dir == Path::new("/")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<root>/<host path>`, without following links (see [`HostRoot::resolve`]).
    pub fn path(&self, host: &Path) -> Result<PathBuf, BadHostPath> {
        if !host.is_absolute() || host.components().any(|c| c == Component::ParentDir) {
            return Err(BadHostPath(host.to_path_buf()));
        }
        let rel = host.strip_prefix("/").unwrap_or(host);
        Ok(self.dir.join(rel))
    }

    /// The host path of a path under the root (inverse of [`HostRoot::path`]).
    pub fn host_path(&self, rooted: &Path) -> Option<PathBuf> {
        rooted
            .strip_prefix(&self.dir)
            .or_else(|_| rooted.strip_prefix(self.canonical_dir()))
            .ok()
            .map(|rel| Path::new("/").join(rel))
    }

    fn canonical_dir(&self) -> PathBuf {
        self.dir.canonicalize().unwrap_or_else(|_| self.dir.clone())
    }

    /// Follows symbolic links of a host path (the file and every directory above it) and checks
    /// the result stays under the root. A missing file resolves to where it would be created.
    pub fn resolve(&self, host: &Path) -> Result<Resolved, Unreadable> {
        let unreadable = |problem| Unreadable {
            path: host.display().to_string(),
            problem,
        };
        let rooted = self.path(host).map_err(|e| {
            unreadable(ReadProblem::Io {
                message: e.to_string(),
            })
        })?;
        let root = self.canonical_dir();
        let real = match std::fs::symlink_metadata(&rooted) {
            Ok(_) => match rooted.canonicalize() {
                Ok(real) => real,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let target = std::fs::read_link(&rooted)
                        .map_or_else(|_| "?".to_owned(), |t| t.display().to_string());
                    return Err(unreadable(ReadProblem::DanglingLink { target }));
                }
                Err(e) => return Err(unreadable(problem_of(&e))),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Not there (yet): resolve the nearest existing directory above it.
                let mut existing = rooted.as_path();
                let mut rest = Vec::new();
                while std::fs::symlink_metadata(existing).is_err() {
                    match (existing.parent(), existing.file_name()) {
                        (Some(parent), Some(name)) => {
                            rest.push(name.to_owned());
                            existing = parent;
                        }
                        _ => break,
                    }
                }
                let mut real = existing
                    .canonicalize()
                    .map_err(|e| unreadable(problem_of(&e)))?;
                for name in rest.iter().rev() {
                    real.push(name);
                }
                real
            }
            Err(e) => return Err(unreadable(problem_of(&e))),
        };
        if !real.starts_with(&root) {
            return Err(unreadable(ReadProblem::OutsideRoot {
                target: real.display().to_string(),
            }));
        }
        let asked = rooted.strip_prefix(&self.dir).ok();
        let reached = real.strip_prefix(&root).ok();
        let via_link = if asked == reached {
            None
        } else {
            reached.map(|r| Path::new("/").join(r))
        };
        Ok(Resolved { real, via_link })
    }

    /// Reads a host file as text: `Ok(None)` when it does not exist, `Err` when it exists but
    /// cannot be read, is not a regular file, is not UTF-8, holds NUL bytes, or is a link that
    /// leads out of the root or nowhere.
    pub fn read_text(&self, host: &Path) -> Result<Option<TextFile>, Unreadable> {
        let unreadable = |problem| Unreadable {
            path: host.display().to_string(),
            problem,
        };
        let resolved = self.resolve(host)?;
        let meta = match std::fs::metadata(&resolved.real) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unreadable(problem_of(&e))),
        };
        if !meta.is_file() {
            return Err(unreadable(ReadProblem::NotRegular {
                what: kind_of(&meta).to_owned(),
            }));
        }
        let mut bytes = Vec::new();
        std::fs::File::open(&resolved.real)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| unreadable(problem_of(&e)))?;
        let text = decode(bytes).map_err(unreadable)?;
        Ok(Some(TextFile { text, resolved }))
    }

    /// Whether a host path exists under the root.
    pub fn exists(&self, host: &Path) -> bool {
        self.path(host).is_ok_and(|p| p.exists())
    }
}

/// The text of a config file's bytes, or why they are not text.
pub fn decode(bytes: Vec<u8>) -> Result<String, ReadProblem> {
    if let Some(nul_at) = bytes.iter().position(|b| *b == 0) {
        return Err(ReadProblem::Binary { nul_at });
    }
    String::from_utf8(bytes).map_err(|e| ReadProblem::NotUtf8 {
        valid_up_to: e.utf8_error().valid_up_to(),
    })
}

fn problem_of(e: &std::io::Error) -> ReadProblem {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => ReadProblem::PermissionDenied,
        std::io::ErrorKind::IsADirectory => ReadProblem::NotRegular {
            what: "a directory".to_owned(),
        },
        _ => ReadProblem::Io {
            message: e.to_string(),
        },
    }
}

fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a named pipe (FIFO)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device node"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn joins_under_root_and_back() {
        let root = HostRoot::new("/tmp/tree");
        let p = root.path(Path::new("/etc/containerd/config.toml")).unwrap();
        assert_eq!(p, Path::new("/tmp/tree/etc/containerd/config.toml"));
        assert_eq!(
            root.host_path(&p).unwrap(),
            Path::new("/etc/containerd/config.toml")
        );
    }

    #[test]
    fn refuses_escapes_and_relative_paths() {
        let root = HostRoot::new("/tmp/tree");
        assert!(root.path(Path::new("/etc/../../x")).is_err());
        assert!(root.path(Path::new("etc/x")).is_err());
    }

    fn tree() -> (tempfile::TempDir, HostRoot) {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc/containerd")).unwrap();
        let root = HostRoot::new(t.path().canonicalize().unwrap());
        (t, root)
    }

    const CFG: &str = "/etc/containerd/config.toml";

    #[test]
    fn a_missing_file_is_absent_and_a_text_file_is_read() {
        let (t, root) = tree();
        assert_eq!(root.read_text(Path::new(CFG)).unwrap(), None);
        std::fs::write(t.path().join("etc/containerd/config.toml"), "version = 2\n").unwrap();
        let f = root.read_text(Path::new(CFG)).unwrap().unwrap();
        assert_eq!(f.text, "version = 2\n");
        assert_eq!(f.resolved.via_link, None);
    }

    fn problem(root: &HostRoot) -> Unreadable {
        root.read_text(Path::new(CFG)).unwrap_err()
    }

    #[test]
    fn not_utf8_is_unreadable_with_the_offset_and_a_grep_fix() {
        let (t, root) = tree();
        std::fs::write(
            t.path().join("etc/containerd/config.toml"),
            b"version = 2\n# \xff\n",
        )
        .unwrap();
        let u = problem(&root);
        assert_eq!(u.problem, ReadProblem::NotUtf8 { valid_up_to: 14 });
        assert!(u.reason().contains(CFG) && u.reason().contains("not UTF-8"));
        assert!(u.fix().contains("grep -naxv"), "{}", u.fix());
    }

    #[test]
    fn nul_bytes_are_binary_data_to_restore() {
        let (t, root) = tree();
        std::fs::write(
            t.path().join("etc/containerd/config.toml"),
            b"ver\0\x01\x02",
        )
        .unwrap();
        let u = problem(&root);
        assert_eq!(u.problem, ReadProblem::Binary { nul_at: 3 });
        assert!(u.fix().contains("restore it from a backup"), "{}", u.fix());
    }

    #[test]
    fn a_directory_is_not_a_regular_file() {
        let (t, root) = tree();
        std::fs::create_dir(t.path().join("etc/containerd/config.toml")).unwrap();
        let u = problem(&root);
        assert_eq!(
            u.problem,
            ReadProblem::NotRegular {
                what: "a directory".into()
            }
        );
        assert!(u.fix().contains("mv "), "{}", u.fix());
    }

    #[test]
    fn a_fifo_is_refused_without_blocking_on_it() {
        let (t, root) = tree();
        let path = t.path().join("etc/containerd/config.toml");
        use lab_runner::Runner as _;
        lab_runner::SystemRunner::new(false)
            .run_checked(&lab_runner::Cmd::new("mkfifo").arg(path.to_str().unwrap()))
            .unwrap();
        let u = problem(&root);
        assert!(
            matches!(&u.problem, ReadProblem::NotRegular { what } if what.contains("FIFO")),
            "{u:?}"
        );
    }

    #[test]
    fn a_link_inside_the_root_is_followed_and_reported() {
        let (t, root) = tree();
        std::fs::create_dir_all(t.path().join("srv/conf")).unwrap();
        std::fs::write(t.path().join("srv/conf/containerd.toml"), "version = 3\n").unwrap();
        symlink(
            "../../srv/conf/containerd.toml",
            t.path().join("etc/containerd/config.toml"),
        )
        .unwrap();
        let f = root.read_text(Path::new(CFG)).unwrap().unwrap();
        assert_eq!(f.text, "version = 3\n");
        assert_eq!(
            f.resolved.via_link.as_deref(),
            Some(Path::new("/srv/conf/containerd.toml"))
        );
        assert!(f.resolved.real.ends_with("srv/conf/containerd.toml"));
    }

    #[test]
    fn a_link_leading_out_of_the_root_is_refused() {
        let (t, root) = tree();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("c.toml"), "version = 2\n").unwrap();
        symlink(
            outside.path().join("c.toml"),
            t.path().join("etc/containerd/config.toml"),
        )
        .unwrap();
        let u = problem(&root);
        assert!(
            matches!(u.problem, ReadProblem::OutsideRoot { .. }),
            "{u:?}"
        );
        assert!(u.reason().contains("outside --root"), "{}", u.reason());
        assert!(u.fix().contains("--root"), "{}", u.fix());
        // A directory link out of the root is refused the same way, for new files too.
        std::fs::remove_file(t.path().join("etc/containerd/config.toml")).unwrap();
        std::fs::remove_dir(t.path().join("etc/containerd")).unwrap();
        symlink(outside.path(), t.path().join("etc/containerd")).unwrap();
        let u = root
            .resolve(Path::new("/etc/containerd/new.toml"))
            .unwrap_err();
        assert!(
            matches!(u.problem, ReadProblem::OutsideRoot { .. }),
            "{u:?}"
        );
    }

    #[test]
    fn a_dangling_link_names_its_target() {
        let (t, root) = tree();
        symlink(
            "/nowhere/x.toml",
            t.path().join("etc/containerd/config.toml"),
        )
        .unwrap();
        let u = problem(&root);
        assert_eq!(
            u.problem,
            ReadProblem::DanglingLink {
                target: "/nowhere/x.toml".into()
            }
        );
        assert!(u.fix().contains("remove the link"), "{}", u.fix());
    }

    #[test]
    fn permission_denied_says_to_run_as_root() {
        let u = Unreadable {
            path: CFG.into(),
            problem: problem_of(&std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
        };
        assert_eq!(u.problem, ReadProblem::PermissionDenied);
        assert!(u.reason().ends_with("permission denied"));
        assert!(u.fix().contains("sudo host-setup"), "{}", u.fix());
    }

    #[test]
    fn other_io_errors_keep_the_os_message() {
        let u = Unreadable {
            path: CFG.into(),
            problem: problem_of(&std::io::Error::other("Input/output error")),
        };
        assert!(u.reason().contains("Input/output error"));
        assert!(u.fix().contains("dmesg"), "{}", u.fix());
    }
}
