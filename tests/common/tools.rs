//! Where the test tools (kubectl v1.35, helm v4) are: `$BERTH_TEST_TOOLS`, or the directory
//! `scripts/install-test-deps.sh` installs them into. Never looked up on PATH, so another kubectl
//! on the machine cannot stand in for the one the tests are written against.

use std::path::PathBuf;

pub const DEFAULT_TOOLS_DIR: &str = "/usr/local/lib/berth-test/bin";

pub fn tools_dir() -> PathBuf {
    std::env::var_os("BERTH_TEST_TOOLS")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TOOLS_DIR))
}

/// The path of a test tool. Panics (tests must not silently skip) when it is missing.
pub fn tool(name: &str) -> PathBuf {
    let path = tools_dir().join(name);
    assert!(
        path.is_file(),
        "{} not found: run scripts/install-test-deps.sh (or set BERTH_TEST_TOOLS)",
        path.display()
    );
    path
}

pub fn kubectl() -> PathBuf {
    tool("kubectl")
}

pub fn helm() -> PathBuf {
    tool("helm")
}
