//! The one module that talks to the Kubernetes API server (ARCHITECTURE.md; `tests/tidy.rs` fails
//! the build's tests on any `kube::Api`, `Api::<…>` or `Client` call outside `src/api/`). Commands
//! get a [`Cluster`] and ask it for objects, pods, container logs, waits, probe runs, k3s's
//! HelmChart with its helm Jobs (`helmchart`), and the GPU tenant policy with the bypass pods'
//! create (`admission`); the decisions stay in the pure modules.
//!
//! How it keeps going where a real API server makes it hard:
//! - every request has a deadline: the connect timeout and a response-header timeout (a tower
//!   layer on the client) are `--api-timeout`, and each call — request and body — is bounded by
//!   it again ([`Cluster::call`]);
//! - rate limiting (429, honouring `Retry-After`), server errors (5xx), timeouts and dropped
//!   connections are retried with exponential backoff, at most [`MAX_ATTEMPTS`] times. Every verb
//!   cluster-ctl uses is safe to repeat: reads, a merge patch, a delete of an object already gone
//!   counts as done, and a create that meets its own earlier attempt goes through a 409 path
//!   ([`Cluster::create_pod`]; the HelmChart's in `commands::chart_install`);
//! - every wait is kube-runtime's `watcher` with its backoff: a 410 Gone re-lists, a closed or
//!   broken watch is resumed, until the wait's own deadline ([`wait`]);
//! - 401 and 403 end at once, saying which credentials or which permission ([`ApiError`]).

mod admission;
mod error;
pub mod exec;
mod fleet;
mod helmchart;
mod objects;
pub mod wait;

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use kube::Client;
use lab_runner::progress::{Progress, Style};

pub use admission::Admission;
pub use error::{ApiError, Op};
pub use exec::{PROBE_DIR, PROBE_NAME, ProbeRun, exit_code_from_status, probe_tar, untar_command};
pub use helmchart::JOB_LOG_LINES;
pub use objects::Capture;

use error::Attempt;

/// Attempts of one call (the first and up to three retries).
pub const MAX_ATTEMPTS: usize = 4;
/// First retry delay; it doubles (with jitter) up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(8);

/// A connection to the cluster: the client, the bound of every call, and where its waits and
/// retries are reported ([`Cluster::with_progress`]).
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    timeout: Duration,
    progress: Progress,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The tower layer every client gets: a request whose response headers do not arrive within
/// `timeout` fails (watch and exec streams are not cut: only the wait for their first answer).
pub fn response_timeout_layer(timeout: Duration) -> tower::timeout::TimeoutLayer {
    tower::timeout::TimeoutLayer::new(timeout)
}

impl Cluster {
    /// The client for a kubeconfig or in-cluster `config`, with `api_timeout` as connect timeout,
    /// response-header timeout and per-call bound. kube's own retry layer is off: retries happen
    /// in [`Cluster::call`], where they are bounded and reported.
    pub fn connect(mut config: kube::Config, api_timeout: Duration) -> Result<Self, ApiError> {
        config.connect_timeout = Some(api_timeout);
        config.write_timeout = Some(api_timeout);
        // Left unset on purpose: a read timeout on the connection would also cut a watch that is
        // quiet for a while and a minutes-long silent gpu-probe run over exec. Their ends are
        // bounded instead by the watcher's idle timeout and --probe-timeout.
        config.read_timeout = None;
        config.default_retry = false;
        let client = kube::client::ClientBuilder::try_from(config)
            .map_err(|e| ApiError::Unreachable {
                op: Box::new(Op::version()),
                detail: format!("building the client: {e}"),
            })?
            .with_layer(&response_timeout_layer(api_timeout))
            .build();
        Ok(Self::new(client, api_timeout).with_progress(Progress::new(Style::Lines)))
    }

    /// A cluster over an existing client (tests: a client on the mock API server, built with
    /// [`response_timeout_layer`]).
    pub fn new(client: Client, api_timeout: Duration) -> Self {
        Self {
            client,
            timeout: api_timeout,
            progress: Progress::hidden(),
        }
    }

    /// The same cluster, its waits, pulls and retries reported to `progress` (default: plain
    /// lines on stderr from [`Cluster::connect`], nothing from [`Cluster::new`]).
    #[must_use]
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }

    /// Where this cluster's long operations are reported; commands report theirs there too.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// A log line beside the progress (`cluster-ctl: …`), above the bars on a terminal.
    pub fn log(&self, line: &str) {
        self.progress.log(&format!("cluster-ctl: {line}"));
    }

    /// The per-call bound (`--api-timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One API call under the per-call bound, retried with backoff while it fails transiently.
    pub(crate) async fn call<T, F, Fut>(&self, op: &Op, mut f: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let bound = self.timeout;
        let attempts = std::cell::Cell::new(0u32);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(FIRST_RETRY_DELAY)
            .with_max_delay(MAX_RETRY_DELAY)
            .with_max_times(MAX_ATTEMPTS - 1)
            .with_jitter();
        let result = (|| {
            attempts.set(attempts.get() + 1);
            let attempt = f();
            async move {
                match tokio::time::timeout(bound, attempt).await {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err(Attempt::Kube(e)),
                    Err(_) => Err(Attempt::TimedOut),
                }
            }
        })
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(Attempt::transient)
        // The server's Retry-After wins over the backoff (but never past the call's bound).
        .adjust(|e: &Attempt, next| next.map(|d| e.retry_after().map_or(d, |r| r.min(bound))))
        .notify(|e: &Attempt, d: Duration| {
            self.log(&format!("{op}: {e}; retrying in {:.1} s", d.as_secs_f64()));
        })
        .await;
        result.map_err(|e| e.into_error(op, bound.as_secs(), attempts.get()))
    }
}
