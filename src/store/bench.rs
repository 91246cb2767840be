//! A small write benchmark: concurrent compare-and-swap updates, counting commits and the bytes
//! this process sent to storage (what wears an SD card out).

use std::time::{Duration, Instant};

use super::{Store, StoreError};

#[derive(Clone, Copy, Debug)]
pub struct BenchReport {
    pub updates: u64,
    pub elapsed: Duration,
    /// redb commits the updates took (group commit makes this far fewer than `updates`).
    pub commits: u64,
    /// `write_bytes` of /proc/self/io over the run: bytes the process caused to be written to
    /// the block device. None where the file is unavailable. Counts the whole process, so run
    /// the benchmark alone to get a meaningful figure.
    pub write_bytes: Option<u64>,
}

impl BenchReport {
    pub fn write_bytes_per_update(&self) -> Option<u64> {
        Some(self.write_bytes? / self.updates.max(1))
    }

    pub fn commits_per_1000_updates(&self) -> f64 {
        self.commits as f64 * 1000.0 / self.updates.max(1) as f64
    }
}

/// `writers` tasks each create their own key, then update it `updates / writers` times with a
/// `value_size`-byte value. Only the update phase is measured.
pub async fn bench_updates(
    store: &Store,
    writers: usize,
    updates: usize,
    value_size: usize,
) -> Result<BenchReport, StoreError> {
    let writers = writers.max(1);
    let per_writer = updates / writers;
    let run = std::process::id();
    let mut revisions = Vec::with_capacity(writers);
    for writer in 0..writers {
        let key = format!("/bench/{run}/{writer}");
        let kv = store.create(&key, move |_| vec![0; value_size]).await?;
        revisions.push((key, kv.mod_revision));
    }

    let commits_before = store.stats().commits;
    let bytes_before = process_write_bytes();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (key, mut revision) in revisions {
        let store = store.clone();
        tasks.spawn(async move {
            for round in 0..per_writer {
                let fill = (round % 251) as u8;
                let kv = store
                    .update(&key, revision, move |_| vec![fill; value_size])
                    .await?;
                revision = kv.mod_revision;
            }
            Ok::<_, StoreError>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|_| StoreError::Closed)??;
    }
    let elapsed = started.elapsed();
    let write_bytes = match (bytes_before, process_write_bytes()) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    Ok(BenchReport {
        updates: (per_writer * writers) as u64,
        elapsed,
        commits: store.stats().commits - commits_before,
        write_bytes,
    })
}

/// `write_bytes` from /proc/self/io.
pub fn process_write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|value| value.trim().parse().ok())
}
