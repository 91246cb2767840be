//! Generates `src/api/protobuf/schema.rs`, the table the protobuf body decoder walks.
//!
//! Usage (from the crate root):
//!
//! ```text
//! cargo run --example gen_protobuf_schema -- K8S_PB_SRC API_SRC APIMACHINERY_SRC > src/api/protobuf/schema.rs
//! ```
//!
//! - `K8S_PB_SRC`: the `src/` directory of the `k8s-pb` crate (cargo's registry holds it).
//! - `API_SRC`, `APIMACHINERY_SRC`: checkouts of `k8s.io/api` and `k8s.io/apimachinery` at the
//!   Kubernetes release we serve (tag v0.35.0), in directories named after the tag, e.g.
//!   `api-v0.35.0` and `apimachinery-v0.35.0` (the header records them).
//!
//! The output is committed; rustfmt skips it, so regenerating with unchanged inputs gives a
//! byte-identical file.
//!
//! Why two sources: `k8s-pb` knows the wire shape (tags, scalar kinds, which message a field
//! holds) but lost the JSON names. The Go struct tags are the ground truth for both encodings of
//! one field (`json:"podIP,omitempty" protobuf:"bytes,6,opt,name=podIP"`), joined by tag number,
//! and they alone say whether a field is a Go pointer. That matters: Go's protobuf encoder always
//! writes non-pointer fields, zero or not, while its JSON encoder drops zero `omitempty` fields,
//! so to produce the JSON a client would have sent, the decoder must drop exactly the zero values
//! of non-pointer `omitempty` fields and keep an explicit `replicas: 0` or
//! `gracePeriodSeconds: 0`. (k8s-openapi makes both kinds of fields an `Option`.)
//!
//! Only messages reachable from the decoded roots are emitted: every kind in the resource table
//! (`src/api/resources.rs`) plus the subresource and options kinds listed in `EXTRA_ROOTS`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Kinds decoded besides the resource table: (apiVersion, kind). An empty apiVersion means
/// "any": clients send DeleteOptions under the group version of the resource they delete.
const EXTRA_ROOTS: &[(&str, &str, &str)] = &[
    ("", "DeleteOptions", "apimachinery/pkg/apis/meta/v1"),
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview", ""),
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview", ""),
    ("authorization.k8s.io/v1", "SubjectAccessReview", ""),
    ("authorization.k8s.io/v1", "LocalSubjectAccessReview", ""),
    ("authentication.k8s.io/v1", "SelfSubjectReview", ""),
    ("authentication.k8s.io/v1", "TokenRequest", ""),
    ("v1", "Binding", ""),
    ("policy/v1", "Eviction", ""),
    ("autoscaling/v1", "Scale", ""),
];

/// Groups of the resource table whose types `k8s.io/api` does not hold.
const OUTSIDE_K8S_API: &[&str] = &["apiextensions.k8s.io", "apiregistration.k8s.io"];

/// Messages with their own JSON form in Go (custom MarshalJSON), decoded by hand.
const SPECIAL: &[(&str, &str)] = &[
    ("k8s.io.apimachinery.pkg.apis.meta.v1.Time", "Time"),
    (
        "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime",
        "MicroTime",
    ),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.Duration", "Duration"),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1", "RawJson"),
    ("k8s.io.apimachinery.pkg.runtime.RawExtension", "RawJson"),
    (
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString",
        "IntOrString",
    ),
    ("k8s.io.apimachinery.pkg.api.resource.Quantity", "Quantity"),
];

type Result<T> = std::result::Result<T, String>;

fn main() {
    if let Err(e) = run() {
        eprintln!("gen_protobuf_schema: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [pb, api, machinery] = args.as_slice() else {
        return Err("usage: gen_protobuf_schema K8S_PB_SRC API_SRC APIMACHINERY_SRC".into());
    };
    let (pb, api, machinery) = (Path::new(pb), Path::new(api), Path::new(machinery));
    let messages = read_prost_messages(pb)?;
    let roots = roots()?;
    let go = GoTypes { api, machinery };
    let out = generate(&messages, &roots, &go, &versions(pb, api, machinery))?;
    print!("{out}");
    Ok(())
}

fn versions(pb: &Path, api: &Path, machinery: &Path) -> String {
    let name = |p: &Path| {
        p.components()
            .rev()
            .filter_map(|c| c.as_os_str().to_str())
            .find(|s| s.starts_with("k8s-pb-"))
            .unwrap_or("k8s-pb")
            .to_string()
    };
    // Name the checkouts after their release (`api-v0.35.0`) to record it in the header.
    let checkout = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("(unnamed checkout)")
            .to_string()
    };
    format!(
        "{} and the Go types of k8s.io/{} and k8s.io/{}",
        name(pb),
        checkout(api),
        checkout(machinery)
    )
}

// ---------------------------------------------------------------------------------------------
// k8s-pb: prost structs

#[derive(Debug, Clone)]
enum Scalar {
    Bool,
    Int32,
    Int64,
    Double,
    String,
    Bytes,
    /// Full proto name.
    Message(String),
}

#[derive(Debug, Clone)]
enum Label {
    Single,
    Repeated,
    /// Map with string keys.
    Map,
}

#[derive(Debug, Clone)]
struct PbField {
    tag: u32,
    rust_name: String,
    kind: Scalar,
    label: Label,
}

/// Full proto name → fields.
type PbMessages = BTreeMap<String, Vec<PbField>>;

fn read_prost_messages(src: &Path) -> Result<PbMessages> {
    let mut out = PbMessages::new();
    let mut files = Vec::new();
    walk(src, &mut files)?;
    for file in files {
        let rel = file
            .parent()
            .and_then(|d| d.strip_prefix(src).ok())
            .ok_or_else(|| format!("{} is outside {}", file.display(), src.display()))?;
        let module: Vec<String> = rel
            .components()
            .filter_map(|c| c.as_os_str().to_str().map(str::to_string))
            .collect();
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        parse_prost_file(&module, &text, &mut out)
            .map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.file_name().and_then(|n| n.to_str()) == Some("mod.rs") {
            out.push(p);
        }
    }
    Ok(())
}

fn proto_package(module: &[String]) -> String {
    let parts: Vec<String> = module.iter().map(|m| m.replace('_', "-")).collect();
    format!("k8s.io.{}", parts.join("."))
}

fn parse_prost_file(module: &[String], text: &str, out: &mut PbMessages) -> Result<()> {
    let package = proto_package(module);
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let Some(name) = lines[i]
            .strip_prefix("pub struct ")
            .and_then(|r| r.strip_suffix(" {"))
        else {
            i += 1;
            continue;
        };
        let mut fields = Vec::new();
        i += 1;
        while i < lines.len() && lines[i] != "}" {
            let line = lines[i].trim();
            if let Some(attr) = line
                .strip_prefix("#[prost(")
                .and_then(|r| r.strip_suffix(")]"))
            {
                // The declaration may wrap: gather lines up to the next attribute or doc.
                let mut decl = String::new();
                i += 1;
                while i < lines.len() {
                    let l = lines[i].trim();
                    if l.starts_with("#[") || l.starts_with("///") || lines[i] == "}" {
                        break;
                    }
                    decl.push_str(l);
                    i += 1;
                }
                fields.push(parse_prost_field(module, attr, &decl)?);
                continue;
            }
            i += 1;
        }
        out.insert(format!("{package}.{name}"), fields);
    }
    Ok(())
}

fn parse_prost_field(module: &[String], attr: &str, decl: &str) -> Result<PbField> {
    let decl = decl.trim_end_matches(',');
    let (name, ty) = decl
        .strip_prefix("pub ")
        .and_then(|d| d.split_once(':'))
        .ok_or_else(|| format!("unexpected field declaration {decl:?}"))?;
    let rust_name = name.trim().trim_start_matches("r#").to_string();
    let tag = attr
        .split("tag = \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|t| t.parse::<u32>().ok())
        .ok_or_else(|| format!("no tag in #[prost({attr})]"))?;
    let first = attr.split(',').next().unwrap_or("").trim();
    let message = || resolve_message(module, ty);
    let (kind, label) = if let Some(map) = attr.strip_prefix("btree_map = \"") {
        let value = map.split('"').next().unwrap_or("");
        let kind = match value {
            "string, string" => Scalar::String,
            "string, bytes" => Scalar::Bytes,
            "string, message" => Scalar::Message(message()?),
            other => return Err(format!("unsupported map {other:?}")),
        };
        (kind, Label::Map)
    } else {
        let kind = match first {
            "bool" => Scalar::Bool,
            "int32" => Scalar::Int32,
            "int64" => Scalar::Int64,
            "double" => Scalar::Double,
            "string" => Scalar::String,
            "message" => Scalar::Message(message()?),
            b if b.starts_with("bytes") => Scalar::Bytes,
            other => return Err(format!("unsupported prost kind {other:?}")),
        };
        let label = if attr.contains("repeated") {
            Label::Repeated
        } else {
            Label::Single
        };
        (kind, label)
    };
    Ok(PbField {
        tag,
        rust_name,
        kind,
        label,
    })
}

/// The message a field's Rust type names, as a full proto name.
fn resolve_message(module: &[String], ty: &str) -> Result<String> {
    const WRAPPERS: &[&str] = &[
        "::core::option::Option",
        "::prost::alloc::vec::Vec",
        "::prost::alloc::boxed::Box",
        "::prost::alloc::string::String",
        "::prost::alloc::collections::BTreeMap",
    ];
    let path = ty
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| !t.is_empty() && !WRAPPERS.contains(t))
        .next_back()
        .ok_or_else(|| format!("no message type in {ty:?}"))?;
    let mut base: Vec<String> = module.to_vec();
    let mut parts: Vec<&str> = path.split("::").collect();
    let name = parts.pop().unwrap_or_default();
    for p in parts {
        match p {
            "super" => {
                base.pop();
            }
            "crate" => base.clear(),
            other => base.push(other.to_string()),
        }
    }
    Ok(format!("{}.{name}", proto_package(&base)))
}

// ---------------------------------------------------------------------------------------------
// Go types: JSON names, omitempty, pointers

struct GoTypes<'a> {
    api: &'a Path,
    machinery: &'a Path,
}

#[derive(Debug, Clone)]
struct GoField {
    json: String,
    omitempty: bool,
    /// Go 1.24's `omitzero`: drops a zero struct too (ObjectMeta.creationTimestamp).
    omitzero: bool,
    inline: bool,
    pointer: bool,
}

enum GoType {
    /// protobuf tag → field.
    Struct(BTreeMap<u32, GoField>),
    /// `type X []T`: a list in JSON, a message with `repeated items = 1` on the wire.
    List,
}

impl GoTypes<'_> {
    fn dir(&self, package: &str) -> Result<PathBuf> {
        let rel = package.strip_prefix("k8s.io.").unwrap_or(package);
        if let Some(r) = rel.strip_prefix("api.") {
            Ok(self.api.join(r.replace('.', "/")))
        } else if let Some(r) = rel.strip_prefix("apimachinery.") {
            Ok(self.machinery.join(r.replace('.', "/")))
        } else {
            Err(format!("no Go source known for package {package}"))
        }
    }

    fn package_types(&self, package: &str) -> Result<BTreeMap<String, GoType>> {
        let dir = self.dir(package)?;
        let mut out = BTreeMap::new();
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.ends_with(".go") || name.ends_with("_test.go") {
                continue;
            }
            let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
            parse_go_file(&text, &mut out).map_err(|e| format!("{}: {e}", f.display()))?;
        }
        Ok(out)
    }
}

fn parse_go_file(text: &str, out: &mut BTreeMap<String, GoType>) -> Result<()> {
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let Some(rest) = lines[i].strip_prefix("type ") else {
            i += 1;
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(ty)) = (words.next(), words.next()) else {
            i += 1;
            continue;
        };
        if ty.starts_with("[]") {
            out.insert(name.to_string(), GoType::List);
        }
        if !(ty == "struct" && rest.trim_end().ends_with('{')) {
            i += 1;
            continue;
        }
        let mut fields = BTreeMap::new();
        i += 1;
        while i < lines.len() && lines[i] != "}" {
            if let Some((tag, field)) = parse_go_field(lines[i])? {
                fields.insert(tag, field);
            }
            i += 1;
        }
        out.insert(name.to_string(), GoType::Struct(fields));
    }
    Ok(())
}

fn parse_go_field(line: &str) -> Result<Option<(u32, GoField)>> {
    let line = line.trim();
    if line.starts_with("//") {
        return Ok(None);
    }
    let Some((decl, rest)) = line.split_once('`') else {
        return Ok(None);
    };
    let tags = rest.split('`').next().unwrap_or("");
    let Some(protobuf) = struct_tag(tags, "protobuf").filter(|p| *p != "-") else {
        return Ok(None);
    };
    let tag = protobuf
        .split(',')
        .nth(1)
        .and_then(|t| t.parse::<u32>().ok())
        .ok_or_else(|| format!("bad protobuf tag in {line:?}"))?;
    let words: Vec<&str> = decl.split_whitespace().collect();
    let ty = match words.as_slice() {
        [ty] | [_, ty] => *ty,
        _ => return Err(format!("unexpected Go field {line:?}")),
    };
    let json = struct_tag(tags, "json").unwrap_or("");
    let mut opts = json.split(',');
    let json_name = opts.next().unwrap_or("").to_string();
    let flags: Vec<&str> = opts.collect();
    let inline = flags.contains(&"inline") || (words.len() == 1 && json_name.is_empty());
    Ok(Some((
        tag,
        GoField {
            json: json_name,
            omitempty: flags.contains(&"omitempty"),
            omitzero: flags.contains(&"omitzero"),
            inline,
            pointer: ty.starts_with('*'),
        },
    )))
}

fn struct_tag<'a>(tags: &'a str, key: &str) -> Option<&'a str> {
    let start = tags.find(&format!("{key}:\""))? + key.len() + 2;
    let rest = &tags[start..];
    Some(&rest[..rest.find('"')?])
}

// ---------------------------------------------------------------------------------------------
// Roots and output

struct Root {
    api_version: String,
    kind: String,
    message: String,
}

fn roots() -> Result<Vec<Root>> {
    let table = "src/api/resources.rs";
    let text = std::fs::read_to_string(table).map_err(|e| format!("{table}: {e}"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(args) = line.trim().strip_prefix("resource!(") else {
            continue;
        };
        let quoted: Vec<&str> = args.split('"').skip(1).step_by(2).take(3).collect();
        let [group, version, kind] = quoted.as_slice() else {
            continue;
        };
        // Their Go types live outside k8s.io/api (apiextensions-apiserver, kube-aggregator):
        // not decoded from protobuf, clients send them as JSON.
        if OUTSIDE_K8S_API.contains(group) {
            continue;
        }
        out.push(root_for(group, version, kind));
    }
    if out.is_empty() {
        return Err(format!("no resource!() lines in {table}"));
    }
    for (api_version, kind, module) in EXTRA_ROOTS {
        if module.is_empty() {
            let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
            out.push(root_for(group, version, kind));
        } else {
            out.push(Root {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
                message: format!(
                    "{}.{kind}",
                    proto_package(&module.split('/').map(str::to_string).collect::<Vec<_>>())
                ),
            });
        }
    }
    Ok(out)
}

/// Upstream names a group's proto package after the group's first label (`rbac` for
/// `rbac.authorization.k8s.io`), and the core group `core`.
fn root_for(group: &str, version: &str, kind: &str) -> Root {
    let short = if group.is_empty() {
        "core"
    } else {
        group.split('.').next().unwrap_or(group)
    };
    Root {
        api_version: if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.to_string(),
        message: format!("k8s.io.api.{short}.{version}.{kind}"),
    }
}

fn generate(pb: &PbMessages, roots: &[Root], go: &GoTypes, versions: &str) -> Result<String> {
    // Breadth-first from the roots gives stable indices.
    let mut order: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut queue: VecDeque<String> = roots.iter().map(|r| r.message.clone()).collect();
    while let Some(name) = queue.pop_front() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let fields = pb
            .get(&name)
            .ok_or_else(|| format!("message {name} is not in k8s-pb"))?;
        order.push(name.clone());
        if SPECIAL.iter().any(|(n, _)| *n == name) {
            continue;
        }
        for f in fields {
            if let Scalar::Message(m) = &f.kind {
                queue.push_back(m.clone());
            }
        }
    }
    let index: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();

    let mut go_cache: BTreeMap<String, BTreeMap<String, GoType>> = BTreeMap::new();
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "//! The protobuf shape and JSON names of every message the decoder reads."
    );
    let _ = writeln!(w, "//!");
    let _ = writeln!(
        w,
        "//! GENERATED by `examples/gen_protobuf_schema.rs` from {versions}."
    );
    let _ = writeln!(w, "//! Do not edit; regenerate instead.");
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "use super::table::{{Field as F, Kind as K, Message, Root, Shape}};"
    );
    let _ = writeln!(w);
    let _ = writeln!(w, "pub static MESSAGES: &[Message] = &[");
    for (i, name) in order.iter().enumerate() {
        let (package, short) = name.rsplit_once('.').unwrap_or(("", name));
        if let Some((_, special)) = SPECIAL.iter().find(|(n, _)| *n == name) {
            let _ = writeln!(w, "    // {i}");
            let _ = writeln!(
                w,
                "    Message {{ name: {name:?}, shape: Shape::{special} }},"
            );
            continue;
        }
        if !go_cache.contains_key(package) {
            go_cache.insert(package.to_string(), go.package_types(package)?);
        }
        // prost re-cases acronyms (`PodDNSConfig` → `PodDnsConfig`); Go has the real name.
        let (go_name, go_type) = go_cache
            .get(package)
            .and_then(|types| types.iter().find(|(n, _)| n.eq_ignore_ascii_case(short)))
            .ok_or_else(|| format!("no Go type for {name}"))?;
        let name = &format!("{package}.{go_name}");
        let pb_fields = &pb[&order[i]];
        let go_fields = match go_type {
            GoType::List => {
                let [item] = pb_fields.as_slice() else {
                    return Err(format!("{name}: a Go list type must have one proto field"));
                };
                let _ = writeln!(w, "    // {i}");
                let _ = writeln!(
                    w,
                    "    Message {{ name: {name:?}, shape: Shape::List({}) }},",
                    kind_code(&item.kind, &index)?
                );
                continue;
            }
            GoType::Struct(fields) => fields,
        };
        let _ = writeln!(w, "    // {i}");
        let _ = writeln!(w, "    Message {{ name: {name:?}, shape: Shape::Fields(&[");
        for f in pb_fields {
            let g = go_fields.get(&f.tag).ok_or_else(|| {
                format!(
                    "{name}.{} (tag {}): no Go field has this tag",
                    f.rust_name, f.tag
                )
            })?;
            let kind = kind_code(&f.kind, &index)?;
            let ctor = match (&f.label, g.inline) {
                (Label::Single, true) => "inline",
                (_, true) => return Err(format!("{name}.{}: inline field is not single", g.json)),
                (Label::Repeated, _) => "list",
                (Label::Map, _) => "map",
                // Go's JSON encoder drops a zero non-pointer scalar under `omitempty`, and a
                // zero struct only under `omitzero`; its protobuf encoder writes both.
                (Label::Single, _) => {
                    let is_struct = matches!(f.kind, Scalar::Message(_));
                    let omitted = if is_struct {
                        g.omitzero
                    } else {
                        g.omitempty || g.omitzero
                    };
                    if !g.pointer && omitted {
                        "omit_zero"
                    } else {
                        "one"
                    }
                }
            };
            let _ = writeln!(w, "        F::{ctor}({}, {:?}, {kind}),", f.tag, g.json);
        }
        let _ = writeln!(w, "    ]) }},");
    }
    let _ = writeln!(w, "];");
    let _ = writeln!(w);
    let _ = writeln!(w, "pub static ROOTS: &[Root] = &[");
    for r in roots {
        let _ = writeln!(
            w,
            "    Root {{ api_version: {:?}, kind: {:?}, message: {} }},",
            r.api_version,
            r.kind,
            index[r.message.as_str()]
        );
    }
    let _ = writeln!(w, "];");
    Ok(out)
}

fn kind_code(kind: &Scalar, index: &BTreeMap<&str, usize>) -> Result<String> {
    Ok(match kind {
        Scalar::Bool => "K::Bool".into(),
        Scalar::Int32 => "K::Int32".into(),
        Scalar::Int64 => "K::Int64".into(),
        Scalar::Double => "K::Double".into(),
        Scalar::String => "K::String".into(),
        Scalar::Bytes => "K::Bytes".into(),
        Scalar::Message(m) => format!(
            "K::Message({})",
            index
                .get(m.as_str())
                .ok_or_else(|| format!("message {m} was not reached"))?
        ),
    })
}
