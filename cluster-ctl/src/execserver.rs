//! A real HTTP/1.1 server on 127.0.0.1 for tests of the exec (WebSocket) path: ordinary requests are
//! answered by the `MockApi` store, `…/pods/<name>/exec` is upgraded to a WebSocket speaking the
//! Kubernetes channel protocol (`v5.channel.k8s.io`, or v4): it records the command and the stdin
//! bytes, unpacks nothing, and answers with a scripted stdout/stderr/exit status.
//!
//! Needed because exec goes through `hyper::upgrade`, which an in-process `tower` service cannot give.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kube::client::Body;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::mockapi::MockApi;

/// What the scripted probe prints and how it exits.
#[derive(Debug, Clone)]
pub struct ExecReply {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

/// One exec the server saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCall {
    pub pod: String,
    pub container: Option<String>,
    pub command: Vec<String>,
    pub stdin: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<ExecCall>,
    reply: Option<ExecReply>,
}

/// The running server.
#[derive(Debug, Clone)]
pub struct ExecServer {
    pub mock: MockApi,
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl ExecServer {
    pub async fn start(mock: MockApi, reply: ExecReply) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            calls: Vec::new(),
            reply: Some(reply),
        }));
        let server = Self { mock, addr, state };
        let me = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let me = me.clone();
                        async move { me.route(req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        server
    }

    /// A client for this server (plain HTTP).
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    pub fn calls(&self) -> Vec<ExecCall> {
        self.state.lock().unwrap().calls.clone()
    }

    async fn route(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, std::convert::Infallible> {
        if !req.uri().path().ends_with("/exec") {
            let (parts, body) = req.into_parts();
            let body = match http_body_util::BodyExt::collect(body).await {
                Ok(b) => b.to_bytes(),
                Err(_) => return Ok(Response::new(Body::empty())),
            };
            let answer: Result<Response<Body>, BoxError> = self
                .mock
                .handle_parts(&parts.method, &parts.uri, &body)
                .await;
            return Ok(answer.unwrap_or_else(|_| {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                r
            }));
        }
        let segs: Vec<&str> = req.uri().path().split('/').collect();
        let pod = segs
            .get(segs.len().wrapping_sub(2))
            .copied()
            .unwrap_or_default()
            .to_owned();
        let mut command = Vec::new();
        let mut container = None;
        for (k, v) in url_pairs(req.uri().query().unwrap_or_default()) {
            match k.as_str() {
                "command" => command.push(v),
                "container" => container = Some(v),
                _ => {}
            }
        }
        let key = req
            .headers()
            .get("sec-websocket-key")
            .map(|k| derive_accept_key(k.as_bytes()))
            .unwrap_or_default();
        let offered = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let protocol = if offered.contains("v5.channel.k8s.io") {
            "v5.channel.k8s.io"
        } else {
            "v4.channel.k8s.io"
        };
        let call = ExecCall {
            pod,
            container,
            command,
            stdin: Vec::new(),
        };
        let state = self.state.clone();
        tokio::spawn(async move {
            if let Ok(upgraded) = hyper::upgrade::on(req).await {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                serve_exec(ws, call, state).await;
            }
        });
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("sec-websocket-accept", key.parse().unwrap());
        h.insert("sec-websocket-protocol", protocol.parse().unwrap());
        Ok(resp)
    }
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), crate::mockapi::percent_decode(v)))
        .collect()
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

async fn serve_exec<S>(mut ws: WebSocketStream<S>, mut call: ExecCall, state: Arc<Mutex<State>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // The untar step: `sh -c "head -c N | tar …"` reads exactly N stdin bytes.
    let wanted: Option<usize> = (call.command.first().map(String::as_str) == Some("sh"))
        .then(|| {
            call.command
                .get(2)
                .and_then(|c| c.strip_prefix("head -c "))
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
        })
        .flatten();
    if let Some(n) = wanted {
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
        state.lock().unwrap().calls.push(call);
        let _ = ws.send(frame(3, status_json(0).as_bytes())).await;
    } else {
        let reply = state.lock().unwrap().reply.clone().unwrap();
        state.lock().unwrap().calls.push(call);
        let _ = ws.send(frame(1, reply.stdout.as_bytes())).await;
        let _ = ws.send(frame(2, reply.stderr.as_bytes())).await;
        let _ = ws
            .send(frame(3, status_json(reply.exit_code).as_bytes()))
            .await;
    }
    let _ = ws.close(None).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{self, Ctx, RunArgs, exit};
    use crate::helm::HelmTarget;
    use crate::testdata::{fixture_pod, fixture_text, hami_active_report};
    use std::time::Duration;

    const VERIFIED: &str = r#"{"schema":"x","verdict":{"outcome":"verified","exit_code":0}}"#;

    fn reply(stdout: &str, code: i32) -> ExecReply {
        ExecReply {
            stdout: stdout.into(),
            stderr: "[HAMI-core Msg] cleanup\n".into(),
            exit_code: code,
        }
    }

    fn ctx() -> Ctx {
        Ctx {
            namespace: "default".into(),
            hami_namespace: "kube-system".into(),
            dry_run: false,
            api_timeout: Duration::from_secs(5),
            helm: HelmTarget {
                kubeconfig: None,
                context: None,
                namespace: "kube-system".into(),
            },
            installer: crate::helmchart::InstallerChoice::Auto,
        }
    }

    fn untar(archive: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut a = tar::Archive::new(archive);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut body).unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                    body,
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn probe_is_copied_as_tar_and_run_with_the_slice() {
        let server = ExecServer::start(MockApi::new(), reply(VERIFIED, 0)).await;
        let probe = vec![0x7f, b'E', b'L', b'F', 1, 2, 3];
        let run = crate::api::copy_and_run_probe(
            &server.client(),
            "default",
            "hami-share-a",
            Some("cuda"),
            &probe,
            Some(8000),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(run.stdout, VERIFIED);
        assert!(run.stderr.contains("HAMI-core"));
        assert_eq!(run.exit_code, Some(0));
        let calls = server.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].pod, "hami-share-a");
        assert_eq!(calls[0].container.as_deref(), Some("cuda"));
        assert_eq!(calls[0].command[..2], ["sh", "-c"]);
        assert_eq!(
            untar(&calls[0].stdin),
            vec![("gpu-probe".to_owned(), 0o755, probe)]
        );
        assert_eq!(
            calls[1].command,
            [
                "/tmp/gpu-probe",
                "all",
                "--output",
                "json",
                "--expect-mib",
                "8000"
            ]
        );
    }

    #[tokio::test]
    async fn probe_subcommand_keeps_the_report_and_exits_with_the_probe_code() {
        let mock = MockApi::new();
        mock.add_fixture("pod-hami-share-a-running.json");
        let not_verified = r#"{"verdict":{"outcome":"not-verified","exit_code":1}}"#;
        let server = ExecServer::start(mock, reply(not_verified, 1)).await;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("gpu-probe");
        std::fs::write(&bin, b"probe-bytes").unwrap();
        let out = commands::probe(
            &server.client(),
            &ctx(),
            "hami-share-a",
            None,
            None,
            &bin,
            Some(dir.path()),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(out.exit, 1);
        assert_eq!(out.json["verdict"]["outcome"], "not-verified");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("probe/hami-share-a.json")).unwrap(),
            not_verified
        );
        assert!(
            std::fs::read_to_string(dir.path().join("probe/hami-share-a.stderr"))
                .unwrap()
                .contains("HAMI-core")
        );
        // --expect-mib came from the container's nvidia.com/gpumem limit.
        assert_eq!(
            server.calls()[1].command.last().map(String::as_str),
            Some("8000")
        );
    }

    #[tokio::test]
    async fn full_run_with_audit_runs_the_three_probes_in_pod_a() {
        let (server, dir, out) = full_run(true, VERIFIED.to_owned()).await;
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("out/run.json")).unwrap(),
        )
        .unwrap();
        let ids: Vec<&str> = report["exercises"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["E1", "E2", "E3", "E4", "E5", "A1"]);
        let commands: Vec<String> = server.calls().iter().map(|c| c.command.join(" ")).collect();
        for expected in [
            "/tmp/gpu-probe audit --expect-mib 8000 --output json",
            "/tmp/gpu-probe overhead --output json",
            "/tmp/gpu-probe compute --seconds 5 --output json",
        ] {
            assert!(
                commands.iter().any(|c| c == expected),
                "{expected} not run: {commands:?}"
            );
        }
        assert!(
            dir.path()
                .join("out/probe/hami-share-a-audit.json")
                .exists()
        );
        // The baseline pod (CUDA_DISABLE_CONTROL=true) ran overhead too, and its manifest is kept.
        let baseline_calls: Vec<_> = server
            .calls()
            .into_iter()
            .filter(|c| c.pod == "hami-baseline")
            .collect();
        assert_eq!(
            baseline_calls.last().map(|c| c.command.join(" ")),
            Some("/tmp/gpu-probe overhead --output json".to_owned())
        );
        assert!(
            dir.path()
                .join("out/probe/hami-baseline-overhead.json")
                .exists()
        );
        let manifest =
            std::fs::read_to_string(dir.path().join("out/manifests/hami-baseline.yaml")).unwrap();
        assert!(manifest.contains("CUDA_DISABLE_CONTROL"), "{manifest}");
        assert!(
            dir.path()
                .join("out/probe/hami-share-a-compute.stderr")
                .exists()
        );
        // The scripted reply is not an audit report: A1 must fail, never pass.
        assert_eq!(report["exercises"][5]["result"], "fail", "{}", out.human);
    }

    /// A whole `run` against the mock API and the exec server, every probe answering `probe_reply`.
    async fn full_run(
        audit: bool,
        probe_reply: String,
    ) -> (ExecServer, tempfile::TempDir, commands::Outcome) {
        let mock = MockApi::new();
        mock.add_fixture("node-hami-v2.10-h100.json")
            .add_fixture("daemonsets-hami-only.json")
            .add_fixture("deploy-hami-scheduler-tag-match.json")
            .add_fixture("endpoints-hami-scheduler-ready.json")
            .add_fixture("events-oversubscribe.json");
        for (name, file) in [
            ("hami-share-a", "pod-hami-share-a-running.json"),
            ("hami-share-b", "pod-hami-share-b-running.json"),
            ("hami-oversubscribe", "pod-hami-oversubscribe-pending.json"),
        ] {
            mock.on_create(
                "pods",
                name,
                serde_json::to_value(fixture_pod(file)).unwrap(),
            );
        }
        let mut baseline = fixture_pod("pod-hami-share-a-running.json");
        baseline.metadata.name = Some("hami-baseline".into());
        mock.on_create(
            "pods",
            "hami-baseline",
            serde_json::to_value(baseline).unwrap(),
        );
        let server = ExecServer::start(mock, reply(&probe_reply, 0)).await;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("gpu-probe-bin");
        std::fs::write(&bin, b"probe").unwrap();
        let args = RunArgs {
            card_mib: None,
            slice_mib: None,
            oversubscribe_mib: Some(75000),
            image: crate::manifests::DEFAULT_IMAGE.into(),
            out: dir.path().join("out"),
            probe_bin: Some(bin),
            node: None,
            pod_timeout: Duration::from_secs(10),
            event_timeout: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(10),
            audit,
        };
        let helm = lab_runner::RecordingRunner::new(&["helm"]);
        helm.reply("helm list", 0, &fixture_text("helm-list-deployed.json"), "");
        let out = commands::run(&server.client(), &helm, &ctx(), &args)
            .await
            .unwrap();
        (server, dir, out)
    }

    #[tokio::test]
    async fn full_run_with_probes_passes_all_five() {
        let verified = hami_active_report();
        let (_server, dir, out) = full_run(false, verified.clone()).await;
        assert_eq!(out.exit, exit::OK, "{}", out.human);
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("out/run.json")).unwrap(),
        )
        .unwrap();
        let results: Vec<&str> = report["exercises"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["result"].as_str().unwrap())
            .collect();
        assert_eq!(results, ["pass"; 5]);
        assert_eq!(
            report["exercises"][4]["numbers"]["gpu_uuids"][0][0],
            "GPU-4f7efa07-0f69-f62e-5958-365ed3785eb2"
        );
        assert_eq!(
            report["exercises"][1]["evidence"],
            serde_json::json!(["probe/hami-share-a.json", "probe/hami-share-a.stderr"])
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out/probe/hami-share-b.json")).unwrap(),
            verified
        );
        // The contract with evidence-pack: the folder packs, and the five claims keep their verdicts.
        let plan = evidence_pack::bundle::plan(&dir.path().join("out"), None).unwrap();
        let verdicts: Vec<(String, evidence_pack::model::ClaimVerdict)> = plan
            .summary
            .claims
            .iter()
            .map(|c| (c.id.clone(), c.verdict))
            .collect();
        assert_eq!(verdicts.len(), 5, "{verdicts:?}");
        assert!(
            verdicts
                .iter()
                .all(|(_, v)| *v == evidence_pack::model::ClaimVerdict::Pass),
            "{verdicts:?}"
        );
        assert!(
            plan.entries
                .iter()
                .any(|e| e.path.ends_with("probe/hami-share-a.json"))
        );
    }
}
