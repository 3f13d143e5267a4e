//! Parallel gzip, pigz-style: the input is cut into blocks that worker threads
//! deflate independently (each primed with the previous block's last 32 KiB),
//! and the results are concatenated in order into ONE standard gzip member, so
//! `gzip -t` and `tar -xzf` read it like any other.
//!
//! The bytes depend on the input and the level only, never on the thread
//! count or on which worker deflated which block: every block gets a fresh
//! deflate state. A reused one (`Compress::reset`) is not enough: reset keeps
//! the sliding window's bytes, and `set_dictionary` hashes the dictionary's
//! last position together with the byte that follows it in the window, which
//! is then whatever the worker's previous block left there (zero in a fresh
//! state). So one hash-chain entry, and with it sometimes a match, depended
//! on the worker's history.
//!
//! Why not the `gzp` crate: its pigz mode needs a C zlib; flate2's zlib-rs
//! backend is pure Rust and about 2.8× faster than gzip at level 6 here, which
//! is what lets packaging beat pigz on two cores.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

const BLOCK: usize = 1 << 20;
const DICT: usize = 32 * 1024;

struct Job {
    data: Vec<u8>,
    dict: Option<Vec<u8>>,
    last: bool,
    reply: SyncSender<io::Result<Done>>,
}

struct Done {
    deflated: Vec<u8>,
    crc: crc32fast::Hasher,
    len: u64,
}

/// A `Write` that gzips what it is given into `inner`. Memory is bounded by
/// about `2 × threads` blocks in flight, whatever the input size.
pub struct ParGzWriter<W: Write> {
    inner: Option<W>,
    buf: Vec<u8>,
    prev_tail: Option<Vec<u8>>,
    jobs: Option<SyncSender<Job>>,
    in_flight: VecDeque<Receiver<io::Result<Done>>>,
    max_in_flight: usize,
    workers: Vec<JoinHandle<()>>,
    crc: crc32fast::Hasher,
    total: u64,
    header_written: bool,
}

impl<W: Write> ParGzWriter<W> {
    pub fn new(inner: W, level: u32, threads: usize) -> Self {
        let threads = threads.max(1);
        let (tx, rx) = sync_channel::<Job>(threads);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&rx);
                std::thread::spawn(move || worker(rx, Compression::new(level)))
            })
            .collect();
        ParGzWriter {
            inner: Some(inner),
            buf: Vec::with_capacity(BLOCK),
            prev_tail: None,
            jobs: Some(tx),
            in_flight: VecDeque::new(),
            max_in_flight: threads * 2,
            workers,
            crc: crc32fast::Hasher::new(),
            total: 0,
            header_written: false,
        }
    }

    fn inner(&mut self) -> &mut W {
        self.inner.as_mut().expect("writer used after finish")
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
        let tail = data[data.len().saturating_sub(DICT)..].to_vec();
        let dict = self.prev_tail.replace(tail);
        let (reply, result) = sync_channel(1);
        let job = Job {
            data,
            dict,
            last,
            reply,
        };
        self.jobs
            .as_ref()
            .expect("writer used after finish")
            .send(job)
            .map_err(|_| io::Error::other("compression worker exited"))?;
        self.in_flight.push_back(result);
        while self.in_flight.len() > if last { 0 } else { self.max_in_flight } {
            self.write_next()?;
        }
        Ok(())
    }

    /// Writes the oldest block's result, waiting for it if needed.
    fn write_next(&mut self) -> io::Result<()> {
        let rx = self.in_flight.pop_front().expect("a block in flight");
        let done = rx
            .recv()
            .map_err(|_| io::Error::other("compression worker exited"))??;
        if !self.header_written {
            self.header_written = true;
            // gzip header: deflate, no flags, mtime 0 (reproducible), unknown OS.
            self.inner()
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
        }
        self.inner().write_all(&done.deflated)?;
        self.crc.combine(&done.crc);
        self.total += done.len;
        Ok(())
    }

    /// Flushes the last block and the gzip trailer; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
        let size = (self.total & 0xffff_ffff) as u32;
        let mut inner = self.inner.take().expect("finish once");
        inner.write_all(&crc.to_le_bytes())?;
        inner.write_all(&size.to_le_bytes())?;
        inner.flush()?;
        Ok(inner)
    }
}

impl<W: Write> Write for ParGzWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(BLOCK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParGzWriter<W> {
    fn drop(&mut self) {
        // Closing the job channel ends the workers; results nobody reads are dropped.
        self.jobs = None;
        self.in_flight.clear();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(jobs: Arc<Mutex<Receiver<Job>>>, level: Compression) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        // A fresh state per block (see the module comment): it costs tens of
        // microseconds against milliseconds of deflating a block.
        let mut z = Compress::new(level, false);
        let result = deflate_block(&mut z, &job);
        let _ = job.reply.send(result);
    }
}

fn deflate_block(z: &mut Compress, job: &Job) -> io::Result<Done> {
    if let Some(dict) = &job.dict {
        z.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(job.data.len() / 2 + 1024);
    // Sync flush ends a middle block on a byte boundary without marking it final.
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = z.total_in() as usize;
        if out.capacity() - out.len() < 64 * 1024 {
            out.reserve(256 * 1024);
        }
        let status = z
            .compress_vec(&job.data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done_input = z.total_in() as usize == job.data.len();
        match status {
            Status::StreamEnd => break,
            // With Sync, spare output room after all input is consumed means the flush is complete.
            Status::Ok | Status::BufError
                if !job.last && done_input && out.len() < out.capacity() =>
            {
                break;
            }
            _ => {}
        }
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&job.data);
    Ok(Done {
        deflated: out,
        crc,
        len: job.data.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn roundtrip(input: &[u8], threads: usize) -> Vec<u8> {
        let mut w = ParGzWriter::new(Vec::new(), 6, threads);
        // Uneven writes cross block boundaries at odd places.
        for chunk in input.chunks(777_777) {
            w.write_all(chunk).unwrap();
        }
        let gz = w.finish().unwrap();
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len(), input.len());
        assert!(out == input, "round trip differs");
        gz
    }

    fn sample(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Half text-like, half noise: compresses, but not trivially.
                if (i / 4096) % 2 == 0 {
                    b"slurm plugin "[i % 13]
                } else {
                    x as u8
                }
            })
            .collect()
    }

    #[test]
    fn empty_input_is_a_valid_gzip() {
        let gz = roundtrip(b"", 2);
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    }

    #[test]
    fn multi_block_input_round_trips_as_one_member() {
        let input = sample(5 * BLOCK + 12345);
        let gz = roundtrip(&input, 3);
        // One member: the plain (single-member) decoder reads all of it.
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len(), input.len());
    }

    /// Many blocks, each boundary inside a pointer table that also covers
    /// the byte 32 KiB before it (as in a shared library's relocation data):
    /// the case where a reused deflate state gave other bytes than a fresh
    /// one, so the output depended on which worker took which block.
    fn pointer_tables_across_boundaries(blocks: usize) -> Vec<u8> {
        let mut data = sample(blocks * BLOCK);
        for k in 1..blocks {
            let b = k * BLOCK;
            let pointer = [0xd0, 0x27, 0x04, k as u8, 0, 0, 0, 0];
            for (i, byte) in data[b - 40_000..b + 2_000].iter_mut().enumerate() {
                *byte = pointer[i % 8];
            }
        }
        data
    }

    #[test]
    fn output_does_not_depend_on_thread_count_or_scheduling() {
        let input = pointer_tables_across_boundaries(21);
        let one = roundtrip(&input, 1);
        for threads in [2, 3, 8, 2, 8] {
            assert!(
                roundtrip(&input, threads) == one,
                "{threads} threads gave other bytes than one"
            );
        }
    }
}
