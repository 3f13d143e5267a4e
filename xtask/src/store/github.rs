//! GitHub Releases (octocrab): one release per Slurm version, tag
//! `slurm-<version>`. A new release is a draft until every expected asset is
//! there; an asset with the same name and SHA-256 is skipped, one with other
//! content is replaced, a broken (`starter`) asset is deleted before the
//! upload is tried again.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use octocrab::Octocrab;
use octocrab::models::repos::{Asset, Release};
use sha2::Digest;

/// GitHub refuses assets of 2 GiB and more.
pub const ASSET_LIMIT: u64 = (2 << 30) - 1;

pub struct GitHub {
    rt: tokio::runtime::Runtime,
    api: String,
    token: String,
    pub owner: String,
    pub repo: String,
}

/// One file to be an asset of the release.
pub struct AssetFile<'a> {
    pub name: String,
    pub path: &'a std::path::Path,
    pub size: u64,
    pub sha256: String,
}

pub struct Published {
    pub uploaded: Vec<String>,
    pub skipped: Vec<String>,
    pub html_url: String,
}

impl GitHub {
    /// `GITHUB_TOKEN`, `GITHUB_REPOSITORY` (owner/name) and `GITHUB_API_URL`:
    /// the names Actions already sets.
    pub fn from_env() -> Result<GitHub> {
        let token = std::env::var("GITHUB_TOKEN").ok().filter(|t| !t.is_empty());
        let token = token.context("GITHUB_TOKEN is not set: publishing to GitHub Releases needs a token with contents: write")?;
        let repository = std::env::var("GITHUB_REPOSITORY")
            .context("GITHUB_REPOSITORY (owner/name) is not set")?;
        let (owner, repo) = repository
            .split_once('/')
            .filter(|(o, r)| !o.is_empty() && !r.is_empty() && !r.contains('/'))
            .with_context(|| format!("GITHUB_REPOSITORY={repository} is not owner/name"))?;
        let api =
            std::env::var("GITHUB_API_URL").unwrap_or_else(|_| "https://api.github.com".into());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        Ok(GitHub {
            rt,
            api: api.trim_end_matches('/').to_string(),
            token,
            owner: owner.into(),
            repo: repo.into(),
        })
    }

    fn client(&self, upload_uri: Option<&str>) -> Result<Octocrab> {
        let mut b = Octocrab::builder()
            .personal_token(self.token.clone())
            .base_uri(self.api.as_str())?;
        if let Some(u) = upload_uri {
            // Uploads stream their body, which octocrab's retry would resend
            // already read (an empty body under the full Content-Length):
            // `publish_async` retries them itself, each from the file.
            b = b
                .upload_uri(u)?
                .add_retry_config(octocrab::service::middleware::retry::RetryConfig::None);
        }
        Ok(b.build()?)
    }

    /// Makes sure release `tag` holds every file, then publishes it.
    pub fn publish(
        &self,
        tag: &str,
        title: &str,
        files: &[AssetFile<'_>],
        dry_run: bool,
    ) -> Result<Published> {
        for f in files {
            if f.size > ASSET_LIMIT {
                bail!(
                    "{} is {} bytes: GitHub assets must be under 2 GiB (package with --split-size)",
                    f.name,
                    f.size
                );
            }
        }
        self.rt
            .block_on(self.publish_async(tag, title, files, dry_run))
    }

    async fn publish_async(
        &self,
        tag: &str,
        title: &str,
        files: &[AssetFile<'_>],
        dry_run: bool,
    ) -> Result<Published> {
        let api = self.client(None)?;
        let repo = api.repos(&self.owner, &self.repo);
        let releases = repo.releases();
        let existing = find_release(&api, &self.owner, &self.repo, tag).await?;
        if dry_run {
            let mut out = Published {
                uploaded: vec![],
                skipped: vec![],
                html_url: String::new(),
            };
            let assets = match &existing {
                Some(r) => list_assets(&api, &self.owner, &self.repo, r.id.0).await?,
                None => vec![],
            };
            for f in files {
                let mut same = false;
                for a in assets.iter().filter(|a| a.name == f.name) {
                    same |= self.holds(a, f).await?;
                }
                outln!(
                    "{} {} -> release {tag}",
                    if same { "skip" } else { "put " },
                    f.name
                );
                if same {
                    out.skipped.push(f.name.clone())
                } else {
                    out.uploaded.push(f.name.clone())
                }
            }
            return Ok(out);
        }
        let release = match existing {
            Some(r) => r,
            None => releases
                .create(tag)
                .name(title)
                .body("Upload in progress: this draft is published when every asset is here.")
                .draft(true)
                .send()
                .await
                .map_err(|e| github_error(&format!("creating the draft release {tag}"), e))?,
        };
        let upload_origin = origin(release.upload_url.as_str());
        let uploader = self.client(Some(&upload_origin))?;
        let mut out = Published {
            uploaded: vec![],
            skipped: vec![],
            html_url: String::new(),
        };
        let upload_url = release.upload_url.replace("{?name,label}", "");
        for f in files {
            let mut tries = 0;
            let mut checked = false;
            loop {
                let assets = list_assets(&api, &self.owner, &self.repo, release.id.0).await?;
                let present = assets.iter().find(|a| a.name == f.name);
                if let Some(a) = present
                    && self.holds(a, f).await?
                {
                    outln!("skip {} (same SHA-256)", f.name);
                    out.skipped.push(f.name.clone());
                    break;
                }
                if let Some(a) = present {
                    // Other content, or a broken upload left as `starter`:
                    // replace it, but only with bytes proven good first (a
                    // streaming read), so a bad file changes nothing.
                    if !checked {
                        let path = f.path.to_path_buf();
                        let actual = tokio::task::spawn_blocking(move || {
                            crate::store::local::sha256_file(&path)
                        })
                        .await
                        .context("hashing a file")??;
                        if actual != f.sha256 {
                            return Err(crate::store::mismatch(f.path, &actual, &f.sha256));
                        }
                        checked = true;
                    }
                    api.repos(&self.owner, &self.repo)
                        .release_assets()
                        .delete(a.id.0)
                        .await
                        .map_err(|e| {
                            github_error(&format!("deleting the old asset {}", f.name), e)
                        })?;
                }
                // Streamed from the file, its SHA-256 checked in the same
                // read: memory stays at one buffer whatever the asset's size.
                let (body, verdict) = FileBody::open(f).await?;
                let sent = upload(&uploader, &upload_url, &f.name, f.size, body).await;
                if let Some(actual) = verdict.mismatch() {
                    // GitHub keeps an interrupted upload as a `starter`
                    // asset: remove it, so nothing of these bytes stays.
                    let assets = list_assets(&api, &self.owner, &self.repo, release.id.0).await?;
                    for a in assets
                        .iter()
                        .filter(|a| a.name == f.name && a.state != "uploaded")
                    {
                        let _ = api
                            .repos(&self.owner, &self.repo)
                            .release_assets()
                            .delete(a.id.0)
                            .await;
                    }
                    return Err(crate::store::mismatch(f.path, &actual, &f.sha256));
                }
                match sent {
                    Ok(()) => {
                        outln!("put  {} ({} bytes)", f.name, f.size);
                        out.uploaded.push(f.name.clone());
                        break;
                    }
                    Err(e) if tries < 3 => {
                        tries += 1;
                        eprintln!("upload of {} failed ({e:#}), trying again", f.name);
                        tokio::time::sleep(std::time::Duration::from_millis(500 * tries)).await;
                    }
                    Err(e) => return Err(e.context(format!("uploading {}", f.name))),
                }
            }
        }
        // Every expected asset must be there, complete, before anyone sees the release.
        let assets = list_assets(&api, &self.owner, &self.repo, release.id.0).await?;
        for f in files {
            let mut there = false;
            for a in assets.iter().filter(|a| a.name == f.name) {
                there |= self.holds(a, f).await?;
            }
            if !there {
                bail!(
                    "release {tag}: {} is not there after the upload; the release stays a draft",
                    f.name
                );
            }
        }
        let notes = release_notes(title, &assets, files);
        let updated = releases
            .update(release.id.0)
            .body(&notes)
            .draft(false)
            .send()
            .await
            .map_err(|e| github_error(&format!("publishing release {tag}"), e))?;
        out.html_url = updated.html_url.to_string();
        Ok(out)
    }
}

impl GitHub {
    /// Whether asset `a` holds exactly `f`'s bytes. GitHub reports each
    /// asset's SHA-256 as its `digest`. A GitHub that does not (GitHub
    /// Enterprise Server before digests) gets the asset read back and
    /// hashed instead, and the log says so: without it, no release could
    /// ever be proven complete and published.
    async fn holds(&self, a: &Asset, f: &AssetFile<'_>) -> Result<bool> {
        if a.state != "uploaded" || a.size as u64 != f.size {
            return Ok(false);
        }
        if let Some(digest) = a.digest.as_deref() {
            return Ok(digest == format!("sha256:{}", f.sha256));
        }
        outln!(
            "{}: GitHub reports no digest for it: reading it back to check its SHA-256",
            f.name
        );
        let (url, token, name) = (a.url.to_string(), self.token.clone(), f.name.clone());
        let sha = tokio::task::spawn_blocking(move || read_back_sha256(&url, &token, &name))
            .await
            .context("reading an asset back")??;
        Ok(sha == f.sha256)
    }
}

/// The SHA-256 of an asset as GitHub serves it (the token goes to the API
/// only, not to where the download redirects).
fn read_back_sha256(url: &str, token: &str, name: &str) -> Result<String> {
    use crate::store::Chunks as _;
    use http::header;
    let http = crate::http::Http::new()?;
    let mut resp = http.get(
        url,
        &[
            (header::ACCEPT, "application/octet-stream".into()),
            (header::AUTHORIZATION, format!("Bearer {token}")),
        ],
    )?;
    if !(200..300).contains(&resp.status) {
        return Err(resp.error(&format!("reading {name} back")));
    }
    let mut hasher = sha2::Sha256::new();
    while let Some(chunk) = resp.next_chunk()? {
        hasher.update(&chunk);
    }
    Ok(crate::package::output::hex(&hasher.finalize()))
}

/// POSTs one asset to the release's upload URL, as octocrab's
/// `upload_asset` does, but with a streaming body.
async fn upload(
    uploader: &Octocrab,
    upload_url: &str,
    name: &str,
    size: u64,
    body: FileBody,
) -> Result<()> {
    let request = http::Request::post(format!("{upload_url}?name={name}"))
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .header(http::header::CONTENT_LENGTH, size)
        .body(octocrab::OctoBody::new(body))?;
    let response = uploader
        .execute(request)
        .await
        .map_err(|e| anyhow::anyhow!("{}", one_line(&e)))?;
    octocrab::map_github_error(response)
        .await
        .map_err(|e| anyhow::anyhow!("{}", one_line(&e)))?;
    Ok(())
}

/// How much of a file is in memory at once while it uploads.
const CHUNK: usize = 1 << 20;

/// An upload's body, read from the file as the connection takes it and
/// hashed on the way. If the bytes are not the expected ones, the body ends
/// in an error instead of its last piece, so the upload never completes, and
/// [`Verdict`] tells why.
struct FileBody {
    file: tokio::fs::File,
    buf: Vec<u8>,
    left: u64,
    hasher: sha2::Sha256,
    expected: String,
    verdict: Verdict,
}

/// What a [`FileBody`] found: the actual SHA-256 when it was not the one expected.
#[derive(Clone, Default)]
struct Verdict(std::sync::Arc<std::sync::Mutex<Option<String>>>);

impl Verdict {
    fn mismatch(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl FileBody {
    async fn open(f: &AssetFile<'_>) -> Result<(FileBody, Verdict)> {
        let file = tokio::fs::File::open(f.path)
            .await
            .with_context(|| format!("reading {}", f.path.display()))?;
        let verdict = Verdict::default();
        let body = FileBody {
            file,
            buf: vec![0u8; CHUNK],
            left: f.size,
            hasher: sha2::Sha256::new(),
            expected: f.sha256.clone(),
            verdict: verdict.clone(),
        };
        Ok((body, verdict))
    }
}

impl hyper::body::Body for FileBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::io::Result<hyper::body::Frame<bytes::Bytes>>>> {
        use std::task::Poll;
        use tokio::io::AsyncRead as _;
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let want = this
            .buf
            .len()
            .min(usize::try_from(this.left).unwrap_or(usize::MAX));
        let mut read = tokio::io::ReadBuf::new(&mut this.buf[..want]);
        match std::pin::Pin::new(&mut this.file).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let piece = read.filled();
                if piece.is_empty() {
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file is shorter than its size",
                    ))));
                }
                this.hasher.update(piece);
                this.left -= piece.len() as u64;
                let piece = bytes::Bytes::copy_from_slice(piece);
                if this.left == 0 {
                    let actual =
                        crate::package::output::hex(&std::mem::take(&mut this.hasher).finalize());
                    if actual != this.expected {
                        *this.verdict.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(actual);
                        return Poll::Ready(Some(Err(std::io::Error::other(
                            "the file's SHA-256 is not the expected one",
                        ))));
                    }
                }
                Poll::Ready(Some(Ok(hyper::body::Frame::data(piece))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left)
    }
}

/// Drafts are invisible to the by-tag endpoint: list and match instead.
async fn find_release(
    api: &Octocrab,
    owner: &str,
    repo: &str,
    tag: &str,
) -> Result<Option<Release>> {
    let mut page = 1u32;
    loop {
        let list = api
            .repos(owner, repo)
            .releases()
            .list()
            .per_page(100)
            .page(page)
            .send()
            .await
            .map_err(|e| github_error(&format!("listing the releases of {owner}/{repo}"), e))?;
        let n = list.items.len();
        // A published release wins over drafts of the same tag.
        let mut matching: Vec<Release> = list
            .items
            .into_iter()
            .filter(|r| r.tag_name == tag)
            .collect();
        matching.sort_by_key(|r| r.draft);
        if let Some(r) = matching.into_iter().next() {
            return Ok(Some(r));
        }
        if n < 100 {
            return Ok(None);
        }
        page += 1;
    }
}

async fn list_assets(api: &Octocrab, owner: &str, repo: &str, release: u64) -> Result<Vec<Asset>> {
    let mut all = Vec::new();
    let mut page = 1u32;
    loop {
        let list = api
            .repos(owner, repo)
            .releases()
            .assets(release)
            .per_page(100)
            .page(page)
            .send()
            .await
            .map_err(|e| github_error("listing release assets", e))?;
        let n = list.items.len();
        all.extend(list.items);
        if n < 100 {
            return Ok(all);
        }
        page += 1;
    }
}

/// `https://uploads.github.com/repos/o/r/releases/1/assets{?name,label}` → `https://uploads.github.com`.
fn origin(upload_url: &str) -> String {
    let after_scheme = upload_url.find("://").map_or(0, |i| i + 3);
    let end = upload_url[after_scheme..]
        .find('/')
        .map_or(upload_url.len(), |i| after_scheme + i);
    upload_url[..end].to_string()
}

fn one_line(e: &octocrab::Error) -> String {
    match e {
        octocrab::Error::GitHub { source, .. } => {
            let errors = source
                .errors
                .as_ref()
                .map(|v| format!(" {v:?}"))
                .unwrap_or_default();
            format!("{}{errors} (HTTP {})", source.message, source.status_code)
        }
        other => other.to_string().lines().next().unwrap_or("").to_string(),
    }
}

fn github_error(what: &str, e: octocrab::Error) -> anyhow::Error {
    anyhow::anyhow!("{what}: {}", one_line(&e))
}

/// Every asset with its SHA-256, and how to check one without this toolkit.
/// A SHA-256 comes from the asset's digest, else from the file it was proven
/// to hold (read back, on a GitHub without digests).
pub fn release_notes(title: &str, assets: &[Asset], proven: &[AssetFile<'_>]) -> String {
    let mut by_name: BTreeMap<&str, &Asset> = BTreeMap::new();
    for a in assets {
        by_name.insert(&a.name, a);
    }
    let mut md = format!(
        "{title}, built and signed by Slurm Factory.\n\n| asset | size | SHA-256 |\n|---|---:|---|\n"
    );
    for (name, a) in &by_name {
        let sha = a
            .digest
            .as_deref()
            .and_then(|d| d.strip_prefix("sha256:"))
            .or_else(|| {
                proven
                    .iter()
                    .find(|f| f.name == *name)
                    .map(|f| f.sha256.as_str())
            })
            .unwrap_or("");
        md.push_str(&format!("| `{name}` | {} | `{sha}` |\n", a.size));
    }
    md.push_str(
        "\nVerify and install one package (replace NAME; split packages: `cat NAME.part-* > NAME` first):\n\n```sh\n\
         gpg --import slurm-factory-signing-key.asc\n\
         sha256sum -c NAME.sha256\n\
         gpg --verify NAME.asc NAME\n\
         tar -xzf NAME -C /opt/slurm --strip-components=1\n```\n",
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_strips_the_path_and_template() {
        assert_eq!(
            origin("https://uploads.github.com/repos/o/r/releases/1/assets{?name,label}"),
            "https://uploads.github.com"
        );
        assert_eq!(
            origin("http://127.0.0.1:4567/repos/o/r/releases/9/assets{?name,label}"),
            "http://127.0.0.1:4567"
        );
    }
}
