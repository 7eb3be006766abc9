//! Stamps the build: the git commit and the flavour (plain or profile-guided, static or
//! dynamic) that `outrigger --version` and the `outrigger_build_info` metric report.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=OUTRIGGER_GIT_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-changed=.git/packed-refs");
    // An image build has no .git: the Dockerfile passes the commit in.
    let commit = std::env::var("OUTRIGGER_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let flavour = if flags.contains("profile-use") {
        "pgo"
    } else if flags.contains("profile-generate") {
        "pgo-instrumented"
    } else {
        "plain"
    };
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let linkage = if features.split(',').any(|f| f == "crt-static") {
        "static"
    } else {
        "dynamic"
    };
    println!("cargo:rustc-env=OUTRIGGER_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=OUTRIGGER_BUILD_FLAVOUR={flavour}");
    println!("cargo:rustc-env=OUTRIGGER_LINKAGE={linkage}");
}
