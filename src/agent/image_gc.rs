//! Image garbage collection (upstream's `pkg/kubelet/images/image_gc_manager.go`): when the
//! image filesystem is fuller than the high threshold, unused images are deleted, least
//! recently used first, until it is below the low threshold. An image is in use while a pod
//! on this node names it; one seen for less than the minimum age is left alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::config::ImagesConfig;
use crate::runtime::images::{Image, ImageError, ImageStore};

/// Upstream's `imageGCPeriod`: how often usage is checked against the thresholds.
pub const GC_PERIOD: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub high_percent: u8,
    pub low_percent: u8,
    pub min_age: Duration,
}

impl Policy {
    pub fn from_config(config: &ImagesConfig) -> Policy {
        let high = config.gc_high_threshold_percent.min(100);
        Policy {
            high_percent: high,
            // The low threshold cannot be above the high one (upstream refuses such a config).
            low_percent: config.gc_low_threshold_percent.min(high),
            min_age: Duration::from_secs(config.gc_minimum_age_seconds),
        }
    }
}

/// One image as garbage collection sees it: every reference of one image id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredImage {
    pub id: String,
    pub references: Vec<String>,
    /// `repository@sha256:...` names.
    pub digests: Vec<String>,
    pub size: u64,
}

/// Groups the store's per-reference listing by image id.
pub fn by_id(images: Vec<Image>) -> Vec<StoredImage> {
    let mut grouped: BTreeMap<String, StoredImage> = BTreeMap::new();
    for image in images {
        let entry = grouped
            .entry(image.id.clone())
            .or_insert_with(|| StoredImage {
                id: image.id.clone(),
                references: Vec::new(),
                digests: Vec::new(),
                size: image.size,
            });
        entry.references.push(image.reference);
        if !entry.digests.contains(&image.digest) {
            entry.digests.push(image.digest);
        }
    }
    grouped.into_values().collect()
}

#[derive(Debug, Clone, Copy)]
struct Record {
    first_detected: Instant,
    last_used: Instant,
}

/// What was freed, and how much was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    pub deleted: Vec<String>,
    pub freed: u64,
    pub wanted: u64,
}

/// The collector's memory of when each image was first seen and last used (upstream keeps
/// this in memory too: after a restart every image starts young).
#[derive(Debug)]
pub struct ImageGc {
    policy: Policy,
    records: HashMap<String, Record>,
}

impl ImageGc {
    pub fn new(policy: Policy) -> ImageGc {
        ImageGc {
            policy,
            records: HashMap::new(),
        }
    }

    /// Notes the images present and which are in use at `now`.
    pub fn detect(&mut self, images: &[StoredImage], in_use: &HashSet<String>, now: Instant) {
        let present: HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
        self.records.retain(|id, _| present.contains(id.as_str()));
        for image in images {
            let record = self.records.entry(image.id.clone()).or_insert(Record {
                first_detected: now,
                last_used: now,
            });
            if in_use.contains(&image.id) {
                record.last_used = now;
            }
        }
    }

    /// The bytes to free for a filesystem of `capacity` with `available` left, when it is
    /// at or above the high threshold.
    pub fn amount_to_free(&self, capacity: u64, available: u64) -> Option<u64> {
        if self.policy.high_percent >= 100 || capacity == 0 {
            return None;
        }
        let used_percent = 100 - (available.min(capacity) as u128 * 100 / capacity as u128) as u64;
        if used_percent < u64::from(self.policy.high_percent) {
            return None;
        }
        let target_available = capacity as u128 * u128::from(100 - self.policy.low_percent) / 100;
        Some(target_available.saturating_sub(available as u128) as u64)
    }

    /// Unused images old enough to go, least recently used first, until `bytes` are freed
    /// (`u64::MAX`: all of them).
    pub fn choose(
        &self,
        images: &[StoredImage],
        in_use: &HashSet<String>,
        bytes: u64,
        now: Instant,
    ) -> Vec<StoredImage> {
        let mut candidates: Vec<(&StoredImage, Record)> = images
            .iter()
            .filter(|i| !in_use.contains(&i.id))
            .filter_map(|i| Some((i, *self.records.get(&i.id)?)))
            .filter(|(_, r)| now.saturating_duration_since(r.first_detected) >= self.policy.min_age)
            .collect();
        candidates.sort_by_key(|(i, r)| (r.last_used, r.first_detected, i.id.clone()));
        let mut chosen = Vec::new();
        let mut freed = 0u64;
        for (image, _) in candidates {
            if freed >= bytes {
                break;
            }
            freed = freed.saturating_add(image.size);
            chosen.push(image.clone());
        }
        chosen
    }

    /// Deletes the images `choose` picks, from the store; returns what went.
    pub fn free(
        &mut self,
        store: &ImageStore,
        images: &[StoredImage],
        in_use: &HashSet<String>,
        bytes: u64,
        now: Instant,
    ) -> Result<Outcome, ImageError> {
        self.detect(images, in_use, now);
        let mut outcome = Outcome {
            wanted: bytes,
            ..Outcome::default()
        };
        for image in self.choose(images, in_use, bytes, now) {
            match store.remove(&image.id) {
                Ok(()) | Err(ImageError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            tracing::info!(image = %image.id, references = ?image.references, size = image.size, "image garbage collected");
            self.records.remove(&image.id);
            outcome.freed = outcome.freed.saturating_add(image.size);
            outcome.deleted.push(image.id);
        }
        Ok(outcome)
    }
}

/// Capacity and available bytes, and total and free inodes, of the filesystem at `path`.
pub fn filesystem_stats(path: &std::path::Path) -> Option<(u64, u64, u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    let frsize = stat.fragment_size() as u64;
    Some((
        stat.blocks() as u64 * frsize,
        stat.blocks_available() as u64 * frsize,
        stat.files() as u64,
        stat.files_available() as u64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, size: u64) -> StoredImage {
        StoredImage {
            id: id.into(),
            references: vec![format!("docker.io/library/{id}:latest")],
            digests: Vec::new(),
            size,
        }
    }

    fn policy(high: u8, low: u8, min_age: u64) -> Policy {
        Policy::from_config(&ImagesConfig {
            gc_high_threshold_percent: high,
            gc_low_threshold_percent: low,
            gc_minimum_age_seconds: min_age,
            ..ImagesConfig::default()
        })
    }

    #[test]
    fn nothing_is_freed_below_the_high_threshold_and_down_to_the_low_one_above_it() {
        let gc = ImageGc::new(policy(85, 80, 0));
        assert_eq!(gc.amount_to_free(1000, 200), None, "80% used");
        // 90% used: free until 20% is available.
        assert_eq!(gc.amount_to_free(1000, 100), Some(100));
        assert_eq!(
            ImageGc::new(policy(100, 80, 0)).amount_to_free(1000, 0),
            None
        );
    }

    #[test]
    fn least_recently_used_unused_images_go_first_and_in_use_or_young_ones_never() {
        let mut gc = ImageGc::new(policy(85, 80, 60));
        let images = vec![image("old", 10), image("recent", 10), image("busy", 10)];
        let t0 = Instant::now();
        let all: HashSet<String> = ["old", "recent", "busy"].map(String::from).into();
        gc.detect(&images, &all, t0);
        let later = t0 + Duration::from_secs(100);
        gc.detect(&images, &["recent", "busy"].map(String::from).into(), later);
        let busy: HashSet<String> = ["busy".to_string()].into();
        let now = t0 + Duration::from_secs(200);
        let chosen = gc.choose(&images, &busy, 15, now);
        let ids: Vec<&str> = chosen.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(
            ids,
            ["old", "recent"],
            "enough for 15 bytes, oldest use first"
        );
        assert_eq!(gc.choose(&images, &busy, 5, now).len(), 1);
        let fresh = vec![image("fresh", 10)];
        gc.detect(&fresh, &HashSet::new(), now);
        assert!(
            gc.choose(&fresh, &HashSet::new(), u64::MAX, now).is_empty(),
            "younger than the minimum age"
        );
    }

    #[test]
    fn references_of_one_image_are_grouped_by_id() {
        let a = |reference: &str| Image {
            reference: reference.into(),
            id: "sha256:a".into(),
            digest: "docker.io/library/x@sha256:d".into(),
            layers: Vec::new(),
            config: Default::default(),
            size: 7,
        };
        let grouped = by_id(vec![a("x:1"), a("x:2")]);
        assert_eq!(grouped.len(), 1);
        assert_eq!(grouped[0].references, ["x:1", "x:2"]);
        assert_eq!(grouped[0].digests.len(), 1);
    }
}
