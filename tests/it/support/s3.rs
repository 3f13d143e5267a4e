//! A real S3 server on loopback for the integration tests, and a proxy in
//! front of it that injects faults.
//!
//! [`S3Server`] runs `s3s` (request parsing, SigV4 checks with one access key)
//! over `s3s-fs` (objects are files under [`S3Server::root`]) on the tests'
//! HTTP [`Server`], which has a tokio runtime and a thread of its own: it can
//! be started from plain and from `#[tokio::test]` tests alike. A thin layer over `s3s-fs` adds what
//! the toolkit needs and `s3s-fs` 0.14 lacks: per-part SHA-256 checksums of
//! multipart uploads (checked, returned, and required on completion, as S3
//! does) and `ListMultipartUploads`.
//!
//! [`FaultProxy`], on the same [`Server`], forwards requests with their
//! method, target, headers and body unchanged (nothing is re-signed: SigV4
//! covers the `Host` header, which names the proxy, and the server checks the
//! signature against the header it receives, never against its own address)
//! and answers every Nth request with a 500/503 or drops the connection after
//! reading it.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use sha2::{Digest, Sha256};

use super::server::{Body, Connections, Exchange, Reply, Server};

pub const ACCESS_KEY: &str = "AKIATEST";
pub const SECRET_KEY: &str = "test-secret";
pub const BUCKET: &str = "slurm-factory-test";
pub const REGION: &str = "us-east-1";

/// An S3 server on `127.0.0.1` (random port) over a scratch directory, with
/// the bucket [`BUCKET`] and SigV4 authentication for one key pair.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub addr: SocketAddr,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
    pub region: String,
    /// The directory behind the server: object `KEY` of bucket `B` is the
    /// file `root/B/KEY`; the server's own bookkeeping is in dot files of
    /// `root` itself.
    pub root: PathBuf,
    server: Option<Server>,
    dir: tempfile::TempDir,
}

impl S3Server {
    pub fn start() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let root = root.canonicalize().unwrap();

        let store = Store {
            fs: s3s_fs::FileSystem::new(&root).unwrap(),
            root: root.clone(),
            uploads: Mutex::default(),
            atomic: tokio::sync::RwLock::new(()),
        };
        let service = {
            let mut b = s3s::service::S3ServiceBuilder::new(store);
            b.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
            b.build()
        };

        let server = Server::serve("s3-server", Connections::KeepAlive, service);
        S3Server {
            endpoint: server.url.clone(),
            addr: server.addr,
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
            bucket: BUCKET.into(),
            region: REGION.into(),
            root,
            server: Some(server),
            dir,
        }
    }

    /// What a process of the toolkit needs to reach this server and nothing
    /// else: credentials, region, endpoint, and no instance metadata, no
    /// shared config or credentials files (they point at files that do not
    /// exist). `AWS_SESSION_TOKEN` is blank, which the SDK treats as unset.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.env_with_endpoint(&self.endpoint)
    }

    /// [`S3Server::env`] with another endpoint (a proxy in front of this server).
    pub fn env_with_endpoint(&self, endpoint: &str) -> Vec<(&'static str, String)> {
        let absent = self.dir.path().join("absent");
        vec![
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_SESSION_TOKEN", String::new()),
            ("AWS_REGION", self.region.clone()),
            ("AWS_DEFAULT_REGION", self.region.clone()),
            ("AWS_ENDPOINT_URL", endpoint.to_owned()),
            ("AWS_ENDPOINT_URL_S3", endpoint.to_owned()),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "false".into()),
            ("AWS_USE_FIPS_ENDPOINT", "false".into()),
            ("AWS_USE_DUALSTACK_ENDPOINT", "false".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_PROFILE", "default".into()),
            (
                "AWS_CONFIG_FILE",
                absent.join("config").display().to_string(),
            ),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                absent.join("credentials").display().to_string(),
            ),
        ]
    }

    fn object_path(&self, key: &str) -> PathBuf {
        assert!(
            !key.starts_with('/') && !key.split('/').any(|c| c == ".." || c == "."),
            "unusual object key {key:?}"
        );
        self.root.join(&self.bucket).join(key)
    }

    /// The bytes of an object of the bucket, read from the directory.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        let path = self.object_path(key);
        path.is_file().then(|| std::fs::read(path).unwrap())
    }

    /// Stores an object directly in the directory (no metadata).
    pub fn put(&self, key: &str, data: &[u8]) {
        let path = self.object_path(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }

    /// The keys of the bucket's objects, sorted.
    pub fn keys(&self) -> Vec<String> {
        let base = self.root.join(&self.bucket);
        let mut keys: Vec<String> = walkdir::WalkDir::new(&base)
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                let rel = e.path().strip_prefix(&base).unwrap();
                rel.to_str().unwrap().to_owned()
            })
            .collect();
        keys.sort();
        keys
    }

    /// Multipart uploads created and neither completed nor aborted.
    pub fn incomplete_uploads(&self) -> usize {
        live_upload_ids(&self.root).len()
    }

    /// Parts on disk of multipart uploads not yet completed or aborted. A
    /// part means its upload's creation was answered: a client killed after
    /// it left an upload this server lists. (The upload's file appears
    /// earlier, while the creation is still being answered.)
    pub fn uploaded_parts(&self) -> usize {
        std::fs::read_dir(&self.root)
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().into_string().ok())
            .filter(|n| n.starts_with(".upload_id-") && n.contains(".part-"))
            .count()
    }

    /// Stops the server: the port is closed and every open connection is
    /// closed when this returns.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.server.take());
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `.upload-UUID.json` in the root: s3s-fs's record of a live upload.
fn live_upload_ids(root: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().ok()?;
            let id = name.strip_prefix(".upload-")?.strip_suffix(".json")?;
            Some(id.to_owned())
        })
        .collect();
    ids.sort();
    ids
}

fn sha256_base64(path: &Path) -> io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(hasher.finalize()))
}

struct Upload {
    bucket: String,
    key: String,
    initiated: SystemTime,
    algorithm: Option<ChecksumAlgorithm>,
    /// part number -> base64 SHA-256 of the stored part
    parts: BTreeMap<i32, String>,
}

impl Upload {
    fn sha256(&self) -> bool {
        self.algorithm
            .as_ref()
            .is_some_and(|a| a.as_str() == ChecksumAlgorithm::SHA256)
    }
}

/// s3s-fs plus per-part SHA-256 checksums and ListMultipartUploads.
struct Store {
    fs: s3s_fs::FileSystem,
    root: PathBuf,
    uploads: Mutex<HashMap<String, Upload>>,
    atomic: tokio::sync::RwLock<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}

#[async_trait::async_trait]
impl S3 for Store {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.fs.create_bucket(req).await
    }
    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.fs.delete_bucket(req).await
    }
    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.fs.list_buckets(req).await
    }
    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.fs.get_bucket_location(req).await
    }
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        // S3 evaluates If-Match / If-None-Match and replaces an object
        // atomically; s3s-fs checks, then writes the data and its metadata
        // one after the other. Writes one at a time, and no read during a
        // write, restore S3's documented behaviour.
        let _one = self.atomic.write().await;
        self.fs.put_object(req).await
    }
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let _reading = self.atomic.read().await;
        self.fs.get_object(req).await
    }
    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.fs.head_object(req).await
    }
    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.fs.copy_object(req).await
    }
    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }
    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.fs.delete_objects(req).await
    }
    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.fs.list_objects(req).await
    }
    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.fs.list_objects_v2(req).await
    }
    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.fs.list_parts(req).await
    }
    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.fs.upload_part_copy(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let bucket = req.input.bucket.clone();
        let key = req.input.key.clone();
        let algorithm = req.input.checksum_algorithm.clone();
        if !self.root.join(&bucket).is_dir() {
            return Err(s3_error!(NoSuchBucket));
        }
        let mut resp = self.fs.create_multipart_upload(req).await?;
        let id = resp.output.upload_id.clone().unwrap();
        resp.output.checksum_algorithm = algorithm.clone();
        self.uploads.lock().unwrap().insert(
            id,
            Upload {
                bucket,
                key,
                initiated: SystemTime::now(),
                algorithm,
                parts: BTreeMap::new(),
            },
        );
        Ok(resp)
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let id = req.input.upload_id.clone();
        let part = req.input.part_number;
        let in_header = req.input.checksum_sha256.clone();
        let trailers = req.trailing_headers.clone();
        let mut resp = self.fs.upload_part(req).await?;

        // Sent as a header (in-memory bodies) or as a trailer of an
        // aws-chunked body (streaming bodies); s3s-fs itself ignores both.
        let claimed = in_header.or_else(|| {
            trailers?.read(|h| {
                h.get("x-amz-checksum-sha256")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            })?
        });
        let path = self.root.join(format!(".upload_id-{id}.part-{part}"));
        let actual = sha256_base64(&path).map_err(|e| s3_error!(e, InternalError))?;
        let mut uploads = self.uploads.lock().unwrap();
        let upload = uploads.get_mut(&id);
        let sha256_upload = upload.as_ref().is_some_and(|u| u.sha256());
        match claimed {
            Some(claimed) if claimed != actual => {
                let _ = std::fs::remove_file(&path);
                return Err(s3_error!(
                    BadDigest,
                    "The SHA256 you specified did not match the calculated checksum."
                ));
            }
            None if sha256_upload => {
                let _ = std::fs::remove_file(&path);
                return Err(s3_error!(
                    InvalidRequest,
                    "Checksum Type mismatch occurred, expected checksum Type: sha256"
                ));
            }
            Some(_) | None => {}
        }
        if let Some(upload) = upload {
            upload.parts.insert(part, actual.clone());
        }
        resp.output.checksum_sha256 = Some(actual);
        Ok(resp)
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let id = req.input.upload_id.clone();
        {
            let uploads = self.uploads.lock().unwrap();
            let Some(upload) = uploads.get(&id) else {
                return Err(s3_error!(NoSuchUpload));
            };
            let parts = req
                .input
                .multipart_upload
                .as_ref()
                .and_then(|m| m.parts.as_ref());
            for part in parts.into_iter().flatten() {
                let number = part.part_number.unwrap_or(0);
                let stored = upload.parts.get(&number);
                match (&part.checksum_sha256, stored) {
                    (None, _) if upload.sha256() => {
                        return Err(s3_error!(
                            InvalidRequest,
                            "The upload was created using a sha256 checksum. The complete \
                             request must include the checksum for each part. It was missing \
                             for part {number} in the request."
                        ));
                    }
                    (Some(given), Some(stored)) if given != stored => {
                        return Err(s3_error!(
                            InvalidPart,
                            "The checksum of part {number} does not match the uploaded part."
                        ));
                    }
                    _ => {}
                }
            }
        }
        let resp = self.fs.complete_multipart_upload(req).await?;
        self.uploads.lock().unwrap().remove(&id);
        Ok(resp)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let id = req.input.upload_id.clone();
        let resp = self.fs.abort_multipart_upload(req).await?;
        self.uploads.lock().unwrap().remove(&id);
        Ok(resp)
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        if !self.root.join(&input.bucket).is_dir() {
            return Err(s3_error!(NoSuchBucket));
        }
        let prefix = input.prefix.clone().unwrap_or_default();
        let live = live_upload_ids(&self.root);
        let uploads = self.uploads.lock().unwrap();
        let mut list: Vec<MultipartUpload> = live
            .iter()
            .filter_map(|id| Some((id, uploads.get(id)?)))
            .filter(|(_, u)| u.bucket == input.bucket && u.key.starts_with(&prefix))
            .map(|(id, u)| MultipartUpload {
                key: Some(u.key.clone()),
                upload_id: Some(id.clone()),
                initiated: Some(Timestamp::from(u.initiated)),
                checksum_algorithm: u.algorithm.clone(),
                storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                ..Default::default()
            })
            .collect();
        list.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            max_uploads: Some(1000),
            is_truncated: Some(false),
            uploads: Some(list),
            ..Default::default()
        }))
    }
}

/// Which requests the proxy spoils, counting every request it reads from 1.
/// Zero turns a fault off. A request that is both kinds is dropped.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Every Nth request gets a 500 (InternalError) or a 503 (SlowDown), in turn.
    pub error_every: usize,
    /// Every Nth request is read whole, then its connection closed unanswered.
    pub drop_every: usize,
    /// Every request whose start line contains this gets a 500: e.g.
    /// `partNumber=` makes the server refuse every part for good.
    pub fail_matching: Option<&'static str>,
    /// Every request whose start line contains this is held this long
    /// before it is forwarded: e.g. `PUT /bucket/state.json` makes
    /// concurrent read-modify-writers all read before any writes.
    pub delay_matching: Option<(&'static str, Duration)>,
}

/// An HTTP/1.1 proxy on `127.0.0.1` (random port) in front of an
/// [`S3Server`], on the tests' [`Server`]: keep-alive on both sides, each
/// request read whole, then spoiled or sent on with its method, target,
/// headers and body unchanged, and the answer passed back the same way.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub addr: SocketAddr,
    env: Vec<(&'static str, String)>,
    counts: Arc<Counts>,
    _server: Server,
}

#[derive(Default)]
struct Counts {
    requests: AtomicUsize,
    errors: AtomicUsize,
    drops: AtomicUsize,
}

type Upstream = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<hyper::body::Bytes>,
>;

impl FaultProxy {
    pub fn start(upstream: &S3Server, faults: Faults) -> FaultProxy {
        let counts = Arc::new(Counts::default());
        let client: Upstream =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let base = upstream.endpoint.clone();
        let c = counts.clone();
        let server = Server::start("fault-proxy", Connections::KeepAlive, move |ex| {
            let Ok(body) = ex.read_body(u64::MAX) else {
                return Reply::Drop;
            };
            let n = c.requests.fetch_add(1, Ordering::SeqCst) + 1;
            if faults.drop_every > 0 && n.is_multiple_of(faults.drop_every) {
                c.drops.fetch_add(1, Ordering::SeqCst);
                return Reply::Drop;
            }
            let start = format!("{} {}", ex.method(), ex.target());
            let matching = faults.fail_matching.is_some_and(|m| start.contains(m));
            if matching || (faults.error_every > 0 && n.is_multiple_of(faults.error_every)) {
                let k = c.errors.fetch_add(1, Ordering::SeqCst);
                return error_response(k % 2 == 1, n);
            }
            if let Some((m, delay)) = faults.delay_matching
                && start.contains(m)
            {
                std::thread::sleep(delay);
            }
            forward(&client, &base, ex, body)
        });
        FaultProxy {
            env: upstream.env_with_endpoint(&server.url),
            endpoint: server.url.clone(),
            addr: server.addr,
            counts,
            _server: server,
        }
    }

    /// The upstream server's [`S3Server::env`], with this proxy as endpoint.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.env.clone()
    }

    /// Requests read so far (forwarded or spoiled).
    pub fn requests(&self) -> usize {
        self.counts.requests.load(Ordering::SeqCst)
    }

    /// Requests answered with a 500 or 503.
    pub fn errors(&self) -> usize {
        self.counts.errors.load(Ordering::SeqCst)
    }

    /// Requests whose connection was closed unanswered.
    pub fn drops(&self) -> usize {
        self.counts.drops.load(Ordering::SeqCst)
    }
}

/// Sends the request on to the server and passes its answer back; the
/// connection is dropped if the server cannot be reached. Nothing is
/// re-signed: SigV4 covers the `Host` header, which still names the proxy,
/// and the server checks the signature against the header it receives.
fn forward(client: &Upstream, base: &str, ex: &Exchange, body: Vec<u8>) -> Reply {
    let mut request = hyper::Request::builder()
        .method(ex.head.method.clone())
        .uri(format!("{base}{}", ex.target()))
        .body(http_body_util::Full::new(body.into()))
        .unwrap();
    *request.headers_mut() = ex.head.headers.clone();
    let rt = tokio::runtime::Handle::current();
    let answer = rt.block_on(async {
        let response = client.request(request).await.map_err(io::Error::other)?;
        let (head, body) = response.into_parts();
        let body = http_body_util::BodyExt::collect(body)
            .await
            .map_err(io::Error::other)?
            .to_bytes();
        Ok::<_, io::Error>(hyper::Response::from_parts(head, Body::full(body)))
    });
    match answer {
        Ok(response) => Reply::Send(response),
        Err(_) => Reply::Drop,
    }
}

/// S3's 500 InternalError, or its 503 SlowDown.
fn error_response(slow_down: bool, n: usize) -> Reply {
    let (status, code, message) = if slow_down {
        (503, "SlowDown", "Please reduce your request rate.")
    } else {
        (
            500,
            "InternalError",
            "We encountered an internal error. Please try again.",
        )
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>fault-{n}</RequestId></Error>"
    );
    Reply::Send(
        hyper::Response::builder()
            .status(status)
            .header("content-type", "application/xml")
            .header("x-amz-request-id", format!("fault-{n}"))
            .body(Body::full(body))
            .unwrap(),
    )
}
