//! `HostRoot`: the one place that turns a host path (`/etc/containerd/config.toml`) into the path
//! actually touched (`<root>/etc/containerd/config.toml`).
//!
//! Why: `--root DIR` must confine *every* file operation, so no module builds a file path by hand;
//! they all ask a `HostRoot`. Host paths with `..` are refused so nothing can climb out of DIR.

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

    /// `<root>/<host path>`.
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
            .ok()
            .map(|rel| Path::new("/").join(rel))
    }

    /// Reads a host file as text; `Ok(None)` when it does not exist.
    pub fn read_optional(&self, host: &Path) -> std::io::Result<Option<String>> {
        let path = self.path(host).map_err(std::io::Error::other)?;
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether a host path exists under the root.
    pub fn exists(&self, host: &Path) -> bool {
        self.path(host).is_ok_and(|p| p.exists())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
