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
    /// `write_bytes` of the checkpoint after the run, which moves what the updates left in the
    /// write-ahead log into redb: the rest of the updates' cost, paid once for many of them.
    pub checkpoint_write_bytes: Option<u64>,
}

impl BenchReport {
    pub fn write_bytes_per_update(&self) -> Option<u64> {
        Some(self.write_bytes? / self.updates.max(1))
    }

    /// Bytes per update including the checkpoint that follows the run.
    pub fn write_bytes_per_update_with_checkpoint(&self) -> Option<u64> {
        Some((self.write_bytes? + self.checkpoint_write_bytes?) / self.updates.max(1))
    }

    pub fn commits_per_1000_updates(&self) -> f64 {
        self.commits as f64 * 1000.0 / self.updates.max(1) as f64
    }
}

/// What the benchmark writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchValue {
    /// Pod-like JSON with ids and hashes in it: compresses about as well as real objects.
    Json,
    /// Random bytes: the worst case, nothing to compress.
    Noise,
}

impl BenchValue {
    pub fn make(self, size: usize, seed: u64) -> Vec<u8> {
        match self {
            BenchValue::Json => pod_like_json(size, seed),
            BenchValue::Noise => noise(size, seed),
        }
    }
}

/// `writers` tasks each create their own key, then update it `updates / writers` times with a
/// `value_size`-byte Pod-like JSON value. Only the update phase is measured.
pub async fn bench_updates(
    store: &Store,
    writers: usize,
    updates: usize,
    value_size: usize,
) -> Result<BenchReport, StoreError> {
    bench_updates_of(store, writers, updates, value_size, BenchValue::Json).await
}

/// [`bench_updates`] with a choice of value.
pub async fn bench_updates_of(
    store: &Store,
    writers: usize,
    updates: usize,
    value_size: usize,
    kind: BenchValue,
) -> Result<BenchReport, StoreError> {
    let writers = writers.max(1);
    let per_writer = updates / writers;
    let run = std::process::id();
    let mut revisions = Vec::with_capacity(writers);
    for writer in 0..writers {
        let key = format!("/bench/{run}/{writer}");
        let kv = store
            .create(&key, move |_| kind.make(value_size, writer as u64))
            .await?;
        revisions.push((key, kv.mod_revision));
    }

    let commits_before = store.stats().commits;
    let bytes_before = process_write_bytes();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (writer, (key, mut revision)) in revisions.into_iter().enumerate() {
        let store = store.clone();
        tasks.spawn(async move {
            for round in 0..per_writer {
                let seed = (writer * per_writer + round + 1) as u64 * 7919;
                let kv = store
                    .update(&key, revision, move |_| kind.make(value_size, seed))
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
    let bytes_after = process_write_bytes();
    let write_bytes = match (bytes_before, bytes_after) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    let commits = store.stats().commits - commits_before;
    store.checkpoint().await?;
    let checkpoint_write_bytes = match (bytes_after, process_write_bytes()) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    Ok(BenchReport {
        updates: (per_writer * writers) as u64,
        elapsed,
        commits,
        write_bytes,
        checkpoint_write_bytes,
    })
}

/// `write_bytes` from /proc/self/io.
pub fn process_write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|value| value.trim().parse().ok())
}

/// `len` bytes of deterministic noise (xorshift64): incompressible, like the worst-case value.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

/// About `size` bytes of JSON shaped like a Pod: names, labels, an image, environment variables
/// with hash-like values, so it compresses like the real thing (neither all text nor all noise).
fn pod_like_json(size: usize, seed: u64) -> Vec<u8> {
    let hex = |len: usize, salt: u64| {
        noise(len / 2, seed ^ salt)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let mut json = format!(
        concat!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"web-{name}","#,
            r#""namespace":"default","uid":"{uid}","resourceVersion":"{seed}","#,
            r#""labels":{{"app":"web","pod-template-hash":"{hash}"}}}},"spec":{{"containers":"#,
            r#"[{{"name":"app","image":"registry.local/web@sha256:{digest}","env":["#
        ),
        name = hex(10, 1),
        uid = hex(32, 2),
        seed = seed,
        hash = hex(10, 3),
        digest = hex(64, 4),
    );
    let tail = r#"]}],"restartPolicy":"Always"},"status":{"phase":"Running"}}"#;
    let mut var = 0u64;
    while json.len() + tail.len() < size {
        if var > 0 {
            json.push(',');
        }
        json.push_str(&format!(
            r#"{{"name":"SETTING_{var}","value":"{}"}}"#,
            hex(8, 100 + var)
        ));
        var += 1;
    }
    json.push_str(tail);
    json.into_bytes()
}
