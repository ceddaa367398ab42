//! Throughput and peak memory of the coordinator's aggregation, which criterion cannot measure:
//! `cargo run --release -p amble-learn --example aggregate_peak -- [updates] [params]`
//! (default 100 updates of 10,000,000 parameters).
//!
//! 1. Streaming FedAvg: each update is checked ([`UpdateCheck`]) and added ([`WeightedSum`])
//!    chunk by chunk; four distinct update buffers are reused, as a coordinator holds only the
//!    chunks in flight. Memory should be O(params), whatever the number of updates.
//! 2. Median over 10 updates spooled to a temp file, read back block by block through
//!    [`aggregate_blocks`]: memory O(10 × block + params).
//!
//! Peak RSS is `VmHWM` from `/proc/self/status`, reset between phases by writing `5` to
//! `/proc/self/clear_refs` (Linux ≥ 4.0), so each phase reports its own peak.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]
use std::error::Error;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::time::Instant;

use amble_learn::federation::{
    Rule, UpdateCheck, WeightedSum, aggregate_blocks, f32_decode_into, f32_to_le,
};

const DISTINCT: usize = 4;
const CHUNK: usize = 16 * 1024;
const SPOOLED: usize = 10;
const BLOCK: usize = 64 * 1024;

/// Deterministic pseudo-random values in [-0.01, 0.01).
struct XorShift(u64);

impl XorShift {
    fn fill(&mut self, out: &mut [f32]) {
        for o in out {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *o = ((self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.02;
        }
    }
}

fn vm_hwm_mib() -> Result<f64, Box<dyn Error>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .ok_or("no VmHWM in /proc/self/status")?;
    let kib: f64 = line
        .split_whitespace()
        .nth(1)
        .ok_or("malformed VmHWM line")?
        .parse()?;
    Ok(kib / 1024.0)
}

fn reset_peak() {
    // Best effort: without it the second phase reports the maximum of both.
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("could not reset VmHWM ({e}); phase 2 peak includes phase 1");
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let updates: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(100);
    let params: usize = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000_000);
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    println!("baseline VmHWM {:.1} MiB", vm_hwm_mib()?);

    // Phase 1: streaming check + weighted sum.
    reset_peak();
    let bufs: Vec<Vec<f32>> = (0..DISTINCT)
        .map(|_| {
            let mut v = vec![0.0f32; params];
            rng.fill(&mut v);
            v
        })
        .collect();
    let start = Instant::now();
    let mut sum = WeightedSum::new(params);
    for u in 0..updates {
        let values = &bufs[u % DISTINCT];
        let weight = (100 + u) as f64;
        let mut check = UpdateCheck::new(params, 1e6);
        for (i, chunk) in values.chunks(CHUNK).enumerate() {
            check.feed(chunk)?;
            sum.add_chunk(i * CHUNK, chunk, weight)?;
        }
        check.finish()?;
        sum.commit(weight);
    }
    let mean = sum.mean().ok_or("no update committed")?;
    let secs = start.elapsed().as_secs_f64();
    let bytes = (updates * params * 4) as f64;
    println!(
        "stream check+sum: {updates} updates x {params} f32 = {:.2} GB in {secs:.3} s = {:.2} GB/s; \
         peak RSS {:.1} MiB (incl. {DISTINCT} source buffers {:.1} MiB); mean[0] = {}",
        bytes / 1e9,
        bytes / 1e9 / secs,
        vm_hwm_mib()?,
        (DISTINCT * params * 4) as f64 / (1024.0 * 1024.0),
        mean[0]
    );
    drop((bufs, sum, mean));

    // Phase 2: median over updates spooled to disk, read block by block.
    let path =
        std::env::temp_dir().join(format!("amble-aggregate-peak-{}.spool", std::process::id()));
    let result = median_from_spool(&path, params, &mut rng);
    let _ = std::fs::remove_file(&path);
    result
}

fn median_from_spool(
    path: &std::path::Path,
    params: usize,
    rng: &mut XorShift,
) -> Result<(), Box<dyn Error>> {
    {
        let mut w = BufWriter::new(OpenOptions::new().write(true).create_new(true).open(path)?);
        let mut chunk = vec![0.0f32; BLOCK];
        for _ in 0..SPOOLED {
            let mut left = params;
            while left > 0 {
                let n = left.min(BLOCK);
                rng.fill(&mut chunk[..n]);
                w.write_all(&f32_to_le(&chunk[..n]))?;
                left -= n;
            }
        }
        w.flush()?;
    }
    reset_peak();
    let mut file = File::open(path)?;
    let mut bytes = vec![0u8; BLOCK * 4];
    let start = Instant::now();
    let median = aggregate_blocks(SPOOLED, params, BLOCK, Rule::Median, |u, off, buf| {
        let raw = &mut bytes[..buf.len() * 4];
        file.seek(SeekFrom::Start(((u * params + off) * 4) as u64))?;
        file.read_exact(raw)?;
        f32_decode_into(raw, buf).map_err(std::io::Error::other)
    })?;
    let secs = start.elapsed().as_secs_f64();
    let data = (SPOOLED * params * 4) as f64;
    println!(
        "median from spool: {SPOOLED} updates x {params} f32 = {:.2} GB in {secs:.3} s = {:.2} GB/s \
         (file likely in page cache); peak RSS {:.1} MiB; median[0] = {}",
        data / 1e9,
        data / 1e9 / secs,
        vm_hwm_mib()?,
        median[0]
    );
    Ok(())
}
