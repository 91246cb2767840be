//! The write-ahead log: where a write becomes durable.
//!
//! A redb durable commit rewrites every B-tree page on the path to each changed entry, plus the
//! allocator state, and syncs twice; on an SD card that is most of the wear. Instead each group
//! commit appends one record here and syncs once (`fdatasync`), then commits to redb without
//! durability (redb keeps those pages in memory, visible to readers). Every so often a durable
//! redb commit (a checkpoint) persists everything at once and the log starts over.
//!
//! # Layout
//! One preallocated file, written from offset 0 after every checkpoint, record after record:
//! `body_len: u32 LE | crc32(body_len, body): u32 LE | body`, where the body is a run of
//! `revision: u64 LE | entry_len: u32 LE | entry` (an encoded [`super::codec::LogEntry`]).
//!
//! Reading stops at the first record that is incomplete, fails its checksum, or does not
//! continue the revisions of the one before: a torn tail, zeros, or a stale record from before
//! the last checkpoint (those hold only revisions redb already has durably, so they are never
//! newer than a checkpoint and are skipped by the replay in any case).
//!
//! Only the last record can be torn: each append is synced before the next one starts. So a
//! whole record past the end of the valid prefix that is newer than everything before it means
//! damage in the middle of the log (a bad sector, a flipped bit); the store then refuses to
//! open, naming the file and the offset, instead of silently dropping the records after it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::StoreError;

const HEADER_LEN: usize = 8;
const ENTRY_HEADER_LEN: usize = 12;

/// Direct writes are tried at the smallest block a disk takes, then a page; buffers are
/// aligned to a page either way.
const SMALL_BLOCK: usize = 512;
const PAGE: usize = 4096;

/// Size of the log file. A checkpoint happens when a record no longer fits, so this bounds
/// replay time and the memory redb holds for commits not yet durable.
pub(super) const CAPACITY: u64 = 8 * 1024 * 1024;

/// Appends go through O_DIRECT where the file system allows it: a buffered append dirties and
/// writes back a whole 4 KiB page per sync even when the record is a few hundred bytes, while a
/// direct write sends only the 512-byte sectors the record touches.
pub(super) struct Wal {
    file: File,
    /// The same file opened with O_DIRECT, and the block size it accepts; None where direct
    /// I/O is refused (tmpfs, some file systems), and appends are buffered.
    direct: Option<(File, usize)>,
    path: PathBuf,
    capacity: u64,
    /// Where the next record goes; 0 when everything is durable in redb.
    end: u64,
    /// The file's bytes from the page boundary at or before `end` up to `end`: a direct write
    /// covers whole blocks, so it rewrites them in front of the new record.
    tail: Vec<u8>,
    /// `end` and `tail` before the last append, for [`Wal::undo`].
    before_last: Option<(u64, Vec<u8>)>,
    /// The aligned buffer of direct writes, kept between appends up to [`KEPT_BUFFER`]: a fresh
    /// zeroed allocation per append was a noticeable part of a small write's cost.
    buffer: Vec<u8>,
}

/// Larger direct-write buffers (a batch of big objects) are allocated for that append only.
const KEPT_BUFFER: usize = 1024 * 1024;

/// The log file that belongs to the store at `store_path`.
pub(super) fn path_for(store_path: &Path) -> PathBuf {
    let mut name = store_path.file_name().unwrap_or_default().to_os_string();
    name.push(".wal");
    store_path.with_file_name(name)
}

/// Appends one entry to a record body.
pub(super) fn push_entry(body: &mut Vec<u8>, revision: u64, entry: &[u8]) {
    body.extend_from_slice(&revision.to_le_bytes());
    // Entries are bounded far below 4 GiB by the store's entry size limit.
    body.extend_from_slice(&(entry.len() as u32).to_le_bytes());
    body.extend_from_slice(entry);
}

/// What a body of `entries` entries of `bytes` total takes in the log.
fn record_len(body_len: usize) -> u64 {
    (HEADER_LEN + body_len) as u64
}

fn checksum(body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&(body.len() as u32).to_le_bytes());
    hasher.update(body);
    hasher.finalize()
}

impl Wal {
    /// Opens (creating and preallocating) the log and returns the entries of its valid prefix,
    /// in revision order. The next append goes to offset 0: the caller must make those entries
    /// durable in redb before writing anything new.
    ///
    /// `durable_revision` is the newest revision redb holds durably. A whole record newer than
    /// both it and the valid prefix, found past the prefix's end, means the prefix ended at
    /// damage in the middle of the log rather than at a torn tail: that is an error.
    pub fn open(
        path: &Path,
        capacity: u64,
        durable_revision: u64,
    ) -> Result<(Wal, Vec<(u64, Vec<u8>)>), StoreError> {
        let io = |context: &'static str| {
            let path = path.to_path_buf();
            move |source: std::io::Error| wal_error(path, context, source)
        };
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io("open"))?;
        let len = file.metadata().map_err(io("stat"))?.len();
        let mut contents = vec![0; len as usize];
        file.read_exact_at(&mut contents, 0).map_err(io("read"))?;
        let (entries, end) = valid_prefix(&contents);
        let newest = entries.last().map_or(durable_revision, |(rev, _)| *rev);
        if let Some(later) = newer_record_after(&contents, end, newest.max(durable_revision)) {
            return Err(StoreError::WalDamaged {
                path: path.to_path_buf(),
                offset: end as u64,
                later: later.offset as u64,
                revision: later.revision,
            });
        }

        if len < capacity {
            preallocate(&file, capacity).map_err(io("preallocate"))?;
            file.sync_all().map_err(io("sync"))?;
        }
        if !existed {
            // The file's name must survive a power cut as well as its contents.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|source| wal_error(dir.to_path_buf(), "sync directory", source))?;
            }
        }
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok()
            .map(|file| (file, SMALL_BLOCK));
        let wal = Wal {
            file,
            direct,
            path: path.to_path_buf(),
            capacity: capacity.max(len),
            end: 0,
            tail: Vec::new(),
            before_last: None,
            buffer: Vec::new(),
        };
        Ok((wal, entries))
    }

    /// Whether a record with this body still fits before a checkpoint is needed.
    pub fn fits(&self, body_len: usize) -> bool {
        self.end + record_len(body_len) <= self.capacity
    }

    /// Whether every write is durable in redb (nothing here is needed any more).
    pub fn is_empty(&self) -> bool {
        self.end == 0
    }

    /// Appends one record and waits until it is on disk. Returns its offset, for [`Wal::undo`].
    pub fn append(&mut self, body: &[u8]) -> Result<u64, StoreError> {
        #[cfg(test)]
        if let Some(delay) = failing::take_slow(&self.path) {
            std::thread::sleep(delay);
        }
        #[cfg(test)]
        if failing::take(&self.path) {
            return Err(wal_error(
                self.path.clone(),
                "append",
                std::io::Error::other("injected failure"),
            ));
        }
        let offset = self.end;
        let mut record = Vec::with_capacity(HEADER_LEN + body.len());
        record.extend_from_slice(&(body.len() as u32).to_le_bytes());
        record.extend_from_slice(&checksum(body).to_le_bytes());
        record.extend_from_slice(body);
        self.before_last = Some((offset, self.tail.clone()));
        if let Err(source) = self.write_at_end(&record) {
            // The record may be on disk whole: it must not be replayed as if it had succeeded.
            let _ = self.undo(offset);
            return Err(wal_error(self.path.clone(), "append", source));
        }
        let new_end = offset + record.len() as u64;
        let page_start = new_end - new_end % PAGE as u64;
        if page_start >= offset {
            self.tail = record[(page_start - offset) as usize..].to_vec();
        } else {
            self.tail.extend_from_slice(&record);
        }
        self.end = new_end;
        Ok(offset)
    }

    /// Erases the record at `offset` (the last one) after redb failed to take it, so that a
    /// replay never resurrects a write its caller was told failed.
    pub fn undo(&mut self, offset: u64) -> Result<(), StoreError> {
        if let Some((end, tail)) = self.before_last.take().filter(|(end, _)| *end == offset) {
            self.end = end;
            self.tail = tail;
        }
        self.write_at_end(&[0; HEADER_LEN])
            .map_err(|source| wal_error(self.path.clone(), "erase a failed record", source))
    }

    /// Writes `bytes` at `end` and waits until they are on disk; `end` does not move.
    fn write_at_end(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        while let Some((direct, block)) = self.direct.take() {
            let start = self.end - self.end % block as u64;
            let lead = (self.end - start) as usize;
            let len = (lead + bytes.len()).div_ceil(block) * block;
            let mut once = Vec::new();
            let buffer = match len + PAGE {
                needed if needed <= KEPT_BUFFER => &mut self.buffer,
                _ => &mut once,
            };
            if buffer.len() < len + PAGE {
                buffer.resize(len + PAGE, 0);
            }
            let at = buffer.as_ptr().align_offset(PAGE);
            let Some(aligned) = buffer.get_mut(at..at + len) else {
                break;
            };
            // The tail always reaches back to a page boundary, so it covers `lead`.
            aligned[..lead].copy_from_slice(&self.tail[self.tail.len() - lead..]);
            aligned[lead..lead + bytes.len()].copy_from_slice(bytes);
            // The rest of the last block: zeros, whatever an earlier append left there.
            aligned[lead + bytes.len()..].fill(0);
            match direct.write_all_at(aligned, start) {
                Ok(()) => {
                    let synced = direct.sync_data();
                    self.direct = Some((direct, block));
                    return synced;
                }
                // Alignment refused (nothing was written): try a page, then buffered writes.
                Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
                    if block < PAGE {
                        self.direct = Some((direct, PAGE));
                    }
                }
                Err(error) => {
                    self.direct = Some((direct, block));
                    return Err(error);
                }
            }
        }
        self.file.write_all_at(bytes, self.end)?;
        self.file.sync_data()
    }

    /// After a checkpoint: everything so far is durable in redb, start over at the beginning.
    /// Nothing is written; the stale records are recognised by their revisions.
    pub fn rewind(&mut self) {
        self.end = 0;
        self.tail.clear();
        self.before_last = None;
    }
}

/// Test hooks: logs whose next append fails, as a dying disk's would, or takes its time, as a
/// busy one's does.
#[cfg(test)]
pub(super) mod failing {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;
    use std::time::Duration;

    static NEXT_APPEND_FAILS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    static NEXT_APPEND_SLOW: Mutex<Vec<(PathBuf, Duration)>> = Mutex::new(Vec::new());

    pub fn slow_next_append(path: &Path, delay: Duration) {
        NEXT_APPEND_SLOW
            .lock()
            .unwrap()
            .push((path.to_path_buf(), delay));
    }

    /// Whether a slowed append is still waiting for its write: false once the append began.
    pub fn slow_append_pending(path: &Path) -> bool {
        NEXT_APPEND_SLOW
            .lock()
            .unwrap()
            .iter()
            .any(|(p, _)| p == path)
    }

    pub(in super::super) fn take_slow(path: &Path) -> Option<Duration> {
        let mut slow = NEXT_APPEND_SLOW.lock().unwrap();
        let i = slow.iter().position(|(p, _)| p == path)?;
        Some(slow.remove(i).1)
    }

    pub fn fail_next_append(path: &Path) {
        NEXT_APPEND_FAILS.lock().unwrap().push(path.to_path_buf());
    }

    pub(in super::super) fn take(path: &Path) -> bool {
        let mut failing = NEXT_APPEND_FAILS.lock().unwrap();
        match failing.iter().position(|p| p == path) {
            Some(i) => {
                failing.remove(i);
                true
            }
            None => false,
        }
    }
}

fn wal_error(path: PathBuf, context: &'static str, source: std::io::Error) -> StoreError {
    StoreError::Wal {
        path,
        context,
        source: Arc::new(source),
    }
}

/// Reserves the file's blocks up front, so that appends overwrite allocated space and a sync
/// does not also have to grow the file; falls back to a plain resize where the file system
/// cannot preallocate.
fn preallocate(file: &File, capacity: u64) -> std::io::Result<()> {
    let len = i64::try_from(capacity).unwrap_or(i64::MAX);
    match nix::fcntl::fallocate(file, nix::fcntl::FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP) => file.set_len(capacity),
        Err(errno) => Err(std::io::Error::from(errno)),
    }
}

/// The entries of the valid prefix of a log file.
pub(crate) fn parse(contents: &[u8]) -> Vec<(u64, Vec<u8>)> {
    valid_prefix(contents).0
}

/// The entries of the valid prefix of a log file, and the offset where the prefix ends.
fn valid_prefix(contents: &[u8]) -> (Vec<(u64, Vec<u8>)>, usize) {
    let mut entries: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut offset = 0;
    while let Some(body) = record_at(contents, offset) {
        let Some(record) = parse_body(body) else {
            break;
        };
        let continues = match (entries.last(), record.first()) {
            (Some((last, _)), Some((first, _))) => *first == last + 1,
            _ => true,
        };
        if !continues || record.is_empty() {
            break;
        }
        entries.extend(record.into_iter().map(|(rev, entry)| (rev, entry.to_vec())));
        offset += HEADER_LEN + body.len();
    }
    (entries, offset)
}

/// A whole record found past the end of the valid prefix.
#[derive(Debug, PartialEq)]
pub(crate) struct LaterRecord {
    pub offset: usize,
    pub revision: u64,
}

/// The first whole record at or after `from` whose first revision is newer than `newest`.
///
/// Records are not aligned, so every offset is a candidate; the revision is checked before the
/// checksum so that scanning a log full of stale records (all older than `newest`, as every
/// record from before the last checkpoint is) stays a cheap pass over the bytes.
pub(crate) fn newer_record_after(contents: &[u8], from: usize, newest: u64) -> Option<LaterRecord> {
    // No record past `from` can start further ahead than one revision per smallest record.
    let reach = (contents.len() / (HEADER_LEN + ENTRY_HEADER_LEN)) as u64 + 1;
    let plausible = |revision: u64| revision > newest && revision - newest <= reach;
    (from..contents.len()).find_map(|offset| {
        let at = offset.checked_add(HEADER_LEN)?;
        let revision = u64::from_le_bytes(contents.get(at..at + 8)?.try_into().ok()?);
        if !plausible(revision) {
            return None;
        }
        let body = record_at(contents, offset)?;
        let first = parse_body(body)?.first()?.0;
        (first == revision).then_some(LaterRecord { offset, revision })
    })
}

/// The body of the record at `offset` if it is whole and its checksum matches.
fn record_at(contents: &[u8], offset: usize) -> Option<&[u8]> {
    let header = contents.get(offset..offset.checked_add(HEADER_LEN)?)?;
    let body_len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let start = offset + HEADER_LEN;
    let body = contents.get(start..start.checked_add(body_len)?)?;
    (body_len > 0 && checksum(body) == crc).then_some(body)
}

/// The entries of one body, None if they are malformed or their revisions are not consecutive.
fn parse_body(mut body: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    let mut entries: Vec<(u64, &[u8])> = Vec::new();
    while !body.is_empty() {
        let header = body.get(..ENTRY_HEADER_LEN)?;
        let revision = u64::from_le_bytes(header[0..8].try_into().ok()?);
        let len = u32::from_le_bytes(header[8..12].try_into().ok()?) as usize;
        let entry = body.get(ENTRY_HEADER_LEN..ENTRY_HEADER_LEN.checked_add(len)?)?;
        if entries.last().is_some_and(|(last, _)| revision != last + 1) {
            return None;
        }
        entries.push((revision, entry));
        body = &body[ENTRY_HEADER_LEN + len..];
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(revisions: std::ops::RangeInclusive<u64>) -> Vec<u8> {
        let mut body = Vec::new();
        for revision in revisions {
            push_entry(&mut body, revision, format!("entry {revision}").as_bytes());
        }
        body
    }

    fn revisions(entries: &[(u64, Vec<u8>)]) -> Vec<u64> {
        entries.iter().map(|(rev, _)| *rev).collect()
    }

    #[test]
    fn appended_records_are_read_back_in_order_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let (mut wal, entries) = Wal::open(&path, 4096, 0).unwrap();
        assert!(entries.is_empty());
        wal.append(&body(1..=2)).unwrap();
        wal.append(&body(3..=3)).unwrap();
        drop(wal);
        let (_, entries) = Wal::open(&path, 4096, 0).unwrap();
        assert_eq!(revisions(&entries), [1, 2, 3]);
        assert_eq!(entries[2].1, b"entry 3");
    }

    #[test]
    fn records_written_directly_across_block_and_page_boundaries_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let (mut wal, _) = Wal::open(&path, 64 * 1024, 0).unwrap();
        let mut last = 0;
        // Sizes that end records at every offset within a block, over several pages.
        for size in [1usize, 500, 7, 1100, 3000, 4096, 13, 5000] {
            let mut body = Vec::new();
            last += 1;
            push_entry(&mut body, last, &vec![last as u8; size]);
            wal.append(&body).unwrap();
        }
        drop(wal);
        let (_, entries) = Wal::open(&path, 64 * 1024, 0).unwrap();
        assert_eq!(revisions(&entries), (1..=last).collect::<Vec<_>>());
        assert!(entries
            .iter()
            .all(|(rev, entry)| entry.iter().all(|b| *b == *rev as u8)));
    }

    #[test]
    fn the_file_is_preallocated_to_its_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        Wal::open(&path, 64 * 1024, 0).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 * 1024);
    }

    #[test]
    fn a_torn_tail_at_any_byte_yields_exactly_the_whole_records_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let (mut wal, _) = Wal::open(&path, 4096, 0).unwrap();
        let mut ends = Vec::new();
        for (first, last) in [(1, 2), (3, 5), (6, 6)] {
            wal.append(&body(first..=last)).unwrap();
            ends.push((wal.end as usize, last));
        }
        drop(wal);
        let full = std::fs::read(&path).unwrap();
        for cut in 0..=ends.last().unwrap().0 {
            let mut torn = full[..cut].to_vec();
            torn.resize(full.len(), 0);
            let expected = ends
                .iter()
                .filter(|(end, _)| *end <= cut)
                .map(|(_, last)| *last)
                .last()
                .unwrap_or(0);
            let got = revisions(&parse(&torn));
            assert_eq!(got, (1..=expected).collect::<Vec<_>>(), "cut at byte {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_ends_the_log_at_the_damaged_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let (mut wal, _) = Wal::open(&path, 4096, 0).unwrap();
        wal.append(&body(1..=1)).unwrap();
        let second = wal.append(&body(2..=3)).unwrap() as usize;
        wal.append(&body(4..=4)).unwrap();
        drop(wal);
        let mut contents = std::fs::read(&path).unwrap();
        contents[second + HEADER_LEN + 3] ^= 0x10;
        assert_eq!(revisions(&parse(&contents)), [1]);
    }

    #[test]
    fn damage_in_the_middle_of_the_log_is_refused_naming_the_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let (mut wal, _) = Wal::open(&path, 4096, 0).unwrap();
        wal.append(&body(1..=1)).unwrap();
        let second = wal.append(&body(2..=3)).unwrap();
        let third = wal.append(&body(4..=4)).unwrap();
        drop(wal);
        let mut contents = std::fs::read(&path).unwrap();
        contents[second as usize + HEADER_LEN + 3] ^= 0x10;
        std::fs::write(&path, &contents).unwrap();
        let err = Wal::open(&path, 4096, 0).err().expect("damage is refused");
        assert!(
            matches!(err, StoreError::WalDamaged { offset, later, revision: 4, .. }
                if offset == second && later == third),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&path.display().to_string())
                && message.contains(&format!("offset {second}"))
                && !message.contains('\n'),
            "{message}"
        );
    }

    #[test]
    fn damage_to_the_first_record_is_refused_when_newer_records_follow_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let (mut wal, _) = Wal::open(&path, 4096, 10).unwrap();
        wal.append(&body(11..=11)).unwrap();
        wal.append(&body(12..=12)).unwrap();
        drop(wal);
        let mut contents = std::fs::read(&path).unwrap();
        contents[HEADER_LEN + 1] ^= 0x01;
        std::fs::write(&path, &contents).unwrap();
        let err = Wal::open(&path, 4096, 10).err().expect("damage is refused");
        assert!(
            matches!(
                err,
                StoreError::WalDamaged {
                    offset: 0,
                    revision: 12,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_damaged_last_record_is_a_torn_tail_and_the_prefix_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let (mut wal, _) = Wal::open(&path, 4096, 0).unwrap();
        wal.append(&body(1..=2)).unwrap();
        let last = wal.append(&body(3..=3)).unwrap();
        drop(wal);
        let mut contents = std::fs::read(&path).unwrap();
        contents[last as usize + HEADER_LEN + 9] ^= 0x04;
        std::fs::write(&path, &contents).unwrap();
        let (_, entries) = Wal::open(&path, 4096, 0).unwrap();
        assert_eq!(revisions(&entries), [1, 2]);
    }

    #[test]
    fn stale_records_behind_a_damaged_new_tail_are_not_mistaken_for_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let (mut wal, _) = Wal::open(&path, 4096, 0).unwrap();
        for revision in 1..=6 {
            wal.append(&body(revision..=revision)).unwrap();
        }
        // A checkpoint made 1..=6 durable; the new log has 7 and a torn 8.
        wal.rewind();
        wal.append(&body(7..=7)).unwrap();
        let torn = wal.append(&body(8..=8)).unwrap();
        drop(wal);
        let mut contents = std::fs::read(&path).unwrap();
        contents[torn as usize + HEADER_LEN + 2] ^= 0x40;
        std::fs::write(&path, &contents).unwrap();
        let (_, entries) = Wal::open(&path, 4096, 6).unwrap();
        assert_eq!(revisions(&entries), [7]);
    }

    #[test]
    fn a_log_of_zeros_or_repeated_garbage_has_no_newer_record() {
        let zeros = vec![0u8; 64 * 1024];
        assert_eq!(newer_record_after(&zeros, 0, 0), None);
        let garbage = b"\xff garbage".repeat(4096);
        assert_eq!(newer_record_after(&garbage, 0, 0), None);
    }

    #[test]
    fn after_a_rewind_stale_records_past_the_new_tail_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let (mut wal, _) = Wal::open(&path, 4096, 0).unwrap();
        wal.append(&body(1..=1)).unwrap();
        wal.append(&body(2..=2)).unwrap();
        wal.append(&body(3..=3)).unwrap();
        wal.rewind();
        // Same length as the stale first record, so the stale second one follows it exactly.
        wal.append(&body(4..=4)).unwrap();
        drop(wal);
        let (_, entries) = Wal::open(&path, 4096, 0).unwrap();
        assert_eq!(revisions(&entries), [4]);
    }

    #[test]
    fn an_undone_record_is_never_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let (mut wal, _) = Wal::open(&path, 4096, 0).unwrap();
        wal.append(&body(1..=1)).unwrap();
        let offset = wal.append(&body(2..=2)).unwrap();
        wal.undo(offset).unwrap();
        drop(wal);
        let (_, entries) = Wal::open(&path, 4096, 0).unwrap();
        assert_eq!(revisions(&entries), [1]);
    }

    #[test]
    fn a_record_that_does_not_fit_is_reported_before_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(&dir.path().join("s.wal"), 64, 0).unwrap();
        assert!(wal.fits(56));
        assert!(!wal.fits(57));
        wal.append(&body(1..=1)).unwrap();
        assert!(!wal.fits(56));
        wal.rewind();
        assert!(wal.fits(56) && wal.is_empty());
    }
}
