//! Entry points for the fuzz targets in `fuzz/`: each hands hostile bytes to the very function
//! the server runs on a request, a stream or a file, and ignores the outcome. An error is a fine
//! answer; a panic, a hang or a runaway allocation is the bug the fuzzer looks for.
//!
//! Multi-part inputs are split at the first NUL byte: JSON, YAML and selectors never need one.

use serde_json::Value;

use crate::api::body::{decode_object, BodyFormat};
use crate::api::paging::ContinueToken;
use crate::api::resources::{find, Resource};
use crate::api::selectors::{FieldSelector, LabelSelector};
use crate::apiserver::apply;
use crate::apiserver::managed::Manager;
use crate::apiserver::patch::{self, PatchType};
use crate::apiserver::stream::{channel, spdy};
use crate::registry::Part;
use crate::runtime::images::manifest::{parse_config, parse_manifest, AnyManifest};
use crate::runtime::images::{unpack_layer, Platform};

/// The part before the first NUL and the part after it (empty if there is none).
fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

/// A few kinds with patch metadata, list keys and status, picked by one byte.
fn resource(selector: u8) -> &'static Resource {
    let (group, version, plural) = match selector % 4 {
        0 => ("", "v1", "pods"),
        1 => ("apps", "v1", "deployments"),
        2 => ("", "v1", "services"),
        _ => ("", "v1", "configmaps"),
    };
    find(group, version, plural).unwrap_or_else(|| unreachable!("{plural} is a built-in kind"))
}

/// A request body as `POST`/`PUT` read it, in the format the first byte picks.
pub fn request_body(data: &[u8]) {
    let Some((first, body)) = data.split_first() else {
        return;
    };
    let format = match first % 3 {
        0 => BodyFormat::Json,
        1 => BodyFormat::Yaml,
        _ => BodyFormat::Protobuf,
    };
    let _ = decode_object(format, body);
}

/// A protobuf request body (`application/vnd.kubernetes.protobuf`).
pub fn protobuf_body(data: &[u8]) {
    let _ = decode_object(BodyFormat::Protobuf, data);
}

/// A CBOR request body (`application/cbor`).
pub fn cbor_body(data: &[u8]) {
    let _ = decode_object(BodyFormat::Cbor, data);
}

/// A PATCH body (JSON patch, merge patch or strategic merge patch, picked by the first byte)
/// applied to a JSON document: `[type][document] NUL [patch]`.
pub fn patch_body(data: &[u8]) {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let patch_type = match first % 3 {
        0 => PatchType::Json,
        1 => PatchType::Merge,
        _ => PatchType::Strategic,
    };
    let (doc, patch) = split(rest);
    let Ok(doc) = serde_json::from_slice::<Value>(doc) else {
        return;
    };
    let _ = patch::apply(patch_type, &doc, patch);
}

/// Server-side apply of a YAML/JSON configuration to a live object (with its managedFields):
/// `[kind][force][live JSON] NUL [apply body]`.
pub fn server_side_apply(data: &[u8]) {
    let [kind, force, rest @ ..] = data else {
        return;
    };
    let r = resource(*kind);
    let (live, body) = split(rest);
    let live: Option<Value> = serde_json::from_slice(live).ok();
    let name = live
        .as_ref()
        .and_then(|l| l.pointer("/metadata/name"))
        .and_then(Value::as_str)
        .unwrap_or("fuzz")
        .to_string();
    let Ok(config) = apply::decode_config(r, &name, body) else {
        return;
    };
    let manager = Manager {
        name: if force & 2 == 0 { "kubectl" } else { "fuzzer" }.to_string(),
        subresource: String::new(),
    };
    let _ = apply::apply(
        r,
        Part::Main,
        live.as_ref().filter(|l| l.is_object()),
        &config,
        &manager,
        force & 1 == 1,
    );
}

/// `labelSelector` and `fieldSelector` query parameters, then a match against an object:
/// `[label selector] NUL [field selector]`.
pub fn selectors(data: &[u8]) {
    let (label, field) = split(data);
    let object = serde_json::json!({
        "metadata": {"name": "web-0", "namespace": "default", "labels": {"app": "web", "tier": "front"}},
        "spec": {"nodeName": "node-1"},
        "status": {"phase": "Running"},
    });
    if let Ok(label) = std::str::from_utf8(label) {
        if let Ok(selector) = LabelSelector::parse(label) {
            let labels: std::collections::BTreeMap<String, String> =
                [("app", "web"), ("tier", "front")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
            let _ = selector.matches(&labels);
        }
    }
    if let Ok(field) = std::str::from_utf8(field) {
        if let Ok(selector) = FieldSelector::parse(field) {
            let _ = selector.validate_for("Pod");
            let _ = selector.matches_object("Pod", &object);
        }
    }
}

/// A resource quantity as validation, the scheduler and the agent each read it.
pub fn quantity(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::registry::validation::is_quantity(text);
    let _ = crate::scheduler::quantity::parse_milli(text);
    let _ = crate::agent::spec::parse_quantity(text);
}

/// The frames a port-forward or exec client sends over SPDY/3.1, in chunks as they arrive.
pub fn spdy_frames(data: &[u8]) {
    let mut codec = spdy::Codec::new();
    let mut buf = Vec::new();
    for chunk in data.chunks(97) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// A container log file in the CRI format, as `kubectl logs` reads it.
pub fn cri_log(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::apiserver::logs::parse_cri(&text);
}

/// The write-ahead log file as the store reads it at start, and each entry it yields.
pub fn wal_file(data: &[u8]) {
    for (_, entry) in crate::store::wal::parse(data) {
        let _ = crate::store::codec::decodes(&entry);
    }
    // The scan for whole records behind damage runs over the same bytes at start.
    let _ = crate::store::wal::newer_record_after(data, 0, 0);
}

/// One store log entry (the bytes of a revision), as the store decodes it.
pub fn store_entry(data: &[u8]) {
    let _ = crate::store::codec::decodes(data);
}

/// A list's `continue` query parameter. What decodes must encode back to a token that decodes
/// the same: the next page would otherwise start somewhere else.
pub fn continue_token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = ContinueToken::decode(text) {
        assert_eq!(
            ContinueToken::decode(&token.encode()).as_ref(),
            Ok(&token),
            "a decoded continue token does not survive encoding"
        );
    }
}

/// A manifest, an index or an image config as the puller reads it from a registry (the first
/// byte picks which, and the node platform an index is resolved for).
pub fn image_manifest(data: &[u8]) {
    let Some((first, body)) = data.split_first() else {
        return;
    };
    let digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    if first & 1 == 1 {
        if let Ok(config) = parse_config(digest, body) {
            let _ = config.runtime_config();
        }
        return;
    }
    if let Ok(AnyManifest::Index(index)) = parse_manifest(digest, body) {
        let (architecture, variant) = match (first >> 1) & 3 {
            0 => ("amd64", None),
            1 => ("arm64", Some("v8")),
            2 => ("arm", Some("v7")),
            _ => ("arm", Some("v6")),
        };
        let platform = Platform {
            os: "linux".to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        };
        let _ = platform.select(&index.manifests);
    }
}

/// The name layer seeds aim at outside the root: in the temporary directory (through `../..`
/// or a symlink to it) and at the top of the filesystem (an absolute name or link).
const ESCAPED: &str = "berth-fuzz-escaped";

/// A layer tar (plain, gzip or zstd) unpacked into a fresh directory beside a sentinel file.
/// Whatever the tar holds, nothing outside that directory may be written, linked or created.
pub fn layer_tar(data: &[u8]) {
    use std::os::unix::fs::MetadataExt as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static RUN: AtomicU64 = AtomicU64::new(0);
    let tmp = std::env::temp_dir();
    let outer = tmp.join(format!(
        "berth-fuzz-layer-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let root = outer.join("root");
    let sentinel = outer.join("sentinel");
    let escapes = [tmp.join(ESCAPED), std::path::Path::new("/").join(ESCAPED)];
    let prepared = std::fs::create_dir_all(&root)
        .and_then(|()| std::fs::write(&sentinel, b"untouched"))
        .and_then(|()| escapes.iter().try_for_each(remove_if_present));
    if let Err(e) = prepared {
        panic!("cannot prepare {}: {e}", outer.display());
    }
    let _ = unpack_layer(data, &root, "fuzz");
    let untouched = std::fs::read(&sentinel).ok().as_deref() == Some(&b"untouched"[..]);
    let links = std::fs::symlink_metadata(&sentinel).map(|m| m.nlink()).ok();
    let mut beside: Vec<String> = std::fs::read_dir(&outer)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    beside.sort();
    let escaped: Vec<_> = escapes
        .iter()
        .filter(|p| p.symlink_metadata().is_ok())
        .collect();
    let _ = make_removable(&root);
    let _ = std::fs::remove_dir_all(&outer);
    assert!(untouched, "a file outside the root was written");
    assert_eq!(
        links,
        Some(1),
        "a file outside the root was hard-linked into it"
    );
    assert_eq!(
        beside,
        ["root", "sentinel"],
        "something was written beside the root"
    );
    assert!(escaped.is_empty(), "written outside the root: {escaped:?}");
}

/// Clears what an earlier escape left, so one escape is reported once, by the input that did it.
fn remove_if_present(path: &std::path::PathBuf) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    }
}

/// Layers may hold directories without write or search permission; root ignores that, but
/// the fuzzer may not run as root, so open them up before removing the tree.
fn make_removable(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = make_removable(&entry.path());
        }
    }
    Ok(())
}

/// What an exec, attach or port-forward client sends over its websocket: raw frames (masked,
/// fragmented, control frames between) read as the server reads them, and each binary message
/// through the channel protocol the first byte picks, or the SPDY tunnel of port-forward.
pub fn websocket_frames(data: &[u8]) {
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket};
    use tokio_tungstenite::tungstenite::Message;
    let Some((first, frames)) = data.split_first() else {
        return;
    };
    let mut socket = WebSocket::from_raw_socket(ClientBytes { input: frames }, Role::Server, None);
    let mut tunnel = spdy::Codec::new();
    let mut tunnelled = Vec::new();
    while let Ok(message) = socket.read() {
        let Message::Binary(bytes) = message else {
            continue;
        };
        match first % 3 {
            0 => {
                let _ = channel::parse(channel::Protocol::V4, &bytes);
            }
            1 => {
                let _ = channel::parse(channel::Protocol::V5, &bytes);
            }
            _ => {
                tunnelled.extend_from_slice(&bytes);
                while let Ok(Some(_)) = tunnel.decode(&mut tunnelled) {}
            }
        }
    }
}

/// A client connection: reads come from the fuzz input, replies (pongs, close) are dropped.
struct ClientBytes<'a> {
    input: &'a [u8],
}

impl std::io::Read for ClientBytes<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl std::io::Write for ClientBytes<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng as _;
    use std::path::{Path, PathBuf};

    type Target = fn(&[u8]);

    const TARGETS: [(&str, Target); 15] = [
        ("request_body", request_body),
        ("protobuf_body", protobuf_body),
        ("cbor_body", cbor_body),
        ("patch_body", patch_body),
        ("server_side_apply", server_side_apply),
        ("selectors", selectors),
        ("quantity", quantity),
        ("spdy_frames", spdy_frames),
        ("cri_log", cri_log),
        ("wal_file", wal_file),
        ("store_entry", store_entry),
        ("continue_token", continue_token),
        ("image_manifest", image_manifest),
        ("layer_tar", layer_tar),
        ("websocket_frames", websocket_frames),
    ];

    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
    }

    fn files_in(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }

    /// The inputs of `target` under `fuzz/<dir>/`: `seeds` (hand-made valid inputs), `corpus`
    /// (what the fuzzer kept, minimised) or `regressions` (inputs that once failed).
    fn inputs(dir: &str, target: &str) -> Vec<Vec<u8>> {
        files_in(&fuzz_dir().join(dir).join(target))
            .iter()
            .map(|f| std::fs::read(f).unwrap())
            .collect()
    }

    fn seeds(target: &str) -> Vec<Vec<u8>> {
        inputs("seeds", target)
    }

    #[test]
    fn every_committed_seed_corpus_input_and_crash_regression_runs_to_completion() {
        let mut ran = 0;
        for (name, target) in TARGETS {
            assert!(!seeds(name).is_empty(), "fuzz/seeds/{name} is empty");
            for dir in ["seeds", "corpus", "regressions"] {
                for input in inputs(dir, name) {
                    target(&input);
                    ran += 1;
                }
            }
        }
        assert!(ran >= TARGETS.len());
    }

    /// The stable driver above is what CI runs: a cargo-fuzz target it does not know would
    /// only ever be fuzzed by hand.
    #[test]
    fn every_cargo_fuzz_target_is_driven_on_stable_and_has_seeds() {
        let targets: Vec<String> = files_in(&fuzz_dir().join("fuzz_targets"))
            .iter()
            .filter_map(|f| f.file_stem()?.to_str().map(str::to_owned))
            .collect();
        assert!(!targets.is_empty(), "no fuzz targets found");
        for target in &targets {
            assert!(
                TARGETS.iter().any(|(name, _)| name == target),
                "fuzz target {target} is missing from TARGETS"
            );
            assert!(!seeds(target).is_empty(), "fuzz/seeds/{target} is empty");
        }
        assert_eq!(
            targets.len(),
            TARGETS.len(),
            "TARGETS names a missing target"
        );
    }

    /// One random change of the kinds a fuzzer makes: flipped bits, bytes inserted, removed,
    /// repeated or cut off, and tokens the formats give meaning to.
    fn mutate(input: &mut Vec<u8>, rng: &mut impl rand::Rng) {
        const TOKENS: [&[u8]; 14] = [
            b"\"",
            b"{",
            b"[",
            b"]",
            b"$patch",
            b"null",
            b"-",
            b"e999",
            b"99999999999999999999",
            b"\xff\xff\xff\xff",
            b"\x00",
            b"!",
            b"(",
            b"&a *a",
        ];
        match rng.random_range(0..6) {
            0 if !input.is_empty() => {
                let i = rng.random_range(0..=input.len() - 1);
                input[i] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let i = rng.random_range(0..=input.len());
                input.insert(i, rng.random());
            }
            2 if !input.is_empty() => {
                let i = rng.random_range(0..=input.len() - 1);
                let n = rng.random_range(1..=8).min(input.len() - i);
                input.drain(i..i + n);
            }
            3 if !input.is_empty() => {
                let i = rng.random_range(0..=input.len() - 1);
                let n = rng.random_range(1..=64).min(input.len() - i);
                let piece = input[i..i + n].to_vec();
                let j = rng.random_range(0..=input.len());
                input.splice(j..j, piece);
            }
            4 => input.truncate(rng.random_range(0..=input.len())),
            _ => {
                let token = TOKENS[rng.random_range(0..TOKENS.len())];
                let i = rng.random_range(0..=input.len());
                input.splice(i..i, token.iter().copied());
            }
        }
    }

    /// The fuzzer's poor cousin for the stable toolchain and CI: random mutants of every seed,
    /// a bounded number per target (`BERTH_FUZZ_MUTANTS`, default 300 per seed).
    #[test]
    fn random_mutants_of_every_seed_are_answered_without_a_panic() {
        use rand::SeedableRng as _;
        let per_seed: usize = std::env::var("BERTH_FUZZ_MUTANTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        let seed = rand::random::<u64>();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut panics = Vec::new();
        for (name, target) in TARGETS {
            for input in seeds(name) {
                for _ in 0..per_seed {
                    let mut mutant = input.clone();
                    for _ in 0..rng.random_range(1..=4) {
                        mutate(&mut mutant, &mut rng);
                    }
                    let run = std::panic::catch_unwind(|| target(&mutant));
                    if run.is_err() {
                        panics.push(format!("{name}: {}", hex::encode(&mutant)));
                    }
                }
            }
        }
        assert!(
            panics.is_empty(),
            "rng seed {seed}: inputs that panicked:\n{}",
            panics.join("\n")
        );
    }

    /// Seeds the decoders reject would leave the fuzzer to find the formats on its own.
    #[test]
    fn the_protobuf_seeds_decode_to_the_objects_they_encode() {
        let seeds = seeds("protobuf_body");
        assert!(seeds.len() >= 3);
        for seed in seeds {
            let object = decode_object(BodyFormat::Protobuf, &seed).unwrap();
            assert!(object["metadata"]["name"].is_string(), "{object}");
            assert!(object["kind"].is_string(), "{object}");
        }
    }

    #[test]
    fn the_spdy_seeds_hold_whole_frames_with_readable_headers() {
        for seed in seeds("spdy_frames") {
            let mut codec = spdy::Codec::new();
            let mut buf = seed.clone();
            let mut frames = 0;
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                if let spdy::Frame::SynStream { headers, .. } = frame {
                    assert!(!headers.is_empty());
                }
                frames += 1;
            }
            assert!(frames >= 2 && buf.is_empty(), "{frames} frames");
        }
    }

    #[test]
    fn the_wal_seeds_yield_entries_the_store_decodes() {
        for seed in seeds("wal_file") {
            let entries = crate::store::wal::parse(&seed);
            assert!(!entries.is_empty());
            assert!(entries.iter().all(|(_, e)| crate::store::codec::decodes(e)));
        }
        for seed in seeds("store_entry") {
            assert!(crate::store::codec::decodes(&seed));
        }
    }

    #[test]
    fn the_patch_and_apply_seeds_are_accepted() {
        for seed in seeds("patch_body") {
            let (doc, patch_bytes) = split(&seed[1..]);
            let doc: Value = serde_json::from_slice(doc).unwrap();
            let patch_type =
                [PatchType::Json, PatchType::Merge, PatchType::Strategic][seed[0] as usize % 3];
            patch::apply(patch_type, &doc, patch_bytes).unwrap();
        }
        for seed in seeds("server_side_apply") {
            let (live, body) = split(&seed[2..]);
            let live: Value = serde_json::from_slice(live).unwrap();
            let name = live["metadata"]["name"].as_str().unwrap_or("fuzz");
            apply::decode_config(resource(seed[0]), name, body).unwrap();
        }
    }
}
