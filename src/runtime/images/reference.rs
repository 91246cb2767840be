//! Image references (short names become fully qualified) and the node's platform.

use std::fmt;

use oci_client::Reference;

use super::manifest::Descriptor;
use super::ImageError;

/// Parses a reference the way Docker does: `busybox` is `docker.io/library/busybox:latest`.
pub fn parse_reference(reference: &str) -> Result<Reference, ImageError> {
    reference
        .parse::<Reference>()
        .map_err(|e| ImageError::InvalidReference {
            reference: reference.to_string(),
            reason: e.to_string(),
        })
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
