//! The fake GitHub Releases API in `tests/it/support/github.rs`, over real HTTP
//! with a small blocking client on `std::net`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use crate::support::github::{GitHubServer, OWNER, REPO};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 client: one request per connection, read to the end.

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{e}: status {} body {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Splits `http://HOST:PORT/path?query` into the address and the target.
fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("plain http URL");
    match rest.find('/') {
        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
        None => (rest.to_string(), "/".to_string()),
    }
}

fn send(url: &str, method: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<Resp> {
    let (addr, target) = split_url(url);
    let mut stream = TcpStream::connect(&addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head =
        format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: fake-test\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let sets_length = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    if !sets_length && (!body.is_empty() || matches!(method, "POST" | "PATCH" | "PUT")) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    read_response(&mut stream)
}

fn read_response(stream: &mut TcpStream) -> io::Result<Resp> {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    loop {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let rest = raw[end + 4..].to_vec();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or(io::ErrorKind::InvalidData)?;
        if status == 100 {
            raw = rest;
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        return Ok(Resp {
            status,
            headers,
            body: rest,
        });
    }
}

fn bearer(gh: &GitHubServer) -> String {
    format!("Bearer {}", gh.token)
}

/// An authenticated API call with an optional JSON body.
fn api(gh: &GitHubServer, method: &str, path: &str, body: Option<Value>) -> Resp {
    let auth = bearer(gh);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Accept", "application/vnd.github+json"),
    ];
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    send(
        &format!("{}{path}", gh.api_url),
        method,
        &headers,
        body.as_bytes(),
    )
    .unwrap()
}

fn releases_path() -> String {
    format!("/repos/{OWNER}/{REPO}/releases")
}

/// Publishes a draft: PATCH `{"draft": false}`.
fn publish(gh: &GitHubServer, id: u64) -> Resp {
    api(
        gh,
        "PATCH",
        &format!("{}/{id}", releases_path()),
        Some(json!({"draft": false})),
    )
}

fn create(gh: &GitHubServer, tag: &str, draft: bool) -> Resp {
    api(
        gh,
        "POST",
        &releases_path(),
        Some(json!({"tag_name": tag, "name": tag, "body": "notes", "draft": draft})),
    )
}

/// Uploads through the release's `upload_url` template, as clients must.
fn upload_to(gh: &GitHubServer, upload_url: &str, query: &str, bytes: &[u8]) -> io::Result<Resp> {
    let base = upload_url.strip_suffix("{?name,label}").unwrap();
    let auth = bearer(gh);
    send(
        &format!("{base}?{query}"),
        "POST",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/gzip"),
        ],
        bytes,
    )
}

fn upload(gh: &GitHubServer, release: &Value, name: &str, bytes: &[u8]) -> Resp {
    upload_to(
        gh,
        release["upload_url"].as_str().unwrap(),
        &format!("name={name}"),
        bytes,
    )
    .unwrap()
}

fn get(url: &str) -> Resp {
    send(url, "GET", &[], b"").unwrap()
}

/// The `Location` of a download's `302 Found`, which must be a storage URL on
/// the uploads listener (another host than the API's).
fn cdn_location(gh: &GitHubServer, resp: &Resp) -> String {
    assert_eq!(resp.status, 302, "{}", String::from_utf8_lossy(&resp.body));
    assert!(resp.body.is_empty());
    let location = resp.header("Location").expect("a Location").to_string();
    assert!(
        location.starts_with(&format!("{}/cdn/", gh.uploads_url)),
        "{location}"
    );
    assert!(location.contains("?sig="), "{location}");
    location
}

/// Follows a download's redirect without any credentials, as clients must.
fn follow(gh: &GitHubServer, resp: &Resp) -> Resp {
    get(&cdn_location(gh, resp))
}

/// The API form of an asset download: `Accept: application/octet-stream`.
fn api_download(gh: &GitHubServer, asset_id: u64) -> Resp {
    let auth = bearer(gh);
    send(
        &format!("{}{}/assets/{asset_id}", gh.api_url, releases_path()),
        "GET",
        &[
            ("Authorization", &auth),
            ("Accept", "application/octet-stream"),
        ],
        b"",
    )
    .unwrap()
}

/// A GET of a storage URL with a `Range` header.
fn get_range(url: &str, range: &str) -> Resp {
    send(url, "GET", &[("Range", range)], b"").unwrap()
}

/// A published release `tag` holding `name` with `bytes`; the asset's id.
fn published_asset(gh: &GitHubServer, tag: &str, name: &str, bytes: &[u8]) -> u64 {
    let release = gh.add_release(tag, false);
    gh.add_asset(release, name, bytes)
}

fn assert_validation(resp: &Resp, resource: &str, code: &str, field: &str) {
    assert_eq!(resp.status, 422, "{}", String::from_utf8_lossy(&resp.body));
    let body = resp.json();
    assert_eq!(body["message"], "Validation Failed");
    assert!(body["documentation_url"].is_string());
    assert_eq!(
        body["errors"][0],
        json!({"resource": resource, "code": code, "field": field}),
        "{body:#}"
    );
}

// ---------------------------------------------------------------------------

#[test]
fn draft_upload_publish_download_delete() {
    let gh = GitHubServer::start();

    // Create a draft: full release JSON, no publish date, upload_url on the
    // uploads host.
    let resp = create(&gh, "v1.0.0", true);
    assert_eq!(resp.status, 201);
    let draft = resp.json();
    let id = draft["id"].as_u64().unwrap();
    assert_eq!(resp.header("Location"), draft["url"].as_str());
    assert_eq!(draft["draft"], true);
    assert_eq!(draft["tag_name"], "v1.0.0");
    assert!(draft["published_at"].is_null());
    assert!(draft["tarball_url"].is_null());
    assert_eq!(draft["assets"], json!([]));
    assert_eq!(
        draft["upload_url"],
        format!(
            "{}/repos/owner/repo/releases/{id}/assets{{?name,label}}",
            gh.uploads_url
        )
    );
    assert!(
        draft["html_url"]
            .as_str()
            .unwrap()
            .contains("/releases/tag/untagged-")
    );

    // Upload an asset on the uploads host.
    let bytes = b"tarball bytes".repeat(1000);
    let resp = upload(&gh, &draft, "slurm.tar.gz", &bytes);
    assert_eq!(resp.status, 201, "{}", String::from_utf8_lossy(&resp.body));
    let asset = resp.json();
    let asset_id = asset["id"].as_u64().unwrap();
    assert_eq!(asset["name"], "slurm.tar.gz");
    assert_eq!(asset["state"], "uploaded");
    assert_eq!(asset["size"], bytes.len());
    assert_eq!(asset["content_type"], "application/gzip");
    assert_eq!(asset["download_count"], 0);
    assert!(asset["digest"].as_str().unwrap().starts_with("sha256:"));
    let draft_download = asset["browser_download_url"].as_str().unwrap().to_string();
    assert!(draft_download.contains("/releases/download/untagged-"));

    // The same path on the API host is not an upload endpoint.
    let resp = api(
        &gh,
        "POST",
        &format!("{}/{id}/assets?name=other.tar.gz", releases_path()),
        None,
    );
    assert_eq!(resp.status, 404);

    // A name already on the release is refused.
    let resp = upload(&gh, &draft, "slurm.tar.gz", b"again");
    assert_validation(&resp, "ReleaseAsset", "already_exists", "name");

    // While a draft: listed, got by id, not found by tag, not downloadable
    // anonymously, but its bytes come through the API.
    let list = api(&gh, "GET", &releases_path(), None).json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["assets"][0]["name"], "slurm.tar.gz");
    assert_eq!(
        api(&gh, "GET", &format!("{}/{id}", releases_path()), None).status,
        200
    );
    let by_tag = format!("{}/tags/v1.0.0", releases_path());
    assert_eq!(api(&gh, "GET", &by_tag, None).status, 404);
    assert_eq!(get(&draft_download).status, 404);
    assert_eq!(get(&gh.download_url("v1.0.0", "slurm.tar.gz")).status, 404);
    let asset_path = format!("{}/assets/{asset_id}", releases_path());
    let resp = follow(&gh, &api_download(&gh, asset_id));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, bytes);
    let listed = api(
        &gh,
        "GET",
        &format!("{}/{id}/assets", releases_path()),
        None,
    )
    .json();
    assert_eq!(listed[0]["id"], asset_id);

    // Drafts do not own their tag: a second draft for it is accepted.
    let second = create(&gh, "v1.0.0", true);
    assert_eq!(second.status, 201);
    let second_id = second.json()["id"].as_u64().unwrap();

    // Publish the first.
    let resp = api(
        &gh,
        "PATCH",
        &format!("{}/{id}", releases_path()),
        Some(json!({"draft": false, "make_latest": "true"})),
    );
    assert_eq!(resp.status, 200);
    let published = resp.json();
    assert_eq!(published["draft"], false);
    assert!(published["published_at"].is_string());
    assert!(
        published["html_url"]
            .as_str()
            .unwrap()
            .ends_with("/releases/tag/v1.0.0")
    );
    let resp = api(&gh, "GET", &by_tag, None);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["id"], id);

    // Now the tag is taken: neither a new published release nor publishing
    // the other draft may have it.
    assert_validation(
        &create(&gh, "v1.0.0", false),
        "Release",
        "already_exists",
        "tag_name",
    );
    let resp = publish(&gh, second_id);
    assert_validation(&resp, "Release", "already_exists", "tag_name");

    // Downloads: by the tag now, anonymously; the draft-time URL is gone.
    let public_url = published["assets"][0]["browser_download_url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(public_url, gh.download_url("v1.0.0", "slurm.tar.gz"));
    let resp = follow(&gh, &get(&public_url));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, bytes);
    assert_eq!(get(&draft_download).status, 404);
    let state = gh.release("v1.0.0").unwrap();
    assert_eq!(state.id, second_id, "newest first");
    let first = gh.releases().into_iter().find(|r| r.id == id).unwrap();
    assert!(!first.draft);
    assert_eq!(first.assets[0].download_count, 1);
    assert_eq!(first.assets[0].bytes, bytes);

    // Delete the asset: gone from the API, the download and the state.
    assert_eq!(api(&gh, "DELETE", &asset_path, None).status, 204);
    assert_eq!(api(&gh, "GET", &asset_path, None).status, 404);
    assert_eq!(api(&gh, "DELETE", &asset_path, None).status, 404);
    assert_eq!(get(&public_url).status, 404);
    let first = gh.releases().into_iter().find(|r| r.id == id).unwrap();
    assert!(first.assets.is_empty());

    // Delete the releases.
    for rid in [id, second_id] {
        let path = format!("{}/{rid}", releases_path());
        assert_eq!(api(&gh, "DELETE", &path, None).status, 204);
        assert_eq!(api(&gh, "GET", &path, None).status, 404);
    }
    assert!(gh.releases().is_empty());
}

#[test]
fn asset_size_limit() {
    let limit = 1 << 20;
    let gh = GitHubServer::with_asset_limit(limit);
    let release = create(&gh, "v1", true).json();

    let over = vec![7u8; limit as usize + 1];
    let resp = upload(&gh, &release, "big.tar.gz", &over);
    assert_eq!(resp.status, 422);
    let body = resp.json();
    assert_eq!(body["errors"][0]["field"], "size");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 1048576 bytes"),
        "{body:#}"
    );
    assert!(gh.release("v1").unwrap().assets.is_empty());

    // Exactly at the limit is fine, and the refused name is free.
    let at = vec![7u8; limit as usize];
    let resp = upload(&gh, &release, "big.tar.gz", &at);
    assert_eq!(resp.status, 201);
    assert_eq!(gh.release("v1").unwrap().assets[0].bytes.len(), at.len());
}

#[test]
fn injected_upload_failures() {
    let gh = GitHubServer::start();
    let release = create(&gh, "v2", true).json();

    gh.fail_next_uploads(2, 502);
    assert_eq!(upload(&gh, &release, "a.tar.gz", b"aaa").status, 502);
    assert_eq!(upload(&gh, &release, "a.tar.gz", b"aaa").status, 502);
    assert!(gh.release("v2").unwrap().assets.is_empty());
    assert_eq!(upload(&gh, &release, "a.tar.gz", b"aaa").status, 201);

    gh.fail_next_uploads(1, 503);
    let resp = upload(&gh, &release, "b.tar.gz", b"bbb");
    assert_eq!(resp.status, 503);
    assert!(resp.json()["message"].is_string());
    let uploads: Vec<u16> = gh.upload_requests().iter().map(|r| r.status).collect();
    assert_eq!(uploads, [502, 502, 201, 503]);

    // GitHub's documented 502: an empty "starter" asset is left behind and
    // holds the name until deleted.
    gh.fail_next_upload_leaving_starter(502);
    assert_eq!(upload(&gh, &release, "c.tar.gz", b"ccc").status, 502);
    let state = gh.release("v2").unwrap();
    let starter = state.asset("c.tar.gz").unwrap();
    assert_eq!(starter.state, "starter");
    assert!(starter.bytes.is_empty());
    assert_validation(
        &upload(&gh, &release, "c.tar.gz", b"ccc"),
        "ReleaseAsset",
        "already_exists",
        "name",
    );
    let path = format!("{}/assets/{}", releases_path(), starter.id);
    assert_eq!(api(&gh, "DELETE", &path, None).status, 204);
    assert_eq!(upload(&gh, &release, "c.tar.gz", b"ccc").status, 201);
}

#[test]
fn broken_upload_leaves_a_starter_asset() {
    let gh = GitHubServer::start();
    let release = create(&gh, "v3", true).json();
    gh.break_next_upload();

    let bytes = vec![1u8; 64 * 1024];
    let url = release["upload_url"].as_str().unwrap();
    match upload_to(&gh, url, "name=x.tar.gz", &bytes) {
        Ok(resp) => panic!("expected a dropped connection, got {}", resp.status),
        Err(e) => eprintln!("dropped as expected: {e}"),
    }
    let log = gh.upload_requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].status, 0, "no response was sent");

    // The starter asset is listed, is not downloadable, and blocks the name.
    let state = gh.release("v3").unwrap();
    let starter = state.asset("x.tar.gz").unwrap().clone();
    assert_eq!(starter.state, "starter");
    let id = release["id"].as_u64().unwrap();
    let listed = api(
        &gh,
        "GET",
        &format!("{}/{id}/assets", releases_path()),
        None,
    )
    .json();
    assert_eq!(listed[0]["state"], "starter");
    assert_eq!(listed[0]["size"], 0);
    assert_validation(
        &upload(&gh, &release, "x.tar.gz", &bytes),
        "ReleaseAsset",
        "already_exists",
        "name",
    );

    // Delete it, and the upload goes through.
    let path = format!("{}/assets/{}", releases_path(), starter.id);
    assert_eq!(api(&gh, "DELETE", &path, None).status, 204);
    assert_eq!(upload(&gh, &release, "x.tar.gz", &bytes).status, 201);
    assert_eq!(gh.release("v3").unwrap().assets[0].state, "uploaded");
}

#[test]
fn client_going_away_mid_upload_leaves_a_starter_asset() {
    let gh = GitHubServer::start();
    let release = create(&gh, "v4", true).json();
    let base = release["upload_url"]
        .as_str()
        .unwrap()
        .strip_suffix("{?name,label}")
        .unwrap();
    let (addr, target) = split_url(&format!("{base}?name=half.tar.gz"));
    let mut stream = TcpStream::connect(&addr).unwrap();
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: token {}\r\n\
         Content-Type: application/gzip\r\nContent-Length: 1000\r\n\r\n",
        gh.token
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&[9u8; 100]).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "no response to a cut-off upload");

    let state = gh.release("v4").unwrap();
    assert_eq!(state.assets.len(), 1);
    assert_eq!(state.assets[0].state, "starter");
    assert!(state.assets[0].bytes.is_empty());
    assert_validation(
        &upload(&gh, &release, "half.tar.gz", b"whole"),
        "ReleaseAsset",
        "already_exists",
        "name",
    );
}

#[test]
fn authentication() {
    let gh = GitHubServer::start_with("s3cret", 1 << 20);
    let list = format!("{}{}", gh.api_url, releases_path());

    let resp = get(&list);
    assert_eq!(resp.status, 401);
    let body = resp.json();
    assert_eq!(body["message"], "Requires authentication");
    assert!(body["documentation_url"].is_string());

    let resp = send(&list, "GET", &[("Authorization", "Bearer wrong")], b"").unwrap();
    assert_eq!(resp.status, 401);
    assert_eq!(resp.json()["message"], "Bad credentials");

    for auth in ["Bearer s3cret", "token s3cret"] {
        let resp = send(&list, "GET", &[("Authorization", auth)], b"").unwrap();
        assert_eq!(resp.status, 200, "{auth}");
    }

    // Uploads need the token too; nothing is stored without it.
    let release = create(&gh, "v5", false).json();
    let base = release["upload_url"]
        .as_str()
        .unwrap()
        .strip_suffix("{?name,label}")
        .unwrap()
        .to_string();
    let resp = send(
        &format!("{base}?name=a.tar.gz"),
        "POST",
        &[("Content-Type", "application/gzip")],
        b"abc",
    )
    .unwrap();
    assert_eq!(resp.status, 401);
    assert!(gh.release("v5").unwrap().assets.is_empty());

    // Downloads of a published release's assets need none.
    assert_eq!(upload(&gh, &release, "a.tar.gz", b"abc").status, 201);
    let resp = follow(&gh, &get(&gh.download_url("v5", "a.tar.gz")));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"abc");
    assert_eq!(
        resp.header("Content-Type"),
        Some("application/octet-stream")
    );
}

#[test]
fn upload_validation_and_renaming() {
    let gh = GitHubServer::start();
    let release = create(&gh, "v6", true).json();
    let url = release["upload_url"].as_str().unwrap();

    // `+` in a query string is a space, and GitHub renames spaces and other
    // special characters to `.`; an encoded `+` (%2B) is kept.
    let resp = upload_to(&gh, url, "name=slurm-25.05+gcc%20(x).tar.gz", b"1").unwrap();
    assert_eq!(resp.json()["name"], "slurm-25.05.gcc..x..tar.gz");
    let resp = upload_to(
        &gh,
        url,
        "name=slurm-25.05%2Bgcc.tar.gz&label=Slurm+25",
        b"2",
    )
    .unwrap();
    let asset = resp.json();
    assert_eq!(asset["name"], "slurm-25.05+gcc.tar.gz");
    assert_eq!(asset["label"], "Slurm 25");

    // The name is required, and so is a Content-Type.
    let resp = upload_to(&gh, url, "label=x", b"3").unwrap();
    assert_validation(&resp, "ReleaseAsset", "missing_field", "name");
    let base = url.strip_suffix("{?name,label}").unwrap();
    let auth = bearer(&gh);
    let resp = send(
        &format!("{base}?name=n.tar.gz"),
        "POST",
        &[("Authorization", &auth)],
        b"4",
    )
    .unwrap();
    assert_eq!(resp.status, 422);

    // A release that does not exist.
    let missing = base.replace(&release["id"].to_string(), "999");
    let resp = upload_to(&gh, &format!("{missing}{{?name,label}}"), "name=z", b"5").unwrap();
    assert_eq!(resp.status, 404);
}

#[test]
fn release_requests_are_validated() {
    let gh = GitHubServer::start();
    let resp = api(&gh, "POST", &releases_path(), Some(json!({"name": "x"})));
    assert_validation(&resp, "Release", "missing_field", "tag_name");

    let resp = send(
        &format!("{}{}", gh.api_url, releases_path()),
        "POST",
        &[("Authorization", &bearer(&gh))],
        b"{not json",
    )
    .unwrap();
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["message"], "Problems parsing JSON");

    let resp = api(
        &gh,
        "POST",
        &releases_path(),
        Some(json!({"tag_name": "v", "draft": "yes"})),
    );
    assert_eq!(resp.status, 422);
    let resp = api(
        &gh,
        "POST",
        &releases_path(),
        Some(json!({"tag_name": "v", "make_latest": "sometimes"})),
    );
    assert_eq!(resp.status, 422);
    assert!(gh.releases().is_empty());

    // PATCH changes only the fields it names.
    let r = create(&gh, "v7", true).json();
    let path = format!("{}/{}", releases_path(), r["id"]);
    let resp = api(
        &gh,
        "PATCH",
        &path,
        Some(json!({"name": "Seven", "prerelease": true})),
    );
    let patched = resp.json();
    assert_eq!(patched["name"], "Seven");
    assert_eq!(patched["body"], "notes");
    assert_eq!(patched["prerelease"], true);
    assert_eq!(patched["draft"], true);
    assert_eq!(
        api(&gh, "PATCH", "/repos/owner/repo/releases/1", None).status,
        404
    );

    // Other repositories and unknown routes are 404; owner and repo names are
    // not case sensitive.
    assert_eq!(
        api(&gh, "GET", "/repos/other/repo/releases", None).status,
        404
    );
    assert_eq!(
        api(&gh, "GET", "/repos/Owner/Repo/releases", None).status,
        200
    );
    assert_eq!(api(&gh, "GET", "/nothing/here", None).status, 404);
}

#[test]
fn listing_is_paginated_newest_first() {
    let gh = GitHubServer::start();
    for i in 0..35 {
        gh.add_release(&format!("v{i}"), i % 2 == 0);
    }
    let first = api(&gh, "GET", &releases_path(), None);
    let items = first.json();
    assert_eq!(items.as_array().unwrap().len(), 30);
    assert_eq!(items[0]["tag_name"], "v34");
    let link = first.header("Link").unwrap();
    assert!(link.contains("page=2>; rel=\"next\""), "{link}");

    let second = api(
        &gh,
        "GET",
        &format!("{}?per_page=30&page=2", releases_path()),
        None,
    );
    let items = second.json();
    assert_eq!(items.as_array().unwrap().len(), 5);
    assert_eq!(items[4]["tag_name"], "v0");

    let all = api(
        &gh,
        "GET",
        &format!("{}?per_page=100", releases_path()),
        None,
    );
    assert_eq!(all.json().as_array().unwrap().len(), 35);
    assert!(all.header("Link").is_none());
}

#[test]
fn octocrab_models_deserialize() {
    use octocrab::models::repos::{Asset, Release};

    let gh = GitHubServer::start();
    let draft = create(&gh, "v8", true).json();
    let release: Release = serde_json::from_value(draft.clone()).unwrap();
    assert!(release.draft);
    assert!(release.published_at.is_none());
    assert!(release.upload_url.starts_with(&gh.uploads_url));

    let resp = upload(&gh, &draft, "a.tar.gz", b"abc");
    let asset: Asset = serde_json::from_value(resp.json()).unwrap();
    assert_eq!(asset.name, "a.tar.gz");
    assert_eq!(asset.size, 3);
    assert_eq!(asset.state, "uploaded");
    assert!(asset.uploader.is_some());

    gh.break_next_upload();
    let _ = upload_to(
        &gh,
        draft["upload_url"].as_str().unwrap(),
        "name=b.tar.gz",
        b"abcdef",
    );

    let id = draft["id"].as_u64().unwrap();
    let published = publish(&gh, id).json();
    let release: Release = serde_json::from_value(published).unwrap();
    assert!(!release.draft);
    assert!(release.published_at.is_some());
    assert!(release.tarball_url.is_some());
    assert_eq!(release.assets.len(), 2);
    assert_eq!(release.assets[1].state, "starter");
    assert_eq!(
        release.assets[0].browser_download_url.as_str(),
        gh.download_url("v8", "a.tar.gz")
    );

    let list: Vec<Release> =
        serde_json::from_value(api(&gh, "GET", &releases_path(), None).json()).unwrap();
    assert_eq!(list.len(), 1);
    let assets: Vec<Asset> = serde_json::from_value(
        api(
            &gh,
            "GET",
            &format!("{}/{id}/assets", releases_path()),
            None,
        )
        .json(),
    )
    .unwrap();
    assert_eq!(assets.len(), 2);
}

#[test]
fn dropping_the_server_closes_its_ports() {
    let gh = GitHubServer::start();
    let (api_addr, _) = split_url(&gh.api_url);
    let (uploads_addr, _) = split_url(&gh.uploads_url);
    // A client that connects and says nothing must not hold up the drop.
    let _idle = TcpStream::connect(&api_addr).unwrap();
    assert_eq!(get(&format!("{}/", gh.api_url)).status, 404);
    drop(gh);
    for addr in [api_addr, uploads_addr] {
        assert!(TcpStream::connect(&addr).is_err(), "{addr} still listens");
    }
}

// ---------------------------------------------------------------------------
// Downloads: a 302 from the API or github.com, the bytes from the storage host.

#[test]
fn downloads_redirect_to_the_storage_host() {
    let gh = GitHubServer::start();
    let draft = create(&gh, "v9", true).json();
    let bytes = b"release bytes ".repeat(500);
    let asset = upload(&gh, &draft, "slurm.tar.gz", &bytes).json();
    let asset_id = asset["id"].as_u64().unwrap();
    let id = draft["id"].as_u64().unwrap();
    let published = publish(&gh, id).json();
    let public_url = published["assets"][0]["browser_download_url"]
        .as_str()
        .unwrap()
        .to_string();

    // The JSON form of the asset endpoint is still the asset's JSON.
    let resp = api(
        &gh,
        "GET",
        &format!("{}/assets/{asset_id}", releases_path()),
        None,
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["name"], "slurm.tar.gz");

    // Neither download form serves bytes: both redirect to the storage host.
    let prefix = format!("{}/cdn/{asset_id}/slurm.tar.gz?sig=", gh.uploads_url);
    let by_api = api_download(&gh, asset_id);
    assert_eq!(by_api.header("Content-Length"), Some("0"));
    let api_location = cdn_location(&gh, &by_api);
    assert!(api_location.starts_with(&prefix), "{api_location}");
    let by_browser = get(&public_url);
    let browser_location = cdn_location(&gh, &by_browser);
    assert!(browser_location.starts_with(&prefix), "{browser_location}");

    // The storage host serves them, with no token.
    for location in [&api_location, &browser_location] {
        let resp = get(location);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, bytes);
        assert_eq!(
            resp.header("Content-Type"),
            Some("application/octet-stream")
        );
        assert_eq!(
            resp.header("Content-Length"),
            Some(bytes.len().to_string().as_str())
        );
        assert_eq!(resp.header("Accept-Ranges"), Some("bytes"));
        assert!(resp.header("Content-Range").is_none());
    }

    // One download counted: the browser_download_url redirect; neither the
    // API form nor the requests to the storage host count.
    let count = |gh: &GitHubServer| gh.release("v9").unwrap().assets[0].download_count;
    assert_eq!(count(&gh), 1);
    let _ = get(&browser_location);
    assert_eq!(count(&gh), 1);
    let _ = get(&public_url);
    assert_eq!(count(&gh), 2);
    let listed = api(&gh, "GET", &format!("{}/{id}", releases_path()), None).json();
    assert_eq!(listed["assets"][0]["download_count"], 2);

    // The log names the hosts: the redirects on "api", the bytes on "cdn".
    let log = gh.request_log();
    let redirects: Vec<_> = log.iter().filter(|r| r.status == 302).collect();
    assert_eq!(redirects.len(), 3);
    assert!(redirects.iter().all(|r| r.host == "api"));
    let downloads = gh.download_requests();
    assert_eq!(downloads.len(), 3);
    assert!(
        downloads
            .iter()
            .all(|r| r.method == "GET" && r.status == 200 && r.range.is_none())
    );
    assert!(gh.upload_requests().iter().all(|r| r.host == "uploads"));
}

#[test]
fn storage_host_serves_single_ranges() {
    let gh = GitHubServer::start();
    let bytes: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    published_asset(&gh, "v10", "a.bin", &bytes);
    let url = cdn_location(&gh, &get(&gh.download_url("v10", "a.bin")));

    let partial = [
        ("bytes=100-", 100, 999),
        ("bytes=10-19", 10, 19),
        ("bytes=990-5000", 990, 999),
        ("bytes=999-", 999, 999),
        ("bytes=0-", 0, 999),
        ("bytes=-10", 990, 999),
        ("bytes=-5000", 0, 999),
    ];
    for (range, first, last) in partial {
        let resp = get_range(&url, range);
        assert_eq!(resp.status, 206, "{range}");
        assert_eq!(
            resp.header("Content-Range"),
            Some(format!("bytes {first}-{last}/1000").as_str()),
            "{range}"
        );
        assert_eq!(
            resp.header("Content-Length"),
            Some((last - first + 1).to_string().as_str()),
            "{range}"
        );
        assert_eq!(resp.body, bytes[first..=last], "{range}");
        assert_eq!(
            resp.header("Content-Type"),
            Some("application/octet-stream")
        );
        assert_eq!(resp.header("Accept-Ranges"), Some("bytes"));
    }

    // A start at or past the end cannot be satisfied.
    for range in ["bytes=1000-", "bytes=5000-6000", "bytes=-0"] {
        let resp = get_range(&url, range);
        assert_eq!(resp.status, 416, "{range}");
        assert_eq!(resp.header("Content-Range"), Some("bytes */1000"));
        assert!(String::from_utf8_lossy(&resp.body).contains("<Code>InvalidRange</Code>"));
    }

    // Headers that are not one valid range are ignored: everything, 200.
    for range in ["bytes=0-1,5-6", "bytes=20-10", "items=0-9", "bytes=x-"] {
        let resp = get_range(&url, range);
        assert_eq!(resp.status, 200, "{range}");
        assert_eq!(resp.body, bytes, "{range}");
        assert!(resp.header("Content-Range").is_none());
    }

    // The log keeps each request's Range.
    let ranges: Vec<Option<String>> = gh
        .download_requests()
        .into_iter()
        .map(|r| r.range)
        .collect();
    assert_eq!(ranges.len(), 14);
    assert_eq!(ranges[0].as_deref(), Some("bytes=100-"));
    assert_eq!(ranges[13].as_deref(), Some("bytes=x-"));

    // An empty asset: 200 with nothing, and no range can be satisfied.
    let id = published_asset(&gh, "v11", "empty.bin", b"");
    let url = cdn_location(&gh, &api_download(&gh, id));
    let resp = get(&url);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("Content-Length"), Some("0"));
    assert!(resp.body.is_empty());
    let resp = get_range(&url, "bytes=0-");
    assert_eq!(resp.status, 416);
    assert_eq!(resp.header("Content-Range"), Some("bytes */0"));
}

#[test]
fn storage_host_refuses_tokens_and_bad_urls() {
    let gh = GitHubServer::start();
    let id = published_asset(&gh, "v12", "a.tar.gz", b"abcdef");
    let url = cdn_location(&gh, &get(&gh.download_url("v12", "a.tar.gz")));

    // A client that forwards its GitHub token to the storage host is refused,
    // whatever the token.
    let auth = bearer(&gh);
    for value in [auth.as_str(), "token other", "Basic eDp5"] {
        let resp = send(&url, "GET", &[("Authorization", value)], b"").unwrap();
        assert_eq!(resp.status, 400, "{value}");
        let text = String::from_utf8_lossy(&resp.body);
        assert!(text.contains("Only one auth mechanism allowed"), "{text}");
        assert_eq!(resp.header("Content-Type"), Some("application/xml"));
    }

    // The signature covers the method, the id and the name.
    let (base, sig) = url.split_once("?sig=").unwrap();
    let mut wrong_sig = sig.to_string();
    let last = if wrong_sig.ends_with('0') { "1" } else { "0" };
    wrong_sig.replace_range(wrong_sig.len() - 1.., last);
    for bad in [
        base.to_string(),
        format!("{base}?sig="),
        format!("{base}?sig={wrong_sig}"),
    ] {
        let resp = get(&bad);
        assert_eq!(resp.status, 403, "{bad}");
        assert!(String::from_utf8_lossy(&resp.body).contains("AccessDenied"));
    }
    assert_eq!(send(&url, "PUT", &[], b"").unwrap().status, 403);

    // Unknown objects are 404, whatever the signature.
    let other_name = url.replace("/a.tar.gz?", "/b.tar.gz?");
    let other_id = url.replace(&format!("/cdn/{id}/"), "/cdn/999999/");
    for missing in [
        other_name,
        other_id,
        format!("{}/cdn/", gh.uploads_url),
        format!("{}/cdn/{id}", gh.uploads_url),
        format!("{}/cdn/x/a.tar.gz?sig=1", gh.uploads_url),
    ] {
        let resp = get(&missing);
        assert_eq!(resp.status, 404, "{missing}");
        assert!(String::from_utf8_lossy(&resp.body).contains("NoSuchKey"));
    }

    // The storage URL works until the asset is deleted, then it is a 404.
    assert_eq!(get(&url).body, b"abcdef");
    let path = format!("{}/assets/{id}", releases_path());
    assert_eq!(api(&gh, "DELETE", &path, None).status, 204);
    assert_eq!(get(&url).status, 404);

    // The storage path exists only on the uploads listener.
    let on_api = url.replace(&gh.uploads_url, &gh.api_url);
    assert_eq!(get(&on_api).status, 404);
    assert!(gh.download_requests().iter().all(|r| r.host == "cdn"));
}

#[test]
fn drafts_and_starters_are_not_downloadable() {
    let gh = GitHubServer::start();
    let draft = create(&gh, "v13", true).json();
    let id = draft["id"].as_u64().unwrap();
    let asset = upload(&gh, &draft, "a.tar.gz", b"draft bytes").json();
    let asset_id = asset["id"].as_u64().unwrap();
    gh.fail_next_upload_leaving_starter(502);
    assert_eq!(upload(&gh, &draft, "b.tar.gz", b"lost").status, 502);
    let starter_id = gh.release("v13").unwrap().asset("b.tar.gz").unwrap().id;

    // A draft's assets: no anonymous download, by the untagged URL or the tag;
    // with the token, the API form redirects and the bytes come.
    let untagged = asset["browser_download_url"].as_str().unwrap();
    assert!(untagged.contains("/untagged-"));
    assert_eq!(get(untagged).status, 404);
    assert_eq!(get(&gh.download_url("v13", "a.tar.gz")).status, 404);
    assert_eq!(
        follow(&gh, &api_download(&gh, asset_id)).body,
        b"draft bytes"
    );

    // A starter asset: its JSON is there, its bytes are not, either way.
    let starter_path = format!("{}/assets/{starter_id}", releases_path());
    let resp = api(&gh, "GET", &starter_path, None);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["state"], "starter");
    assert_eq!(api_download(&gh, starter_id).status, 404);
    let published = publish(&gh, id);
    assert_eq!(published.status, 200);
    assert_eq!(get(&gh.download_url("v13", "b.tar.gz")).status, 404);
    assert_eq!(api_download(&gh, starter_id).status, 404);
    // The storage host has nothing for it either.
    let guess = format!("{}/cdn/{starter_id}/b.tar.gz?sig=0", gh.uploads_url);
    assert_eq!(get(&guess).status, 404);

    // Unknown names, tags and ids.
    assert_eq!(get(&gh.download_url("v13", "c.tar.gz")).status, 404);
    assert_eq!(get(&gh.download_url("v0", "a.tar.gz")).status, 404);
    assert_eq!(api_download(&gh, 999_999).status, 404);

    // Published now: the tag's URL redirects and counts.
    assert_eq!(
        follow(&gh, &get(&gh.download_url("v13", "a.tar.gz"))).body,
        b"draft bytes"
    );
    let state = gh.release("v13").unwrap();
    assert_eq!(state.asset("a.tar.gz").unwrap().download_count, 1);
    assert_eq!(state.asset("b.tar.gz").unwrap().download_count, 0);
}

#[test]
fn injected_download_faults() {
    let gh = GitHubServer::start();
    let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    published_asset(&gh, "v14", "a.bin", &bytes);
    let url = cdn_location(&gh, &get(&gh.download_url("v14", "a.bin")));

    // A cut transfer: full headers, then 1000 bytes, then the end.
    gh.cut_next_downloads(1, 1000);
    let resp = get(&url);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("Content-Length"), Some("10000"));
    assert_eq!(resp.body, bytes[..1000]);
    // A resume from there gets the rest.
    let rest = get_range(&url, "bytes=1000-");
    assert_eq!(rest.status, 206);
    assert_eq!(rest.header("Content-Range"), Some("bytes 1000-9999/10000"));
    assert_eq!([resp.body, rest.body].concat(), bytes);

    // Cuts apply to ranges too, and `after` past the end is no cut.
    gh.cut_next_downloads(2, 10);
    let resp = get_range(&url, "bytes=5000-");
    assert_eq!(resp.status, 206);
    assert_eq!(resp.header("Content-Length"), Some("5000"));
    assert_eq!(resp.body, bytes[5000..5010]);
    let resp = get(&url);
    assert_eq!(resp.header("Content-Length"), Some("10000"));
    assert_eq!(resp.body.len(), 10);
    assert_eq!(get(&url).body, bytes);
    gh.cut_next_downloads(1, 1 << 40);
    assert_eq!(get(&url).body, bytes);

    // Failures: the status with an empty body.
    gh.fail_next_downloads(2, 503);
    for _ in 0..2 {
        let resp = get(&url);
        assert_eq!(resp.status, 503);
        assert_eq!(resp.header("Content-Length"), Some("0"));
        assert!(resp.body.is_empty());
    }
    assert_eq!(get(&url).status, 200);

    // Faults are used in the order queued, and only by requests that would
    // be served: a forwarded token (400) or an unsatisfiable range (416) is
    // refused as usual and leaves the fault for the next.
    gh.fail_next_downloads(1, 500);
    gh.cut_next_downloads(1, 3);
    let auth = bearer(&gh);
    let refused = send(&url, "GET", &[("Authorization", &auth)], b"").unwrap();
    assert_eq!(refused.status, 400);
    assert_eq!(get_range(&url, "bytes=10000-").status, 416);
    assert_eq!(get(&url).status, 500);
    assert_eq!(get(&url).body, bytes[..3]);
    assert_eq!(get(&url).body, bytes);

    // clear_faults forgets the download faults too.
    gh.cut_next_downloads(5, 0);
    gh.fail_next_downloads(5, 502);
    gh.clear_faults();
    assert_eq!(get(&url).body, bytes);

    // The log shows what each request to the storage host asked and got.
    let seen: Vec<(u16, Option<String>)> = gh
        .download_requests()
        .into_iter()
        .map(|r| (r.status, r.range))
        .collect();
    let range = |s: &str| Some(s.to_string());
    assert_eq!(
        seen,
        [
            (200, None),
            (206, range("bytes=1000-")),
            (206, range("bytes=5000-")),
            (200, None),
            (200, None),
            (200, None),
            (503, None),
            (503, None),
            (200, None),
            (400, None),
            (416, range("bytes=10000-")),
            (500, None),
            (200, None),
            (200, None),
            (200, None),
        ]
    );
    // One download counted: the single redirect.
    assert_eq!(gh.release("v14").unwrap().assets[0].download_count, 1);
}

#[test]
fn large_download_whole_and_resumed() {
    let gh = GitHubServer::start();
    // About 48 MiB, in a pattern that a shifted copy would not match.
    let pattern: Vec<u8> = (0..=250u8).collect();
    let bytes = pattern.repeat(200_000);
    let id = published_asset(&gh, "v15", "big.tar.gz", &bytes);
    let url = cdn_location(&gh, &api_download(&gh, id));

    let resp = get(&url);
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("Content-Length"),
        Some(bytes.len().to_string().as_str())
    );
    assert!(resp.body == bytes, "whole body differs");

    let cut = 40 << 20;
    gh.cut_next_downloads(1, cut);
    let head = get(&url);
    assert_eq!(head.body.len() as u64, cut);
    let rest = get_range(&url, &format!("bytes={cut}-"));
    assert_eq!(rest.status, 206);
    assert_eq!(
        rest.header("Content-Range"),
        Some(format!("bytes {cut}-{}/{}", bytes.len() - 1, bytes.len()).as_str())
    );
    assert!(
        [head.body, rest.body].concat() == bytes,
        "resumed body differs"
    );
    let ranges: Vec<_> = gh
        .download_requests()
        .into_iter()
        .map(|r| r.range)
        .collect();
    assert_eq!(ranges, [None, None, Some(format!("bytes={cut}-"))]);
}

// ---------------------------------------------------------------------------
// Immutable releases.

/// A 422 "Validation Failed" whose first error is exactly `error`.
fn assert_validation_error(resp: &Resp, error: Value) {
    assert_eq!(resp.status, 422, "{}", String::from_utf8_lossy(&resp.body));
    let body = resp.json();
    assert_eq!(body["message"], "Validation Failed");
    assert!(body["documentation_url"].is_string());
    assert_eq!(body["errors"][0], error, "{body:#}");
}

/// A refusal on a release's tag by an immutable release.
fn assert_release_refused(resp: &Resp, field: &str, message: &str) {
    assert_validation_error(
        resp,
        json!({"resource": "Release", "code": "custom", "field": field, "message": message}),
    );
}

/// A refusal on an asset of an immutable release.
fn assert_asset_refused(resp: &Resp, message: &str) {
    assert_validation_error(
        resp,
        json!({"resource": "ReleaseAsset", "code": "custom", "message": message}),
    );
}

/// A plain 422 `{"message", "documentation_url", "status"}`.
fn assert_plain_422(resp: &Resp, message: &str) {
    assert_eq!(resp.status, 422, "{}", String::from_utf8_lossy(&resp.body));
    let body = resp.json();
    assert_eq!(body["message"], message, "{body:#}");
    assert!(body["documentation_url"].is_string());
    assert_eq!(body["status"], "422");
    assert!(body.get("errors").is_none(), "{body:#}");
}

const USED_TAG: &str = "tag_name was used by an immutable release";

fn asset_path(id: u64) -> String {
    format!("{}/assets/{id}", releases_path())
}

fn release_path(id: u64) -> String {
    format!("{}/{id}", releases_path())
}

#[test]
fn immutable_release_locks_assets_and_tag() {
    let gh = GitHubServer::with_immutable_releases();

    // A draft is not immutable; assets go up while it is one.
    let draft = create(&gh, "v1", true).json();
    assert_eq!(draft["immutable"], false);
    let id = draft["id"].as_u64().unwrap();
    let asset = upload(&gh, &draft, "a.tar.gz", b"aaa").json();
    let asset_id = asset["id"].as_u64().unwrap();
    // Created before the tag was burnt, a second draft for it.
    let other_draft = create(&gh, "v1", true).json()["id"].as_u64().unwrap();

    let resp = publish(&gh, id);
    assert_eq!(resp.status, 200);
    let published = resp.json();
    assert_eq!(published["immutable"], true);
    assert_eq!(published["draft"], false);
    let by_tag = api(&gh, "GET", &format!("{}/tags/v1", releases_path()), None);
    assert_eq!(by_tag.json()["immutable"], true);
    let before = gh.releases().into_iter().find(|r| r.id == id).unwrap();
    assert!(before.immutable);
    let release = || gh.releases().into_iter().find(|r| r.id == id).unwrap();

    // No upload: refused with the plain error, nothing stored.
    let resp = upload(&gh, &published, "b.tar.gz", b"bbb");
    assert_plain_422(&resp, "Cannot upload assets to an immutable release.");
    assert_eq!(release().assets, before.assets);
    assert_eq!(gh.upload_requests().last().unwrap().status, 422);

    // Refused before the body is read: a huge Content-Length with no body
    // still gets its answer.
    let base = published["upload_url"]
        .as_str()
        .unwrap()
        .strip_suffix("{?name,label}")
        .unwrap();
    let (addr, target) = split_url(&format!("{base}?name=huge.tar.gz"));
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: token {}\r\n\
         Content-Type: application/gzip\r\nContent-Length: 1000000000\r\n\r\n",
        gh.token
    );
    stream.write_all(head.as_bytes()).unwrap();
    let resp = read_response(&mut stream).unwrap();
    assert_plain_422(&resp, "Cannot upload assets to an immutable release.");
    drop(stream);
    assert_eq!(release().assets, before.assets);

    // No deleting its assets.
    let resp = api(&gh, "DELETE", &asset_path(asset_id), None);
    assert_asset_refused(&resp, "Cannot delete asset from an immutable release");
    assert_eq!(release().assets, before.assets);
    assert_eq!(
        api(&gh, "GET", &asset_path(asset_id), None).json()["name"],
        "a.tar.gz"
    );

    // Title, notes, prerelease and make_latest may change; it stays immutable.
    let resp = api(
        &gh,
        "PATCH",
        &release_path(id),
        Some(json!({
            "name": "One", "body": "new notes", "prerelease": true, "make_latest": "false"
        })),
    );
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let edited = resp.json();
    assert_eq!(edited["name"], "One");
    assert_eq!(edited["body"], "new notes");
    assert_eq!(edited["prerelease"], true);
    assert_eq!(edited["immutable"], true);
    let after_edit = release();
    assert_eq!(after_edit.name.as_deref(), Some("One"));
    assert_eq!(after_edit.make_latest, "false");
    assert!(after_edit.immutable);
    // Naming its own tag and target again is no change.
    let same = json!({"tag_name": "v1", "target_commitish": "main", "draft": false});
    assert_eq!(api(&gh, "PATCH", &release_path(id), Some(same)).status, 200);

    // Not its tag, its target or its publication; nothing changes, even of
    // the fields that could.
    let refusals = [
        (
            json!({"tag_name": "v2", "name": "Two"}),
            "tag_name",
            "Cannot change the tag of an immutable release",
        ),
        (
            json!({"target_commitish": "other", "body": "x"}),
            "target_commitish",
            "Cannot change the tag of an immutable release",
        ),
        (
            json!({"draft": true, "prerelease": false}),
            "draft",
            "Cannot unpublish an immutable release",
        ),
    ];
    for (body, field, message) in refusals {
        let resp = api(&gh, "PATCH", &release_path(id), Some(body));
        assert_release_refused(&resp, field, message);
        assert_eq!(release(), after_edit, "{field}");
    }

    // Its tag is burnt while it exists: no new release, draft or not, and the
    // older draft cannot be published (nor another renamed to it).
    for draft in [true, false] {
        assert_release_refused(&create(&gh, "v1", draft), "tag_name", USED_TAG);
    }
    assert_release_refused(&publish(&gh, other_draft), "tag_name", USED_TAG);
    let third = create(&gh, "v3", true).json()["id"].as_u64().unwrap();
    let resp = api(
        &gh,
        "PATCH",
        &release_path(third),
        Some(json!({"tag_name": "v1"})),
    );
    assert_release_refused(&resp, "tag_name", USED_TAG);
    // The old draft may still be edited otherwise, as a draft.
    let resp = api(
        &gh,
        "PATCH",
        &release_path(other_draft),
        Some(json!({"body": "still a draft"})),
    );
    assert_eq!(resp.status, 200);

    // It can be deleted; the tag stays burnt.
    assert_eq!(api(&gh, "DELETE", &release_path(id), None).status, 204);
    assert_eq!(api(&gh, "GET", &release_path(id), None).status, 404);
    for draft in [true, false] {
        assert_release_refused(&create(&gh, "v1", draft), "tag_name", USED_TAG);
    }
    assert_release_refused(&publish(&gh, other_draft), "tag_name", USED_TAG);
    assert!(gh.releases().iter().all(|r| r.id != id));
    assert_eq!(
        gh.releases().iter().filter(|r| r.tag_name == "v1").count(),
        1
    );
    // Other tags are free.
    assert_eq!(create(&gh, "v2", false).status, 201);
}

#[test]
fn without_immutable_releases_everything_may_change() {
    let gh = GitHubServer::start();
    let draft = create(&gh, "v1", true).json();
    let id = draft["id"].as_u64().unwrap();
    let asset_id = upload(&gh, &draft, "a.tar.gz", b"aaa").json()["id"]
        .as_u64()
        .unwrap();
    let published = publish(&gh, id).json();
    assert_eq!(published["immutable"], false);
    assert!(!gh.release("v1").unwrap().immutable);

    // Assets may be added to the published release and deleted.
    let resp = upload(&gh, &published, "b.tar.gz", b"bbb");
    assert_eq!(resp.status, 201);
    let b_id = resp.json()["id"].as_u64().unwrap();
    assert_eq!(gh.release("v1").unwrap().assets.len(), 2);
    assert_eq!(api(&gh, "DELETE", &asset_path(b_id), None).status, 204);
    assert_eq!(api(&gh, "DELETE", &asset_path(asset_id), None).status, 204);
    assert!(gh.release("v1").unwrap().assets.is_empty());

    // The release's target and publication may change.
    let resp = api(
        &gh,
        "PATCH",
        &release_path(id),
        Some(json!({"target_commitish": "other"})),
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["target_commitish"], "other");
    assert_eq!(publish(&gh, id).json()["immutable"], false);

    // Deleting the release frees its tag for a new one.
    assert_eq!(api(&gh, "DELETE", &release_path(id), None).status, 204);
    let resp = create(&gh, "v1", false);
    assert_eq!(resp.status, 201);
    assert_eq!(resp.json()["immutable"], false);
}

#[test]
fn immutable_setting_is_not_retroactive() {
    let gh = GitHubServer::start();
    let old = gh.add_release("v1", false);
    let old_asset = gh.add_asset(old, "a.tar.gz", b"aaa");
    let old_json = api(&gh, "GET", &release_path(old), None).json();
    assert_eq!(old_json["immutable"], false);

    gh.set_immutable_releases(true);

    // The release published before stays mutable.
    assert!(!gh.release("v1").unwrap().immutable);
    assert_eq!(
        api(&gh, "GET", &release_path(old), None).json()["immutable"],
        false
    );
    assert_eq!(upload(&gh, &old_json, "b.tar.gz", b"bbb").status, 201);
    assert_eq!(api(&gh, "DELETE", &asset_path(old_asset), None).status, 204);

    // The next one published is immutable, through the API or the helper.
    let next = create(&gh, "v2", false);
    assert_eq!(next.status, 201);
    let next = next.json();
    assert_eq!(next["immutable"], true);
    assert!(gh.release("v2").unwrap().immutable);
    assert_plain_422(
        &upload(&gh, &next, "c.tar.gz", b"ccc"),
        "Cannot upload assets to an immutable release.",
    );
    let helper = gh.add_release("v3", false);
    assert!(gh.release("v3").unwrap().immutable);
    assert_eq!(
        api(&gh, "GET", &release_path(helper), None).json()["immutable"],
        true
    );
    assert!(!gh.release("v1").unwrap().immutable);

    // Turned off again: the immutable ones stay so, their tags stay burnt,
    // and new releases are mutable.
    gh.set_immutable_releases(false);
    assert!(gh.release("v2").unwrap().immutable);
    assert_eq!(api(&gh, "DELETE", &release_path(helper), None).status, 204);
    assert_release_refused(&create(&gh, "v3", false), "tag_name", USED_TAG);
    let later = create(&gh, "v4", false).json();
    assert_eq!(later["immutable"], false);
    assert_eq!(upload(&gh, &later, "d.tar.gz", b"ddd").status, 201);
}

#[test]
fn drafts_stay_mutable_under_immutable_releases() {
    let gh = GitHubServer::with_immutable_releases();
    let draft = create(&gh, "v1", true).json();
    let id = draft["id"].as_u64().unwrap();
    assert_eq!(draft["immutable"], false);

    // Upload, delete, upload again, retag, retarget: all fine.
    let a = upload(&gh, &draft, "a.tar.gz", b"aaa").json()["id"]
        .as_u64()
        .unwrap();
    let b = upload(&gh, &draft, "b.tar.gz", b"bbb").json()["id"]
        .as_u64()
        .unwrap();
    assert_eq!(api(&gh, "DELETE", &asset_path(a), None).status, 204);
    assert_eq!(upload(&gh, &draft, "a.tar.gz", b"AAA").status, 201);
    let resp = api(
        &gh,
        "PATCH",
        &release_path(id),
        Some(json!({"tag_name": "v2", "target_commitish": "release"})),
    );
    assert_eq!(resp.status, 200);
    let state = gh.release("v2").unwrap();
    assert!(!state.immutable);
    assert!(state.draft);
    let names: Vec<&str> = state.assets.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["b.tar.gz", "a.tar.gz"]);
    assert_eq!(state.asset("a.tar.gz").unwrap().bytes, b"AAA");
    assert_eq!(state.target_commitish, "release");
    // Nothing burnt while a draft.
    assert_eq!(create(&gh, "v1", true).status, 201);

    // Published, it locks with what it has.
    let published = publish(&gh, id).json();
    assert_eq!(published["immutable"], true);
    assert_eq!(published["assets"].as_array().unwrap().len(), 2);
    assert_plain_422(
        &upload(&gh, &published, "d.tar.gz", b"ddd"),
        "Cannot upload assets to an immutable release.",
    );
    assert_asset_refused(
        &api(&gh, "DELETE", &asset_path(b), None),
        "Cannot delete asset from an immutable release",
    );
    assert_eq!(gh.release("v2").unwrap().assets, state.assets);
}
