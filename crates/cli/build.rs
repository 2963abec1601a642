//! Names the commit the binary was built from, for `evapi --version`,
//! `core.version` and benchmark records: `EVAPI_COMMIT` is the first 12
//! hex digits of `HEAD`, or `unknown` when the source is not a git
//! checkout or git is missing (a source tarball builds all the same).

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=EVAPI_COMMIT={commit}");
    // Rebuild when HEAD moves: HEAD itself (a branch switch), the refs
    // (a commit on the branch) and packed-refs. In a worktree HEAD is in
    // the worktree's git dir and the refs in the common one.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let abs = |p: String| -> PathBuf { manifest.join(p) };
    // When git cannot answer (missing, or refusing a checkout another user
    // owns), a `.git` directory above the crate is still watched: else the
    // `unknown` this run wrote would stay for good, since nothing it
    // watched would change.
    let found = || {
        manifest
            .ancestors()
            .map(|a| a.join(".git"))
            .find(|g| g.is_dir())
    };
    let git_dir = git(&["rev-parse", "--git-dir"]).map(abs).or_else(found);
    if let Some(dir) = &git_dir {
        println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
    }
    let common = git(&["rev-parse", "--git-common-dir"]).map(abs).or(git_dir);
    if let Some(common) = common {
        // Only paths that exist: cargo reruns the script on every build
        // for one that does not.
        for p in [common.join("refs/heads"), common.join("packed-refs")] {
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
