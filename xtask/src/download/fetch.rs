//! Fetching one file of an offer: resumable pieces on disk, each fed to the
//! consumers (gpg, the unpacker) and the whole's hash as it arrives.

use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::ATTEMPTS;
use super::install::{Transport, open_nofollow};
use super::source::{Offer, Source};
use crate::checksum::hex;

/// Where every piece goes: both consumers and the whole's hash.
pub(super) struct Feed<'a> {
    pub(super) to: [SyncSender<Bytes>; 2],
    pub(super) whole: &'a mut Sha256,
    pub(super) bar: &'a indicatif::ProgressBar,
}

impl Feed<'_> {
    fn piece(&mut self, chunk: Bytes) {
        self.whole.update(&chunk);
        self.bar.inc(chunk.len() as u64);
        // A consumer that stopped has its error to tell; keep hashing.
        let _ = self.to[1].send(chunk.clone());
        let _ = self.to[0].send(chunk);
    }
}

/// One data file: the bytes kept from an earlier run first, then the rest
/// from the source, resumed after a broken transfer. Returns its own SHA-256
/// when `hash_part` (a part of several; a single file's is the whole's).
pub(super) fn fetch_file(
    source: &dyn Source,
    offer: &Offer,
    name: &str,
    size: u64,
    work: &Path,
    hash_part: bool,
    feed: &mut Feed<'_>,
) -> Result<Option<String>> {
    let path = work.join(name);
    let mut have = std::fs::symlink_metadata(&path)
        .map(|m| m.len())
        .unwrap_or(0);
    if have > size {
        have = 0;
    }
    let mut part = hash_part.then(Sha256::new);
    let file = open_nofollow(&path, true)?;
    file.set_len(have)?;
    let mut kept = &file;
    let mut left = have;
    while left > 0 {
        let mut buf = vec![0u8; (1usize << 20).min(left as usize)];
        kept.read_exact(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        left -= buf.len() as u64;
        if let Some(p) = &mut part {
            p.update(&buf);
        }
        feed.piece(buf.into());
    }
    let mut out = BufWriter::with_capacity(1 << 20, &file);
    let mut attempt = 0;
    loop {
        if size == have {
            break;
        }
        attempt += 1;
        let outcome = (|| -> Result<()> {
            let Some(mut body) = source.open(offer, name, have)? else {
                return Err(Missing(format!("{} has no {name}", source.describe())).into());
            };
            while let Some(chunk) = body.next_chunk()? {
                if have + chunk.len() as u64 > size {
                    return Err(crate::http::Refused(format!(
                        "{} sends more of {name} than the {size} bytes of its signed statement: refusing it",
                        source.describe()
                    ))
                    .into());
                }
                out.write_all(&chunk).map_err(|e| disk_error(e, &path))?;
                have += chunk.len() as u64;
                if let Some(p) = &mut part {
                    p.update(&chunk);
                }
                feed.piece(chunk);
            }
            Ok(())
        })();
        match outcome {
            Ok(()) if size == have => break,
            Ok(()) => {
                if attempt >= ATTEMPTS {
                    out.flush().ok();
                    return Err(Transport(format!(
                        "download of {name} stopped at {have} of {} bytes, {ATTEMPTS} times: run the command again to resume",
                        size
                    ))
                    .into());
                }
            }
            Err(e)
                if e.is::<DiskError>() || e.is::<Missing>() || e.is::<crate::http::Refused>() =>
            {
                return Err(e);
            }
            Err(e) if attempt >= ATTEMPTS => {
                out.flush().ok();
                return Err(e.context(Transport(format!(
                    "download of {name} failed at byte {have}; run the command again to resume"
                ))));
            }
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
    }
    out.flush().map_err(|e| disk_error(e, &path))?;
    if have != size {
        bail!("{name} is {have} bytes, its signed statement says {size}");
    }
    Ok(part.map(|p| hex(&p.finalize())))
}

/// Failures that another attempt would not mend.
#[derive(Debug)]
struct DiskError(String);

#[derive(Debug)]
struct Missing(String);

macro_rules! message_error {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::error::Error for $t {}
    )*};
}
message_error!(DiskError, Missing, Transport);

fn disk_error(e: std::io::Error, path: &Path) -> anyhow::Error {
    let what = if e.kind() == std::io::ErrorKind::StorageFull {
        "disk full"
    } else {
        "cannot write"
    };
    DiskError(format!("{what}: {}: {e}", path.display())).into()
}

/// The pieces as a byte stream, for the gzip decoder.
pub(super) struct ChannelReader {
    rx: Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    pub(super) fn new(rx: Receiver<Bytes>) -> ChannelReader {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(next) => self.current = next,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}
