//! Generates `src/api/schema_definitions.json.zst`: the JSON schemas of the served kinds from
//! k8s-openapi's `schemars` implementations, compressed with zstd, embedded by
//! `src/api/schemas.rs`.
//!
//! Usage (from the crate root):
//!
//! ```text
//! cargo run --example gen_schema_definitions -- src/api/schema_definitions.json.zst
//! ```
//!
//! Regenerate after changing the kinds in `src/api/schemas_generate.rs` or upgrading
//! k8s-openapi; a unit test (`schemas::tests`) fails while the file is stale. The output is
//! deterministic: same inputs, byte-identical file.

#[path = "../src/api/schemas_generate.rs"]
mod schemas_generate;

/// zstd's strongest regular level: the file is written once and decompressed rarely.
const LEVEL: i32 = 19;

fn main() {
    let Some(out) = std::env::args().nth(1) else {
        eprintln!("usage: gen_schema_definitions OUTPUT");
        std::process::exit(2);
    };
    let json = match serde_json::to_vec(&schemas_generate::raw_definitions()) {
        Ok(json) => json,
        Err(e) => fail(&format!("serialising the schemas: {e}")),
    };
    let compressed = match zstd::encode_all(json.as_slice(), LEVEL) {
        Ok(compressed) => compressed,
        Err(e) => fail(&format!("compressing the schemas: {e}")),
    };
    if let Err(e) = std::fs::write(&out, &compressed) {
        fail(&format!("writing {out}: {e}"));
    }
    eprintln!(
        "gen_schema_definitions: {} bytes of JSON, {} compressed, in {out}",
        json.len(),
        compressed.len()
    );
}

fn fail(message: &str) -> ! {
    eprintln!("gen_schema_definitions: {message}");
    std::process::exit(1);
}
