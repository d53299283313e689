//! `pods/exec` as the API server and kubelet serve it: the GET is upgraded to a WebSocket speaking
//! the Kubernetes channel protocol (`v5.channel.k8s.io`, or v4: one byte of channel — 0 stdin,
//! 1 stdout, 2 stderr, 3 status, 255 close — then data). A pod must be Running with the container
//! named; the untar step (`sh -c "head -c N | tar xmf - -C /tmp"`) really reads N stdin bytes and
//! unpacks the archive into the pod's file list; `/tmp/gpu-probe SUBCOMMAND …` runs only when it
//! was copied there, answering with the scripted reply for that pod and subcommand (captured
//! gpu-probe reports), after its scripted run time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::MockApi;

/// What a scripted command prints, how it exits and how long it takes.
#[derive(Debug, Clone)]
pub struct Reply {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
    pub takes: Duration,
}

impl Reply {
    pub fn new(stdout: &str, stderr: &str, exit_code: i32) -> Self {
        Self {
            stdout: stdout.into(),
            stderr: stderr.into(),
            exit_code,
            takes: Duration::from_secs(20),
        }
    }
}

/// One exec the server ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCall {
    pub namespace: String,
    pub pod: String,
    pub container: Option<String>,
    pub command: Vec<String>,
    pub stdin: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct ExecState {
    /// (namespace, pod) → files copied in (path → mode).
    pub files: BTreeMap<(String, String), BTreeMap<String, u32>>,
    /// (pod or `*`, gpu-probe subcommand) → reply.
    pub replies: BTreeMap<(String, String), Reply>,
    pub calls: Vec<ExecCall>,
}

impl MockApi {
    /// `gpu-probe SUBCOMMAND` in pod `pod` (`uuid:GPU-…`: any pod HAMi gave that card; `*`: any
    /// pod) answers `reply`.
    pub fn probe_reply(&self, pod: &str, subcommand: &str, reply: Reply) -> &Self {
        self.lock()
            .exec
            .replies
            .insert((pod.into(), subcommand.into()), reply);
        self
    }

    pub fn exec_calls(&self) -> Vec<ExecCall> {
        self.lock().exec.calls.clone()
    }

    /// Files copied into a pod, with their modes.
    pub fn pod_files(&self, ns: &str, pod: &str) -> BTreeMap<String, u32> {
        self.lock()
            .exec
            .files
            .get(&(ns.into(), pod.into()))
            .cloned()
            .unwrap_or_default()
    }
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = vec![channel];
    v.extend_from_slice(data);
    Message::binary(v)
}

fn status_json(code: i32) -> String {
    if code == 0 {
        r#"{"metadata":{},"status":"Success"}"#.to_owned()
    } else {
        format!(
            r#"{{"metadata":{{}},"status":"Failure","message":"command terminated with non-zero exit code: exit status {code}","reason":"NonZeroExitCode","details":{{"causes":[{{"reason":"ExitCode","message":"{code}"}}]}}}}"#
        )
    }
}

/// Unpacks a tar archive's entries as (path under `dir`, mode).
fn untar(dir: &str, archive: &[u8]) -> Result<Vec<(String, u32)>, String> {
    let mut a = tar::Archive::new(archive);
    let entries = a.entries().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| e.to_string())?;
        let path = e.path().map_err(|e| e.to_string())?.display().to_string();
        let mode = e.header().mode().map_err(|e| e.to_string())?;
        out.push((format!("{dir}/{path}"), mode));
    }
    Ok(out)
}

/// Runs one exec session on an upgraded connection.
pub async fn serve<S>(mock: MockApi, mut ws: WebSocketStream<S>, mut call: ExecCall)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let key = (call.namespace.clone(), call.pod.clone());
    let untar_to: Option<(usize, String)> = (call.command.first().map(String::as_str)
        == Some("sh"))
    .then(|| {
        let script = call.command.get(2)?;
        let n = script
            .strip_prefix("head -c ")?
            .split(' ')
            .next()?
            .parse()
            .ok()?;
        let dir = script.rsplit("-C ").next()?.trim().to_owned();
        Some((n, dir))
    })
    .flatten();
    let (stdout, stderr, code, takes) = if let Some((n, dir)) = untar_to {
        while call.stdin.len() < n {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) if b.first() == Some(&0) => {
                    call.stdin.extend_from_slice(&b[1..])
                }
                Some(Ok(Message::Binary(b))) if b.first() == Some(&255) => break,
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        match untar(&dir, &call.stdin[..n.min(call.stdin.len())]) {
            Ok(files) => {
                let mut st = mock.lock();
                let pod_files = st.exec.files.entry(key.clone()).or_default();
                for (path, mode) in files {
                    pod_files.insert(path, mode);
                }
                (String::new(), String::new(), 0, Duration::ZERO)
            }
            Err(e) => (String::new(), format!("tar: {e}\n"), 2, Duration::ZERO),
        }
    } else {
        let program = call.command.first().cloned().unwrap_or_default();
        let copied = mock
            .lock()
            .exec
            .files
            .get(&key)
            .and_then(|f| f.get(&program).copied());
        match copied {
            None => (
                String::new(),
                format!(
                    "OCI runtime exec failed: exec failed: unable to start container process: exec: \"{program}\": stat {program}: no such file or directory: unknown\n"
                ),
                127,
                Duration::ZERO,
            ),
            Some(mode) if mode & 0o111 == 0 => (
                String::new(),
                format!(
                    "OCI runtime exec failed: exec: \"{program}\": permission denied: unknown\n"
                ),
                126,
                Duration::ZERO,
            ),
            Some(_) => {
                let sub = call.command.get(1).cloned().unwrap_or_default();
                let st = mock.lock();
                // The card the pod was given (HAMi's allocation): what a probe on it would show.
                let card = st
                    .store
                    .get(&super::store::ObjKey {
                        resource: "pods".into(),
                        namespace: call.namespace.clone(),
                        name: call.pod.clone(),
                    })
                    .and_then(super::lifecycle::allocated)
                    .map(|(uuid, _)| uuid);
                let shows_card = st.settings.probe_shows_its_card;
                let reply = st
                    .exec
                    .replies
                    .get(&(call.pod.clone(), sub.clone()))
                    .or_else(|| {
                        card.as_ref()
                            .and_then(|c| st.exec.replies.get(&(format!("uuid:{c}"), sub.clone())))
                    })
                    .or_else(|| st.exec.replies.get(&("*".to_owned(), sub.clone())))
                    .cloned();
                drop(st);
                match reply {
                    Some(r) => {
                        let stdout = match card.as_deref().filter(|_| shows_card) {
                            Some(uuid) => on_card(&r.stdout, uuid),
                            None => r.stdout,
                        };
                        (stdout, r.stderr, r.exit_code, r.takes)
                    }
                    None => (
                        String::new(),
                        format!(
                            "mock: no scripted reply for gpu-probe {sub} in {}\n",
                            call.pod
                        ),
                        1,
                        Duration::ZERO,
                    ),
                }
            }
        }
    };
    {
        let mut st = mock.lock();
        if !st.settings.keep_exec_stdin {
            call.stdin = Vec::new();
        }
        st.exec.calls.push(call.clone());
    }
    tokio::time::sleep(takes).await;
    // The node (and the pod with it) went while the command ran: the kubelet's stream breaks.
    if !mock.has("pods", &call.namespace, &call.pod) {
        return;
    }
    if !stdout.is_empty() {
        let _ = ws.send(frame(1, stdout.as_bytes())).await;
    }
    if !stderr.is_empty() {
        let _ = ws.send(frame(2, stderr.as_bytes())).await;
    }
    let _ = ws.send(frame(3, status_json(code).as_bytes())).await;
    let _ = ws.close(None).await;
}

/// The files named in an exec's tar stream (for assertions).
pub fn archive_entries(archive: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
    let mut a = tar::Archive::new(archive);
    a.entries()
        .into_iter()
        .flatten()
        .flatten()
        .map(|mut e| {
            let mut body = Vec::new();
            let _ = std::io::Read::read_to_end(&mut e, &mut body);
            (
                e.path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                e.header().mode().unwrap_or(0),
                body,
            )
        })
        .collect()
}

/// The files a pod has (for a test's check that nothing was left half-copied).
pub fn copied(files: &BTreeMap<String, u32>) -> BTreeSet<String> {
    files.keys().cloned().collect()
}

/// A gpu-probe JSON report as the probe on card `uuid` prints it: device 0's UUID is that card's
/// (in the view and the NVML sections that carry it). Anything that is not such a report stays
/// as it is.
fn on_card(stdout: &str, uuid: &str) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(stdout) else {
        return stdout.to_owned();
    };
    let Some(devices) = v
        .pointer_mut("/view/devices")
        .and_then(|d| d.as_array_mut())
    else {
        return stdout.to_owned();
    };
    for d in devices {
        if d.get("index").and_then(serde_json::Value::as_u64) == Some(0) && d.get("uuid").is_some()
        {
            d["uuid"] = serde_json::Value::String(uuid.to_owned());
        }
    }
    serde_json::to_string(&v).unwrap_or_else(|_| stdout.to_owned())
}
