//! Full disk and bad files: berth's data dir on a small loop-mounted ext4 fills up with
//! ConfigMaps; the failing write is a clear Status, reads and watches keep working, berth stays
//! up, and once space returns writes succeed again and every acknowledged object survives a
//! restart. A truncated or corrupted store refuses to start with one clear line naming how to
//! restore, never a panic.
//!
//! Needs root (network namespaces, loop devices, mounts), as in CI.

mod common;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::inside::{block_on_in_netns, kube_client};
use common::netns::Netns;
use common::server::BerthServer;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};

/// Size of the file system image: small enough to fill quickly, large enough for berth's PKI,
/// store and preallocated write-ahead log.
const IMAGE_BYTES: u64 = 64 * 1024 * 1024;
/// What the filler leaves free: berth keeps 20 MiB free for its store (a checkpoint must be
/// able to flush the write-ahead log), and the ConfigMaps fill the 6 MiB above that.
const LEFT_FREE: u64 = 26 * 1024 * 1024;
const CONFIGMAP_BYTES: usize = 256 * 1024;

/// An ext4 file system in an image file, loop-mounted; unmounted (which frees the loop device)
/// and removed on drop, also when the test failed.
struct LoopFs {
    mountpoint: PathBuf,
    _work: tempfile::TempDir,
}

impl LoopFs {
    fn new(bytes: u64) -> LoopFs {
        let work = tempfile::Builder::new()
            .prefix(&format!("berth-loopfs-{}-", std::process::id()))
            .tempdir()
            .expect("create a work dir");
        let image = work.path().join("fs.img");
        File::create(&image)
            .and_then(|f| f.set_len(bytes))
            .expect("create the image file");
        // No blocks reserved for root (berth runs as root): what statvfs calls available is all.
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&image));
        let mountpoint = work.path().join("mnt");
        std::fs::create_dir(&mountpoint).expect("create the mount point");
        // `-o loop` sets up the loop device with autoclear: it goes with the last unmount.
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mountpoint));
        LoopFs {
            mountpoint,
            _work: work,
        }
    }

    fn free_bytes(&self) -> u64 {
        let stat = nix::sys::statvfs::statvfs(&self.mountpoint).expect("statvfs");
        stat.blocks_available() as u64 * stat.fragment_size() as u64
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // Lazy: a pod shim or a killed server's mount namespace may still pin it for a moment.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .status();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes zeros to `path` until at most `left` bytes stay free on `fs`.
fn fill(fs: &LoopFs, path: &Path, left: u64) {
    let mut file = File::create(path).expect("create the filler");
    let chunk = vec![0u8; 256 * 1024];
    while fs.free_bytes() > left + chunk.len() as u64 {
        if file.write_all(&chunk).is_err() {
            break;
        }
        let _ = file.sync_data();
    }
}

/// A ConfigMap of `CONFIGMAP_BYTES` of letters that do not compress much (the store compresses
/// values), different for every `seed`.
fn configmap(name: &str, seed: u64) -> ConfigMap {
    configmap_of(name, seed, CONFIGMAP_BYTES)
}

fn configmap_of(name: &str, seed: u64, bytes: usize) -> ConfigMap {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let blob: String = (0..bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'A' + (state % 52) as u8 + if state % 52 >= 26 { 6 } else { 0 })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "data": {"blob": blob},
    }))
    .expect("a ConfigMap")
}

/// What happened to the writes on the full disk.
struct Filled {
    acknowledged: Vec<String>,
    /// (code, reason, message) of the first refused write.
    refusal: (u16, String, String),
}

async fn create_until_refused(kubeconfig: &Path) -> Filled {
    let client = kube_client(kubeconfig).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut acknowledged = Vec::new();
    for i in 0..400 {
        let name = format!("filler-{i}");
        match configmaps
            .create(&PostParams::default(), &configmap(&name, i))
            .await
        {
            Ok(_) => acknowledged.push(name),
            Err(kube::Error::Api(status)) => {
                return Filled {
                    acknowledged,
                    refusal: (status.code, status.reason, status.message),
                }
            }
            Err(other) => panic!("create {name}: not a Status: {other}"),
        }
    }
    panic!("400 ConfigMaps of 256 KiB fit on a 64 MiB file system")
}

#[test]
fn a_full_disk_refuses_writes_clearly_keeps_serving_reads_and_recovers() {
    let ns = Netns::new();
    let fs = LoopFs::new(IMAGE_BYTES);
    let data_dir = tempfile::Builder::new()
        .prefix("berth-data-")
        .tempdir_in(&fs.mountpoint)
        .expect("create the data dir");
    let mut server = BerthServer::start_in(&ns, data_dir);
    let filler = fs.mountpoint.join("filler");
    fill(&fs, &filler, LEFT_FREE);

    let kubeconfig = server.kubeconfig_path();
    let started = Instant::now();
    let filled = block_on_in_netns(&ns.name, move || async move {
        create_until_refused(&kubeconfig).await
    });
    let (code, reason, message) = filled.refusal.clone();
    eprintln!(
        "{} ConfigMaps acknowledged in {:?}, then {code} {reason}: {message}",
        filled.acknowledged.len(),
        started.elapsed()
    );
    assert_eq!(code, 507, "a full disk is 507: {reason} {message}");
    assert!(
        message.contains("is full") && message.contains("berth.redb"),
        "the message names the disk: {message}"
    );
    assert!(
        filled.acknowledged.len() >= 10,
        "writes succeed until the disk is nearly full: {}",
        filled.acknowledged.len()
    );
    assert!(server.is_running(), "berth survives the full disk");

    // Reads still work, and a watch still starts and then sees the write that succeeds once
    // space is back.
    let names = server.kubectl_ok(&["get", "configmaps", "-o", "name"]);
    for name in &filled.acknowledged {
        assert!(
            names.contains(&format!("configmap/{name}")),
            "{name} is listed"
        );
    }
    let kubeconfig = server.kubeconfig_path();
    let probe_fs_filler = filler.clone();
    let seen = block_on_in_netns(&ns.name, move || async move {
        let client = kube_client(&kubeconfig).await;
        let configmaps: Api<ConfigMap> = Api::namespaced(client, "default");
        let list = configmaps.list(&Default::default()).await.expect("list");
        let version = list.metadata.resource_version.unwrap_or_default();
        let mut events = configmaps
            .watch(&WatchParams::default().timeout(60), &version)
            .await
            .expect("a watch starts on the full disk")
            .boxed();
        std::fs::remove_file(&probe_fs_filler).expect("remove the filler");
        // Space is back: the next write is accepted (a few tries: the file system frees the
        // blocks of the removed file asynchronously).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match configmaps
                .create(
                    &PostParams::default(),
                    &configmap("after-space-returned", 1_000_000),
                )
                .await
            {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("write after freeing space: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("writes never recovered after space returned: {e}"),
            }
        }
        loop {
            match tokio::time::timeout(Duration::from_secs(30), events.next()).await {
                Ok(Some(Ok(WatchEvent::Added(cm))))
                    if cm.metadata.name.as_deref() == Some("after-space-returned") =>
                {
                    return true
                }
                Ok(Some(Ok(_))) => continue,
                other => {
                    eprintln!("watch ended: {other:?}");
                    return false;
                }
            }
        }
    });
    assert!(seen, "the watch opened on the full disk sees the new write");
    assert!(server.is_running(), "berth is still up");

    // Every acknowledged object survives a crash.
    server.kill9();
    server.restart();
    let names = server.kubectl_ok(&["get", "configmaps", "-o", "name"]);
    for name in filled
        .acknowledged
        .iter()
        .map(String::as_str)
        .chain(["after-space-returned"])
    {
        assert!(
            names.contains(&format!("configmap/{name}")),
            "{name} survived the restart"
        );
    }
    let blob = server.kubectl_ok(&[
        "get",
        "configmap",
        "after-space-returned",
        "-o",
        "jsonpath={.data.blob}",
    ]);
    assert_eq!(blob.len(), CONFIGMAP_BYTES, "the object is whole");
    drop(server);
    drop(fs);
}

const RACING_WRITERS: u64 = 10;
const RACING_CONFIGMAP_BYTES: usize = 64 * 1024;
/// A writer stops after this many refusals in a row: the disk is full for it.
const REFUSALS_TO_STOP: usize = 3;

/// What one writer saw: the objects it was told are stored (with their resourceVersion) and
/// the ones it was told are not.
#[derive(Debug, Default)]
struct WriterOutcome {
    acknowledged: Vec<(String, String)>,
    refused: Vec<(String, u16, String)>,
}

/// Creates ConfigMaps until `REFUSALS_TO_STOP` in a row are refused. Anything but a success or
/// a Status (a reset connection, a timeout, a body that is not a Status) fails the test.
async fn write_until_full(configmaps: Api<ConfigMap>, writer: u64) -> WriterOutcome {
    let mut outcome = WriterOutcome::default();
    let mut refusals_in_a_row = 0;
    for i in 0..2_000u64 {
        let name = format!("racer-{writer}-{i}");
        match configmaps
            .create(
                &PostParams::default(),
                &configmap_of(&name, writer * 100_000 + i, RACING_CONFIGMAP_BYTES),
            )
            .await
        {
            Ok(created) => {
                refusals_in_a_row = 0;
                let version = created.metadata.resource_version.unwrap_or_default();
                outcome.acknowledged.push((name, version));
            }
            Err(kube::Error::Api(status)) => {
                refusals_in_a_row += 1;
                outcome.refused.push((name, status.code, status.message));
                if refusals_in_a_row == REFUSALS_TO_STOP {
                    return outcome;
                }
            }
            Err(other) => panic!("writer {writer}: create {name}: not a Status: {other}"),
        }
    }
    panic!("writer {writer}: 2,000 ConfigMaps fit on a 64 MiB file system")
}

#[test]
fn ten_writers_racing_a_filling_disk_get_a_durable_success_or_a_clear_status_each() {
    let ns = Netns::new();
    let fs = LoopFs::new(IMAGE_BYTES);
    let data_dir = tempfile::Builder::new()
        .prefix("berth-data-")
        .tempdir_in(&fs.mountpoint)
        .expect("create the data dir");
    let mut server = BerthServer::start_in(&ns, data_dir);
    let filler = fs.mountpoint.join("filler");

    // The writers start while the filler is still eating the space.
    let kubeconfig = server.kubeconfig_path();
    let started = Instant::now();
    let writers = std::thread::spawn({
        let ns = ns.name.clone();
        move || {
            block_on_in_netns(&ns, move || async move {
                let client = kube_client(&kubeconfig).await;
                let writers = (0..RACING_WRITERS).map(|writer| {
                    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
                    tokio::spawn(write_until_full(configmaps, writer))
                });
                let mut outcomes = Vec::new();
                for writer in writers.collect::<Vec<_>>() {
                    outcomes.push(writer.await.expect("a writer panicked"));
                }
                outcomes
            })
        }
    });
    fill(&fs, &filler, LEFT_FREE);
    let outcomes = writers.join().expect("the writers finished");
    let acknowledged: Vec<&(String, String)> =
        outcomes.iter().flat_map(|o| &o.acknowledged).collect();
    let refused: Vec<&(String, u16, String)> = outcomes.iter().flat_map(|o| &o.refused).collect();
    eprintln!(
        "{} writers: {} ConfigMaps acknowledged, {} refused in {:?}; first refusal: {:?}",
        RACING_WRITERS,
        acknowledged.len(),
        refused.len(),
        started.elapsed(),
        refused.first()
    );
    for (name, code, message) in &refused {
        assert!(
            *code == 507 && message.contains("is full") && message.contains("berth.redb"),
            "{name}: a refusal on a full disk is a 507 naming the disk: {code} {message}"
        );
    }
    assert!(
        acknowledged.len() >= 10,
        "writes succeed until the disk is nearly full: {}",
        acknowledged.len()
    );
    assert!(server.is_running(), "berth survives the full disk");
    let names = server.kubectl_ok(&["get", "configmaps", "-o", "name"]);
    assert!(
        acknowledged
            .iter()
            .all(|(name, _)| names.contains(&format!("configmap/{name}\n"))),
        "reads on the full disk list every acknowledged object"
    );

    // Space returns: every writer writes again.
    std::fs::remove_file(&filler).expect("remove the filler");
    let kubeconfig = server.kubeconfig_path();
    let after: Vec<(String, String)> = block_on_in_netns(&ns.name, move || async move {
        let client = kube_client(&kubeconfig).await;
        let configmaps: Api<ConfigMap> = Api::namespaced(client, "default");
        let mut after = Vec::new();
        for writer in 0..RACING_WRITERS {
            let name = format!("racer-{writer}-after");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let cm = configmap_of(&name, writer, RACING_CONFIGMAP_BYTES);
                match configmaps.create(&PostParams::default(), &cm).await {
                    Ok(created) => {
                        let version = created.metadata.resource_version.unwrap_or_default();
                        after.push((name, version));
                        break;
                    }
                    // The file system frees the removed file's blocks asynchronously.
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("write after freeing space: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => panic!("writes never recovered after space returned: {e}"),
                }
            }
        }
        after
    });

    // A crash now: the store opens cleanly, every acknowledged write is there as acknowledged,
    // and nothing refused appeared.
    server.kill9();
    server.restart();
    let stored = server.kubectl_ok(&[
        "get",
        "configmaps",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.metadata.resourceVersion}{\"\\n\"}{end}",
    ]);
    let stored: std::collections::BTreeMap<&str, &str> =
        stored.lines().filter_map(|l| l.split_once(' ')).collect();
    for (name, version) in acknowledged.iter().copied().chain(after.iter()) {
        assert_eq!(
            stored.get(name.as_str()),
            Some(&version.as_str()),
            "{name} survived the crash at its acknowledged resourceVersion"
        );
    }
    for (name, code, _) in &refused {
        assert!(
            !stored.contains_key(name.as_str()),
            "{name} was refused with {code} but is stored"
        );
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());
    drop(server);
    drop(fs);
}

/// Starts berth on `data_dir` and waits for it to exit (at most 60 s); returns its exit code
/// and its stderr.
fn start_expecting_exit(ns: &Netns, data_dir: &Path) -> (Option<i32>, String) {
    let config = data_dir.join("test-config.toml");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(env!("CARGO_BIN_EXE_berth"))
        .arg("server")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--api-listen", "127.0.0.1:0"])
        .env("BERTH_CONFIG", &config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth");
    let exited = common::wait_until(Duration::from_secs(60), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("wait for berth");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(exited, "berth started on a damaged store:\n{stderr}");
    (out.status.code(), stderr)
}

/// A server with some objects, stopped cleanly (so they are in the store file, not only in the
/// write-ahead log); the test damages its files.
fn stopped_server_with_objects(ns: &Netns) -> BerthServer {
    let mut server = BerthServer::start(ns);
    for i in 0..20 {
        server.kubectl_ok(&[
            "create",
            "configmap",
            &format!("cm-{i}"),
            &format!("--from-literal=k={}", "v".repeat(4096)),
        ]);
    }
    let pid = server.pid().expect("server pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("stop berth");
    let stopped = common::wait_until(Duration::from_secs(30), || {
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| stat.contains(") Z "))
    });
    assert!(stopped, "berth stops on SIGTERM");
    server.kill9();
    server
}

fn assert_refused_clearly(code: Option<i32>, stderr: &str, file: &Path) {
    assert!(
        code.is_some_and(|c| c != 0),
        "a non-zero exit: {code:?}\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "no panic on a damaged store:\n{stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.contains("restore"))
        .unwrap_or_else(|| panic!("no line says how to restore:\n{stderr}"));
    assert!(
        line.contains(&file.display().to_string()) && line.contains("move"),
        "the line names the file and how to get going again: {line}"
    );
}

#[test]
fn a_truncated_store_file_is_refused_at_start_with_a_clear_error() {
    let ns = Netns::new();
    let server = stopped_server_with_objects(&ns);
    let store = server.data_dir().join("berth.redb");
    let len = std::fs::metadata(&store).expect("the store exists").len();
    File::options()
        .write(true)
        .open(&store)
        .and_then(|f| f.set_len(len / 2))
        .expect("truncate the store");
    let (code, stderr) = start_expecting_exit(&ns, server.data_dir());
    assert_refused_clearly(code, &stderr, &store);
}

#[test]
fn a_corrupted_store_file_is_refused_at_start_with_a_clear_error() {
    let ns = Netns::new();
    let server = stopped_server_with_objects(&ns);
    let store = server.data_dir().join("berth.redb");
    let len = std::fs::metadata(&store).expect("the store exists").len();
    // Garbage over every page after the header: whatever redb reads first is damaged.
    let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
    let garbage: Vec<u8> = (0..len.saturating_sub(4096))
        .map(|_| {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            rng_state as u8
        })
        .collect();
    use std::os::unix::fs::FileExt;
    File::options()
        .write(true)
        .open(&store)
        .and_then(|f| f.write_all_at(&garbage, 4096))
        .expect("corrupt the store");
    let (code, stderr) = start_expecting_exit(&ns, server.data_dir());
    assert_refused_clearly(code, &stderr, &store);
}

#[test]
fn a_store_file_of_garbage_is_refused_at_start_with_a_clear_error() {
    let ns = Netns::new();
    let server = stopped_server_with_objects(&ns);
    let store = server.data_dir().join("berth.redb");
    std::fs::write(&store, b"this is not a redb file\n".repeat(1000)).expect("overwrite");
    let (code, stderr) = start_expecting_exit(&ns, server.data_dir());
    assert_refused_clearly(code, &stderr, &store);
}

#[test]
fn a_write_ahead_log_of_garbage_after_a_clean_stop_is_a_torn_tail_and_loses_nothing() {
    let ns = Netns::new();
    let mut server = stopped_server_with_objects(&ns);
    let wal = server.data_dir().join("berth.redb.wal");
    let len = std::fs::metadata(&wal).expect("the log exists").len() as usize;
    std::fs::write(&wal, b"\xff garbage".repeat(len / 9)).expect("overwrite the log");
    server.restart();
    let names = server.kubectl_ok(&["get", "configmaps", "-o", "name"]);
    for i in 0..20 {
        assert!(
            names.contains(&format!("configmap/cm-{i}\n")),
            "cm-{i}: {names}"
        );
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

/// Offsets of the records of the write-ahead log's current run, from offset 0 to the first
/// record that is not whole (the layout is in the store's `wal` module: a u32 body length, a
/// u32 checksum, the body).
fn wal_record_offsets(contents: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut offset = 0;
    while let Some(header) = contents.get(offset..offset + 8) {
        let body_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(body) = contents.get(offset + 8..offset + 8 + body_len) else {
            break;
        };
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&(body_len as u32).to_le_bytes());
        hasher.update(body);
        if body_len == 0 || hasher.finalize() != crc {
            break;
        }
        offsets.push(offset);
        offset += 8 + body_len;
    }
    offsets
}

#[test]
fn a_write_ahead_log_damaged_in_the_middle_is_refused_naming_the_file_and_offset() {
    let ns = Netns::new();
    let mut server = BerthServer::start(&ns);
    for i in 0..10 {
        server.kubectl_ok(&[
            "create",
            "configmap",
            &format!("cm-{i}"),
            "--from-literal=k=v",
        ]);
    }
    // Killed, not stopped: the writes are in the log, not yet checkpointed into the store.
    server.kill9();
    let wal = server.data_dir().join("berth.redb.wal");
    let mut contents = std::fs::read(&wal).expect("read the log");
    let offsets = wal_record_offsets(&contents);
    assert!(offsets.len() >= 3, "records in the log: {offsets:?}");
    let damaged = offsets[offsets.len() / 2];
    // A flipped bit in the body, as a bad sector would leave it.
    contents[damaged + 8 + 20] ^= 0x08;
    std::fs::write(&wal, &contents).expect("damage the log");

    let (code, stderr) = start_expecting_exit(&ns, server.data_dir());
    assert!(
        code.is_some_and(|c| c != 0),
        "a non-zero exit: {code:?}\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "no panic:\n{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("restore"))
        .unwrap_or_else(|| panic!("no line says how to restore:\n{stderr}"));
    assert!(
        line.contains(&wal.display().to_string())
            && line.contains(&format!("damaged at offset {damaged}"))
            && line.contains("move"),
        "the line names the log, the offset and how to get going again: {line}"
    );
}
