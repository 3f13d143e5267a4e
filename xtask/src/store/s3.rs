//! The S3 store (aws-sdk-s3, the standard credential chain: environment,
//! profile, web identity for OIDC in Actions). Large files go up as
//! multipart uploads with bounded concurrency and memory, a CRC32 per part
//! and the whole file's SHA-256 in the object's metadata; a multipart upload
//! that finally fails is aborted, so no orphaned parts stay behind.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use base64::Engine;
use sha2::{Digest, Sha256};

use super::{Put, Stat, Store};

/// Files up to this size go up in one request.
const SINGLE_PUT_MAX: u64 = 16 << 20;
/// Multipart part size (S3's minimum is 5 MiB). On the loopback benchmark
/// 8 MiB parts beat 16 and 32 MiB: the server hashes and stores each part
/// while the next ones arrive.
const PART_SIZE: u64 = 8 << 20;
/// Parts in flight at once: memory stays under this many parts.
const PARTS_IN_FLIGHT: usize = 8;

pub struct S3Store {
    rt: tokio::runtime::Runtime,
    client: Client,
    bucket: String,
    prefix: String,
}

impl S3Store {
    /// `prefix` is prepended to every key (no leading or trailing `/`).
    pub fn new(bucket: &str, prefix: &str) -> Result<S3Store> {
        Self::with_loader(bucket, prefix, aws_config::from_env())
    }

    /// A store on an explicit endpoint with static credentials (benchmarks).
    pub fn for_endpoint(
        bucket: &str,
        endpoint: &str,
        access_key: &str,
        secret_key: &str,
    ) -> Result<S3Store> {
        let creds = aws_sdk_s3::config::Credentials::new(
            access_key,
            secret_key,
            None,
            None,
            "slurm-factory",
        );
        let loader = aws_config::from_env()
            .endpoint_url(endpoint)
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(creds);
        Self::with_loader(bucket, "", loader)
    }

    fn with_loader(
        bucket: &str,
        prefix: &str,
        loader: aws_config::ConfigLoader,
    ) -> Result<S3Store> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let conf = rt.block_on(loader.load());
        // S3-compatible servers on a custom endpoint want path-style addressing.
        let custom_endpoint = conf.endpoint_url().is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3")
                .or_else(|| std::env::var_os("AWS_ENDPOINT_URL"))
                .is_some();
        let s3conf = aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(custom_endpoint)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(8)
                    .with_initial_backoff(Duration::from_millis(200)),
            )
            .build();
        Ok(S3Store {
            rt,
            client: Client::from_conf(s3conf),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }

    fn key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }
}

/// One line, without secrets: the service's code and message, or the cause.
fn explain<E>(what: &str, e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let forbidden = e.raw_response().map(|r| r.status().as_u16() == 403);
    let detail = match e.as_service_error() {
        Some(se) if se.code().is_some() => {
            format!(
                "{}: {}",
                se.code().unwrap_or(""),
                se.message().unwrap_or("")
            )
        }
        _ => DisplayErrorContext(&e).to_string(),
    };
    let hint = if forbidden == Some(true)
        || detail.contains("SignatureDoesNotMatch")
        || detail.contains("InvalidAccessKeyId")
    {
        " (check the AWS credentials and their permissions)"
    } else {
        ""
    };
    anyhow::anyhow!("{what}: {detail}{hint}")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Store for S3Store {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn stat(&self, key: &str) -> Result<Option<Stat>> {
        let key = self.key(key);
        self.rt.block_on(async {
            match self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
            {
                Ok(out) => Ok(Some(Stat {
                    size: out.content_length().unwrap_or(0).max(0) as u64,
                    sha256: out.metadata().and_then(|m| m.get("sha256")).cloned(),
                })),
                Err(e) if e.as_service_error().is_some_and(|se| se.is_not_found()) => Ok(None),
                Err(e) => Err(explain(&format!("s3://{}/{key}", self.bucket), e)),
            }
        })
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = self.key(key);
        Ok(self.rt.block_on(self.fetch(&key))?.map(|(bytes, _)| bytes))
    }

    fn put(
        &self,
        key: &str,
        file: &Path,
        put: &Put,
        progress: &indicatif::ProgressBar,
    ) -> Result<()> {
        let key = self.key(key);
        let at = format!("s3://{}/{key}", self.bucket);
        self.rt.block_on(async {
            if put.size <= SINGLE_PUT_MAX {
                let bytes = tokio::fs::read(file)
                    .await
                    .with_context(|| format!("reading {}", file.display()))?;
                let sha = Sha256::digest(&bytes);
                let actual = crate::checksum::hex(&sha);
                if actual != put.sha256 {
                    return Err(super::mismatch(file, &actual, &put.sha256));
                }
                self.put_request(&key, bytes, &sha, put.content_type, put.cache_control)
                    .customize()
                    .disable_payload_signing()
                    .send()
                    .await
                    .map_err(|e| explain(&at, e))?;
                progress.inc(put.size);
                return Ok(());
            }
            self.multipart(&key, &at, file, put, progress).await
        })
    }

    /// Read-modify-write with S3's conditional writes: the new object goes
    /// up only if the one read is still there (`If-Match` its ETag, or
    /// `If-None-Match: *` when there was none). A concurrent writer makes
    /// that fail with 412 (or 409); then it reads again and retries, so no
    /// writer's change is lost.
    fn update(
        &self,
        key: &str,
        cache_control: Option<&'static str>,
        change: super::Change<'_>,
    ) -> Result<bool> {
        let full = self.key(key);
        let at = format!("s3://{}/{full}", self.bucket);
        for attempt in 0..20u64 {
            let (current, etag) = match self.rt.block_on(self.fetch(&full))? {
                Some((bytes, etag)) => (Some(bytes), etag),
                None => (None, None),
            };
            let existed = current.is_some();
            let Some(bytes) = change(current)? else {
                return Ok(false);
            };
            let sha = Sha256::digest(&bytes);
            let written = self.rt.block_on(async {
                let req =
                    self.put_request(&full, bytes, &sha, super::content_type(key), cache_control);
                let req = match (&etag, existed) {
                    (Some(tag), _) => req.if_match(tag),
                    (None, false) => req.if_none_match("*"),
                    (None, true) => req,
                };
                match req.customize().disable_payload_signing().send().await {
                    Ok(_) => Ok(true),
                    Err(e)
                        if e.raw_response()
                            .is_some_and(|r| matches!(r.status().as_u16(), 409 | 412)) =>
                    {
                        Ok(false)
                    }
                    Err(e) => Err(explain(&at, e)),
                }
            })?;
            if written {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(50 + 50 * attempt));
        }
        bail!("{at}: changed by other writers 20 times in a row; run again")
    }
}

impl S3Store {
    /// An object's bytes and ETag (`key` already prefixed); `None` if absent.
    async fn fetch(&self, key: &str) -> Result<Option<(Vec<u8>, Option<String>)>> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let etag = out.e_tag.clone();
                let bytes = out.body.collect().await.context("reading the object")?;
                Ok(Some((bytes.into_bytes().to_vec(), etag)))
            }
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => Ok(None),
            Err(e) => Err(explain(&format!("s3://{}/{key}", self.bucket), e)),
        }
    }

    /// A single PutObject of `bytes` (`key` already prefixed) with their
    /// SHA-256 as metadata and as the checksum S3 verifies.
    fn put_request(
        &self,
        key: &str,
        bytes: Vec<u8>,
        sha: &[u8],
        content_type: &str,
        cache_control: Option<&str>,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .metadata("sha256", crate::checksum::hex(sha))
            .checksum_sha256(b64(sha))
            .body(ByteStream::from(bytes))
            .set_cache_control(cache_control.map(str::to_string))
    }

    async fn multipart(
        &self,
        key: &str,
        at: &str,
        file: &Path,
        put: &Put,
        progress: &indicatif::ProgressBar,
    ) -> Result<()> {
        self.abort_interrupted(key, at).await?;
        // At most 10,000 parts: big files get bigger parts.
        let part_size = PART_SIZE.max(put.size.div_ceil(9_000));
        let parts = put.size.div_ceil(part_size);
        let mut req = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(put.content_type)
            .metadata("sha256", &put.sha256)
            .checksum_algorithm(ChecksumAlgorithm::Crc32);
        if let Some(cc) = put.cache_control {
            req = req.cache_control(cc);
        }
        let created = req.send().await.map_err(|e| explain(at, e))?;
        let upload_id = created.upload_id().context("no upload id")?.to_string();
        let result = self
            .upload_parts(key, file, put, &upload_id, part_size, parts, progress)
            .await;
        let completed = match result {
            Ok(done) => self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(done))
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| explain(at, e)),
            Err(e) => Err(e),
        };
        if let Err(e) = completed {
            // Retries are spent: remove the parts rather than leave them billed and invisible.
            let abort = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
            let note = if abort.is_err() {
                " (and aborting the multipart upload failed too)"
            } else {
                ""
            };
            return Err(e.context(format!("uploading {at}{note}")));
        }
        Ok(())
    }

    /// Aborts the multipart uploads of `key` that a killed publish left
    /// behind (S3 keeps them, billed and invisible, until aborted). Uploads
    /// of one key never overlap in the pipeline: the release job is one at a
    /// time. A bucket lifecycle rule (AbortIncompleteMultipartUpload) is the
    /// safety net for keys nobody publishes again.
    async fn abort_interrupted(&self, key: &str, at: &str) -> Result<()> {
        let listed = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(key)
            .send()
            .await
            .map_err(|e| explain(at, e))?;
        for upload in listed.uploads().iter().filter(|u| u.key() == Some(key)) {
            let Some(id) = upload.upload_id() else {
                continue;
            };
            self.client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(id)
                .send()
                .await
                .map_err(|e| explain(at, e))?;
            outln!("aborted an interrupted upload of {at}");
        }
        Ok(())
    }

    /// Reads the parts in order, hashing the whole file as it goes, while up
    /// to `PARTS_IN_FLIGHT` of them upload; the file must have `put.sha256`
    /// before the upload is completed (else the caller aborts it).
    #[allow(clippy::too_many_arguments)]
    async fn upload_parts(
        &self,
        key: &str,
        file: &Path,
        put: &Put,
        upload_id: &str,
        part_size: u64,
        parts: u64,
        progress: &indicatif::ProgressBar,
    ) -> Result<Vec<CompletedPart>> {
        let path = file.to_path_buf();
        let file = Arc::new(
            std::fs::File::open(file).with_context(|| format!("reading {}", file.display()))?,
        );
        let size = file.metadata()?.len();
        if size != put.size {
            bail!(
                "{} is {size} bytes now, {} when the upload was planned: it changed",
                path.display(),
                put.size
            );
        }
        let mut whole = Some(Sha256::new());
        let mut tasks = tokio::task::JoinSet::new();
        let mut done = Vec::with_capacity(parts as usize);
        let mut next = 0u64;
        while next < parts || !tasks.is_empty() {
            while next < parts && tasks.len() < PARTS_IN_FLIGHT {
                let offset = next * part_size;
                let reader = Arc::clone(&file);
                let mut sha = whole.take().expect("one reader at a time");
                let (bytes, crc, sha) =
                    tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, String, Sha256)> {
                        let len = part_size.min(size - offset) as usize;
                        let mut buf = vec![0u8; len];
                        reader.read_exact_at(&mut buf, offset)?;
                        sha.update(&buf);
                        // CRC32 per part (SIMD, ~10 GB/s): S3 checks each part
                        // with it; the whole file's SHA-256 is in the metadata.
                        let crc = b64(&crc32fast::hash(&buf).to_be_bytes());
                        Ok((buf, crc, sha))
                    })
                    .await??;
                whole = Some(sha);
                let (client, bucket, key, upload_id) = (
                    self.client.clone(),
                    self.bucket.clone(),
                    key.to_string(),
                    upload_id.to_string(),
                );
                let number = next + 1;
                tasks.spawn(async move {
                    let len = bytes.len() as u64;
                    let out = client
                        .upload_part()
                        .bucket(bucket)
                        .key(key)
                        .upload_id(upload_id)
                        .part_number(number as i32)
                        .checksum_crc32(&crc)
                        .body(ByteStream::from(bytes))
                        // The checksum header already protects the body;
                        // signing it again would hash every byte once more.
                        .customize()
                        .disable_payload_signing()
                        .send()
                        .await
                        .map_err(|e| explain(&format!("part {number}"), e))?;
                    let part = CompletedPart::builder()
                        .part_number(number as i32)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .checksum_crc32(crc)
                        .build();
                    anyhow::Ok((part, len))
                });
                next += 1;
            }
            if let Some(joined) = tasks.join_next().await {
                let (part, len) = joined.context("an upload task panicked")??;
                progress.inc(len);
                done.push(part);
            }
        }
        done.sort_by_key(|p| p.part_number());
        if done.len() as u64 != parts {
            bail!("{} of {parts} parts uploaded", done.len());
        }
        let actual = crate::checksum::hex(&whole.expect("returned").finalize());
        if actual != put.sha256 {
            return Err(super::mismatch(&path, &actual, &put.sha256));
        }
        Ok(done)
    }
}

/// An object's body, piece by piece.
struct ObjectChunks {
    rt: tokio::runtime::Handle,
    body: aws_sdk_s3::primitives::ByteStream,
}

impl super::Chunks for ObjectChunks {
    fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>> {
        let body = &mut self.body;
        self.rt
            .block_on(body.next())
            .transpose()
            .context("reading the object")
    }
}

impl super::Fetch for S3Store {
    fn describe(&self) -> String {
        Store::describe(self)
    }

    fn open(&self, key: &str, from: u64) -> Result<Option<Box<dyn super::Chunks>>> {
        let key = self.key(key);
        let mut req = self.client.get_object().bucket(&self.bucket).key(&key);
        if from > 0 {
            req = req.range(format!("bytes={from}-"));
        }
        match self.rt.block_on(req.send()) {
            Ok(out) => Ok(Some(Box::new(ObjectChunks {
                rt: self.rt.handle().clone(),
                body: out.body,
            }))),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => Ok(None),
            Err(e) => Err(explain(&format!("s3://{}/{key}", self.bucket), e)),
        }
    }
}
