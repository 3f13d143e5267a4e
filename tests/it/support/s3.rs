//! A real S3 server on loopback for the integration tests, and a proxy in
//! front of it that injects faults.
//!
//! [`S3Server`] runs `s3s` (request parsing, SigV4 checks with one access key)
//! over `s3s-fs` (objects are files under [`S3Server::root`]) on a tokio
//! runtime of its own, in a thread of its own: it can be started from plain
//! and from `#[tokio::test]` tests alike. A thin layer over `s3s-fs` adds what
//! the toolkit needs and `s3s-fs` 0.14 lacks: per-part SHA-256 checksums of
//! multipart uploads (checked, returned, and required on completion, as S3
//! does) and `ListMultipartUploads`.
//!
//! [`FaultProxy`] forwards HTTP/1.1 requests byte for byte (nothing is
//! re-signed: SigV4 covers the `Host` header, which names the proxy, and the
//! server checks the signature against the header it receives, never against
//! its own address) and answers every Nth request with a 500/503 or drops the
//! connection after reading it.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use sha2::{Digest, Sha256};

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
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
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

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("s3-server-{}", addr.port()))
            .spawn(move || serve(listener, service, stopped))
            .unwrap();

        S3Server {
            endpoint: format!("http://{addr}"),
            addr,
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
            bucket: BUCKET.into(),
            region: REGION.into(),
            root,
            stop: Some(stop),
            thread: Some(thread),
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
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(
    listener: TcpListener,
    service: s3s::service::S3Service,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                accepted = listener.accept() => {
                    let Ok((socket, _)) = accepted else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let service = service.clone();
                    tokio::spawn(async move {
                        let io = hyper_util::rt::TokioIo::new(socket);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await;
                    });
                }
            }
        }
    });
    // Dropping the runtime drops every connection task, so their sockets.
    drop(rt);
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
/// [`S3Server`]: keep-alive on both sides, `Content-Length` and chunked
/// bodies, requests and responses forwarded unchanged.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub addr: SocketAddr,
    env: Vec<(&'static str, String)>,
    shared: Arc<ProxyShared>,
    acceptor: Option<JoinHandle<()>>,
}

struct ProxyShared {
    upstream: SocketAddr,
    faults: Faults,
    stop: AtomicBool,
    requests: AtomicUsize,
    errors: AtomicUsize,
    drops: AtomicUsize,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

/// How long a connection may stay idle between requests, and how long one
/// read in the middle of a message may take.
const IDLE: Duration = Duration::from_secs(60);
const READ: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

impl FaultProxy {
    pub fn start(upstream: &S3Server, faults: Faults) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let endpoint = format!("http://{addr}");
        let shared = Arc::new(ProxyShared {
            upstream: upstream.addr,
            faults,
            stop: AtomicBool::new(false),
            requests: AtomicUsize::new(0),
            errors: AtomicUsize::new(0),
            drops: AtomicUsize::new(0),
            connections: Mutex::default(),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("fault-proxy-{}", addr.port()))
                .spawn(move || accept_loop(listener, shared))
                .unwrap()
        };
        FaultProxy {
            env: upstream.env_with_endpoint(&endpoint),
            endpoint,
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The upstream server's [`S3Server::env`], with this proxy as endpoint.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.env.clone()
    }

    /// Requests read so far (forwarded or spoiled).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Requests answered with a 500 or 503.
    pub fn errors(&self) -> usize {
        self.shared.errors.load(Ordering::SeqCst)
    }

    /// Requests whose connection was closed unanswered.
    pub fn drops(&self) -> usize {
        self.shared.drops.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let connections = std::mem::take(&mut *self.shared.connections.lock().unwrap());
        for connection in connections {
            let _ = connection.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<ProxyShared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let shared2 = shared.clone();
                let handle = std::thread::spawn(move || {
                    let _ = Connection::new(client, shared2).and_then(|mut c| c.run());
                });
                let mut connections = shared.connections.lock().unwrap();
                connections.retain(|h| !h.is_finished());
                connections.push(handle);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL / 5),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

struct Connection {
    client: TcpStream,
    reader: BufReader<TcpStream>,
    upstream: Option<(TcpStream, BufReader<TcpStream>)>,
    shared: Arc<ProxyShared>,
}

impl Connection {
    fn new(client: TcpStream, shared: Arc<ProxyShared>) -> io::Result<Connection> {
        client.set_nonblocking(false)?;
        client.set_nodelay(true)?;
        let reader = BufReader::new(client.try_clone()?);
        Ok(Connection {
            client,
            reader,
            upstream: None,
            shared,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        while self.wait_for_request()? {
            let Some(head) = read_head(&mut self.reader)? else {
                return Ok(());
            };
            let request = Request::parse(head)?;
            let mut raw = request.head.raw.clone();
            if request.expect_continue && request.framing != Framing::None {
                // Answer it here: the body is read whole before forwarding.
                self.client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            }
            read_body(&mut self.reader, request.framing, &mut raw)?;

            let n = self.shared.requests.fetch_add(1, Ordering::SeqCst) + 1;
            let faults = self.shared.faults;
            if faults.drop_every > 0 && n.is_multiple_of(faults.drop_every) {
                self.shared.drops.fetch_add(1, Ordering::SeqCst);
                let _ = self.client.shutdown(Shutdown::Both);
                return Ok(());
            }
            let matching = faults
                .fail_matching
                .is_some_and(|m| request.head.start.contains(m));
            if matching || (faults.error_every > 0 && n.is_multiple_of(faults.error_every)) {
                let k = self.shared.errors.fetch_add(1, Ordering::SeqCst);
                self.client
                    .write_all(&error_response(k % 2 == 1, n, request.close))?;
                if request.close {
                    return Ok(());
                }
                continue;
            }

            if let Some((m, delay)) = faults.delay_matching
                && request.head.start.contains(m)
            {
                std::thread::sleep(delay);
            }
            let response = self.forward(&raw, request.method == "HEAD")?;
            self.client.write_all(&response.raw)?;
            if response.close {
                self.upstream = None;
            }
            if response.close || request.close {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Waits for the first byte of the next request: false on EOF, after
    /// [`IDLE`], or when the proxy stops.
    fn wait_for_request(&mut self) -> io::Result<bool> {
        if !self.reader.buffer().is_empty() {
            return Ok(true);
        }
        self.client.set_read_timeout(Some(POLL))?;
        let deadline = Instant::now() + IDLE;
        let ready = loop {
            if self.shared.stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                break false;
            }
            match self.reader.fill_buf() {
                Ok(buf) => break !buf.is_empty(),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        self.client.set_read_timeout(Some(READ))?;
        Ok(ready)
    }

    /// Sends a request upstream and reads the response, on the kept
    /// connection or a new one (once more on a new one if the kept one turns
    /// out closed before answering).
    fn forward(&mut self, raw: &[u8], head_request: bool) -> io::Result<Response> {
        loop {
            let fresh = self.upstream.is_none();
            if fresh {
                let stream = TcpStream::connect_timeout(&self.shared.upstream, READ)?;
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(READ))?;
                let reader = BufReader::new(stream.try_clone()?);
                self.upstream = Some((stream, reader));
            }
            let (stream, reader) = self.upstream.as_mut().unwrap();
            let sent = stream.write_all(raw);
            let response = match sent {
                Ok(()) => read_response(reader, head_request),
                Err(e) => Err(e),
            };
            match response {
                Ok(Some(response)) => return Ok(response),
                Ok(None) if !fresh => self.upstream = None,
                Err(e) if !fresh && e.kind() != io::ErrorKind::TimedOut => self.upstream = None,
                Ok(None) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Err(e) => return Err(e),
            }
        }
    }
}

fn error_response(slow_down: bool, n: usize, close: bool) -> Vec<u8> {
    let (status, code, message) = if slow_down {
        (
            "503 Service Unavailable",
            "SlowDown",
            "Please reduce your request rate.",
        )
    } else {
        (
            "500 Internal Server Error",
            "InternalError",
            "We encountered an internal error. Please try again.",
        )
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>fault-{n}</RequestId></Error>"
    );
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         x-amz-request-id: fault-{n}\r\n{connection}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilEof,
}

struct Head {
    raw: Vec<u8>,
    start: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.values(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Body framing from `Transfer-Encoding` / `Content-Length`, if any.
    fn body_framing(&self) -> io::Result<Option<Framing>> {
        if self.values("transfer-encoding").next().is_some() {
            return if self.has_token("transfer-encoding", "chunked") {
                Ok(Some(Framing::Chunked))
            } else {
                Ok(Some(Framing::UntilEof))
            };
        }
        match self.values("content-length").next() {
            Some(v) => v
                .trim()
                .parse()
                .map(|n| Some(Framing::Length(n)))
                .map_err(|_| invalid(format!("bad Content-Length {v:?}"))),
            None => Ok(None),
        }
    }

    fn version_1_0(&self, version: &str) -> bool {
        version == "HTTP/1.0" && !self.has_token("connection", "keep-alive")
    }
}

struct Request {
    head: Head,
    method: String,
    framing: Framing,
    close: bool,
    expect_continue: bool,
}

impl Request {
    fn parse(head: Head) -> io::Result<Request> {
        let mut words = head.start.split_whitespace();
        let (Some(method), Some(_target), Some(version)) =
            (words.next(), words.next(), words.next())
        else {
            return Err(invalid(format!("bad request line {:?}", head.start)));
        };
        let method = method.to_owned();
        let framing = head.body_framing()?.unwrap_or(Framing::None);
        if framing == Framing::UntilEof {
            return Err(invalid("request body without length".into()));
        }
        let close = head.has_token("connection", "close") || head.version_1_0(version);
        let expect_continue = head.has_token("expect", "100-continue");
        Ok(Request {
            head,
            method,
            framing,
            close,
            expect_continue,
        })
    }
}

struct Response {
    raw: Vec<u8>,
    close: bool,
}

/// Reads a final response (interim 1xx ones are dropped: the proxy answered
/// `Expect: 100-continue` itself). `None`: the connection was closed first.
fn read_response(r: &mut impl BufRead, head_request: bool) -> io::Result<Option<Response>> {
    loop {
        let Some(head) = read_head(r)? else {
            return Ok(None);
        };
        let mut words = head.start.split_whitespace();
        let version = words.next().unwrap_or_default().to_owned();
        let status: u16 = words
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {:?}", head.start)))?;
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let framing = if head_request || status == 204 || status == 304 {
            Framing::None
        } else {
            head.body_framing()?.unwrap_or(Framing::UntilEof)
        };
        let close = head.has_token("connection", "close")
            || head.version_1_0(&version)
            || framing == Framing::UntilEof;
        let mut raw = head.raw;
        read_body(r, framing, &mut raw)?;
        return Ok(Some(Response { raw, close }));
    }
}

/// Reads a message head, up to and including the empty line. `None`: EOF
/// before its first byte.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut raw = Vec::new();
    let mut lines = Vec::new();
    loop {
        let before = raw.len();
        let n = r.by_ref().take(16 * 1024).read_until(b'\n', &mut raw)?;
        if n == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        if raw.len() > 64 * 1024 || !raw.ends_with(b"\n") {
            return Err(invalid("message head too long".into()));
        }
        let line = String::from_utf8_lossy(&raw[before..])
            .trim_end_matches(['\r', '\n'])
            .to_owned();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // a stray CRLF before a message
            }
            break;
        }
        lines.push(line);
    }
    let start = lines.remove(0);
    let headers = lines
        .into_iter()
        .map(|l| match l.split_once(':') {
            Some((n, v)) => Ok((n.trim().to_owned(), v.trim().to_owned())),
            None => Err(invalid(format!("bad header line {l:?}"))),
        })
        .collect::<io::Result<_>>()?;
    Ok(Some(Head {
        raw,
        start,
        headers,
    }))
}

fn read_body(r: &mut impl BufRead, framing: Framing, raw: &mut Vec<u8>) -> io::Result<()> {
    match framing {
        Framing::None => Ok(()),
        Framing::Length(n) => copy_exact(r, n, raw),
        Framing::UntilEof => r.read_to_end(raw).map(drop),
        Framing::Chunked => loop {
            let line = read_line(r, raw)?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                // Trailer fields, then the empty line.
                while !read_line(r, raw)?.is_empty() {}
                return Ok(());
            }
            copy_exact(r, size, raw)?;
            if !read_line(r, raw)?.is_empty() {
                return Err(invalid("chunk not followed by CRLF".into()));
            }
        },
    }
}

fn read_line(r: &mut impl BufRead, raw: &mut Vec<u8>) -> io::Result<String> {
    let before = raw.len();
    let n = r.by_ref().take(16 * 1024).read_until(b'\n', raw)?;
    if n == 0 || !raw.ends_with(b"\n") {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(String::from_utf8_lossy(&raw[before..])
        .trim_end_matches(['\r', '\n'])
        .to_owned())
}

fn copy_exact(r: &mut impl BufRead, n: u64, raw: &mut Vec<u8>) -> io::Result<()> {
    let copied = r.by_ref().take(n).read_to_end(raw)?;
    if copied as u64 == n {
        Ok(())
    } else {
        Err(io::ErrorKind::UnexpectedEof.into())
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}
