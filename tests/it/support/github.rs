//! A stateful fake of GitHub's Releases REST API for one repository,
//! `owner/repo`, served over plain HTTP on 127.0.0.1 for the tests.
//!
//! Four hosts of the real service are played by two listeners:
//! - `api_url` plays api.github.com (the REST endpoints) and also github.com
//!   for `browser_download_url`s (`/owner/repo/releases/download/TAG/NAME`);
//! - `uploads_url` plays uploads.github.com, the different host that a
//!   release's `upload_url` points at. A client that builds upload URLs from
//!   the API base instead of `upload_url` gets 404, as it would on GitHub.
//!   Under `/cdn/ID/NAME?sig=…` it also plays the storage host that downloads
//!   are redirected to (objects.githubusercontent.com,
//!   release-assets.githubusercontent.com); the request log names that host
//!   "cdn".
//!
//! Both run on the tests' one HTTP server (`support::server`), whose fault
//! hooks the fake is made of: an upload refused before its body is read, a
//! body read in part and the connection dropped without any response, a
//! download cut short of its `Content-Length`. Each connection carries one
//! request and every response says `Connection: close`. Dropping the fake
//! closes both ports and every connection.
//!
//! Facts about GitHub that the fake follows (docs.github.com REST pages
//! "Releases" and "Release assets", and the threads named where used):
//! - List releases includes drafts for users with push access; it is
//!   paginated with `per_page` (default 30, max 100) and `page`, and a `Link`
//!   header names the next and last pages.
//! - "Get a release by tag name" returns a *published* release only: a draft
//!   with that tag is a 404.
//! - A tag may have at most one published release; drafts do not own their
//!   tag, so several drafts may share one, and the 422
//!   `{"resource":"Release","code":"already_exists","field":"tag_name"}` comes
//!   when a release with that tag is created published or a draft is
//!   published (cli/cli#6493 relies on this server-side check at publish).
//! - A draft's `html_url` and assets' `browser_download_url` use an
//!   `untagged-…` path, not the tag; publishing changes them to the tag. The
//!   download URLs of a draft's assets are 404 for anonymous users.
//! - `upload_url` is a hypermedia template on uploads.github.com ending in
//!   `{?name,label}`; the upload needs the `name` query parameter, a
//!   `Content-Type` and a `Content-Length`, and the same authentication.
//! - Query strings are form-decoded, so a raw `+` in `?name=` is a space;
//!   GitHub then renames characters outside letters, digits and `-_.+` to a
//!   `.` ("GitHub renames asset filenames that have special characters…";
//!   github/rest-api-description#2968, microsoft/azure-pipelines-tasks#14275:
//!   an unencoded `a+b.tar.gz` becomes `a.b.tar.gz`). Leading and trailing
//!   periods, which the docs also say are renamed, are left as they are here.
//! - Uploading a name already present on the release is a 422
//!   `{"resource":"ReleaseAsset","code":"already_exists","field":"name"}`.
//! - "When an upstream failure occurs, you will receive a 502 Bad Gateway
//!   status. This may leave an empty asset with a state of starter. It can be
//!   safely deleted." Such an asset still holds its name (hence the 422 on a
//!   retry) until it is deleted.
//! - Each file in a release must be under 2 GiB. What GitHub answers for a
//!   larger upload is not documented; the fake answers 422 without storing
//!   anything.
//! - Asset bytes never come from api.github.com or github.com. "Get a release
//!   asset" with `Accept: application/octet-stream` ("API clients should
//!   handle both a 200 or 302 response"), and a `browser_download_url`, answer
//!   `302 Found` with a `Location` on another host: a pre-signed storage URL
//!   that expires after minutes (octokit/octokit.js#967 shows the exchange
//!   with `curl -L`). The fake answers both with 302 and
//!   `Location: {uploads_url}/cdn/ID/NAME?sig=…`; the API form works for
//!   drafts too (with the token), the JSON form of that endpoint stays a 200
//!   with the asset's JSON, and a "starter" asset is a 404 either way.
//! - `download_count` counts `browser_download_url` downloads; the fake
//!   counts one at the redirect, whatever the storage host serves afterwards
//!   (ranges, retries, cut transfers), and none for the API form, which the
//!   docs do not say is counted.
//! - The storage host serves the bytes as `application/octet-stream` with a
//!   `Content-Length`, `Accept-Ranges: bytes` and single byte ranges
//!   (`bytes=N-`, `bytes=N-M`, `bytes=-K`): `206 Partial Content` with
//!   `Content-Range: bytes N-M/TOTAL`, an end past the last byte being cut to
//!   it; a start at or past the end is `416` with `Content-Range: bytes
//!   */TOTAL`. A Range header it cannot parse, or one with several ranges, is
//!   ignored (a 200 with everything), as RFC 9110 allows. Its errors are S3's
//!   XML `<Error><Code>…</Code><Message>…</Message></Error>`.
//! - A pre-signed URL carries its credentials in the query, and a request to
//!   it that also has an `Authorization` header is refused with 400 "Only one
//!   auth mechanism allowed; only the X-Amz-Algorithm query parameter,
//!   Signature query string parameter or the Authorization header should be
//!   specified" (octokit/rest.js#6, request/request#860,
//!   microsoft/azure-pipelines-tasks#14312; octokit/core.js#415 shows a later
//!   variant of the same refusal). A client that forwards its GitHub token
//!   across hosts fails here, as it does on GitHub. The fake checks that
//!   first, then the object (an unknown or deleted id, or another name, is a
//!   404 `NoSuchKey`), then the signature, which covers the method, the id
//!   and the name: a missing or altered `sig`, or a method other than GET, is
//!   a 403 `AccessDenied`. The URL does not expire here.
//! - Errors are JSON: `{"message", "documentation_url", "status"}`, with
//!   `errors` on a 422 "Validation Failed".
//!
//! Immutable releases (generally available since 2025-10-28; docs.github.com
//! "Immutable releases" and "Preventing changes to your releases", and the
//! threads named), a mode that is off unless the fake is started with
//! [`GitHubServer::with_immutable_releases`] or switched on with
//! [`GitHubServer::set_immutable_releases`]:
//! - With the repository setting on, a release becomes immutable when it is
//!   published; a draft is not immutable and can be changed freely. The
//!   release JSON's boolean `immutable` says so: true for such a published
//!   release, false otherwise (always false while the mode has never been on).
//! - The setting is not retroactive either way: "immutability will only apply
//!   to future releases", so a release published while it was off stays
//!   mutable when it is turned on; and turning it off does not affect
//!   releases already immutable (nor the tags they used).
//! - Uploading an asset to an immutable release is a 422 with the plain error
//!   `Cannot upload assets to an immutable release.` (several public CI logs
//!   show `HTTP 422: Cannot upload assets to an immutable release.`); the fake
//!   refuses it before reading the body, and stores nothing.
//! - Deleting an asset of an immutable release is a 422 "Validation Failed"
//!   with `{"resource":"ReleaseAsset","code":"custom","message":"Cannot
//!   delete asset from an immutable release"}` (uutils/coreutils#13839).
//! - A published immutable release keeps editable its title (`name`), notes
//!   (`body`), `prerelease` and `make_latest` ("You can still edit the title
//!   and release notes of a published immutable release, and change whether
//!   it is marked as a pre-release or as the latest release";
//!   github/docs#45730 measured it). Changing its `tag_name` or
//!   `target_commitish`, or making it a draft again, is refused with a 422
//!   "Validation Failed" and nothing of the release changes; the texts are
//!   not documented: `{"resource":"Release","code":"custom","field":
//!   "tag_name","message":"Cannot change the tag of an immutable release"}`
//!   (the same with `field` `target_commitish`), and `field` `draft` with
//!   `Cannot unpublish an immutable release`.
//! - An immutable release may be deleted (204), but its tag name can never be
//!   used again ("If you delete the immutable release, you can delete the
//!   tag, but you cannot reuse the same tag name"): creating a release, draft
//!   or not, with a tag an immutable release used (still there or deleted),
//!   or publishing a draft with it, or renaming a release to it, is a 422
//!   `{"resource":"Release","code":"custom","field":"tag_name","message":
//!   "tag_name was used by an immutable release"}`
//!   (github-community-projects/ospo-reusable-workflows#83 shows it).
//!
//! Only what the toolkit calls is served (list, create, publish and delete
//! releases; list, upload, read back and delete assets; downloads through
//! the storage host), with the `browser_download_url` an admin's download
//! uses and reading a release by id. GitHub's other endpoints (the latest
//! release, Git refs, renaming assets) are a 404 here.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::server::{self, Connections, Exchange, Port, Reply, Server};

pub const OWNER: &str = "owner";
pub const REPO: &str = "repo";
pub const DEFAULT_TOKEN: &str = "test-token";
/// GitHub's limit: each file in a release must be under 2 GiB.
pub const GITHUB_ASSET_LIMIT: u64 = (2 << 30) - 1;

const DOCS: &str = "https://docs.github.com/rest/releases";
/// Largest JSON request body read (GitHub's own limits are far larger).
const JSON_BODY_CAP: u64 = 1 << 20;

/// A running fake. Dropping it stops both listeners and joins every thread.
pub struct GitHubServer {
    /// Base of the REST API, as octocrab's `base_uri`: `http://127.0.0.1:PORT`.
    pub api_url: String,
    /// Base of the uploads host, as octocrab's `upload_uri`.
    pub uploads_url: String,
    /// The token that API and upload calls must present.
    pub token: String,
    shared: Arc<Shared>,
    _servers: [Server; 2],
}

/// A release as the fake holds it, for assertions.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseState {
    pub id: u64,
    pub tag_name: String,
    pub name: Option<String>,
    pub body: Option<String>,
    pub draft: bool,
    pub prerelease: bool,
    pub target_commitish: String,
    pub make_latest: String,
    /// Published while the immutable-releases mode was on: its assets and tag
    /// can no longer change.
    pub immutable: bool,
    pub assets: Vec<AssetState>,
}

/// An asset as the fake holds it: `state` is "uploaded", or "starter" for the
/// empty asset an interrupted upload leaves behind.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetState {
    pub id: u64,
    pub name: String,
    pub label: Option<String>,
    pub state: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
    pub download_count: u64,
}

impl ReleaseState {
    pub fn asset(&self, name: &str) -> Option<&AssetState> {
        self.assets.iter().find(|a| a.name == name)
    }
}

/// One request as the fake saw it: `host` is "api", "uploads" or "cdn" (the
/// storage host downloads are redirected to); `target` is the path with its
/// query string; `status` is 0 when the connection was dropped without a
/// response (a download cut by `cut_next_downloads` logs the status its
/// headers carried); `range` is the request's `Range` header, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedRequest {
    pub host: &'static str,
    pub method: String,
    pub target: String,
    pub status: u16,
    pub range: Option<String>,
}

impl GitHubServer {
    /// Token "test-token"; assets up to GitHub's limit (2 GiB − 1 byte).
    pub fn start() -> GitHubServer {
        GitHubServer::start_with(DEFAULT_TOKEN, GITHUB_ASSET_LIMIT)
    }

    /// Assets of at most `limit` bytes are accepted; larger ones get a 422.
    pub fn with_asset_limit(limit: u64) -> GitHubServer {
        GitHubServer::start_with(DEFAULT_TOKEN, limit)
    }

    /// A GitHub that reports no `digest` for assets (GitHub Enterprise
    /// Server before digests).
    pub fn without_digests() -> GitHubServer {
        GitHubServer::start_full(DEFAULT_TOKEN, GITHUB_ASSET_LIMIT, false, false)
    }

    /// A repository with immutable releases on: every release published from
    /// now on is immutable (see the header).
    pub fn with_immutable_releases() -> GitHubServer {
        GitHubServer::start_full(DEFAULT_TOKEN, GITHUB_ASSET_LIMIT, true, true)
    }

    pub fn start_with(token: &str, asset_limit: u64) -> GitHubServer {
        GitHubServer::start_full(token, asset_limit, true, false)
    }

    fn start_full(token: &str, asset_limit: u64, digests: bool, immutable: bool) -> GitHubServer {
        let (api, uploads) = (Port::bind(), Port::bind());
        let shared = Arc::new(Shared {
            api_url: api.url(),
            uploads_url: uploads.url(),
            token: token.to_string(),
            asset_limit,
            digests,
            state: Mutex::new(State {
                // Distinct ranges, so that a release id passed where an asset
                // id is wanted (or the reverse) is a 404, not a wrong object.
                next_release_id: 1001,
                next_asset_id: 500_001,
                immutable_mode: immutable,
                ..State::default()
            }),
        });
        let start = |port: Port, host: Host| {
            let shared = shared.clone();
            let name = format!("fake-github-{}", host.name());
            Server::start_on(port, &name, Connections::Close, move |ex| {
                serve(ex, host, &shared)
            })
        };
        let servers = [start(api, Host::Api), start(uploads, Host::Uploads)];
        GitHubServer {
            api_url: shared.api_url.clone(),
            uploads_url: shared.uploads_url.clone(),
            token: token.to_string(),
            shared,
            _servers: servers,
        }
    }

    /// Where anyone downloads an asset of a published release.
    pub fn download_url(&self, tag: &str, name: &str) -> String {
        format!(
            "{}/{OWNER}/{REPO}/releases/download/{}/{}",
            self.api_url,
            encode_segment(tag),
            encode_segment(name)
        )
    }

    /// Every release, newest first, with its assets in upload order.
    pub fn releases(&self) -> Vec<ReleaseState> {
        let state = self.shared.lock();
        state
            .releases
            .iter()
            .rev()
            .map(|r| ReleaseState {
                id: r.id,
                tag_name: r.tag_name.clone(),
                name: r.name.clone(),
                body: r.body.clone(),
                draft: r.draft,
                prerelease: r.prerelease,
                target_commitish: r.target_commitish.clone(),
                make_latest: r.make_latest.clone(),
                immutable: r.immutable,
                assets: r
                    .assets
                    .iter()
                    .map(|a| AssetState {
                        id: a.id,
                        name: a.name.clone(),
                        label: a.label.clone(),
                        state: a.state.to_string(),
                        content_type: a.content_type.clone(),
                        bytes: a.bytes.clone(),
                        download_count: a.download_count,
                    })
                    .collect(),
            })
            .collect()
    }

    /// The newest release with that tag, draft or not.
    pub fn release(&self, tag: &str) -> Option<ReleaseState> {
        self.releases().into_iter().find(|r| r.tag_name == tag)
    }

    /// Turns the repository's immutable-releases setting on or off. Like
    /// GitHub's, it is not retroactive: it decides only for the releases
    /// published afterwards; releases already immutable stay so, and the tags
    /// they used stay burnt.
    pub fn set_immutable_releases(&self, on: bool) {
        self.shared.lock().immutable_mode = on;
    }

    /// Puts a release in place as if created through the API (immutable if it
    /// is published while the mode is on); returns its id.
    pub fn add_release(&self, tag: &str, draft: bool) -> u64 {
        self.shared
            .lock()
            .new_release(tag, None, None, draft, false, "main")
    }

    /// Puts an uploaded asset on a release; returns its id.
    pub fn add_asset(&self, release_id: u64, name: &str, bytes: &[u8]) -> u64 {
        let mut state = self.shared.lock();
        let id = state.next_asset_id;
        state.next_asset_id += 1;
        let now = now_rfc3339();
        let release = state
            .release_mut(release_id)
            .unwrap_or_else(|| panic!("no release {release_id}"));
        release.assets.push(Asset {
            id,
            name: name.to_string(),
            label: None,
            state: "uploaded",
            content_type: "application/octet-stream".into(),
            bytes: bytes.to_vec(),
            sha256: hex(&Sha256::digest(bytes)),
            download_count: 0,
            created_at: now.clone(),
            updated_at: now,
        });
        id
    }

    /// The next `n` uploads that pass validation get `status` (e.g. 500, 502,
    /// 503) after their body is read, and nothing is stored.
    pub fn fail_next_uploads(&self, n: usize, status: u16) {
        let mut state = self.shared.lock();
        state
            .faults
            .extend(std::iter::repeat_n(Fault::Fail(status), n));
    }

    /// Forgets the upload and download faults not used yet: the server is
    /// healthy again.
    pub fn clear_faults(&self) {
        let mut state = self.shared.lock();
        state.faults.clear();
        state.download_faults.clear();
    }

    /// The next `n` downloads that the storage host would serve (a 200 or 206)
    /// send their full headers, with the `Content-Length` of the whole range
    /// asked, then only `after` bytes of the body, and the connection is
    /// closed: a truncated transfer. Requests it refuses (400, 403, 404, 416)
    /// use no fault. Download faults are used in the order they were queued.
    pub fn cut_next_downloads(&self, n: usize, after: u64) {
        self.shared
            .lock()
            .download_faults
            .extend(std::iter::repeat_n(DownloadFault::Cut(after), n));
    }

    /// The next `n` downloads that the storage host would serve get `status`
    /// (e.g. 500, 503) with an empty body instead.
    pub fn fail_next_downloads(&self, n: usize, status: u16) {
        self.shared
            .lock()
            .download_faults
            .extend(std::iter::repeat_n(DownloadFault::Fail(status), n));
    }

    /// The next upload that passes validation gets `status` after its body is
    /// read, and leaves an empty "starter" asset holding its name: GitHub's
    /// documented outcome of an upstream failure.
    pub fn fail_next_upload_leaving_starter(&self, status: u16) {
        self.shared
            .lock()
            .faults
            .push(Fault::FailLeavingStarter(status));
    }

    /// The next upload that passes validation has part of its body read, leaves
    /// a "starter" asset, and has its connection dropped with no response.
    pub fn break_next_upload(&self) {
        self.shared.lock().faults.push(Fault::Break);
    }

    /// Every request so far, with the host it came to.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.shared.lock().log.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().log.clear();
    }

    /// The requests that tried to upload an asset.
    pub fn upload_requests(&self) -> Vec<LoggedRequest> {
        self.request_log()
            .into_iter()
            .filter(|r| r.host == "uploads" && r.method == "POST")
            .collect()
    }

    /// The requests to the storage host, where downloads are redirected; each
    /// with the `Range` it asked for.
    pub fn download_requests(&self) -> Vec<LoggedRequest> {
        self.request_log()
            .into_iter()
            .filter(|r| r.host == "cdn")
            .collect()
    }
}

// ---------------------------------------------------------------------------
// State

struct Shared {
    api_url: String,
    uploads_url: String,
    token: String,
    asset_limit: u64,
    /// Whether assets carry `digest` (github.com does; older GitHub
    /// Enterprise Server does not).
    digests: bool,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct State {
    next_release_id: u64,
    next_asset_id: u64,
    /// In creation order; "newest first" is the reverse.
    releases: Vec<Release>,
    faults: Vec<Fault>,
    download_faults: Vec<DownloadFault>,
    log: Vec<LoggedRequest>,
    /// The repository's immutable-releases setting: releases published while
    /// it is on become immutable.
    immutable_mode: bool,
    /// Every tag an immutable release has had, deleted or not: never usable
    /// again.
    immutable_tags: HashSet<String>,
}

#[derive(Clone, Copy)]
enum Fault {
    Fail(u16),
    FailLeavingStarter(u16),
    Break,
}

#[derive(Clone, Copy)]
enum DownloadFault {
    /// Full headers, then this many body bytes, then the connection closes.
    Cut(u64),
    /// This status, with an empty body.
    Fail(u16),
}

struct Release {
    id: u64,
    tag_name: String,
    target_commitish: String,
    name: Option<String>,
    body: Option<String>,
    draft: bool,
    prerelease: bool,
    make_latest: String,
    created_at: String,
    published_at: Option<String>,
    /// Published while the immutable-releases mode was on.
    immutable: bool,
    assets: Vec<Asset>,
}

struct Asset {
    id: u64,
    name: String,
    label: Option<String>,
    state: &'static str,
    content_type: String,
    bytes: Vec<u8>,
    /// Hex SHA-256 of `bytes`, computed once when they are stored.
    sha256: String,
    download_count: u64,
    created_at: String,
    updated_at: String,
}

impl Release {
    /// The path segment GitHub uses for the release's pages and downloads: the
    /// tag once published, `untagged-<hex>` while a draft.
    fn url_tag(&self) -> String {
        if self.draft {
            let hash = Sha256::digest(format!("draft-{}", self.id).as_bytes());
            format!("untagged-{}", &hex(&hash)[..20])
        } else {
            self.tag_name.clone()
        }
    }
}

impl State {
    fn new_release(
        &mut self,
        tag: &str,
        name: Option<String>,
        body: Option<String>,
        draft: bool,
        prerelease: bool,
        target: &str,
    ) -> u64 {
        let id = self.next_release_id;
        self.next_release_id += 1;
        self.releases.push(Release {
            id,
            tag_name: tag.to_string(),
            target_commitish: target.to_string(),
            name,
            body,
            draft: true,
            prerelease,
            make_latest: "true".into(),
            created_at: now_rfc3339(),
            published_at: None,
            immutable: false,
            assets: Vec::new(),
        });
        if !draft {
            self.publish(id);
        }
        id
    }

    /// Publishes a release: it gets its date, and becomes immutable if the
    /// mode is on.
    fn publish(&mut self, id: u64) {
        let mode = self.immutable_mode;
        let Some(r) = self.release_mut(id) else {
            return;
        };
        r.draft = false;
        r.published_at = Some(now_rfc3339());
        if mode {
            r.immutable = true;
            let tag = r.tag_name.clone();
            self.immutable_tags.insert(tag);
        }
    }

    fn release(&self, id: u64) -> Option<&Release> {
        self.releases.iter().find(|r| r.id == id)
    }

    fn release_mut(&mut self, id: u64) -> Option<&mut Release> {
        self.releases.iter_mut().find(|r| r.id == id)
    }

    /// Whether another release than `except` is published with `tag`.
    fn published_tag_taken(&self, tag: &str, except: Option<u64>) -> bool {
        self.releases
            .iter()
            .any(|r| !r.draft && r.tag_name == tag && Some(r.id) != except)
    }

    fn find_asset(&self, asset_id: u64) -> Option<(&Release, &Asset)> {
        self.releases
            .iter()
            .find_map(|r| r.assets.iter().find(|a| a.id == asset_id).map(|a| (r, a)))
    }
}

// ---------------------------------------------------------------------------
// JSON of GitHub's objects. Every field that octocrab's `models::repos::Release`,
// `Asset`, `Uploader` and `models::Author` (octocrab 0.54) require is present,
// with URLs that parse; the test `octocrab_models_deserialize` checks it.

impl Shared {
    fn user_json(&self) -> Value {
        let api = &self.api_url;
        let login = "release-bot";
        let user = format!("{api}/users/{login}");
        json!({
            "login": login,
            "id": 41898282,
            "node_id": "MDM6Qm90NDE4OTgyODI=",
            "avatar_url": format!("{api}/avatars/u/41898282?v=4"),
            "gravatar_id": "",
            "url": user,
            "html_url": format!("{api}/{login}"),
            "followers_url": format!("{user}/followers"),
            "following_url": format!("{user}/following{{/other_user}}"),
            "gists_url": format!("{user}/gists{{/gist_id}}"),
            "starred_url": format!("{user}/starred{{/owner}}{{/repo}}"),
            "subscriptions_url": format!("{user}/subscriptions"),
            "organizations_url": format!("{user}/orgs"),
            "repos_url": format!("{user}/repos"),
            "events_url": format!("{user}/events{{/privacy}}"),
            "received_events_url": format!("{user}/received_events"),
            "type": "Bot",
            "site_admin": false
        })
    }

    fn asset_json(&self, release: &Release, a: &Asset) -> Value {
        let api = &self.api_url;
        let uploaded = a.state == "uploaded";
        json!({
            "url": format!("{api}/repos/{OWNER}/{REPO}/releases/assets/{}", a.id),
            "browser_download_url": format!(
                "{api}/{OWNER}/{REPO}/releases/download/{}/{}",
                encode_segment(&release.url_tag()),
                encode_segment(&a.name)
            ),
            "id": a.id,
            "node_id": format!("RA_kwDOfake{}", a.id),
            "name": a.name,
            "label": a.label.clone().unwrap_or_default(),
            "state": a.state,
            "content_type": a.content_type,
            "size": a.bytes.len(),
            // GitHub reports a SHA-256 of each uploaded asset.
            "digest": (uploaded && self.digests).then(|| format!("sha256:{}", a.sha256)),
            "download_count": a.download_count,
            "created_at": a.created_at,
            "updated_at": a.updated_at,
            "uploader": self.user_json()
        })
    }

    fn release_json(&self, r: &Release) -> Value {
        let api = &self.api_url;
        let base = format!("{api}/repos/{OWNER}/{REPO}");
        let archive = |kind: &str| {
            (!r.draft).then(|| format!("{base}/{kind}/{}", encode_segment(&r.tag_name)))
        };
        json!({
            "url": format!("{base}/releases/{}", r.id),
            "html_url": format!("{api}/{OWNER}/{REPO}/releases/tag/{}", encode_segment(&r.url_tag())),
            "assets_url": format!("{base}/releases/{}/assets", r.id),
            "upload_url": format!(
                "{}/repos/{OWNER}/{REPO}/releases/{}/assets{{?name,label}}",
                self.uploads_url, r.id
            ),
            "tarball_url": archive("tarball"),
            "zipball_url": archive("zipball"),
            "id": r.id,
            "node_id": format!("RE_kwDOfake{}", r.id),
            "tag_name": r.tag_name,
            "target_commitish": r.target_commitish,
            "name": r.name,
            "body": r.body,
            "draft": r.draft,
            "prerelease": r.prerelease,
            "immutable": r.immutable,
            "created_at": r.created_at,
            "published_at": r.published_at,
            "author": self.user_json(),
            "assets": r.assets.iter().map(|a| self.asset_json(r, a)).collect::<Vec<_>>()
        })
    }

    /// A Git reference to a release's tag (which must exist).
    fn cdn_url(&self, a: &Asset) -> String {
        format!(
            "{}/cdn/{}/{}?sig={}",
            self.uploads_url,
            a.id,
            encode_segment(&a.name),
            self.cdn_sig(a.id, &a.name)
        )
    }

    /// The signature of a storage URL: it covers the id and the name, and is
    /// keyed by the token so that a client cannot make one up.
    fn cdn_sig(&self, id: u64, name: &str) -> String {
        let mac = Sha256::digest(format!("GET\n{id}\n{name}\n{}", self.token).as_bytes());
        hex(&mac[..16])
    }
}

// ---------------------------------------------------------------------------
// HTTP

#[derive(Clone, Copy, PartialEq)]
enum Host {
    Api,
    Uploads,
}

impl Host {
    fn name(self) -> &'static str {
        match self {
            Host::Api => "api",
            Host::Uploads => "uploads",
        }
    }
}

struct Request {
    method: String,
    target: String,
    /// Percent-decoded path segments.
    segments: Vec<String>,
    /// Form-decoded query parameters.
    query: Vec<(String, String)>,
    headers: http::HeaderMap,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> Option<u64> {
        self.header("content-length")?.trim().parse().ok()
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
}

struct Response {
    status: u16,
    content_type: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many bytes of `body` (its full length is still the
    /// `Content-Length`), then close: a transfer cut short.
    cut_after: Option<u64>,
}

impl Response {
    fn json(status: u16, value: &Value) -> Response {
        Response {
            status,
            content_type: "application/json; charset=utf-8",
            headers: Vec::new(),
            body: serde_json::to_vec_pretty(value).unwrap(),
            cut_after: None,
        }
    }

    fn empty(status: u16) -> Response {
        Response {
            status,
            content_type: "",
            headers: Vec::new(),
            body: Vec::new(),
            cut_after: None,
        }
    }

    fn bytes(status: u16, bytes: Vec<u8>) -> Response {
        Response {
            status,
            content_type: "application/octet-stream",
            headers: Vec::new(),
            body: bytes,
            cut_after: None,
        }
    }

    /// `302 Found` to `location`, with an empty body as GitHub sends.
    fn redirect(location: String) -> Response {
        Response {
            status: 302,
            content_type: "text/html;charset=utf-8",
            headers: vec![("Location".into(), location)],
            body: Vec::new(),
            cut_after: None,
        }
    }

    /// An error of the storage host, in S3's XML.
    fn s3_error(status: u16, code: &str, message: &str) -> Response {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <Error><Code>{code}</Code><Message>{message}</Message></Error>"
        );
        Response {
            status,
            content_type: "application/xml",
            headers: Vec::new(),
            body: body.into_bytes(),
            cut_after: None,
        }
    }

    fn error(status: u16, message: &str) -> Response {
        Response::json(
            status,
            &json!({
                "message": message,
                "documentation_url": DOCS,
                "status": status.to_string()
            }),
        )
    }

    fn not_found() -> Response {
        Response::error(404, "Not Found")
    }

    fn validation(errors: Value) -> Response {
        Response::json(
            422,
            &json!({
                "message": "Validation Failed",
                "errors": errors,
                "documentation_url": DOCS,
                "status": "422"
            }),
        )
    }

    fn header(mut self, name: &str, value: String) -> Response {
        self.headers.push((name.to_string(), value));
        self
    }
}

/// What a handler decided.
enum Outcome {
    Reply(Response),
    /// Close the connection without any response.
    Drop,
}

fn serve(ex: &mut Exchange, host: Host, shared: &Shared) -> Reply {
    let req = request(ex);
    let outcome = route(shared, host, &req, ex);
    let status = match &outcome {
        Outcome::Reply(resp) => resp.status,
        Outcome::Drop => 0,
    };
    let host_name = if host == Host::Uploads && is_cdn_path(&req) {
        "cdn"
    } else {
        host.name()
    };
    shared.lock().log.push(LoggedRequest {
        host: host_name,
        method: req.method.clone(),
        target: req.target.clone(),
        status,
        range: req.header("range").map(str::to_string),
    });
    match outcome {
        Outcome::Reply(resp) => Reply::Send(resp.into_http()),
        Outcome::Drop => Reply::Drop,
    }
}

/// The request's head, its path and query decoded.
fn request(ex: &Exchange) -> Request {
    let target = ex.target().to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let segments = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect();
    let headers = ex.head.headers.clone();
    Request {
        method: ex.method().to_string(),
        target,
        segments,
        query,
        headers,
    }
}

impl Response {
    fn into_http(self) -> hyper::Response<server::Body> {
        let mut builder = hyper::Response::builder()
            .status(self.status)
            .header("Content-Length", self.body.len())
            .header("X-GitHub-Api-Version-Selected", "2022-11-28");
        if !self.content_type.is_empty() {
            builder = builder.header("Content-Type", self.content_type);
        }
        for (k, v) in &self.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let body = match self.cut_after {
            Some(after) => server::Body::cut(self.body, after),
            None => server::Body::full(self.body),
        };
        builder.body(body).unwrap()
    }
}

// ---------------------------------------------------------------------------
// Routes

fn route(shared: &Shared, host: Host, req: &Request, conn: &mut Exchange) -> Outcome {
    let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let method = req.method.as_str();

    // github.com/OWNER/REPO/releases/download/TAG/NAME: anonymous downloads.
    if host == Host::Api
        && segs.len() >= 6
        && same_repo(segs[0], segs[1])
        && segs[2] == "releases"
        && segs[3] == "download"
    {
        if method != "GET" {
            return Outcome::Reply(Response::not_found());
        }
        let tag = segs[4..segs.len() - 1].join("/");
        let name = segs[segs.len() - 1];
        return Outcome::Reply(download(shared, &tag, name));
    }

    // The storage host that downloads are redirected to: no token, the
    // signature in the query.
    if host == Host::Uploads && is_cdn_path(req) {
        let resp = match segs.as_slice() {
            ["cdn", id, name @ ..] if !name.is_empty() => cdn(shared, req, id, &name.join("/")),
            _ => no_such_key(),
        };
        return Outcome::Reply(resp);
    }

    // Everything else is /repos/OWNER/REPO/releases/...
    let rest = match segs.as_slice() {
        ["repos", owner, repo, "releases", rest @ ..] if same_repo(owner, repo) => rest,
        _ => return Outcome::Reply(Response::not_found()),
    };
    if let Err(resp) = authorize(shared, req) {
        return Outcome::Reply(resp);
    }
    if host == Host::Uploads {
        return match (method, rest) {
            ("POST", [id, "assets"]) => match id.parse() {
                Ok(id) => upload(shared, req, conn, id),
                Err(_) => Outcome::Reply(Response::not_found()),
            },
            _ => Outcome::Reply(Response::not_found()),
        };
    }
    let resp = match (method, rest) {
        ("GET", []) => list_releases(shared, req),
        ("POST", []) => match json_body(conn) {
            Ok(body) => create_release(shared, &body),
            Err(resp) => resp,
        },
        ("GET", ["tags", tag @ ..]) if !tag.is_empty() => {
            let tag = tag.join("/");
            let state = shared.lock();
            // Only a published release is found by its tag.
            match state
                .releases
                .iter()
                .rev()
                .find(|r| !r.draft && r.tag_name == tag)
            {
                Some(r) => Response::json(200, &shared.release_json(r)),
                None => Response::not_found(),
            }
        }
        ("GET", ["assets", id]) => get_asset(shared, req, id),
        ("DELETE", ["assets", id]) => delete_asset(shared, id),
        (_, [id]) if id.parse::<u64>().is_ok() => {
            let id = id.parse().unwrap();
            match method {
                "GET" => {
                    let state = shared.lock();
                    match state.release(id) {
                        Some(r) => Response::json(200, &shared.release_json(r)),
                        None => Response::not_found(),
                    }
                }
                "PATCH" => match json_body(conn) {
                    Ok(body) => update_release(shared, id, &body),
                    Err(resp) => resp,
                },
                "DELETE" => {
                    let mut state = shared.lock();
                    let before = state.releases.len();
                    state.releases.retain(|r| r.id != id);
                    if state.releases.len() != before {
                        Response::empty(204)
                    } else {
                        Response::not_found()
                    }
                }
                _ => Response::not_found(),
            }
        }
        ("GET", [id, "assets"]) => match id.parse() {
            Ok(id) => {
                let state = shared.lock();
                match state.release(id) {
                    Some(r) => {
                        let all: Vec<Value> =
                            r.assets.iter().map(|a| shared.asset_json(r, a)).collect();
                        paginate(shared, req, all)
                    }
                    None => Response::not_found(),
                }
            }
            Err(_) => Response::not_found(),
        },
        _ => Response::not_found(),
    };
    Outcome::Reply(resp)
}

/// Owner and repository names are not case sensitive.
fn same_repo(owner: &str, repo: &str) -> bool {
    owner.eq_ignore_ascii_case(OWNER) && repo.eq_ignore_ascii_case(REPO)
}

/// `Authorization: Bearer TOKEN` or `Authorization: token TOKEN`.
fn authorize(shared: &Shared, req: &Request) -> Result<(), Response> {
    let Some(value) = req.header("authorization") else {
        return Err(Response::error(401, "Requires authentication"));
    };
    let (scheme, token) = value.trim().split_once(' ').unwrap_or(("", ""));
    let scheme_ok = scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token");
    if scheme_ok && token.trim() == shared.token {
        Ok(())
    } else {
        Err(Response::error(401, "Bad credentials"))
    }
}

fn json_body(conn: &mut Exchange) -> Result<Value, Response> {
    let bytes = conn
        .read_body(JSON_BODY_CAP)
        .map_err(|_| Response::error(400, "Problems parsing JSON"))?;
    if bytes.is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(Response::error(400, "Problems parsing JSON")),
    }
}

/// Reads an optional field of a JSON body, checking its type.
fn field<T>(
    body: &Value,
    name: &str,
    kind: &str,
    get: impl Fn(&Value) -> Option<T>,
) -> Result<Option<T>, Response> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => get(v).map(Some).ok_or_else(|| {
            Response::error(
                422,
                &format!("Invalid request.\n\nFor 'properties/{name}', {v} is not a {kind}."),
            )
        }),
    }
}

fn string_field(body: &Value, name: &str) -> Result<Option<String>, Response> {
    field(body, name, "string", |v| v.as_str().map(str::to_string))
}

fn bool_field(body: &Value, name: &str) -> Result<Option<bool>, Response> {
    field(body, name, "boolean", Value::as_bool)
}

fn make_latest_field(body: &Value) -> Result<Option<String>, Response> {
    let value = string_field(body, "make_latest")?;
    match value.as_deref() {
        None | Some("true" | "false" | "legacy") => Ok(value),
        Some(other) => Err(Response::error(
            422,
            &format!(
                "Invalid request.\n\nFor 'properties/make_latest', \"{other}\" is not one of \
                 [\"true\", \"false\", \"legacy\"]."
            ),
        )),
    }
}

fn tag_exists_error() -> Response {
    Response::validation(json!([
        {"resource": "Release", "code": "already_exists", "field": "tag_name"}
    ]))
}

/// A tag that an immutable release had, now or before it was deleted.
fn tag_used_error() -> Response {
    immutable_release_error("tag_name", "tag_name was used by an immutable release")
}

/// A change refused on an immutable release (none of these texts is
/// documented; see the header for where each comes from).
fn immutable_release_error(field: &str, message: &str) -> Response {
    Response::validation(json!([
        {"resource": "Release", "code": "custom", "field": field, "message": message}
    ]))
}

/// A change refused on an asset of an immutable release.
fn immutable_asset_error(message: &str) -> Response {
    Response::validation(json!([
        {"resource": "ReleaseAsset", "code": "custom", "message": message}
    ]))
}

/// `DELETE …/releases/assets/ID`.
fn delete_asset(shared: &Shared, id: &str) -> Response {
    let mut state = shared.lock();
    let id: u64 = id.parse().unwrap_or(0);
    let Some(immutable) = state.find_asset(id).map(|(r, _)| r.immutable) else {
        return Response::not_found();
    };
    if immutable {
        return immutable_asset_error("Cannot delete asset from an immutable release");
    }
    for r in &mut state.releases {
        r.assets.retain(|a| a.id != id);
    }
    Response::empty(204)
}

fn list_releases(shared: &Shared, req: &Request) -> Response {
    let state = shared.lock();
    let all: Vec<Value> = state
        .releases
        .iter()
        .rev()
        .map(|r| shared.release_json(r))
        .collect();
    paginate(shared, req, all)
}

/// `per_page` (default 30, at most 100) and `page` (from 1), with a `Link`
/// header as GitHub sends.
fn paginate(shared: &Shared, req: &Request, all: Vec<Value>) -> Response {
    let per_page = req
        .param("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = req
        .param("page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let last = all.len().div_ceil(per_page).max(1);
    let items: Vec<Value> = all
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let path = req.target.split('?').next().unwrap_or("");
    let link = |p: usize, rel: &str| {
        format!(
            "<{}{path}?per_page={per_page}&page={p}>; rel=\"{rel}\"",
            shared.api_url
        )
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(link(page - 1, "prev"));
    }
    if page < last {
        links.push(link(page + 1, "next"));
        links.push(link(last, "last"));
    }
    if page > 1 {
        links.push(link(1, "first"));
    }
    let resp = Response::json(200, &Value::Array(items));
    if links.is_empty() {
        resp
    } else {
        resp.header("Link", links.join(", "))
    }
}

fn create_release(shared: &Shared, body: &Value) -> Response {
    let parsed = (|| {
        Ok::<_, Response>((
            string_field(body, "tag_name")?,
            string_field(body, "name")?,
            string_field(body, "body")?,
            bool_field(body, "draft")?.unwrap_or(false),
            bool_field(body, "prerelease")?.unwrap_or(false),
            string_field(body, "target_commitish")?,
            make_latest_field(body)?,
        ))
    })();
    let (tag, name, notes, draft, prerelease, target, make_latest) = match parsed {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let Some(tag) = tag.filter(|t| !t.trim().is_empty()) else {
        return Response::validation(json!([
            {"resource": "Release", "code": "missing_field", "field": "tag_name"}
        ]));
    };
    let mut state = shared.lock();
    if state.immutable_tags.contains(&tag) {
        return tag_used_error();
    }
    if !draft && state.published_tag_taken(&tag, None) {
        return tag_exists_error();
    }
    let target = target.unwrap_or_else(|| "main".into());
    let id = state.new_release(&tag, name, notes, draft, prerelease, &target);
    let release = state.release_mut(id).unwrap();
    if let Some(m) = make_latest {
        release.make_latest = m;
    }
    let release = state.release(id).unwrap();
    let json = shared.release_json(release);
    let url = json["url"].as_str().unwrap().to_string();
    Response::json(201, &json).header("Location", url)
}

fn update_release(shared: &Shared, id: u64, body: &Value) -> Response {
    let parsed = (|| {
        Ok::<_, Response>((
            string_field(body, "tag_name")?,
            string_field(body, "name")?,
            string_field(body, "body")?,
            bool_field(body, "draft")?,
            bool_field(body, "prerelease")?,
            string_field(body, "target_commitish")?,
            make_latest_field(body)?,
        ))
    })();
    let (tag, name, notes, draft, prerelease, target, make_latest) = match parsed {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let mut state = shared.lock();
    let Some(current) = state.release(id) else {
        return Response::not_found();
    };
    let new_draft = draft.unwrap_or(current.draft);
    let publishing = current.draft && !new_draft;
    if current.immutable {
        // Only the title, the notes, `prerelease` and `make_latest` may change.
        if tag.as_ref().is_some_and(|t| *t != current.tag_name) {
            return immutable_release_error(
                "tag_name",
                "Cannot change the tag of an immutable release",
            );
        }
        if target
            .as_ref()
            .is_some_and(|t| *t != current.target_commitish)
        {
            return immutable_release_error(
                "target_commitish",
                "Cannot change the tag of an immutable release",
            );
        }
        if new_draft {
            return immutable_release_error("draft", "Cannot unpublish an immutable release");
        }
    }
    let new_tag = tag.unwrap_or_else(|| current.tag_name.clone());
    let renamed = new_tag != current.tag_name;
    if (renamed || publishing) && state.immutable_tags.contains(&new_tag) {
        return tag_used_error();
    }
    if !new_draft && state.published_tag_taken(&new_tag, Some(id)) {
        return tag_exists_error();
    }
    let r = state.release_mut(id).unwrap();
    r.tag_name = new_tag;
    if body.get("name").is_some() {
        r.name = name;
    }
    if body.get("body").is_some() {
        r.body = notes;
    }
    if let Some(p) = prerelease {
        r.prerelease = p;
    }
    if let Some(t) = target {
        r.target_commitish = t;
    }
    if let Some(m) = make_latest {
        r.make_latest = m;
    }
    if new_draft {
        r.draft = true;
        r.published_at = None;
    }
    if publishing {
        state.publish(id);
    }
    let r = state.release(id).unwrap();
    Response::json(200, &shared.release_json(r))
}

fn get_asset(shared: &Shared, req: &Request, id: &str) -> Response {
    let state = shared.lock();
    let Some((release, asset)) = id.parse().ok().and_then(|id| state.find_asset(id)) else {
        return Response::not_found();
    };
    let wants_bytes = req
        .header("accept")
        .is_some_and(|v| v.contains("application/octet-stream"));
    if wants_bytes {
        if asset.state != "uploaded" {
            return Response::not_found();
        }
        // Not counted in `download_count` (see the header).
        Response::redirect(shared.cdn_url(asset))
    } else {
        Response::json(200, &shared.asset_json(release, asset))
    }
}

fn download(shared: &Shared, tag: &str, name: &str) -> Response {
    let mut state = shared.lock();
    // Only published releases, and only by their tag (not `untagged-…`).
    let asset = state
        .releases
        .iter_mut()
        .rev()
        .filter(|r| !r.draft && r.tag_name == tag)
        .find_map(|r| {
            r.assets
                .iter_mut()
                .find(|a| a.name == name && a.state == "uploaded")
        });
    match asset {
        Some(a) => {
            // Counted here, once per download, not at the storage host.
            a.download_count += 1;
            Response::redirect(shared.cdn_url(a))
        }
        None => Response::error(404, "Not Found"),
    }
}

fn is_cdn_path(req: &Request) -> bool {
    req.segments.first().is_some_and(|s| s == "cdn")
}

fn no_such_key() -> Response {
    Response::s3_error(404, "NoSuchKey", "The specified key does not exist.")
}

/// What a `Range` header asks of an object of `total` bytes.
#[derive(Debug, PartialEq)]
enum ByteRange {
    /// No header, or one that is ignored: the whole object, 200.
    Whole,
    /// First and last byte, inclusive: 206.
    Part(u64, u64),
    /// 416.
    Unsatisfiable,
}

/// A single range of RFC 9110: `bytes=N-`, `bytes=N-M` or `bytes=-K`. A
/// header that does not parse, or that asks for several ranges, is ignored.
fn byte_range(header: Option<&str>, total: u64) -> ByteRange {
    let Some((unit, spec)) = header.and_then(|h| h.trim().split_once('=')) else {
        return ByteRange::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // The last `last` bytes.
        return match last.parse::<u64>() {
            Ok(0) => ByteRange::Unsatisfiable,
            Ok(_) if total == 0 => ByteRange::Unsatisfiable,
            Ok(n) => ByteRange::Part(total - n.min(total), total - 1),
            Err(_) => ByteRange::Whole,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return ByteRange::Whole;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match last.parse::<u64>() {
            Ok(end) if end >= start => end,
            _ => return ByteRange::Whole,
        }
    };
    if start >= total {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Part(start, end.min(total - 1))
}

/// `GET {uploads_url}/cdn/ID/NAME?sig=…`: the pre-signed storage URL that
/// downloads are redirected to.
fn cdn(shared: &Shared, req: &Request, id: &str, name: &str) -> Response {
    if req.header("authorization").is_some() {
        return Response::s3_error(
            400,
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, \
             Signature query string parameter or the Authorization header should be specified",
        );
    }
    let mut state = shared.lock();
    // Borrowed apart, so that a fault can be taken while the asset is held.
    let State {
        releases,
        download_faults,
        ..
    } = &mut *state;
    let id: Option<u64> = id.parse().ok();
    let found = releases
        .iter()
        .flat_map(|r| &r.assets)
        .find(|a| Some(a.id) == id && a.state == "uploaded" && a.name == name);
    let Some(asset) = found else {
        return no_such_key();
    };
    let sig = shared.cdn_sig(asset.id, &asset.name);
    if req.method != "GET" || req.param("sig") != Some(sig.as_str()) {
        return Response::s3_error(
            403,
            "AccessDenied",
            "Request has expired or the signature does not match",
        );
    }
    let total = asset.bytes.len() as u64;
    let range = byte_range(req.header("range"), total);
    if range == ByteRange::Unsatisfiable {
        return Response::s3_error(
            416,
            "InvalidRange",
            "The requested range is not satisfiable",
        )
        .header("Content-Range", format!("bytes */{total}"));
    }
    let fault = (!download_faults.is_empty()).then(|| download_faults.remove(0));
    let cut_after = match fault {
        Some(DownloadFault::Fail(status)) => return Response::empty(status),
        Some(DownloadFault::Cut(after)) => Some(after),
        None => None,
    };
    let resp = match range {
        ByteRange::Part(first, last) => {
            Response::bytes(206, asset.bytes[first as usize..=last as usize].to_vec())
                .header("Content-Range", format!("bytes {first}-{last}/{total}"))
        }
        _ => Response::bytes(200, asset.bytes.clone()),
    };
    Response {
        cut_after,
        ..resp
            .header("Accept-Ranges", "bytes".into())
            .header("ETag", format!("\"{}\"", &asset.sha256[..32]))
            .header(
                "Content-Disposition",
                format!("attachment; filename={}", asset.name),
            )
    }
}

/// GitHub renames characters other than letters, digits and `-_.+` to `.`.
fn sanitize_asset_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.+".contains(c) {
                c
            } else {
                '.'
            }
        })
        .collect()
}

fn upload(shared: &Shared, req: &Request, conn: &mut Exchange, release_id: u64) -> Outcome {
    let reply = Outcome::Reply;
    match shared.lock().release(release_id) {
        None => return reply(Response::not_found()),
        // Refused before the body is read (the server drains the rest).
        Some(r) if r.immutable => {
            return reply(Response::error(
                422,
                "Cannot upload assets to an immutable release.",
            ));
        }
        Some(_) => {}
    }
    let Some(raw_name) = req.param("name").filter(|n| !n.is_empty()) else {
        return reply(Response::validation(json!([
            {"resource": "ReleaseAsset", "code": "missing_field", "field": "name"}
        ])));
    };
    let name = sanitize_asset_name(raw_name);
    let label = req.param("label").map(str::to_string);
    let Some(content_type) = req.header("content-type").filter(|t| !t.is_empty()) else {
        return reply(Response::validation(json!([
            {"resource": "ReleaseAsset", "code": "missing_field", "field": "content_type"}
        ])));
    };
    let Some(len) = req.content_length().filter(|_| !req.chunked()) else {
        return reply(Response::error(411, "A Content-Length header is required"));
    };
    if len > shared.asset_limit {
        return reply(Response::validation(json!([{
            "resource": "ReleaseAsset",
            "code": "custom",
            "field": "size",
            "message": format!(
                "size must be at most {} bytes (each file in a release must be under 2 GiB); \
                 Content-Length was {len}",
                shared.asset_limit
            )
        }])));
    }
    let fault = {
        let mut state = shared.lock();
        let release = state.release(release_id).unwrap();
        if release.assets.iter().any(|a| a.name == name) {
            return reply(Response::validation(json!([
                {"resource": "ReleaseAsset", "code": "already_exists", "field": "name"}
            ])));
        }
        (!state.faults.is_empty()).then(|| state.faults.remove(0))
    };

    // Failures that store nothing: read the body (GitHub's upstream failed
    // after taking it), then answer.
    if let Some(Fault::Fail(status)) = fault {
        let _ = conn.read_body(u64::MAX);
        return reply(Response::error(status, reason(status)));
    }

    // The asset exists as an empty "starter" from here until its bytes are in.
    let asset_id = {
        let mut state = shared.lock();
        let id = state.next_asset_id;
        state.next_asset_id += 1;
        let now = now_rfc3339();
        let Some(release) = state.release_mut(release_id) else {
            return reply(Response::not_found());
        };
        release.assets.push(Asset {
            id,
            name: name.clone(),
            label: label.clone(),
            state: "starter",
            content_type: content_type.to_string(),
            bytes: Vec::new(),
            sha256: String::new(),
            download_count: 0,
            created_at: now.clone(),
            updated_at: now,
        });
        id
    };

    match fault {
        Some(Fault::Break) => {
            let _ = conn.read_up_to(len / 2);
            return Outcome::Drop;
        }
        Some(Fault::FailLeavingStarter(status)) => {
            let _ = conn.read_body(u64::MAX);
            return reply(Response::error(status, reason(status)));
        }
        _ => {}
    }
    let Ok(bytes) = conn.read_body(len) else {
        // The client went away: the starter asset stays, holding the name.
        return Outcome::Drop;
    };

    let mut state = shared.lock();
    let Some(release) = state.release_mut(release_id) else {
        return reply(Response::not_found());
    };
    let Some(asset) = release.assets.iter_mut().find(|a| a.id == asset_id) else {
        // Deleted while it was being uploaded.
        return reply(Response::not_found());
    };
    asset.sha256 = hex(&Sha256::digest(&bytes));
    asset.bytes = bytes;
    asset.state = "uploaded";
    asset.updated_at = now_rfc3339();
    let release = state.release(release_id).unwrap();
    let asset = release.assets.iter().find(|a| a.id == asset_id).unwrap();
    reply(Response::json(201, &shared.asset_json(release, asset)))
}

// ---------------------------------------------------------------------------
// Small helpers

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes `%XX`, and `+` as a space in query strings (form encoding).
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hexpair = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hexpair, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes everything but unreserved characters, for a path segment.
fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Now, as GitHub writes times: `2024-05-01T12:34:56Z`.
fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The reason phrase of a status, as the error message GitHub sends with it.
fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Status")
}
