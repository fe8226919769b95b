//! Embeds the git revision the binary is built from, for `karpenter version` and the image's
//! `org.opencontainers.image.revision` label to agree on.
//!
//! `KARPENTER_GIT_REVISION` wins when set (a build from a source tarball, or a packager that
//! knows better); otherwise `git rev-parse HEAD` in the source tree; otherwise "unknown". A
//! build never fails for want of git.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=KARPENTER_GIT_REVISION");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let revision = match std::env::var("KARPENTER_GIT_REVISION") {
        Ok(r) if !r.trim().is_empty() => r.trim().to_string(),
        _ => {
            watch_git(&manifest_dir);
            git(&manifest_dir, &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    println!("cargo:rustc-env=KARPENTER_GIT_REVISION={revision}");
}

/// Reruns this script when HEAD moves: HEAD itself (a checkout), the branch it points at (a
/// commit) and packed-refs. Only files that exist are named: cargo treats a missing one as
/// always changed, which would rebuild the binary on every `cargo build`. (In a worktree HEAD
/// lives in the worktree's git dir and the refs in the common one.)
fn watch_git(dir: &Path) {
    let abs = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { dir.join(p) }
    };
    let Some(git_dir) = git(dir, &["rev-parse", "--git-dir"]).map(abs) else {
        return;
    };
    let common = git(dir, &["rev-parse", "--git-common-dir"])
        .map(abs)
        .unwrap_or_else(|| git_dir.clone());
    let mut watched = vec![git_dir.join("HEAD"), common.join("packed-refs")];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(common.join(branch));
    }
    for p in watched.into_iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}
