//! GitHub Releases (octocrab). A release is filled as a draft and published
//! once, when every asset it should hold is there and nothing else is: a
//! published release is never changed (GitHub refuses it when releases are
//! immutable). In the draft, an asset with the same name and SHA-256 is
//! skipped, one with other content is replaced, a broken (`starter`) asset
//! is deleted before the upload is tried again. An asset carried over from
//! an earlier release is copied from it byte for byte, its SHA-256 checked.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use octocrab::Octocrab;
use octocrab::models::repos::{Asset, Release};

mod transfer;

use transfer::{FileBody, read_back, upload};

/// GitHub refuses assets of 2 GiB and more.
pub const ASSET_LIMIT: u64 = (2 << 30) - 1;

pub struct GitHub {
    rt: tokio::runtime::Runtime,
    api: String,
    token: String,
    pub owner: String,
    pub repo: String,
}

/// Where one asset of the release comes from.
pub enum Origin<'a> {
    /// A local file, with its SHA-256.
    Local {
        path: &'a std::path::Path,
        sha256: String,
    },
    /// An asset of an earlier release, copied byte for byte; `spool` is a
    /// directory for the copy on its way (one asset at a time).
    Carried {
        asset: Box<Asset>,
        from: String,
        spool: &'a std::path::Path,
    },
}

/// One asset the release must hold.
pub struct Wanted<'a> {
    pub name: String,
    pub size: u64,
    pub origin: Origin<'a>,
}

impl Wanted<'_> {
    /// The SHA-256 known before any transfer: a local file's, or the
    /// digest GitHub reports for the earlier release's asset.
    fn known_sha256(&self) -> Option<String> {
        match &self.origin {
            Origin::Local { sha256, .. } => Some(sha256.clone()),
            Origin::Carried { asset, .. } => asset
                .digest
                .as_deref()
                .and_then(|d| d.strip_prefix("sha256:"))
                .map(str::to_string),
        }
    }
}

/// The release to fill: a draft a previous attempt left, or a new one.
pub enum Target {
    Draft(Box<Release>),
    New { tag: String },
}

pub struct Published {
    pub uploaded: Vec<String>,
    pub carried: Vec<String>,
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
        let api = crate::schema::ReleasePolicy::github_api();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        Ok(GitHub {
            rt,
            api,
            token,
            owner: owner.into(),
            repo: repo.into(),
        })
    }

    /// `owner/name` of the repository its releases go to.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.owner, self.repo)
    }

    fn client(&self, upload_uri: Option<&str>) -> Result<Octocrab> {
        let mut b = Octocrab::builder()
            .personal_token(self.token.clone())
            .base_uri(self.api.as_str())?;
        if let Some(u) = upload_uri {
            // Uploads stream their body, which octocrab's retry would resend
            // already read (an empty body under the full Content-Length):
            // `fill` retries them itself, each from the file.
            b = b
                .upload_uri(u)?
                .add_retry_config(octocrab::service::middleware::retry::RetryConfig::None);
        }
        Ok(b.build()?)
    }

    /// Every release, drafts included (their assets as the list shows them).
    pub fn releases(&self) -> Result<Vec<Release>> {
        self.rt.block_on(async {
            let api = self.client(None)?;
            list_releases(&api, &self.owner, &self.repo).await
        })
    }

    /// The release with every one of its assets (listed page by page).
    pub fn with_all_assets(&self, release: &Release) -> Result<Release> {
        self.rt.block_on(async {
            let api = self.client(None)?;
            let mut r = release.clone();
            r.assets = list_assets(&api, &self.owner, &self.repo, r.id.0).await?;
            Ok(r)
        })
    }

    /// Whether `a` holds the bytes of local file `path` (SHA-256 `sha256`).
    pub fn holds_file(&self, a: &Asset, size: u64, sha256: &str) -> Result<bool> {
        self.rt.block_on(self.holds(a, &a.name, size, sha256))
    }

    /// Fills `target` with exactly `files`, then publishes it.
    pub fn publish(
        &self,
        target: Target,
        title: &str,
        notes_extra: &str,
        files: &[Wanted<'_>],
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
        if dry_run {
            let mut out = Published {
                uploaded: vec![],
                carried: vec![],
                skipped: vec![],
                html_url: String::new(),
            };
            for f in files {
                match &f.origin {
                    Origin::Local { .. } => {
                        outln!("put   {}", f.name);
                        out.uploaded.push(f.name.clone());
                    }
                    Origin::Carried { from, .. } => {
                        outln!("carry {} from {from}", f.name);
                        out.carried.push(f.name.clone());
                    }
                }
            }
            return Ok(out);
        }
        self.rt
            .block_on(self.fill(target, title, notes_extra, files))
    }

    async fn fill(
        &self,
        target: Target,
        title: &str,
        notes_extra: &str,
        files: &[Wanted<'_>],
    ) -> Result<Published> {
        let api = self.client(None)?;
        let repo = api.repos(&self.owner, &self.repo);
        let releases = repo.releases();
        let release = match target {
            Target::Draft(r) => *r,
            Target::New { tag } => releases
                .create(&tag)
                .name(title)
                .body("Upload in progress: this draft is published when every asset is here.")
                .draft(true)
                .send()
                .await
                .map_err(|e| github_error(&format!("creating the draft release {tag}"), e))?,
        };
        let tag = release.tag_name.clone();
        let upload_origin = origin(release.upload_url.as_str());
        let uploader = self.client(Some(&upload_origin))?;
        let mut out = Published {
            uploaded: vec![],
            carried: vec![],
            skipped: vec![],
            html_url: String::new(),
        };
        let upload_url = release.upload_url.replace("{?name,label}", "");
        // What each asset was proven to hold: its SHA-256.
        let mut proven: BTreeMap<String, String> = BTreeMap::new();
        for f in files {
            let assets = list_assets(&api, &self.owner, &self.repo, release.id.0).await?;
            let present = assets.iter().find(|a| a.name == f.name);
            if let (Some(a), Some(sha)) = (present, f.known_sha256())
                && self.holds(a, &f.name, f.size, &sha).await?
            {
                outln!("skip  {} (same SHA-256)", f.name);
                out.skipped.push(f.name.clone());
                proven.insert(f.name.clone(), sha);
                continue;
            }
            // A carried asset is copied through a local file, checked on the
            // way: the upload below then proves the draft holds those bytes.
            let spooled;
            let (path, sha) = match &f.origin {
                Origin::Local { path, sha256 } => (path.to_path_buf(), sha256.clone()),
                Origin::Carried { asset, from, spool } => {
                    spooled = tempfile::NamedTempFile::new_in(spool)
                        .with_context(|| format!("creating a file in {}", spool.display()))?;
                    let (url, token, dest) = (
                        asset.url.to_string(),
                        self.token.clone(),
                        spooled.path().to_path_buf(),
                    );
                    let name = format!("{} of release {from}", f.name);
                    let sha = tokio::task::spawn_blocking(move || {
                        read_back(&url, &token, &name, Some(&dest))
                    })
                    .await
                    .context("copying an asset")??;
                    if let Some(expected) = f.known_sha256()
                        && sha != expected
                    {
                        bail!(
                            "{} of release {from}: GitHub served bytes with SHA-256 {sha}, not its digest {expected}: nothing is carried over",
                            f.name
                        );
                    }
                    if let Some(a) = present
                        && self.holds(a, &f.name, f.size, &sha).await?
                    {
                        outln!("skip  {} (same SHA-256)", f.name);
                        out.skipped.push(f.name.clone());
                        proven.insert(f.name.clone(), sha);
                        continue;
                    }
                    (spooled.path().to_path_buf(), sha)
                }
            };
            self.put(
                &api,
                &uploader,
                &upload_url,
                release.id.0,
                present,
                f,
                &path,
                &sha,
            )
            .await?;
            match &f.origin {
                Origin::Local { .. } => {
                    outln!("put   {} ({} bytes)", f.name, f.size);
                    out.uploaded.push(f.name.clone());
                }
                Origin::Carried { from, .. } => {
                    outln!("carry {} ({} bytes) from {from}", f.name, f.size);
                    out.carried.push(f.name.clone());
                }
            }
            proven.insert(f.name.clone(), sha);
        }
        // Nothing else: an asset a previous attempt left that this release
        // no longer holds goes before anyone sees it.
        let assets = list_assets(&api, &self.owner, &self.repo, release.id.0).await?;
        for a in assets
            .iter()
            .filter(|a| !files.iter().any(|f| f.name == a.name))
        {
            outln!("remove {} (not part of this release)", a.name);
            api.repos(&self.owner, &self.repo)
                .release_assets()
                .delete(a.id.0)
                .await
                .map_err(|e| github_error(&format!("deleting {} from the draft", a.name), e))?;
        }
        // Every expected asset must be there, complete, before anyone sees the release.
        let assets = list_assets(&api, &self.owner, &self.repo, release.id.0).await?;
        for f in files {
            let mut there = false;
            for a in assets.iter().filter(|a| a.name == f.name) {
                there |= self.holds(a, &f.name, f.size, &proven[&f.name]).await?;
            }
            if !there {
                bail!(
                    "release {tag}: {} is not there after the upload; the release stays a draft",
                    f.name
                );
            }
        }
        let notes = release_notes(title, &assets, &proven) + notes_extra;
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

    /// Uploads `path` as asset `f` of the draft, replacing `present`.
    #[allow(clippy::too_many_arguments)]
    async fn put(
        &self,
        api: &Octocrab,
        uploader: &Octocrab,
        upload_url: &str,
        release_id: u64,
        present: Option<&Asset>,
        f: &Wanted<'_>,
        path: &std::path::Path,
        sha256: &str,
    ) -> Result<()> {
        let mut tries = 0;
        let mut replace = present.map(|a| a.id.0);
        if replace.is_some() {
            // Other content, or a broken upload left as `starter`: replace
            // it, but only with bytes proven good first (a streaming read),
            // so a bad file changes nothing.
            let owned = path.to_path_buf();
            let actual =
                tokio::task::spawn_blocking(move || crate::store::local::sha256_file(&owned))
                    .await
                    .context("hashing a file")??;
            if actual != sha256 {
                return Err(crate::store::mismatch(path, &actual, sha256));
            }
        }
        loop {
            if let Some(id) = replace.take() {
                api.repos(&self.owner, &self.repo)
                    .release_assets()
                    .delete(id)
                    .await
                    .map_err(|e| github_error(&format!("deleting the old asset {}", f.name), e))?;
            }
            // Streamed from the file, its SHA-256 checked in the same read:
            // memory stays at one buffer whatever the asset's size.
            let (body, verdict) = FileBody::open(path, f.size, sha256).await?;
            let sent = upload(uploader, upload_url, &f.name, f.size, body).await;
            if let Some(actual) = verdict.mismatch() {
                // GitHub keeps an interrupted upload as a `starter` asset:
                // remove it, so nothing of these bytes stays.
                let assets = list_assets(api, &self.owner, &self.repo, release_id).await?;
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
                return Err(crate::store::mismatch(path, &actual, sha256));
            }
            match sent {
                Ok(()) => return Ok(()),
                Err(e) if tries < 3 => {
                    tries += 1;
                    eprintln!("upload of {} failed ({e:#}), trying again", f.name);
                    tokio::time::sleep(std::time::Duration::from_millis(500 * tries)).await;
                    // A failed upload may leave a `starter` that holds the name.
                    let assets = list_assets(api, &self.owner, &self.repo, release_id).await?;
                    replace = assets.iter().find(|a| a.name == f.name).map(|a| a.id.0);
                }
                Err(e) => return Err(e.context(format!("uploading {}", f.name))),
            }
        }
    }
}

impl GitHub {
    /// Whether asset `a` holds exactly `f`'s bytes. GitHub reports each
    /// asset's SHA-256 as its `digest`. A GitHub that does not (GitHub
    /// Enterprise Server before digests) gets the asset read back and
    /// hashed instead, and the log says so: without it, no release could
    /// ever be proven complete and published.
    async fn holds(&self, a: &Asset, name: &str, size: u64, sha256: &str) -> Result<bool> {
        if a.state != "uploaded" || a.size as u64 != size {
            return Ok(false);
        }
        if let Some(digest) = a.digest.as_deref() {
            return Ok(digest == format!("sha256:{sha256}"));
        }
        outln!("{name}: GitHub reports no digest for it: reading it back to check its SHA-256");
        let (url, token, label) = (a.url.to_string(), self.token.clone(), name.to_string());
        let sha = tokio::task::spawn_blocking(move || read_back(&url, &token, &label, None))
            .await
            .context("reading an asset back")??;
        Ok(sha == sha256)
    }
}

/// Every release, drafts included (the by-tag endpoint does not see drafts).
async fn list_releases(api: &Octocrab, owner: &str, repo: &str) -> Result<Vec<Release>> {
    let mut all = Vec::new();
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
        all.extend(list.items);
        if n < 100 {
            return Ok(all);
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
/// A SHA-256 comes from the asset's digest, else from what it was proven to
/// hold (read back, on a GitHub without digests).
pub fn release_notes(title: &str, assets: &[Asset], proven: &BTreeMap<String, String>) -> String {
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
            .or_else(|| proven.get(*name).map(String::as_str))
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
