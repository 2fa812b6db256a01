//! Names the commit teal is built from, for `teal --version`: `TEAL_BUILD_COMMIT` if it is
//! set (for a build whose sources came without their history), else the short hash git
//! gives, else "unknown". Building never fails for want of git or of a repository.
//!
//! It also generates the gRPC inference service's messages and server from
//! `proto/inference.proto` with protox, a protobuf compiler in Rust, so a build needs no
//! `protoc` on the machine.

use std::path::Path;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=proto/inference.proto");
    let descriptors = protox::compile(["inference.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_fds(descriptors)?;
    println!("cargo:rerun-if-env-changed=TEAL_BUILD_COMMIT");
    let commit = std::env::var("TEAL_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=TEAL_BUILD_COMMIT={}", commit.trim());
    Ok(())
}

/// The short hash of HEAD, when this crate's sources are tracked in the repository git finds
/// (not, say, in an unrelated one that a source archive was unpacked inside).
fn git_commit() -> Option<String> {
    git(&["ls-files", "--error-unmatch", "Cargo.toml"])?;
    // A commit, a checkout or a branch moving changes what HEAD names: look again then. The
    // paths come from git, so a worktree's HEAD and the shared refs are both found.
    let head = git(&["rev-parse", "--git-path", "HEAD"])?;
    watch(&head);
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch(&git(&["rev-parse", "--git-path", &branch])?);
        watch(&git(&["rev-parse", "--git-path", "packed-refs"])?);
    }
    git(&["rev-parse", "--short", "HEAD"])
}

/// Only an existing file: cargo reruns a script on every build while a path it watches is
/// missing.
fn watch(path: &str) {
    if let Ok(path) = Path::new(path).canonicalize() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}
