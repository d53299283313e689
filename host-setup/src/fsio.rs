//! Safe file writes: timestamped backups, atomic replace (temp file + rename in the same
//! directory) keeping the old owner and mode, and byte-exact restore.
//!
//! Why: a half-written containerd or k3s config stops the node; a crash mid-write must leave
//! either the old file or the new one, never a mix, and every change must be undoable.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Who owns a file and its permission bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// A file as it was before this run changed it, so it can be put back byte for byte.
#[derive(Debug, Clone)]
pub struct Backup {
    /// The file that was changed (real path, already under the root).
    pub path: PathBuf,
    /// Where its old bytes were copied; `None` when the file did not exist before.
    pub copy: Option<PathBuf>,
    pub old: Option<(Vec<u8>, Owner)>,
}

/// Errors of file operations, each naming the path.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} has no parent directory")]
    NoParent(PathBuf),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FsError + 'a {
    move |source| FsError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Owner and mode of `path`, or `None` when it does not exist.
pub fn owner_of(path: &Path) -> Result<Option<Owner>, FsError> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(Owner {
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode() & 0o7777,
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("stat", path)(e)),
    }
}

/// A UTC timestamp for backup names, e.g. `20261125T134302Z`.
pub fn timestamp() -> String {
    jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string()
}

/// Copies the current bytes of `path` (if any) to `<path>.host-setup-<stamp>.bak` with the same
/// mode, and returns what is needed to restore it.
pub fn backup(path: &Path, stamp: &str) -> Result<Backup, FsError> {
    let Some(owner) = owner_of(path)? else {
        return Ok(Backup {
            path: path.to_path_buf(),
            copy: None,
            old: None,
        });
    };
    let bytes = fs::read(path).map_err(io("read", path))?;
    let name = path
        .file_name()
        .ok_or_else(|| FsError::NoParent(path.to_path_buf()))?
        .to_string_lossy()
        .into_owned();
    // Never overwrite an older backup (two runs within one second).
    let mut copy = path.with_file_name(format!("{name}.host-setup-{stamp}.bak"));
    let mut n = 1;
    while copy.exists() {
        copy = path.with_file_name(format!("{name}.host-setup-{stamp}-{n}.bak"));
        n += 1;
    }
    write_atomic(&copy, &bytes, owner)?;
    Ok(Backup {
        path: path.to_path_buf(),
        copy: Some(copy),
        old: Some((bytes, owner)),
    })
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory gets the bytes, the
/// owner and the mode, is synced, then renamed over `path`. Parent directories are created (0755).
pub fn write_atomic(path: &Path, bytes: &[u8], owner: Owner) -> Result<(), FsError> {
    let dir = path
        .parent()
        .ok_or_else(|| FsError::NoParent(path.to_path_buf()))?;
    fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".host-setup-")
        .tempfile_in(dir)
        .map_err(io("create temp file in", dir))?;
    tmp.write_all(bytes).map_err(io("write", tmp.path()))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(owner.mode))
        .map_err(io("chmod", path))?;
    // Keep the owner. Only root may give a file away; when we are not root and the owner is
    // already ours, chown is a no-op, so an error here is real.
    let current = tmp.as_file().metadata().map_err(io("stat", tmp.path()))?;
    if current.uid() != owner.uid || current.gid() != owner.gid {
        std::os::unix::fs::fchown(tmp.as_file(), Some(owner.uid), Some(owner.gid))
            .map_err(io("chown", path))?;
    }
    tmp.as_file().sync_all().map_err(io("sync", tmp.path()))?;
    tmp.persist(path).map_err(|e| FsError::Io {
        op: "rename into place",
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// Puts a file back exactly as [`backup`] found it (removing it when it did not exist).
pub fn restore(backup: &Backup) -> Result<(), FsError> {
    match &backup.old {
        Some((bytes, owner)) => write_atomic(&backup.path, bytes, *owner),
        None => match fs::remove_file(&backup.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &backup.path)(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_keeps_mode_and_backup_restores_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/x.toml");
        let me = owner_of(dir.path()).unwrap().unwrap();
        write_atomic(&path, b"old\n", Owner { mode: 0o640, ..me }).unwrap();
        let b = backup(&path, "20260101T000000Z").unwrap();
        let copy = b.copy.clone().unwrap();
        assert!(copy.ends_with("x.toml.host-setup-20260101T000000Z.bak"));
        assert_eq!(fs::read(&copy).unwrap(), b"old\n");
        let old_owner = owner_of(&path).unwrap().unwrap();
        write_atomic(&path, b"new\n", old_owner).unwrap();
        assert_eq!(owner_of(&path).unwrap().unwrap().mode, 0o640);
        restore(&b).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"old\n");
    }

    #[test]
    fn a_second_backup_in_the_same_second_keeps_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let me = owner_of(dir.path()).unwrap().unwrap();
        write_atomic(&path, b"one", Owner { mode: 0o644, ..me }).unwrap();
        let first = backup(&path, "S").unwrap().copy.unwrap();
        write_atomic(&path, b"two", Owner { mode: 0o644, ..me }).unwrap();
        let second = backup(&path, "S").unwrap().copy.unwrap();
        assert_ne!(first, second);
        assert_eq!(fs::read(first).unwrap(), b"one");
        assert_eq!(fs::read(second).unwrap(), b"two");
    }

    #[test]
    fn restore_of_a_new_file_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.yaml");
        let b = backup(&path, "s").unwrap();
        assert!(b.copy.is_none());
        let me = owner_of(dir.path()).unwrap().unwrap();
        write_atomic(&path, b"x", Owner { mode: 0o600, ..me }).unwrap();
        restore(&b).unwrap();
        assert!(!path.exists());
    }
}
