//! Fuzz-style property tests for layer unpacking: seeded random layers built from hostile
//! pieces (`..`, absolute paths, symlinks out of the root and entries written through them, hard
//! links to files outside, whiteouts), and valid layers with random bytes flipped. Whatever the
//! layer, unpacking never panics and never writes, links or changes anything outside the
//! directory it unpacks into. Bounded in cases and time.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use tar::{EntryType, Header};

use super::unpack::unpack_layer;

const CASES: usize = 1_500;
const BUDGET: Duration = Duration::from_secs(10);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

/// Entry names: ordinary, climbing, absolute, through a symlink, whiteouts.
const NAMES: &[&str] = &[
    "a",
    "a/b",
    "a/b/c",
    "link",
    "link/x",
    "link/sub/y",
    "a/link",
    "a/link/z",
    "../x",
    "a/../../x",
    "/abs/x",
    "./a/./b",
    "../sentinel",
    ".wh.a",
    "a/.wh..wh..opq",
    ".wh...",
    "dir/",
];

/// Link targets: inside, outside by `..` and by absolute path (`OUTER` is the directory holding
/// the root and the sentinel, so a write through such a link lands where the test looks).
const TARGETS: &[&str] = &[
    "a",
    "a/b",
    "..",
    "../..",
    "../sentinel",
    "OUTER",
    "OUTER/sentinel",
    "link",
    "",
];

fn header(kind: EntryType, name: &str, link: &str, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    if let Some(gnu) = h.as_gnu_mut() {
        let name = name.as_bytes();
        let n = name.len().min(gnu.name.len());
        gnu.name[..n].copy_from_slice(&name[..n]);
        let link = link.as_bytes();
        let n = link.len().min(gnu.linkname.len());
        gnu.linkname[..n].copy_from_slice(&link[..n]);
    }
    h.set_size(size);
    h.set_mode(0o755);
    h.set_mtime(1_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    h
}

/// A random layer of up to 8 hostile entries; `outer` is the absolute path of the directory
/// holding the root.
fn random_layer(rng: &mut Rng, outer: &str) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for _ in 0..(rng.next() % 8 + 1) {
        let name = rng.pick(NAMES);
        let link = rng.pick(TARGETS).replace("OUTER", outer);
        let kind = match rng.next() % 5 {
            0 => EntryType::Directory,
            1 => EntryType::Symlink,
            2 => EntryType::Link,
            3 => EntryType::Fifo,
            _ => EntryType::Regular,
        };
        let data: &[u8] = if kind == EntryType::Regular {
            b"overwritten"
        } else {
            b""
        };
        let h = header(kind, name, &link, data.len() as u64);
        let _ = tar.append(&h, data);
    }
    tar.into_inner().unwrap_or_default()
}

/// Unpacks `layer` into a fresh root beside a sentinel file and checks that nothing outside the
/// root changed: the sentinel keeps its content and link count, and the root's parent holds
/// nothing new.
fn unpack_and_check(case: usize, make_layer: impl FnOnce(&Path) -> Vec<u8>) {
    let outer = tempfile::tempdir().unwrap();
    let layer = make_layer(outer.path());
    let root = outer.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let sentinel = outer.path().join("sentinel");
    std::fs::write(&sentinel, b"untouched").unwrap();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let _ = unpack_layer(&layer[..], &root, "fuzz");
    }));
    assert!(outcome.is_ok(), "case {case}: unpacking panicked");
    assert_eq!(
        std::fs::read(&sentinel).unwrap(),
        b"untouched",
        "case {case}: a file outside the root was written"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&sentinel).unwrap().nlink(),
        1,
        "case {case}: a file outside the root was hard-linked into it"
    );
    let mut beside: Vec<String> = std::fs::read_dir(outer.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    beside.sort();
    assert_eq!(
        beside,
        ["root", "sentinel"],
        "case {case}: wrote beside the root"
    );
    assert!(
        !Path::new("/abs").exists(),
        "case {case}: an absolute name left the root"
    );
}

#[test]
fn random_hostile_layers_never_write_outside_the_root_or_panic() {
    let mut rng = Rng(0x51_7cc1_b727_220a);
    let started = Instant::now();
    for case in 0..CASES {
        unpack_and_check(case, |outer| {
            random_layer(&mut rng, &outer.display().to_string())
        });
        if started.elapsed() > BUDGET {
            break;
        }
    }
}

#[test]
fn valid_layers_with_random_bytes_flipped_never_panic_or_escape() {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let seed_layer = {
        let mut tar = tar::Builder::new(Vec::new());
        let _ = tar.append(&header(EntryType::Directory, "a", "", 0), &b""[..]);
        let _ = tar.append(&header(EntryType::Regular, "a/file", "", 5), &b"hello"[..]);
        let _ = tar.append(&header(EntryType::Symlink, "a/up", "..", 0), &b""[..]);
        let _ = tar.append(&header(EntryType::Link, "a/hard", "a/file", 0), &b""[..]);
        tar.into_inner().unwrap_or_default()
    };
    let started = Instant::now();
    for case in 0..CASES {
        let mut layer = seed_layer.clone();
        for _ in 0..(rng.next() % 16 + 1) {
            let at = (rng.next() % layer.len() as u64) as usize;
            layer[at] = rng.next() as u8;
        }
        unpack_and_check(case, |_| layer);
        if started.elapsed() > BUDGET {
            break;
        }
    }
}
