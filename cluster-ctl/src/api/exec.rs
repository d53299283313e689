//! Copying gpu-probe into a pod and running it there: the exec subresource over WebSocket
//! (`v5.channel.k8s.io`, as `kubectl cp` and `kubectl exec` do). Starting an exec is retried like
//! any call (nothing ran yet); a stream that breaks after the start is reported, not repeated.
//! Copy and run are each bounded by the caller's timeout (`--probe-timeout`).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ApiError, Cluster, Op};

/// Where the probe lands inside the container.
pub const PROBE_DIR: &str = "/tmp";
pub const PROBE_NAME: &str = "gpu-probe";

/// A tar archive holding one executable file, as `kubectl cp` streams it.
pub fn probe_tar(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o755);
    header.set_mtime(0);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append_data(&mut header, PROBE_NAME, bytes)?;
    builder.into_inner()
}

/// The command that unpacks the archive: `head -c N` ends after exactly N bytes, so this works
/// whether or not the server supports closing stdin (older exec protocols do not).
pub fn untar_command(archive_len: usize) -> Vec<String> {
    vec![
        "sh".to_owned(),
        "-c".to_owned(),
        format!("head -c {archive_len} | tar xmf - -C {PROBE_DIR}"),
    ]
}

/// The exit code in an exec `Status` (0 on `Success`; the `ExitCode` cause otherwise).
pub fn exit_code_from_status(status: &Status) -> Option<i32> {
    if status.status.as_deref() == Some("Success") {
        return Some(0);
    }
    status
        .details
        .as_ref()?
        .causes
        .as_ref()?
        .iter()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))?
        .message
        .as_ref()?
        .trim()
        .parse()
        .ok()
}

/// What running the probe gave back.
#[derive(Debug, Clone)]
pub struct ProbeRun {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: Option<i32>,
}

impl Cluster {
    async fn exec_collect(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        command: Vec<String>,
        stdin: Option<&[u8]>,
    ) -> Result<ProbeRun, ApiError> {
        let api = Api::<Pod>::namespaced(self.client.clone(), namespace);
        let mut ap = AttachParams::default().stdin(stdin.is_some());
        if let Some(c) = container {
            ap = ap.container(c);
        }
        let err = |what: String| ApiError::Exec {
            pod: pod.to_owned(),
            what,
        };
        // A WebSocket exec is a GET on pods/exec (authorized as get, and as create from 1.31).
        let op = Op::of::<Pod>("get", Some(namespace), Some(pod)).subresource("exec");
        let mut proc = self
            .call(&op, || api.exec(pod, command.clone(), &ap))
            .await?;
        let status = proc.take_status();
        let mut out = proc.stdout();
        let mut errs = proc.stderr();
        if let (Some(bytes), Some(mut w)) = (stdin, proc.stdin()) {
            w.write_all(bytes)
                .await
                .map_err(|e| err(format!("writing stdin: {e}")))?;
            w.shutdown()
                .await
                .map_err(|e| err(format!("closing stdin: {e}")))?;
        }
        let read = |r: Option<tokio::io::ReadHalf<tokio::io::SimplexStream>>| async move {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                r.read_to_end(&mut buf).await.map(|_| buf)
            } else {
                Ok(buf)
            }
        };
        let (o, e) = tokio::join!(read(out.take()), read(errs.take()));
        let stdout = String::from_utf8_lossy(&o.map_err(|e| err(format!("reading stdout: {e}")))?)
            .into_owned();
        let stderr = String::from_utf8_lossy(&e.map_err(|e| err(format!("reading stderr: {e}")))?)
            .into_owned();
        let exit_code = match status {
            Some(s) => s.await.as_ref().and_then(exit_code_from_status),
            None => None,
        };
        proc.join()
            .await
            .map_err(|e| err(format!("exec stream: {e}")))?;
        Ok(ProbeRun {
            stdout,
            stderr,
            exit_code,
        })
    }

    /// Copies the gpu-probe binary into `pod` (a tar stream over exec, as `kubectl cp` does).
    pub async fn copy_probe(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        probe: &[u8],
        timeout: Duration,
    ) -> Result<(), ApiError> {
        let archive = probe_tar(probe).map_err(|e| ApiError::Exec {
            pod: pod.to_owned(),
            what: format!("building the tar archive: {e}"),
        })?;
        self.copy_probe_archive(namespace, pod, container, &archive, timeout)
            .await
    }

    /// Unpacks `archive` (from [`probe_tar`], built once for many pods) into `pod`.
    pub async fn copy_probe_archive(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        archive: &[u8],
        timeout: Duration,
    ) -> Result<(), ApiError> {
        let copied = tokio::time::timeout(
            timeout,
            self.exec_collect(
                namespace,
                pod,
                container,
                untar_command(archive.len()),
                Some(archive),
            ),
        )
        .await
        .map_err(|_| ApiError::WaitTimeout {
            what: format!("copying gpu-probe into pod {pod}"),
            secs: timeout.as_secs(),
            last: String::new(),
        })??;
        if copied.exit_code != Some(0) {
            return Err(ApiError::Exec {
                pod: pod.to_owned(),
                what: format!(
                    "copying gpu-probe failed (exit {:?}): {} — the image needs `sh`, `head` and `tar` (the CUDA base images have them)",
                    copied.exit_code,
                    copied.stderr.trim()
                ),
            });
        }
        Ok(())
    }

    /// Copies the gpu-probe binary into `pod` and runs `gpu-probe all --output json --expect-mib N`.
    #[allow(clippy::too_many_arguments)]
    pub async fn copy_and_run_probe(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        probe: &[u8],
        expect_mib: Option<u64>,
        timeout: Duration,
    ) -> Result<ProbeRun, ApiError> {
        self.copy_probe(namespace, pod, container, probe, timeout)
            .await?;
        let mut args = vec!["all".to_owned(), "--output".to_owned(), "json".to_owned()];
        if let Some(mib) = expect_mib {
            args.push("--expect-mib".to_owned());
            args.push(mib.to_string());
        }
        self.run_copied_probe(namespace, pod, container, &args, timeout)
            .await
    }

    /// Runs the gpu-probe already copied into `pod` (by [`Cluster::copy_probe`]) with `args`.
    pub async fn run_copied_probe(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        args: &[String],
        timeout: Duration,
    ) -> Result<ProbeRun, ApiError> {
        self.run_probe_at(
            namespace,
            pod,
            container,
            &format!("{PROBE_DIR}/{PROBE_NAME}"),
            args,
            timeout,
        )
        .await
    }

    /// Runs the gpu-probe at `path` inside `pod` (copied there, or part of its image) with `args`.
    pub async fn run_probe_at(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        path: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<ProbeRun, ApiError> {
        let mut cmd = vec![path.to_owned()];
        cmd.extend(args.iter().cloned());
        tokio::time::timeout(
            timeout,
            self.exec_collect(namespace, pod, container, cmd, None),
        )
        .await
        .map_err(|_| ApiError::WaitTimeout {
            what: format!(
                "gpu-probe {} in pod {pod}",
                args.first().map_or("", String::as_str)
            ),
            secs: timeout.as_secs(),
            last: String::new(),
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    #[test]
    fn tar_holds_one_executable() {
        let archive = probe_tar(b"\x7fELF-probe").unwrap();
        assert_eq!(archive.len() % 512, 0);
        let mut a = tar::Archive::new(archive.as_slice());
        let mut entries = a.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str(), Some("gpu-probe"));
        assert_eq!(e.header().mode().unwrap(), 0o755);
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut body).unwrap();
        assert_eq!(body, b"\x7fELF-probe");
        assert!(entries.next().is_none());
        assert_eq!(untar_command(1024)[2], "head -c 1024 | tar xmf - -C /tmp");
    }

    #[test]
    fn real_tar_unpacks_it() {
        if lab_runner::which("tar").is_none() {
            eprintln!("SKIPPED: tar not installed (Debian package `tar`)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let archive = probe_tar(b"#!/bin/sh\necho hi\n").unwrap();
        let runner = lab_runner::SystemRunner::new(false);
        let out = lab_runner::Runner::run(
            &runner,
            &lab_runner::Cmd::new("tar")
                .args(["xmf", "-", "-C", dir.path().to_str().unwrap()])
                .stdin(archive),
        )
        .unwrap();
        assert!(out.success(), "{out:?}");
        let path = dir.path().join("gpu-probe");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            "#!/bin/sh\necho hi\n"
        );
    }

    #[test]
    fn exit_codes_from_exec_status() {
        let ok = Status {
            status: Some("Success".into()),
            ..Default::default()
        };
        assert_eq!(exit_code_from_status(&ok), Some(0));
        let failed = Status {
            status: Some("Failure".into()),
            reason: Some("NonZeroExitCode".into()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".into()),
                    message: Some("3".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(exit_code_from_status(&failed), Some(3));
        assert_eq!(exit_code_from_status(&Status::default()), None);
    }
}
