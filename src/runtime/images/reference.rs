//! Image references (short names become fully qualified) and the node's platform.

use std::fmt;

use oci_client::{ParseError, Reference};

use super::manifest::Descriptor;
use super::ImageError;

/// A repository (the name without its registry) may be this long.
const NAME_TOTAL_LENGTH_MAX: usize = 255;
/// A tag may be this long.
const TAG_LENGTH_MAX: usize = 128;
/// A digest's hex part is at least this long.
const DIGEST_HEX_MIN: usize = 32;
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
const DOCKER_HUB_OFFICIAL: &str = "library";
const DEFAULT_TAG: &str = "latest";

/// Parses a reference the way Docker does: `busybox` is `docker.io/library/busybox:latest`.
pub fn parse_reference(reference: &str) -> Result<Reference, ImageError> {
    parse(reference).map_err(|e| ImageError::InvalidReference {
        reference: reference.to_string(),
        reason: e.to_string(),
    })
}

/// Docker's reference grammar (distribution's `reference` package), checked by hand: the
/// parser of oci-client runs one large regex whose lazy DFA keeps megabytes of cache for each
/// thread that used it, and the agent parses the references of its pods on every eviction pass
/// from whichever blocking thread it gets. Tags are ASCII, as Docker's `\w` is. Accepts and
/// rejects what oci-client does otherwise, with its errors (a unit test compares the two).
fn parse(s: &str) -> Result<Reference, ParseError> {
    if s.is_empty() {
        return Err(ParseError::NameEmpty);
    }
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (s, None),
    };
    // A tag follows a ':' after the last '/': one before it ends a registry host's name.
    let last_component = rest.rfind('/').map_or(0, |slash| slash + 1);
    let (name, tag) = match rest[last_component..].find(':') {
        Some(colon) => {
            let at = last_component + colon;
            (&rest[..at], Some(&rest[at + 1..]))
        }
        None => (rest, None),
    };
    if !valid_name(name) || !tag.is_none_or(valid_tag) || !digest.is_none_or(valid_digest) {
        return Err(ParseError::ReferenceInvalidFormat);
    }
    let (registry, repository) = split_registry(name);
    if repository.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(ParseError::NameTooLong);
    }
    if let Some(digest) = digest {
        check_digest_algorithm(digest)?;
    }
    let (tag, digest) = (tag.map(str::to_string), digest.map(str::to_string));
    Ok(match (tag, digest) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(registry, repository, tag, digest)
        }
        (None, Some(digest)) => Reference::with_digest(registry, repository, digest),
        (tag, None) => Reference::with_tag(
            registry,
            repository,
            tag.unwrap_or_else(|| DEFAULT_TAG.to_string()),
        ),
    })
}

/// `[registry/]path`: path components, the first of which may instead be a registry host
/// (with a port) when more follow.
fn valid_name(name: &str) -> bool {
    match name.split_once('/') {
        None => valid_path_component(name),
        Some((first, rest)) => {
            rest.split('/').all(valid_path_component)
                && (valid_path_component(first) || valid_registry(first))
        }
    }
}

/// Lowercase letters and digits, separated by one `.`, one or two `_`, or any number of `-`.
fn valid_path_component(component: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    component.starts_with(alphanumeric)
        && component.ends_with(alphanumeric)
        && component
            .split(alphanumeric)
            .filter(|separator| !separator.is_empty())
            .all(|separator| {
                matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-')
            })
}

/// `host[:port]`, the host's labels made of letters, digits and inner `-`.
fn valid_registry(registry: &str) -> bool {
    let (host, port) = match registry.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    };
    let label = |label: &str| {
        label.starts_with(|c: char| c.is_ascii_alphanumeric())
            && label.ends_with(|c: char| c.is_ascii_alphanumeric())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    host.split('.').all(label)
        && port.is_none_or(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
}

/// A word character, then up to 127 word characters, `.` and `-`.
fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    tag.len() <= TAG_LENGTH_MAX
        && tag.bytes().next().is_some_and(word)
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-')
}

/// `algorithm:hex`: the algorithm's parts (a letter, then letters and digits) joined by one
/// of `-_+.`, and at least 32 hex digits.
fn valid_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let part = |part: &str| {
        part.starts_with(|c: char| c.is_ascii_alphabetic())
            && part.bytes().all(|b| b.is_ascii_alphanumeric())
    };
    algorithm.split(['-', '_', '+', '.']).all(part)
        && hex.len() >= DIGEST_HEX_MIN
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The algorithms a registry knows, each with its digest length.
fn check_digest_algorithm(digest: &str) -> Result<(), ParseError> {
    let (algorithm, hex) = digest
        .split_once(':')
        .ok_or(ParseError::DigestInvalidFormat)?;
    let expected = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(ParseError::DigestUnsupported),
    };
    match hex.len() == expected {
        true => Ok(()),
        false => Err(ParseError::DigestInvalidLength),
    }
}

/// Docker's normalization: a first component without `.` or `:` (other than `localhost`) is
/// part of a Docker Hub repository, and an official image's name gets `library/`.
fn split_registry(name: &str) -> (String, String) {
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest),
        _ => (DOCKER_HUB, name),
    };
    let registry = match registry {
        DOCKER_HUB_LEGACY => DOCKER_HUB,
        other => other,
    };
    let repository = match registry == DOCKER_HUB && !repository.contains('/') {
        true => format!("{DOCKER_HUB_OFFICIAL}/{repository}"),
        false => repository.to_string(),
    };
    (registry.to_string(), repository)
}

/// The canonical spelling of a reference, the key under which images are recorded.
pub fn normalize_reference(reference: &str) -> Result<String, ImageError> {
    Ok(parse_reference(reference)?.whole())
}

/// `registry/repository` without tag or digest.
pub fn repository_of(reference: &Reference) -> String {
    format!("{}/{}", reference.registry(), reference.repository())
}

/// An OS/architecture/variant triple in OCI spelling (`linux/arm/v7`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on.
    pub fn node() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            // berth's 32-bit target is the Pi 2/3 class, which runs armv7 code.
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "riscv64" => ("riscv64", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            other => (other, None),
        };
        Platform {
            os: "linux".to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// How well an image built for (`architecture`, `variant`) fits: lower is better, `None`
    /// means it cannot run here. An armv7 CPU runs v6 and v5 code, an arm64 image without a
    /// variant is v8.
    fn fitness(&self, architecture: &str, variant: Option<&str>) -> Option<usize> {
        if architecture != self.architecture {
            return None;
        }
        let preference: &[Option<&str>] =
            match (self.architecture.as_str(), self.variant.as_deref()) {
                ("arm", Some("v7")) => &[Some("v7"), Some("v6"), Some("v5"), None],
                ("arm", Some("v6")) => &[Some("v6"), Some("v5"), None],
                ("arm64", _) => &[Some("v8"), None],
                (_, wanted) => &[wanted, None],
            };
        preference.iter().position(|p| *p == variant)
    }

    /// The entry of an index that fits this platform best.
    pub fn select<'a>(&self, manifests: &'a [Descriptor]) -> Option<&'a Descriptor> {
        manifests
            .iter()
            .filter_map(|d| {
                let p = d.platform.as_ref()?;
                if p.os != self.os {
                    return None;
                }
                Some((self.fitness(&p.architecture, p.variant.as_deref())?, d))
            })
            .min_by_key(|(fitness, _)| *fitness)
            .map(|(_, d)| d)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::manifest::PlatformSpec;
    use super::*;

    fn entry(n: char, arch: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: String::new(),
            digest: format!("sha256:{}", n.to_string().repeat(64)),
            size: 1,
            platform: Some(PlatformSpec {
                architecture: arch.to_string(),
                os: "linux".to_string(),
                variant: variant.map(str::to_string),
            }),
            annotations: Default::default(),
        }
    }

    fn platform(arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.map(str::to_string),
        }
    }

    #[test]
    fn short_names_expand_to_docker_hub_library_with_latest() {
        assert_eq!(
            normalize_reference("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize_reference("me/app:1").unwrap(),
            "docker.io/me/app:1"
        );
        assert_eq!(
            normalize_reference("127.0.0.1:5000/busybox").unwrap(),
            "127.0.0.1:5000/busybox:latest"
        );
        assert!(normalize_reference("Not A Ref").is_err());
    }

    /// The same references as oci-client's own parser gives, and the same errors.
    #[test]
    fn references_parse_as_oci_client_parses_them() {
        let hex64 = "a".repeat(64);
        let long_repository = format!("r/{}", "x".repeat(254));
        let long_tag = format!("busybox:{}", "t".repeat(129));
        let cases = [
            "busybox".to_string(),
            "busybox:1.36".into(),
            "library/busybox".into(),
            "index.docker.io/library/busybox:latest".into(),
            "docker.io/me/app".into(),
            "test.com:tag".into(),
            "test.com:5000".into(),
            "test.com/repo:tag".into(),
            "test:5000/repo".into(),
            "test:5000/repo:tag".into(),
            "localhost/app".into(),
            "localhost:5000/a/b/c:v1".into(),
            "127.0.0.1:5000/busybox".into(),
            "my-registry.local/ns/img_name__x.y--z:1_a.b-c".into(),
            format!("busybox@sha256:{hex64}"),
            format!("busybox:1@sha256:{hex64}"),
            format!("busybox@sha384:{}", "b".repeat(96)),
            format!("busybox@sha256:{}", "a".repeat(63)),
            format!("busybox@md5:{}", "a".repeat(32)),
            format!("busybox@sha256:{}", "a".repeat(31)),
            format!("busybox@sha256+b64u:{hex64}"),
            long_repository.clone(),
            format!("{long_repository}x"),
            long_tag.clone(),
            long_tag[..long_tag.len() - 1].to_string(),
            "".into(),
            "Not A Ref".into(),
            "UPPER/case".into(),
            "Upper.com/case".into(),
            "busybox:".into(),
            ":tag".into(),
            "/busybox".into(),
            "busybox/".into(),
            "a//b".into(),
            "a..b".into(),
            "a._b".into(),
            "a___b".into(),
            "a---b".into(),
            "-a".into(),
            "a-".into(),
            "host:port/a".into(),
            "host:/a".into(),
            "-host.com/a".into(),
            "host-.com/a".into(),
            "busybox:-tag".into(),
            "busybox:.tag".into(),
            "busybox:ta:g".into(),
            "busybox@".into(),
            "busybox@@sha256:x".into(),
            "a@b@c".into(),
        ];
        for case in &cases {
            assert_eq!(parse(case), case.parse::<Reference>(), "{case:?}");
        }
    }

    #[test]
    fn armv7_prefers_v7_then_older_variants() {
        let entries = [
            entry('1', "amd64", None),
            entry('2', "arm", Some("v6")),
            entry('3', "arm", Some("v7")),
            entry('4', "arm64", Some("v8")),
        ];
        let arm7 = platform("arm", Some("v7"));
        assert_eq!(arm7.select(&entries).unwrap().digest, entries[2].digest);
        assert_eq!(
            arm7.select(&entries[..2]).unwrap().digest,
            entries[1].digest
        );
        let arm6 = platform("arm", Some("v6"));
        assert_eq!(arm6.select(&entries[2..3]), None);
    }

    #[test]
    fn arm64_accepts_entries_with_or_without_the_v8_variant() {
        let entries = [entry('1', "amd64", None), entry('2', "arm64", None)];
        let arm64 = platform("arm64", Some("v8"));
        assert_eq!(arm64.select(&entries).unwrap().digest, entries[1].digest);
        assert_eq!(
            platform("amd64", None).select(&entries).unwrap().digest,
            entries[0].digest
        );
        assert_eq!(platform("riscv64", None).select(&entries), None);
    }

    #[test]
    fn platforms_print_in_oci_spelling() {
        assert_eq!(platform("arm", Some("v7")).to_string(), "linux/arm/v7");
        assert_eq!(platform("amd64", None).to_string(), "linux/amd64");
    }
}
