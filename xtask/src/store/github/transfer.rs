//! The bytes of a GitHub transfer: an upload streamed from its file and
//! hashed on the way (it never completes with other bytes than the expected
//! ones), and an asset read back and hashed (to prove or copy it).

use anyhow::{Context, Result};
use octocrab::Octocrab;
use sha2::Digest;

use super::one_line;

/// The SHA-256 of an asset as GitHub serves it (the token goes to the API
/// only, not to where the download redirects), written to `copy` on the way
/// when given.
pub(super) fn read_back(
    url: &str,
    token: &str,
    name: &str,
    copy: Option<&std::path::Path>,
) -> Result<String> {
    use crate::store::Chunks as _;
    use http::header;
    use std::io::Write as _;
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
    let mut out = match copy {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?,
        )),
        None => None,
    };
    let mut hasher = sha2::Sha256::new();
    while let Some(chunk) = resp.next_chunk()? {
        hasher.update(&chunk);
        if let Some(w) = &mut out {
            w.write_all(&chunk)
                .with_context(|| format!("copying {name}"))?;
        }
    }
    if let Some(w) = out {
        w.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .with_context(|| format!("copying {name}"))?;
    }
    Ok(crate::checksum::hex(&hasher.finalize()))
}

/// POSTs one asset to the release's upload URL, as octocrab's
/// `upload_asset` does, but with a streaming body.
pub(super) async fn upload(
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
pub(super) struct FileBody {
    file: tokio::fs::File,
    buf: Vec<u8>,
    left: u64,
    hasher: sha2::Sha256,
    expected: String,
    verdict: Verdict,
}

/// What a [`FileBody`] found: the actual SHA-256 when it was not the one expected.
#[derive(Clone, Default)]
pub(super) struct Verdict(std::sync::Arc<std::sync::Mutex<Option<String>>>);

impl Verdict {
    pub(super) fn mismatch(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl FileBody {
    pub(super) async fn open(
        path: &std::path::Path,
        size: u64,
        sha256: &str,
    ) -> Result<(FileBody, Verdict)> {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        let verdict = Verdict::default();
        let body = FileBody {
            file,
            buf: vec![0u8; CHUNK],
            left: size,
            hasher: sha2::Sha256::new(),
            expected: sha256.to_string(),
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
                    let actual = crate::checksum::hex(&std::mem::take(&mut this.hasher).finalize());
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
