//! Where packages are downloaded from: GitHub releases (`github.rs`), or a store laid out
//! by `publish` (S3 through the SDK, a public base URL such as a CDN in
//! front of the bucket, a local store directory) whose `releases/index.json`
//! lists every release, or a plain URL of one release directory
//! (`…/releases/slurm-25.11.6-2026.12.01/`), probed file by file. Both kinds
//! offer every release of a series, newest first (`schema::release`).

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use bytes::Bytes;
use http::header;

use crate::http::{Http, Response};
use crate::schema::release::{INDEX_KEY, Index, ReleaseTag};
use crate::schema::{PUBLIC_KEY_FILE, files};
use crate::store::{Chunks, Fetch};

/// Small files (checksums, signatures, keys, indexes) are read whole, up to this.
const SMALL: u64 = 16 << 20;

/// One package a source offers: its cell and its files with their sizes.
#[derive(Debug, Clone)]
pub struct Offer {
    pub slurm: String,
    pub toolchain: String,
    pub variant: String,
    pub arch: String,
    /// File name → size (unknown when a release directory is probed).
    pub files: BTreeMap<String, Option<u64>>,
    /// The release that offers it (its tag).
    pub release: String,
    /// Where a store keeps its files (empty on GitHub).
    pub dir: String,
    /// GitHub says the release is immutable: its assets and tag never change.
    pub immutable: bool,
}

/// What to offer: every release (`slurm`/`release` narrow it), newest first.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask<'a> {
    pub slurm: Option<&'a str>,
    /// One release, by tag.
    pub release: Option<&'a str>,
    /// The package wanted, for a source that can only probe for it.
    pub want: Option<&'a Offer>,
}

impl Ask<'_> {
    pub(super) fn admits(&self, tag: &ReleaseTag) -> bool {
        self.slurm.is_none_or(|s| tag.series() == s)
            && self.release.is_none_or(|r| r == tag.to_string())
    }
}

impl Offer {
    pub fn stem(&self) -> String {
        crate::schema::release::stem(&self.slurm, &self.toolchain, &self.variant, &self.arch)
    }

    pub fn tarball(&self) -> String {
        files::tarball(&self.stem())
    }

    /// The tarball, or its parts in order.
    pub fn data_files(&self) -> Vec<String> {
        let tarball = self.tarball();
        if self.files.contains_key(&tarball) {
            return vec![tarball];
        }
        self.files
            .keys()
            .filter(|n| files::is_part_of(&tarball, n))
            .cloned()
            .collect()
    }

    pub fn size(&self) -> Option<u64> {
        self.data_files()
            .iter()
            .map(|f| self.files.get(f).copied().flatten())
            .sum()
    }
}

/// A name `slurm-<version>-<toolchain>-<variant>-<arch>.<anything>`, parsed.
fn parse_name(name: &str) -> Option<(String, String, String, String)> {
    let rest = name.strip_prefix("slurm-")?;
    let stem = &rest[..rest
        .find(files::TARBALL_SUFFIX)
        .or_else(|| rest.find(files::MANIFEST_SUFFIX))?];
    let mut it = stem.splitn(4, '-');
    let (v, t, var, arch) = (it.next()?, it.next()?, it.next()?, it.next()?);
    if [v, t, var, arch].iter().any(|s| s.is_empty()) {
        return None;
    }
    Some((v.into(), t.into(), var.into(), arch.into()))
}

/// Groups release file names into the packages they belong to.
pub(super) fn offers_from_names(
    release: &str,
    names: impl IntoIterator<Item = (String, Option<u64>)>,
) -> Vec<Offer> {
    let mut by_stem: BTreeMap<(String, String, String, String), Offer> = BTreeMap::new();
    for (name, size) in names {
        if let Some(cell) = parse_name(&name) {
            by_stem
                .entry(cell.clone())
                .or_insert_with(|| Offer {
                    slurm: cell.0,
                    toolchain: cell.1,
                    variant: cell.2,
                    arch: cell.3,
                    files: BTreeMap::new(),
                    release: release.to_string(),
                    dir: String::new(),
                    immutable: false,
                })
                .files
                .insert(name, size);
        }
    }
    by_stem
        .into_values()
        .filter(|o| !o.data_files().is_empty())
        .collect()
}

pub trait Source {
    fn describe(&self) -> String;
    /// The packages on offer, newest release first.
    fn offers(&self, ask: &Ask<'_>) -> Result<Vec<Offer>>;
    /// One of an offer's files from byte `from` on; `None` if it is not there.
    fn open(&self, offer: &Offer, name: &str, from: u64) -> Result<Option<Box<dyn Chunks>>>;
    /// The public key published beside the packages, if any.
    fn public_key(&self, offer: &Offer) -> Result<Option<Vec<u8>>>;

    /// A small file whole.
    fn small(&self, offer: &Offer, name: &str) -> Result<Option<Vec<u8>>> {
        let Some(mut body) = self.open(offer, name, 0)? else {
            return Ok(None);
        };
        read_all(body.as_mut(), name).map(Some)
    }
}

pub(super) fn read_all(body: &mut dyn Chunks, what: &str) -> Result<Vec<u8>> {
    crate::store::read_all(body, SMALL, what)
}

/// A response to a GET from byte `from`: 206 as asked, or 200 with the bytes
/// before `from` skipped (a server that ignores ranges), or 404. A 416 for a
/// resume means nothing is left after `from` (a file already complete whose
/// size the source does not list); its checksum still decides.
pub(super) fn ranged(resp: Response, from: u64, name: &str) -> Result<Option<Box<dyn Chunks>>> {
    match resp.status {
        416 if from > 0 => Ok(Some(Box::new(Empty))),
        200 if from == 0 => Ok(Some(Box::new(resp))),
        200 => Ok(Some(Box::new(Skip {
            inner: Box::new(resp),
            skip: from,
        }))),
        206 => Ok(Some(Box::new(resp))),
        404 => Ok(None),
        _ => Err(resp.error(&format!("downloading {name}"))),
    }
}

/// A body with nothing in it.
struct Empty;

impl Chunks for Empty {
    fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        Ok(None)
    }
}

struct Skip {
    inner: Box<dyn Chunks>,
    skip: u64,
}

impl Chunks for Skip {
    fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            let Some(mut c) = self.inner.next_chunk()? else {
                return Ok(None);
            };
            if self.skip == 0 {
                return Ok(Some(c));
            }
            let n = self.skip.min(c.len() as u64);
            self.skip -= n;
            let rest = c.split_off(n as usize);
            if !rest.is_empty() {
                return Ok(Some(rest));
            }
        }
    }
}

// ---------------------------------------------------------------- stores

/// A public base URL over HTTP(S): a CDN or a bucket's website endpoint.
pub struct HttpBase {
    http: Http,
    base: String,
}

impl HttpBase {
    pub fn new(base: &str) -> Result<HttpBase> {
        Ok(HttpBase {
            http: Http::new()?,
            base: base.trim_end_matches('/').into(),
        })
    }
}

impl Fetch for HttpBase {
    fn describe(&self) -> String {
        self.base.clone()
    }

    fn open(&self, key: &str, from: u64) -> Result<Option<Box<dyn Chunks>>> {
        let mut headers = Vec::new();
        if from > 0 {
            headers.push((header::RANGE, format!("bytes={from}-")));
        }
        let resp = self.http.get(&format!("{}/{key}", self.base), &headers)?;
        // S3 website endpoints and CDNs answer 403 for a missing key of a
        // bucket that does not grant listing.
        if resp.status == 403 && from == 0 {
            return Ok(None);
        }
        ranged(resp, from, key)
    }
}

/// Newest first: by series, then build.
pub(super) fn newest_first(a: &ReleaseTag, b: &ReleaseTag) -> std::cmp::Ordering {
    (b.series(), b.build, &b.version).cmp(&(a.series(), a.build, &a.version))
}

/// A store written by `publish`: `releases/index.json` lists the releases.
/// With `dir` set (a release directory URL), the index may be absent and the
/// requested package's files are probed instead.
pub struct StoreSource {
    pub fetch: Box<dyn Fetch>,
    pub dir: Option<ReleaseDir>,
}

/// A release directory a URL names: a release's
/// (`releases/slurm-25.11.6-2026.12.01`), or one cell's in the earlier
/// layout (`releases/25.11/noble/cpu`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseDir {
    Release(ReleaseTag),
    Cell {
        slurm: String,
        toolchain: String,
        variant: String,
    },
}

impl ReleaseDir {
    pub fn key(&self) -> String {
        match self {
            ReleaseDir::Release(tag) => tag.store_dir(),
            ReleaseDir::Cell {
                slurm,
                toolchain,
                variant,
            } => format!("releases/{slurm}/{toolchain}/{variant}"),
        }
    }

    fn holds(&self, offer: &Offer) -> bool {
        match self {
            ReleaseDir::Release(tag) => offer.release == tag.to_string(),
            ReleaseDir::Cell {
                slurm,
                toolchain,
                variant,
            } => (slurm, toolchain, variant) == (&offer.slurm, &offer.toolchain, &offer.variant),
        }
    }
}

impl StoreSource {
    fn probe(&self, want: &Offer, dir: &ReleaseDir) -> Result<Vec<Offer>> {
        let dir = dir.key();
        let mut files = BTreeMap::new();
        let tarball = want.tarball();
        let exists = |name: &str| -> Result<bool> {
            Ok(self.fetch.open(&format!("{dir}/{name}"), 0)?.is_some())
        };
        if exists(&tarball)? {
            files.insert(tarball.clone(), None);
        } else {
            for i in 0.. {
                let part = crate::schema::files::part(&tarball, i);
                if !exists(&part)? {
                    break;
                }
                files.insert(crate::schema::files::checksum(&part), None);
                files.insert(part, None);
            }
        }
        if files.is_empty() {
            return Ok(vec![]);
        }
        for extra in [".sha256", ".asc"] {
            files.insert(format!("{tarball}{extra}"), None);
        }
        let release = match self.dir.as_ref() {
            Some(ReleaseDir::Release(tag)) => tag.to_string(),
            _ => format!("slurm-{}", want.slurm),
        };
        Ok(vec![Offer {
            files,
            release,
            dir,
            ..want.clone()
        }])
    }
}

impl Source for StoreSource {
    fn describe(&self) -> String {
        self.fetch.describe()
    }

    fn offers(&self, ask: &Ask<'_>) -> Result<Vec<Offer>> {
        let index = match self.fetch.open(INDEX_KEY, 0)? {
            Some(mut body) => {
                let bytes = read_all(body.as_mut(), INDEX_KEY)?;
                Some(Index::parse(
                    &bytes,
                    &format!("{}/{INDEX_KEY}", self.describe()),
                )?)
            }
            None => None,
        };
        let Some(index) = index else {
            return match (ask.want, &self.dir) {
                (Some(want), Some(dir)) => self.probe(want, dir),
                _ => bail!(
                    "{} has no {INDEX_KEY}: is it a store written by `publish`?",
                    self.describe()
                ),
            };
        };
        let mut offers = Vec::new();
        for (tag, release) in index.newest_first(ask.slurm) {
            if !ask.admits(&tag) {
                continue;
            }
            for p in release.packages.values() {
                let offer = Offer {
                    slurm: p.slurm.clone(),
                    toolchain: p.toolchain.clone(),
                    variant: p.variant.clone(),
                    arch: p.arch.clone(),
                    files: p
                        .files
                        .iter()
                        .map(|(n, (size, _))| (n.clone(), Some(*size)))
                        .collect(),
                    release: tag.to_string(),
                    dir: p.dir.clone(),
                    immutable: false,
                };
                if self.dir.as_ref().is_none_or(|d| d.holds(&offer)) {
                    offers.push(offer);
                }
            }
        }
        Ok(offers)
    }

    fn open(&self, offer: &Offer, name: &str, from: u64) -> Result<Option<Box<dyn Chunks>>> {
        self.fetch.open(&format!("{}/{name}", offer.dir), from)
    }

    fn public_key(&self, _offer: &Offer) -> Result<Option<Vec<u8>>> {
        match self.fetch.open(&crate::schema::public_key_key(), 0)? {
            Some(mut body) => read_all(body.as_mut(), PUBLIC_KEY_FILE).map(Some),
            None => Ok(None),
        }
    }
}

/// A URL's base and, for a release directory URL, the directory.
pub fn split_url(url: &str) -> (String, Option<ReleaseDir>) {
    let trimmed = url.trim_end_matches('/');
    if let Some((base, rest)) = trimmed.rsplit_once("/releases/") {
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [tag] if let Some(tag) = ReleaseTag::parse(tag).filter(|t| t.build.is_some()) => {
                return (base.into(), Some(ReleaseDir::Release(tag)));
            }
            [v, t, var] => {
                return (
                    base.into(),
                    Some(ReleaseDir::Cell {
                        slurm: v.to_string(),
                        toolchain: t.to_string(),
                        variant: var.to_string(),
                    }),
                );
            }
            _ => {}
        }
    }
    (trimmed.into(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_group_into_packages() {
        let names = [
            "slurm-25.11-noble-cpu-x86_64.tar.gz",
            "slurm-25.11-noble-cpu-x86_64.tar.gz.sha256",
            "slurm-25.11-noble-cpu-x86_64.manifest.json",
            "slurm-25.11-rockylinux9-gpu-x86_64.tar.gz.part-001",
            "slurm-25.11-rockylinux9-gpu-x86_64.tar.gz.part-000",
            "slurm-25.11-rockylinux9-gpu-x86_64.tar.gz.part-000.sha256",
            "slurm-factory-signing-key.asc",
            "slurm-25.11-jammy-cpu-x86_64.manifest.json",
        ];
        let offers = offers_from_names("r", names.iter().map(|n| (n.to_string(), Some(1))));
        assert_eq!(offers.len(), 2, "a package without data is not offered");
        assert_eq!(offers[0].toolchain, "noble");
        assert_eq!(offers[0].data_files(), vec![offers[0].tarball()]);
        assert_eq!(
            offers[1].data_files(),
            vec![
                "slurm-25.11-rockylinux9-gpu-x86_64.tar.gz.part-000",
                "slurm-25.11-rockylinux9-gpu-x86_64.tar.gz.part-001"
            ]
        );
        assert_eq!(offers[1].size(), Some(2));
    }

    #[test]
    fn release_directory_urls_name_their_cell() {
        assert_eq!(
            split_url("https://cdn.example/sf/releases/25.11/noble/gpu/"),
            (
                "https://cdn.example/sf".into(),
                Some(ReleaseDir::Cell {
                    slurm: "25.11".into(),
                    toolchain: "noble".into(),
                    variant: "gpu".into()
                })
            )
        );
        assert_eq!(
            split_url("https://cdn.example/sf/releases/slurm-25.11.6-2026.12.01/"),
            (
                "https://cdn.example/sf".into(),
                Some(ReleaseDir::Release(
                    ReleaseTag::parse("slurm-25.11.6-2026.12.01").unwrap()
                ))
            )
        );
        assert_eq!(
            split_url("https://cdn.example/sf/"),
            ("https://cdn.example/sf".into(), None)
        );
    }
}
