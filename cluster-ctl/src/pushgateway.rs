//! Pushes a fleet run's metrics to a Prometheus Pushgateway: one `PUT /metrics/job/<job>`, which
//! replaces every metric of that job's group, so a card that left the fleet does not linger.
//!
//! The body is the Prometheus text format 0.0.4 (`lab_report::metrics::prometheus_text`): the
//! Pushgateway's push endpoint parses that (or protobuf), not OpenMetrics. Credentials may ride in
//! the URL (`https://user:pass@gateway:9091`): they are sent as HTTP basic auth and never appear
//! in a message — every error names the URL with its userinfo redacted. The whole exchange
//! (connect, TLS, request, answer) runs under one deadline.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use ct_codecs::{Base64, Base64UrlSafeNoPadding, Encoder as _};
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;

use lab_report::metrics::PROMETHEUS_TEXT_CONTENT_TYPE;

/// How much of a refusal's body an error quotes.
const BODY_QUOTE_LIMIT: usize = 2000;

/// Where and how to push: the parsed URL, without its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `PUT` here (no userinfo).
    pub uri: Uri,
    /// `Authorization` header value when the URL carried `user:pass@`.
    authorization: Option<String>,
    /// The URL as messages show it (userinfo replaced by `***`).
    pub shown: String,
}

/// The base URL with userinfo replaced by `***@` (for messages and logs).
pub fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_owned(),
    };
    match scheme {
        Some(s) => format!("{s}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

/// The path segment that names `job`: plain when it is only letters, digits, `_`, `.`, `-`,
/// else the Pushgateway's `job@base64/<base64url>` form (which also carries `/` and spaces).
fn job_segment(job: &str) -> String {
    if job
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        format!("job/{job}")
    } else {
        let encoded = Base64UrlSafeNoPadding::encode_to_string(job.as_bytes())
            .unwrap_or_else(|_| job.to_owned());
        format!("job@base64/{encoded}")
    }
}

/// Parses the Pushgateway's base URL (`http[s]://[user:pass@]host[:port][/prefix]`) and the job
/// into the `PUT` target.
pub fn target(url: &str, job: &str) -> anyhow::Result<Target> {
    let shown = redact(url);
    if job.is_empty() {
        bail!("the Pushgateway job name is empty: give one (e.g. `hami-isolation-fleet`)");
    }
    let uri: Uri = url.parse().with_context(|| {
        format!(
            "`{shown}` is not a URL: give the Pushgateway's base URL, e.g. http://pushgateway:9091"
        )
    })?;
    let scheme = uri.scheme_str().unwrap_or_default();
    if scheme != "http" && scheme != "https" {
        bail!(
            "`{shown}` is not an http:// or https:// URL: give the Pushgateway's base URL, e.g. http://pushgateway:9091"
        );
    }
    if uri.query().is_some() {
        bail!(
            "`{shown}` has a query string: give the Pushgateway's base URL only (the job goes in the path)"
        );
    }
    let Some(authority) = uri.authority() else {
        bail!(
            "`{shown}` names no host: give the Pushgateway's base URL, e.g. http://pushgateway:9091"
        );
    };
    let (authorization, host) = match authority.as_str().rsplit_once('@') {
        Some((userinfo, host)) => (
            Some(format!(
                "Basic {}",
                Base64::encode_to_string(userinfo.as_bytes()).unwrap_or_default()
            )),
            host,
        ),
        None => (None, authority.as_str()),
    };
    let prefix = uri.path().trim_end_matches('/');
    let path = format!("{prefix}/metrics/{}", job_segment(job));
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(host)
        .path_and_query(path)
        .build()
        .with_context(|| format!("cannot build the push URL from `{shown}`"))?;
    Ok(Target {
        shown: uri.to_string(),
        uri,
        authorization,
    })
}

/// `PUT`s `body` (Prometheus text format 0.0.4) to the Pushgateway at `url` as job `job`,
/// replacing the group's metrics; fails when it cannot be reached, does not answer within
/// `timeout`, or answers anything but 2xx (the error quotes its answer).
pub async fn push(url: &str, job: &str, body: &str, timeout: Duration) -> anyhow::Result<()> {
    let target = target(url, job)?;
    let mut request = Request::builder()
        .method(Method::PUT)
        .uri(target.uri.clone())
        .header(header::CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE);
    if let Some(auth) = &target.authorization {
        request = request.header(header::AUTHORIZATION, auth);
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .context("cannot build the push request")?;
    let exchange = async {
        if target.uri.scheme_str() == Some("https") {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_native_roots(provider)
                .with_context(|| {
                    format!(
                        "cannot load this system's CA certificates to reach {}: install them (Debian: ca-certificates) or push over http://",
                        target.shown
                    )
                })?
                .https_only()
                .enable_http1()
                .build();
            send(https, request, &target).await
        } else {
            send(HttpConnector::new(), request, &target).await
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => bail!(
            "the Pushgateway at {} did not answer within {}s: check that it is up (GET /-/ready) and reachable from here, or raise the push timeout",
            target.shown,
            timeout.as_secs_f64()
        ),
    }
}

async fn send<C>(connector: C, request: Request<Full<Bytes>>, target: &Target) -> anyhow::Result<()>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let client: Client<C, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let response = client.request(request).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the Pushgateway at {}: {}: check the URL and that the Pushgateway runs and listens there (GET /-/ready)",
            target.shown,
            error_chain(&e)
        )
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_else(|e| format!("(its answer could not be read: {e})"));
    let quoted: String = body.trim().chars().take(BODY_QUOTE_LIMIT).collect();
    bail!(
        "the Pushgateway at {} refused the push: HTTP {status}: {quoted}{}",
        target.shown,
        hint(status)
    )
}

/// What to do about a refusal.
fn hint(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => {
            " (the body must be the Prometheus text format 0.0.4, without timestamps, and consistent with the gateway's other groups)"
        }
        401 | 403 => " (give credentials the gateway accepts: https://user:password@host:port)",
        404 | 405 => {
            " (give the Pushgateway's base URL, e.g. http://pushgateway:9091, not a path below it)"
        }
        _ => "",
    }
}

/// An error and its sources on one line (hyper's own message is only "client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_is_the_group_path_below_the_base_url() {
        let t = target("http://127.0.0.1:9091", "hami-fleet").unwrap();
        assert_eq!(
            t.uri.to_string(),
            "http://127.0.0.1:9091/metrics/job/hami-fleet"
        );
        let t = target("https://gw.example/prefix/", "a b/c").unwrap();
        assert_eq!(
            t.uri.to_string(),
            "https://gw.example/prefix/metrics/job@base64/YSBiL2M"
        );
        assert!(t.authorization.is_none());
    }

    #[test]
    fn credentials_become_basic_auth_and_never_show() {
        let t = target("https://alice:s3cret@gw.example:9091", "j").unwrap();
        assert_eq!(t.authorization.as_deref(), Some("Basic YWxpY2U6czNjcmV0"));
        assert!(!t.shown.contains("s3cret") && !t.uri.to_string().contains("alice"));
        assert_eq!(
            redact("https://alice:s3cret@gw.example:9091/x"),
            "https://***@gw.example:9091/x"
        );
        let e = target("ftp://alice:s3cret@gw", "j")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret") && e.contains("http://"), "{e}");
        let e = target("http://alice:s3cret@gw?x=1", "j")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret") && e.contains("query"), "{e}");
    }

    #[test]
    fn bad_input_is_refused_with_the_fix() {
        let e = target("http://gw:9091", "").unwrap_err().to_string();
        assert!(e.contains("job name is empty"), "{e}");
        let e = target("not a url", "j").unwrap_err().to_string();
        assert!(e.contains("base URL"), "{e}");
    }

    #[tokio::test]
    async fn an_unreachable_gateway_is_named_redacted() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://bob:hunter2@127.0.0.1:{port}");
        let e = push(&url, "j", "", Duration::from_secs(5))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot reach the Pushgateway"), "{e}");
        assert!(!e.contains("hunter2") && !e.contains("bob"), "{e}");
    }

    #[tokio::test]
    async fn a_silent_gateway_hits_the_deadline() {
        // Accepts the connection and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _holder = tokio::spawn(async move {
            let (_sock, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let url = format!("http://127.0.0.1:{port}");
        let e = push(&url, "j", "x 1\n", Duration::from_millis(300))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("did not answer within 0.3s"), "{e}");
    }
}
