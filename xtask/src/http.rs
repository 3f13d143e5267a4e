//! A small blocking HTTP(S) GET client for downloads, on the hyper stack the
//! AWS SDK and octocrab already bring: streaming bodies, byte ranges, and
//! redirects that never carry credentials to another host (GitHub sends asset
//! downloads to a pre-signed URL on its CDN, which refuses a second
//! authentication).

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http::{HeaderValue, Request, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::store::Chunks;

/// A transfer that delivers nothing for this long is given up (and resumed).
const STALL: Duration = Duration::from_secs(60);
const MAX_REDIRECTS: usize = 10;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

pub struct Http {
    rt: tokio::runtime::Runtime,
    client: Client<Connector, Empty<Bytes>>,
}

pub struct Response {
    pub status: u16,
    /// Where the response came from, after redirects.
    pub url: String,
    body: Incoming,
    rt: tokio::runtime::Handle,
}

impl Http {
    pub fn new() -> Result<Http> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(30)));
        http.set_nodelay(true);
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .context("loading the system's CA certificates")?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(tls);
        Ok(Http { rt, client })
    }

    /// GET `url`, following redirects; `Authorization` goes only to the host
    /// it was meant for.
    pub fn get(&self, url: &str, headers: &[(header::HeaderName, String)]) -> Result<Response> {
        let mut uri: Uri = url.parse().with_context(|| format!("{url} is not a URL"))?;
        let origin = (uri.scheme().cloned(), uri.authority().cloned());
        for _ in 0..=MAX_REDIRECTS {
            let mut req = Request::get(uri.clone());
            for (name, value) in headers {
                if name == header::AUTHORIZATION
                    && (uri.scheme() != origin.0.as_ref() || uri.authority() != origin.1.as_ref())
                {
                    continue;
                }
                req = req.header(name, HeaderValue::from_str(value)?);
            }
            req = req.header(header::USER_AGENT, "slurm-factory");
            let req = req.body(Empty::new())?;
            let resp = self
                .rt
                .block_on(async {
                    tokio::time::timeout(STALL, self.client.request(req))
                        .await
                        .map_err(|_| anyhow!("no answer in {}s", STALL.as_secs()))?
                        .map_err(|e| anyhow!(describe(&e)))
                })
                .with_context(|| format!("GET {}", redact(&uri)))?;
            let status = resp.status().as_u16();
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                let location = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .with_context(|| {
                        format!("GET {}: {status} without a Location", redact(&uri))
                    })?;
                let scheme = location
                    .split_once("://")
                    .map(|(s, _)| s.to_ascii_lowercase());
                if scheme
                    .as_deref()
                    .is_some_and(|s| s != "http" && s != "https")
                {
                    return Err(Refused(format!(
                        "GET {}: redirected to a {}:// URL, which is not http(s): refusing it",
                        redact(&uri),
                        scheme.unwrap_or_default()
                    ))
                    .into());
                }
                uri = join(&uri, location)?;
                continue;
            }
            let body = resp.into_body();
            return Ok(Response {
                status,
                url: uri.to_string(),
                body,
                rt: self.rt.handle().clone(),
            });
        }
        bail!("GET {url}: more than {MAX_REDIRECTS} redirects")
    }
}

/// A request that no retry can fix (a redirect to `file://`, say).
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// hyper's errors say "client error (Connect)"; their sources say why.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// A URL as logs may show it: without its query (pre-signed URLs carry a
/// signature there).
pub fn redact(uri: &Uri) -> String {
    let mut s = format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().map(|a| a.as_str()).unwrap_or(""),
        uri.path()
    );
    if uri.query().is_some() {
        s.push_str("?…");
    }
    s
}

/// A redirect's target: absolute, or a path on the same host.
fn join(base: &Uri, location: &str) -> Result<Uri> {
    if location.contains("://") {
        return location
            .parse()
            .with_context(|| format!("redirect to {location} is not a URL"));
    }
    if !location.starts_with('/') {
        bail!("redirect to a relative location {location} is not supported");
    }
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(location.parse()?);
    Ok(Uri::from_parts(parts)?)
}

impl Response {
    /// The status as an error, with the server's message when it is short.
    pub fn error(mut self, what: &str) -> anyhow::Error {
        let status = self.status;
        let url = self
            .url
            .parse::<Uri>()
            .map(|u| redact(&u))
            .unwrap_or_default();
        let text = crate::store::read_all(&mut self, 4096, "the answer")
            .ok()
            .map(|b| String::from_utf8_lossy(&b).trim().replace('\n', " "))
            .filter(|t| !t.is_empty() && t.len() < 300)
            .map(|t| format!(": {t}"))
            .unwrap_or_default();
        anyhow!("{what}: HTTP {status} from {url}{text}")
    }
}

impl Chunks for Response {
    fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        let body = &mut self.body;
        self.rt.block_on(async {
            loop {
                let frame = tokio::time::timeout(STALL, body.frame())
                    .await
                    .map_err(|_| anyhow!("no data for {}s", STALL.as_secs()))?;
                match frame {
                    None => return Ok(None),
                    Some(Err(e)) => bail!("{}", describe(&e)),
                    Some(Ok(f)) => {
                        if let Ok(data) = f.into_data()
                            && !data.is_empty()
                        {
                            return Ok(Some(data));
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_and_logs_hide_queries() {
        let base: Uri = "https://api.example/repos/a/b/assets/1".parse().unwrap();
        assert_eq!(
            join(&base, "https://cdn.example/x?sig=secret")
                .unwrap()
                .to_string(),
            "https://cdn.example/x?sig=secret"
        );
        assert_eq!(
            join(&base, "/other?y=1").unwrap().to_string(),
            "https://api.example/other?y=1"
        );
        assert!(join(&base, "relative").is_err());
        let signed: Uri = "https://cdn.example/x?sig=secret".parse().unwrap();
        assert_eq!(redact(&signed), "https://cdn.example/x?…");
    }
}
