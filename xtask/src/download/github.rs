//! GitHub releases as a download source: the repository's releases, newest
//! first, each asset fetched through the API (resumable with a range) and
//! never sent the token off GitHub's origin.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use http::header;
use serde::Deserialize;

use super::source::{Ask, Offer, Source, newest_first, offers_from_names, ranged, read_all};
use crate::http::{Http, Response};
use crate::schema::PUBLIC_KEY_FILE;
use crate::schema::release::ReleaseTag;
use crate::store::Chunks;

pub struct GitHubSource {
    http: Http,
    api: String,
    pub repo: String,
    token: Option<String>,
    /// Asset name → API URL, per release tag, as listed.
    assets: std::cell::RefCell<BTreeMap<String, BTreeMap<String, String>>>,
}

#[derive(Deserialize)]
struct ReleaseJson {
    tag_name: String,
    #[serde(default)]
    draft: bool,
    #[serde(default)]
    immutable: bool,
    assets: Vec<AssetJson>,
}

#[derive(Deserialize)]
struct AssetJson {
    name: String,
    size: u64,
    url: String,
    #[serde(default)]
    state: Option<String>,
}

impl GitHubSource {
    /// `GITHUB_API_URL` (default api.github.com); `GITHUB_TOKEN` when set (private
    /// repositories, rate limits), sent to the API host only.
    pub fn new(repo: &str) -> Result<GitHubSource> {
        Ok(GitHubSource {
            http: Http::new()?,
            api: crate::schema::ReleasePolicy::github_api(),
            repo: repo.into(),
            token: std::env::var("GITHUB_TOKEN").ok().filter(|t| !t.is_empty()),
            assets: Default::default(),
        })
    }

    fn headers(&self, accept: &str) -> Vec<(header::HeaderName, String)> {
        let mut h = vec![(header::ACCEPT, accept.to_string())];
        if let Some(t) = &self.token {
            h.push((header::AUTHORIZATION, format!("Bearer {t}")));
        }
        h
    }

    fn api_get(&self, path: &str) -> Result<Option<Response>> {
        let url = format!("{}/repos/{}/{path}", self.api, self.repo);
        let resp = self
            .http
            .get(&url, &self.headers("application/vnd.github+json"))?;
        match resp.status {
            200 => Ok(Some(resp)),
            404 => Ok(None),
            _ => Err(resp.error(&format!("GitHub {}", self.repo))),
        }
    }

    fn remember(&self, release: &ReleaseJson) -> Vec<Offer> {
        let uploaded: Vec<&AssetJson> = release
            .assets
            .iter()
            .filter(|a| a.state.as_deref().is_none_or(|s| s == "uploaded"))
            .collect();
        self.assets.borrow_mut().insert(
            release.tag_name.clone(),
            uploaded
                .iter()
                .map(|a| (a.name.clone(), a.url.clone()))
                .collect(),
        );
        let Some(tag) = ReleaseTag::parse(&release.tag_name) else {
            return Vec::new();
        };
        offers_from_names(
            &release.tag_name,
            uploaded.iter().map(|a| (a.name.clone(), Some(a.size))),
        )
        .into_iter()
        .filter(|o| o.slurm == tag.series())
        .map(|o| Offer {
            immutable: release.immutable,
            ..o
        })
        .collect()
    }

    fn asset_url(&self, offer: &Offer, name: &str) -> Option<String> {
        self.assets.borrow().get(&offer.release)?.get(name).cloned()
    }
}

impl Source for GitHubSource {
    fn describe(&self) -> String {
        format!("GitHub releases of {}", self.repo)
    }

    fn offers(&self, ask: &Ask<'_>) -> Result<Vec<Offer>> {
        if let Some(tag) = ask.release {
            let Some(mut resp) = self.api_get(&format!("releases/tags/{tag}"))? else {
                bail!(
                    "{} has no published release {tag} (see: download --list)",
                    self.repo
                );
            };
            let release: ReleaseJson = serde_json::from_slice(&read_all(&mut resp, "the release")?)
                .context("GitHub's release is not the JSON expected")?;
            return Ok(self.remember(&release));
        }
        let mut tagged = Vec::new();
        for page in 1.. {
            let Some(mut resp) = self.api_get(&format!("releases?per_page=100&page={page}"))?
            else {
                bail!("{} not found on {}", self.repo, self.api);
            };
            let releases: Vec<ReleaseJson> =
                serde_json::from_slice(&read_all(&mut resp, "the release list")?)
                    .context("GitHub's release list is not the JSON expected")?;
            let last = releases.len() < 100;
            tagged.extend(releases.into_iter().filter(|r| !r.draft).filter_map(|r| {
                ReleaseTag::parse(&r.tag_name)
                    .filter(|t| ask.admits(t))
                    .map(|t| (t, r))
            }));
            if last {
                break;
            }
        }
        tagged.sort_by(|(a, _), (b, _)| newest_first(a, b));
        Ok(tagged.iter().flat_map(|(_, r)| self.remember(r)).collect())
    }

    fn open(&self, offer: &Offer, name: &str, from: u64) -> Result<Option<Box<dyn Chunks>>> {
        let Some(url) = self.asset_url(offer, name) else {
            return Ok(None);
        };
        let mut headers = self.headers("application/octet-stream");
        // The token is for the API: an asset URL elsewhere never gets it.
        if !same_origin(&url, &self.api) {
            headers.retain(|(name, _)| name != header::AUTHORIZATION);
        }
        if from > 0 {
            headers.push((header::RANGE, format!("bytes={from}-")));
        }
        ranged(self.http.get(&url, &headers)?, from, name)
    }

    fn public_key(&self, offer: &Offer) -> Result<Option<Vec<u8>>> {
        self.small(offer, PUBLIC_KEY_FILE)
    }
}

/// Whether two URLs share scheme, host and port.
fn same_origin(a: &str, b: &str) -> bool {
    match (a.parse::<http::Uri>(), b.parse::<http::Uri>()) {
        (Ok(a), Ok(b)) => {
            a.scheme().is_some() && a.scheme() == b.scheme() && a.authority() == b.authority()
        }
        _ => false,
    }
}
