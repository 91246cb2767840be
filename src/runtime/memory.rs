//! Handing back memory that only start-up needed.
//!
//! Most of berth's resident memory after start is not data but code: the kernel maps the
//! executable's pages in as they run, 64 KiB around each fault, and start-up runs code from nearly
//! every subsystem once (certificate generation, store recovery, bootstrap objects) that an idle
//! node never runs again. On a 512 MB board those pages are worth giving back, so once the node
//! has settled we ask the kernel to reclaim the executable's mappings (`MADV_PAGEOUT`, Linux 5.4+)
//! and glibc to return its free heap. Code that is still used faults straight back in; the rest
//! leaves RAM until it is needed.
//!
//! A running node keeps handing back free heap ([`return_memory_while_running`]): glibc gives
//! the kernel only what is freed at the top of an arena, so pages freed in the middle of the
//! heap by the churn of requests, watches and pods stay resident for good. Under a churn of pods
//! and their objects the server's glibc heap held twice the memory in use, spread over a dozen
//! arenas; trimming every half-minute hands the free part back.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long after start the node has settled: start-up work (PKI, store recovery, bootstrap,
/// the controllers' first sync) is over by then.
const SETTLE: Duration = Duration::from_secs(10);

/// How often a running node hands its free heap back. A trim takes milliseconds and pages that
/// are used again fault back in, so a short period costs little and keeps RSS level.
const FREE_HEAP_RETURN_PERIOD: Duration = Duration::from_secs(30);

/// What a trim asked the kernel to reclaim.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    /// Bytes of the executable's read-only mappings handed to `MADV_PAGEOUT`.
    pub executable_bytes: u64,
    /// Whether the kernel accepted the advice (false on kernels without `MADV_PAGEOUT`).
    pub reclaimed: bool,
}

/// One line of /proc/self/maps that matters here.
#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    writable: bool,
    path: PathBuf,
}

fn parse_maps_line(line: &str) -> Option<Mapping> {
    let mut fields = line.split_whitespace();
    let range = fields.next()?;
    let perms = fields.next()?;
    let path = fields.nth(3)?;
    let (start, end) = range.split_once('-')?;
    Some(Mapping {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        writable: perms.as_bytes().get(1) == Some(&b'w'),
        path: PathBuf::from(path),
    })
}

/// The read-only (code and constant data) mappings of `executable` in a maps listing: clean
/// file pages, which the kernel can drop and read again at any time.
fn read_only_mappings_of(maps: &str, executable: &Path) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(parse_maps_line)
        .filter(|m| !m.writable && m.path == executable && m.end > m.start)
        .map(|m| (m.start, m.end - m.start))
        .collect()
}

/// Asks glibc to hand its free heap back to the kernel: after a large, short-lived structure is
/// dropped its pages otherwise stay resident in glibc's free lists.
pub fn return_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own free lists; it takes no pointers from us.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Where a maps listing puts the main thread's stack: `(start, end)` of the `[stack]` mapping.
fn main_stack(maps: &str) -> Option<(usize, usize)> {
    let line = maps.lines().find(|l| l.trim_end().ends_with("[stack]"))?;
    let (start, end) = line.split_whitespace().next()?.split_once('-')?;
    Some((
        usize::from_str_radix(start, 16).ok()?,
        usize::from_str_radix(end, 16).ok()?,
    ))
}

/// The pages of the main thread's stack `(start, end)` that lie wholly below `depth` (an
/// address in the caller's frame) by more than `margin`: memory no frame uses any more. None
/// when `depth` is not on that stack (another thread's) or nothing lies below it.
fn unused_stack_below(
    stack: (usize, usize),
    depth: usize,
    margin: usize,
    page: usize,
) -> Option<(usize, usize)> {
    let (start, end) = stack;
    if depth < start || depth >= end {
        return None;
    }
    let below = depth.checked_sub(margin)? & !(page - 1);
    (below > start).then(|| (start, below - start))
}

/// Hands back the main thread's stack pages below the caller's frame. A deep call (a
/// container's set-up runs libcontainer, serde and the kernel interfaces many frames down)
/// leaves its pages resident for the life of the process although nothing will read them
/// again; a long-lived process with a shallow steady state, like the pod shim, gives them back
/// after each such call. Does nothing on any thread but the main one. Returns the bytes given.
pub fn return_unused_stack() -> usize {
    // Frames still to come below this one: the madvise wrapper and the kernel entry, far less
    // than this. Anything else below the caller's frame is dead.
    const MARGIN: usize = 16 << 10;
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let Some(stack) = main_stack(&maps) else {
        return 0;
    };
    drop(maps);
    let marker = 0u8;
    let depth = std::hint::black_box(std::ptr::addr_of!(marker)) as usize;
    // SAFETY: sysconf only reads a system constant.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let Some((start, len)) = unused_stack_below(stack, depth, MARGIN, page.max(4096)) else {
        return 0;
    };
    // SAFETY: the range is part of this thread's own stack mapping lying wholly below the
    // current frame (and the margin), so no live frame, local or borrowed reference points
    // into it; MADV_DONTNEED drops the pages and the next touch maps a zero page, which is
    // what a stack below its top may hold anyway.
    let advised = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    if advised == 0 {
        len
    } else {
        0
    }
}

/// The executable's read-only mappings in an smaps listing that hold no private (anonymous,
/// copy-on-write) page: their contents are exactly the file's, so dropping their pages from
/// this process loses nothing. A position-independent build relocates its `.data.rel.ro` and
/// then makes it read-only: that mapping has anonymous pages and is left out.
fn file_identical_mappings(smaps: &str, executable: &Path) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some(mapping) = parse_maps_line(line) {
            current =
                (!mapping.writable && mapping.path == executable && mapping.end > mapping.start)
                    .then_some((mapping.start, mapping.end - mapping.start));
        } else if let (Some(range), Some(rest)) = (current, line.strip_prefix("Anonymous:")) {
            if rest.trim().trim_end_matches("kB").trim() == "0" {
                found.push(range);
            }
            current = None;
        }
    }
    found
}

/// Drops this process's mappings of the executable's pages that are identical to the file
/// (code and constants): a pod's shim runs code from nearly everywhere in the binary to set
/// a container up (and the kernel maps 64 KiB around each page it faults in), then loops over
/// a small part of it for the pod's life. The pages stay in the page cache for whoever else
/// maps them; what this process runs again faults straight back in. Returns the bytes advised.
pub fn return_unused_code() -> u64 {
    let (Ok(executable), Ok(smaps)) = (
        std::fs::read_link("/proc/self/exe"),
        std::fs::read_to_string("/proc/self/smaps"),
    ) else {
        return 0;
    };
    let mut advised = 0;
    for (start, len) in file_identical_mappings(&smaps, &executable) {
        // SAFETY: a read-only private mapping of our own executable with no anonymous page
        // (checked in smaps just now; being read-only, it cannot gain one): every page equals
        // the file's, which MADV_DONTNEED maps back in on the next touch. Nothing is unmapped.
        if unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) } == 0 {
            advised += len as u64;
        }
    }
    advised
}

/// Caps how many malloc arenas glibc keeps. By default each thread that allocates under
/// contention may get an arena of its own (up to 8 per core), and what is freed in an arena stays
/// with it: on a small device a few shared arenas keep the heap compact. Returns whether glibc
/// took the setting. Must run before the threads it should govern start allocating.
pub fn limit_malloc_arenas(arenas: usize) -> bool {
    let arenas = libc::c_int::try_from(arenas.max(1)).unwrap_or(libc::c_int::MAX);
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a glibc tunable; it takes no pointers.
    let accepted = unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) == 1 };
    #[cfg(not(target_env = "gnu"))]
    let accepted = {
        let _ = arenas;
        false
    };
    accepted
}

/// Returns start-up-only memory to the kernel; see the module documentation.
pub fn trim_after_startup() -> Trimmed {
    let mut trimmed = Trimmed::default();
    return_free_heap();
    let (Ok(executable), Ok(maps)) = (
        std::fs::read_link("/proc/self/exe"),
        std::fs::read_to_string("/proc/self/maps"),
    ) else {
        return trimmed;
    };
    for (start, len) in read_only_mappings_of(&maps, &executable) {
        trimmed.executable_bytes += len as u64;
        // SAFETY: the range is one of our own file-backed, read-only mappings, taken from
        // /proc/self/maps; MADV_PAGEOUT only drops pages the kernel can read back from the file,
        // so no memory we own changes contents and nothing is unmapped.
        let advised = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_PAGEOUT) };
        trimmed.reclaimed |= advised == 0;
    }
    trimmed
}

/// Once the node has settled, returns start-up-only memory to the kernel, then its free heap
/// every [`FREE_HEAP_RETURN_PERIOD`]. Never ends: spawn it and let it go with the runtime.
pub async fn return_memory_while_running() {
    tokio::time::sleep(SETTLE).await;
    if let Ok(trimmed) = tokio::task::spawn_blocking(trim_after_startup).await {
        tracing::debug!(?trimmed, "returned start-up memory to the kernel");
    }
    let mut ticks = tokio::time::interval(FREE_HEAP_RETURN_PERIOD);
    // A node that was suspended trims once on waking, not once per missed period.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // The first tick is immediate: start-up's trim just ran.
    loop {
        ticks.tick().await;
        // Off the async workers: a trim walks every arena's free lists under its lock.
        let _ = tokio::task::spawn_blocking(return_free_heap).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frees every other block of a run of heap blocks and trims: how many whole pages inside
    /// the freed blocks were resident (before, after) the trim, and of how many.
    #[cfg(target_env = "gnu")]
    fn free_every_other_block_and_trim() -> (usize, usize, usize) {
        // Blocks below glibc's mmap threshold live in an arena; freeing every other one leaves
        // free pages between live blocks, which glibc keeps resident until a trim.
        const BLOCK: usize = 16 * 1024;
        let blocks: Vec<Vec<u8>> = (0..1_024).map(|_| vec![1u8; BLOCK]).collect();
        let page = page_size();
        let mut kept = Vec::new();
        let mut freed_pages = Vec::new();
        for (i, block) in blocks.into_iter().enumerate() {
            if i % 2 == 0 {
                kept.push(block);
            } else {
                // A whole page inside the block, clear of the free-list links glibc writes at
                // the start of a free chunk.
                let page_start = (block.as_ptr() as usize + 64).next_multiple_of(page);
                if page_start + page <= block.as_ptr() as usize + BLOCK {
                    freed_pages.push(page_start);
                }
            }
        }
        let resident = |pages: &[usize]| pages.iter().filter(|p| is_resident(**p)).count();
        let before = resident(&freed_pages);
        return_free_heap();
        let after = resident(&freed_pages);
        assert!(kept.iter().all(|b| b[0] == 1 && b[BLOCK - 1] == 1));
        (before, after, freed_pages.len())
    }

    #[cfg(target_env = "gnu")]
    #[test]
    fn returning_free_heap_hands_pages_freed_between_live_blocks_back_to_the_kernel() {
        // Other tests run on other threads of this process and may share the arena: between
        // the free and the trim they can take freed chunks again (and fault their pages back
        // in). One clean attempt out of a few shows the trim works; every attempt is checked.
        let mut attempts = Vec::new();
        for _ in 0..5 {
            let (before, after, freed) = free_every_other_block_and_trim();
            attempts.push((before, after, freed));
            let resident_until_trimmed = before * 10 >= freed * 9;
            let handed_back = after * 2 < freed;
            if resident_until_trimmed && handed_back {
                return;
            }
        }
        panic!("no attempt saw freed pages resident before the trim and gone after it (before, after, freed): {attempts:?}");
    }

    fn page_size() -> usize {
        // SAFETY: sysconf only reads a system constant.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size).unwrap_or(4096)
    }

    /// Whether the page at `address` is in RAM: bit 63 of its entry in /proc/self/pagemap.
    fn is_resident(address: usize) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let mut pagemap = std::fs::File::open("/proc/self/pagemap").expect("open pagemap");
        let entry = (address / page_size()) as u64 * 8;
        pagemap.seek(SeekFrom::Start(entry)).expect("seek pagemap");
        let mut bytes = [0u8; 8];
        pagemap.read_exact(&mut bytes).expect("read pagemap");
        u64::from_le_bytes(bytes) >> 63 == 1
    }

    const MAPS: &str = "\
55d0c0000000-55d0c1000000 r--p 00000000 fe:01 123 /usr/local/bin/berth
55d0c1000000-55d0c2400000 r-xp 01000000 fe:01 123 /usr/local/bin/berth
55d0c2400000-55d0c2500000 rw-p 02400000 fe:01 123 /usr/local/bin/berth
55d0c2500000-55d0c2600000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000001000 r-xp 00000000 fe:01 999 /usr/lib/other.so
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0
";

    #[test]
    fn only_the_executables_read_only_mappings_are_trimmed() {
        let found = read_only_mappings_of(MAPS, Path::new("/usr/local/bin/berth"));
        assert_eq!(
            found,
            vec![(0x55d0c0000000, 0x1000000), (0x55d0c1000000, 0x1400000)]
        );
    }

    #[test]
    fn anonymous_mappings_and_garbage_lines_are_skipped() {
        assert_eq!(
            parse_maps_line("7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0"),
            None
        );
        assert_eq!(parse_maps_line("not a mapping"), None);
    }

    #[test]
    fn the_main_stack_is_found_in_a_maps_listing() {
        let maps = format!("{MAPS}7ffd10000000-7ffd10021000 rw-p 00000000 00:00 0 [stack]\n");
        assert_eq!(main_stack(&maps), Some((0x7ffd10000000, 0x7ffd10021000)));
        assert_eq!(main_stack(MAPS), None);
    }

    #[test]
    fn only_whole_pages_below_the_frame_and_its_margin_are_given_back() {
        let stack = (0x10000, 0x40000);
        // Depth 0x30800, margin 0x1000: everything below 0x2f000 (page aligned down).
        assert_eq!(
            unused_stack_below(stack, 0x30800, 0x1000, 0x1000),
            Some((0x10000, 0x1f000))
        );
        // Nothing lies below a frame at the bottom of the stack.
        assert_eq!(unused_stack_below(stack, 0x10800, 0x1000, 0x1000), None);
    }

    #[test]
    fn a_frame_on_another_stack_gives_nothing_back() {
        let stack = (0x10000, 0x40000);
        assert_eq!(unused_stack_below(stack, 0x50000, 0x1000, 0x1000), None);
        assert_eq!(unused_stack_below(stack, 0x8000, 0x1000, 0x1000), None);
        // Test threads are not the main thread: their stacks are left alone.
        assert_eq!(std::thread::spawn(return_unused_stack).join().unwrap(), 0);
    }

    #[test]
    fn only_read_only_mappings_of_the_executable_without_private_pages_are_dropped() {
        let smaps = "\
55d0c0000000-55d0c1000000 r--p 00000000 fe:01 123 /usr/local/bin/berth
Rss: 100 kB
Anonymous: 0 kB
55d0c1000000-55d0c2400000 r-xp 01000000 fe:01 123 /usr/local/bin/berth
Anonymous:             0 kB
55d0c2400000-55d0c2500000 r--p 02400000 fe:01 123 /usr/local/bin/berth
Anonymous: 1948 kB
55d0c2500000-55d0c2600000 rw-p 02500000 fe:01 123 /usr/local/bin/berth
Anonymous: 0 kB
7f0000000000-7f0000001000 r-xp 00000000 fe:01 999 /usr/lib/other.so
Anonymous: 0 kB
";
        assert_eq!(
            file_identical_mappings(smaps, Path::new("/usr/local/bin/berth")),
            vec![(0x55d0c0000000, 0x1000000), (0x55d0c1000000, 0x1400000)]
        );
    }

    #[test]
    fn trimming_this_process_keeps_it_running() {
        let trimmed = trim_after_startup();
        assert!(trimmed.executable_bytes > 0);
        // The code that runs next was just paged out: calling into it must still work.
        assert_eq!(read_only_mappings_of("", Path::new("/x")), vec![]);
    }
}
