//! The loopback S3 server and fault proxy of `support::s3`, driven with the
//! same SDK the toolkit uses.

use std::time::Duration;

use crate::support::s3::{FaultProxy, Faults, S3Server};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use base64::Engine as _;
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;

/// A client configured from an `env()` list only, as the toolkit would be,
/// with `secret` instead of the listed secret if given.
fn client(env: &[(&str, String)], secret: Option<&str>, max_attempts: u32) -> Client {
    let get = |name: &str| {
        env.iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name} not in env()"))
            .1
            .clone()
    };
    let secret = secret.map_or_else(|| get("AWS_SECRET_ACCESS_KEY"), str::to_owned);
    let credentials = Credentials::new(get("AWS_ACCESS_KEY_ID"), secret, None, None, "test");
    let retry = RetryConfig::standard()
        .with_max_attempts(max_attempts)
        .with_initial_backoff(Duration::from_millis(10))
        .with_max_backoff(Duration::from_millis(100));
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(get("AWS_REGION")))
        .endpoint_url(get("AWS_ENDPOINT_URL"))
        .credentials_provider(credentials)
        .force_path_style(true)
        .retry_config(retry)
        .build();
    Client::from_conf(config)
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u64)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(u64::from(seed)) as u8
        })
        .map(|b| b ^ seed)
        .collect()
}

fn sha256_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<String> {
    match err {
        SdkError::ServiceError(e) => e.err().code().map(str::to_owned),
        _ => None,
    }
}

async fn get(client: &Client, bucket: &str, key: &str) -> Vec<u8> {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

#[test]
fn env_names_the_server_and_nothing_else() {
    let server = S3Server::start();
    let env = server.env();
    let value = |name: &str| env.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    assert_eq!(value("AWS_ACCESS_KEY_ID"), "AKIATEST");
    assert_eq!(value("AWS_SECRET_ACCESS_KEY"), "test-secret");
    assert_eq!(value("AWS_REGION"), "us-east-1");
    assert_eq!(value("AWS_ENDPOINT_URL"), server.endpoint);
    assert_eq!(value("AWS_EC2_METADATA_DISABLED"), "true");
    for file in ["AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"] {
        assert!(!std::path::Path::new(&value(file)).exists());
    }
    assert!(server.endpoint.starts_with("http://127.0.0.1:"));
    assert!(server.root.join(&server.bucket).is_dir());
}

#[tokio::test]
async fn put_get_list_round_trip() {
    let server = S3Server::start();
    let s3 = client(&server.env(), None, 1);
    let b = &server.bucket;
    let objects = [
        ("slurm/25.11/slurm.tar.gz", data(300_000, 1)),
        (
            "slurm/25.11/slurm.tar.gz.sha256",
            b"abc  slurm.tar.gz\n".to_vec(),
        ),
        ("other/empty", Vec::new()),
    ];
    for (key, body) in &objects {
        s3.put_object()
            .bucket(b)
            .key(*key)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap();
    }
    for (key, body) in &objects {
        assert_eq!(&get(&s3, b, key).await, body, "{key}");
        assert_eq!(server.object(key).as_ref(), Some(body), "{key}");
    }
    assert_eq!(server.object("nope"), None);
    assert_eq!(
        server.keys(),
        [
            "other/empty",
            "slurm/25.11/slurm.tar.gz",
            "slurm/25.11/slurm.tar.gz.sha256"
        ]
    );

    let listed = s3
        .list_objects_v2()
        .bucket(b)
        .prefix("slurm/")
        .send()
        .await
        .unwrap();
    let mut keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "slurm/25.11/slurm.tar.gz",
            "slurm/25.11/slurm.tar.gz.sha256"
        ]
    );
    let sizes: Vec<i64> = listed.contents().iter().filter_map(|o| o.size()).collect();
    assert!(sizes.contains(&300_000), "{sizes:?}");

    let err = s3
        .head_object()
        .bucket(b)
        .key("nope")
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_not_found());

    // An object put in the directory is served too.
    server.put("seeded/x", b"seeded");
    assert_eq!(get(&s3, b, "seeded/x").await, b"seeded");
}

#[tokio::test]
async fn metadata_and_cache_control_round_trip() {
    let server = S3Server::start();
    let s3 = client(&server.env(), None, 1);
    let body = data(10_000, 2);
    let digest = sha256_hex(&body);
    s3.put_object()
        .bucket(&server.bucket)
        .key("k.tar.gz")
        .body(ByteStream::from(body.clone()))
        .metadata("sha256", &digest)
        .cache_control("public, max-age=300")
        .content_type("application/gzip")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap();

    let head = s3
        .head_object()
        .bucket(&server.bucket)
        .key("k.tar.gz")
        .send()
        .await
        .unwrap();
    assert_eq!(head.metadata().and_then(|m| m.get("sha256")), Some(&digest));
    assert_eq!(head.cache_control(), Some("public, max-age=300"));
    assert_eq!(head.content_type(), Some("application/gzip"));
    assert_eq!(head.content_length(), Some(10_000));
    assert_eq!(head.checksum_sha256(), Some(sha256_b64(&body).as_str()));

    let got = s3
        .get_object()
        .bucket(&server.bucket)
        .key("k.tar.gz")
        .send()
        .await
        .unwrap();
    assert_eq!(got.cache_control(), Some("public, max-age=300"));
    assert_eq!(got.metadata().and_then(|m| m.get("sha256")), Some(&digest));
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().to_vec(),
        body
    );
}

#[tokio::test]
async fn multipart_upload_with_sha256_part_checksums() {
    let server = S3Server::start();
    let s3 = client(&server.env(), None, 1);
    let b = &server.bucket;
    let key = "big/slurm.tar.gz";
    let part1 = data(5 * MIB, 3);
    let part2 = data(MIB + 7, 4);
    let whole = [part1.clone(), part2.clone()].concat();

    let created = s3
        .create_multipart_upload()
        .bucket(b)
        .key(key)
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .metadata("sha256", sha256_hex(&whole))
        .cache_control("no-cache")
        .send()
        .await
        .unwrap();
    let id = created.upload_id().unwrap();
    assert_eq!(server.incomplete_uploads(), 1);

    // Part 1 in memory with the checksum given: sent as a header.
    let up1 = s3
        .upload_part()
        .bucket(b)
        .key(key)
        .upload_id(id)
        .part_number(1)
        .checksum_sha256(sha256_b64(&part1))
        .body(ByteStream::from(part1.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(up1.checksum_sha256(), Some(sha256_b64(&part1).as_str()));

    // Part 2 streamed from a file, the SDK computing the checksum: sent as
    // a trailer of an aws-chunked body.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &part2).unwrap();
    let up2 = s3
        .upload_part()
        .bucket(b)
        .key(key)
        .upload_id(id)
        .part_number(2)
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .body(ByteStream::from_path(file.path()).await.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(up2.checksum_sha256(), Some(sha256_b64(&part2).as_str()));

    let listed = s3.list_multipart_uploads().bucket(b).send().await.unwrap();
    let uploads: Vec<(&str, &str)> = listed
        .uploads()
        .iter()
        .map(|u| (u.key().unwrap(), u.upload_id().unwrap()))
        .collect();
    assert_eq!(uploads, [(key, id)]);

    let parts = vec![completed(1, &up1), completed(2, &up2)];
    complete(&s3, b, key, id, parts).await;

    assert_eq!(server.incomplete_uploads(), 0);
    let listed = s3.list_multipart_uploads().bucket(b).send().await.unwrap();
    assert!(listed.uploads().is_empty());
    assert!(server.object(key).unwrap() == whole, "object differs");
    assert!(get(&s3, b, key).await == whole, "object read back differs");
    let head = s3.head_object().bucket(b).key(key).send().await.unwrap();
    assert_eq!(
        head.metadata().and_then(|m| m.get("sha256")),
        Some(&sha256_hex(&whole))
    );
    assert_eq!(head.cache_control(), Some("no-cache"));
    assert_eq!(head.content_length(), Some(whole.len() as i64));
}

#[tokio::test]
async fn multipart_checksums_are_checked() {
    let server = S3Server::start();
    let s3 = client(&server.env(), None, 1);
    let b = &server.bucket;
    let created = s3
        .create_multipart_upload()
        .bucket(b)
        .key("k")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap();
    let id = created.upload_id().unwrap();
    let part = data(1000, 5);

    let err = s3
        .upload_part()
        .bucket(b)
        .key("k")
        .upload_id(id)
        .part_number(1)
        .checksum_sha256(sha256_b64(b"something else"))
        .body(ByteStream::from(part.clone()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err).as_deref(), Some("BadDigest"), "{err:?}");

    s3.upload_part()
        .bucket(b)
        .key("k")
        .upload_id(id)
        .part_number(1)
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .body(ByteStream::from(part.clone()))
        .send()
        .await
        .unwrap();
    let without_checksum = CompletedMultipartUpload::builder()
        .parts(CompletedPart::builder().part_number(1).build())
        .build();
    let err = s3
        .complete_multipart_upload()
        .bucket(b)
        .key("k")
        .upload_id(id)
        .multipart_upload(without_checksum)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err).as_deref(), Some("InvalidRequest"), "{err:?}");
    assert_eq!(server.incomplete_uploads(), 1);
    assert_eq!(server.object("k"), None);
}

#[tokio::test]
async fn incomplete_uploads_sees_unfinished_uploads() {
    let server = S3Server::start();
    let s3 = client(&server.env(), None, 1);
    let b = &server.bucket;
    assert_eq!(server.incomplete_uploads(), 0);
    let mut ids = Vec::new();
    for key in ["a", "b"] {
        let created = s3
            .create_multipart_upload()
            .bucket(b)
            .key(key)
            .send()
            .await
            .unwrap();
        let id = created.upload_id().unwrap().to_owned();
        s3.upload_part()
            .bucket(b)
            .key(key)
            .upload_id(&id)
            .part_number(1)
            .body(ByteStream::from(data(100, 6)))
            .send()
            .await
            .unwrap();
        ids.push((key, id));
    }
    assert_eq!(server.incomplete_uploads(), 2);
    let listed = s3
        .list_multipart_uploads()
        .bucket(b)
        .prefix("b")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.uploads().len(), 1);
    assert_eq!(listed.uploads()[0].key(), Some("b"));

    let (key, id) = &ids[0];
    s3.abort_multipart_upload()
        .bucket(b)
        .key(*key)
        .upload_id(id)
        .send()
        .await
        .unwrap();
    assert_eq!(server.incomplete_uploads(), 1);
    let listed = s3.list_multipart_uploads().bucket(b).send().await.unwrap();
    assert_eq!(listed.uploads().len(), 1);
    assert_eq!(listed.uploads()[0].upload_id(), Some(ids[1].1.as_str()));
    assert!(server.keys().is_empty());
}

#[tokio::test]
async fn a_wrong_secret_gets_signature_does_not_match() {
    let server = S3Server::start();
    let s3 = client(&server.env(), Some("wrong-secret"), 1);
    let err = s3
        .put_object()
        .bucket(&server.bucket)
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code(&err).as_deref(),
        Some("SignatureDoesNotMatch"),
        "{err:?}"
    );
    let err = s3
        .list_objects_v2()
        .bucket(&server.bucket)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err).as_deref(), Some("SignatureDoesNotMatch"));
    assert_eq!(server.object("k"), None);
}

#[tokio::test]
async fn retries_get_through_the_fault_proxy() {
    let server = S3Server::start();
    let proxy = FaultProxy::start(
        &server,
        Faults {
            error_every: 3,
            drop_every: 5,
            ..Faults::default()
        },
    );
    let s3 = client(&proxy.env(), None, 10);
    let b = &server.bucket;
    for (i, len) in [0, 1, 1000, 100_000, MIB, 3].into_iter().enumerate() {
        let key = format!("via-proxy/{i}");
        let body = data(len, i as u8);
        s3.put_object()
            .bucket(b)
            .key(&key)
            .body(ByteStream::from(body.clone()))
            .metadata("sha256", sha256_hex(&body))
            .send()
            .await
            .unwrap();
        assert!(server.object(&key).unwrap() == body, "{key} differs");
        assert!(get(&s3, b, &key).await == body, "{key} read back differs");
    }

    // A multipart upload: streamed aws-chunked parts, a chunked response.
    let part1 = data(5 * MIB, 7);
    let part2 = data(1234, 8);
    let created = s3
        .create_multipart_upload()
        .bucket(b)
        .key("via-proxy/big")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap();
    let id = created.upload_id().unwrap();
    let mut parts = Vec::new();
    for (n, part) in [(1, &part1), (2, &part2)] {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), part).unwrap();
        let up = s3
            .upload_part()
            .bucket(b)
            .key("via-proxy/big")
            .upload_id(id)
            .part_number(n)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .body(ByteStream::from_path(file.path()).await.unwrap())
            .send()
            .await
            .unwrap();
        parts.push(completed(n, &up));
    }
    complete(&s3, b, "via-proxy/big", id, parts).await;
    assert!(server.object("via-proxy/big").unwrap() == [part1, part2].concat());
    assert_eq!(server.incomplete_uploads(), 0);

    assert!(proxy.errors() >= 3, "errors: {}", proxy.errors());
    assert!(proxy.drops() >= 3, "drops: {}", proxy.drops());
    assert!(proxy.requests() > 20, "requests: {}", proxy.requests());
}

#[tokio::test]
async fn without_retries_the_faults_show() {
    let server = S3Server::start();
    let errors = FaultProxy::start(
        &server,
        Faults {
            error_every: 1,
            ..Faults::default()
        },
    );
    let s3 = client(&errors.env(), None, 1);
    let list = || s3.list_objects_v2().bucket(&server.bucket).send();
    let err = list().await.unwrap_err();
    assert_eq!(code(&err).as_deref(), Some("InternalError"), "{err:?}");
    let err = list().await.unwrap_err();
    assert_eq!(code(&err).as_deref(), Some("SlowDown"), "{err:?}");
    assert_eq!(errors.errors(), 2);

    let drops = FaultProxy::start(
        &server,
        Faults {
            drop_every: 2,
            ..Faults::default()
        },
    );
    let s3 = client(&drops.env(), None, 1);
    let list = || s3.list_objects_v2().bucket(&server.bucket).send();
    list().await.unwrap();
    let err = list().await.unwrap_err();
    assert!(matches!(err, SdkError::DispatchFailure(_)), "{err:?}");
    list().await.unwrap();
    assert_eq!((drops.requests(), drops.drops()), (3, 1));
}

/// Reads one response with a `Content-Length` body; returns its status line.
fn read_response(r: &mut impl std::io::BufRead) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        assert!(r.read_until(b'\n', &mut head).unwrap() > 0, "EOF");
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no Content-Length in {head}"));
    let mut body = vec![0; length];
    r.read_exact(&mut body).unwrap();
    head.lines().next().unwrap().to_owned()
}

#[test]
fn the_proxy_keeps_connections_alive_and_reads_chunked_bodies() {
    use std::io::{BufReader, Write};
    let server = S3Server::start();
    let proxy = FaultProxy::start(&server, Faults::default());
    let mut conn = std::net::TcpStream::connect(proxy.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let host = proxy.addr;
    write!(
        conn,
        "PUT /{}/raw HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\
         Expect: 100-continue\r\n\r\n",
        server.bucket
    )
    .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut r, &mut line).unwrap();
    assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
    std::io::BufRead::read_line(&mut r, &mut line).unwrap();
    conn.write_all(b"5\r\nhello\r\n3;x=y\r\n!!!\r\n0\r\nx-t: 1\r\n\r\n")
        .unwrap();
    // Unsigned: the server denies it, on a connection that stays open.
    assert!(read_response(&mut r).starts_with("HTTP/1.1 403"));
    write!(
        conn,
        "GET /{}/ HTTP/1.1\r\nHost: {host}\r\n\r\n",
        server.bucket
    )
    .unwrap();
    assert!(read_response(&mut r).starts_with("HTTP/1.1 403"));
    assert_eq!(proxy.requests(), 2);
    assert_eq!(server.object("raw"), None);
}

#[tokio::test]
async fn stop_closes_the_server() {
    let server = S3Server::start();
    let s3 = client(&server.env(), None, 1);
    let b = server.bucket.clone();
    let addr = server.addr;
    s3.put_object()
        .bucket(&b)
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    server.stop();

    assert!(std::net::TcpStream::connect(addr).is_err());

    // The client's pooled connection was closed under it: a connection
    // error that the SDK counts as transient, not yet an I/O one.
    let err = s3
        .head_object()
        .bucket(&b)
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(&err, SdkError::DispatchFailure(_)), "{err:?}");
    // The next connection is refused.
    let err = s3
        .head_object()
        .bucket(&b)
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SdkError::DispatchFailure(f) if f.is_io()),
        "{err:?}"
    );
}

/// The part as CompleteMultipartUpload names it.
fn completed(n: i32, up: &aws_sdk_s3::operation::upload_part::UploadPartOutput) -> CompletedPart {
    CompletedPart::builder()
        .part_number(n)
        .set_e_tag(up.e_tag().map(str::to_owned))
        .set_checksum_sha256(up.checksum_sha256().map(str::to_owned))
        .build()
}

async fn complete(s3: &Client, b: &str, key: &str, id: &str, parts: Vec<CompletedPart>) {
    s3.complete_multipart_upload()
        .bucket(b)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
}
