//! `ksa keys generate` writes each file as a new file renamed into place:
//! never through a symlink, always with the mode it announces, and never
//! half a pair.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use common::{ksa, ksa_after, run};

const DEADLINE: Duration = Duration::from_secs(60);

fn generate(out: &Path, force: bool) -> common::Run {
    let out = out.to_str().expect("path");
    let mut args = vec!["keys", "generate", "--algorithm", "ES256", "--out", out];
    if force {
        args.push("--force");
    }
    run(&mut ksa(&args), DEADLINE)
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .expect("exists")
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn force_replaces_a_symlink_and_leaves_its_target_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let victim = elsewhere.path().join("victim");
    std::fs::write(&victim, "precious\n").expect("written");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    for name in ["sa.key", "sa.pub"] {
        std::os::unix::fs::symlink(&victim, dir.path().join(name)).expect("symlink");
    }
    let out = generate(dir.path(), true);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious\n"
    );
    assert_eq!(mode(&victim), 0o644);
    for name in ["sa.key", "sa.pub"] {
        let path = dir.path().join(name);
        assert!(
            std::fs::symlink_metadata(&path)
                .expect("exists")
                .file_type()
                .is_file(),
            "{name} is a regular file, not the symlink"
        );
    }
    assert_eq!(mode(&dir.path().join("sa.key")), 0o600);
}

#[test]
fn without_force_a_symlink_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let victim = elsewhere.path().join("victim");
    std::os::unix::fs::symlink(&victim, dir.path().join("sa.key")).expect("symlink");
    let out = generate(dir.path(), false);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("pass --force"), "{out:?}");
    assert!(
        !victim.exists(),
        "nothing is written through a dangling symlink"
    );
    assert!(!dir.path().join("sa.pub").exists(), "no half pair");
}

#[test]
fn force_replaces_a_world_writable_key_with_a_0600_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("sa.key");
    std::fs::write(&key, "old\n").expect("written");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = generate(dir.path(), true);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("(private, 0600)"), "{out:?}");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&dir.path().join("sa.pub")), 0o644);
}

#[test]
fn an_existing_file_is_refused_without_force_and_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("sa.pub"), "old\n").expect("written");
    let out = generate(dir.path(), false);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("sa.pub exists; pass --force"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("sa.pub")).expect("kept"),
        "old\n"
    );
    assert!(!dir.path().join("sa.key").exists(), "no half pair");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers, ["sa.pub"], "no temporary file left behind");
}

#[test]
fn a_directory_ksa_creates_is_0700_even_under_umask_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("new").join("keys");
    let target = out_dir.to_str().expect("path");
    let mut command = ksa_after(
        "umask 0;",
        &["keys", "generate", "--algorithm", "ES256", "--out", target],
    );
    let out = run(&mut command, DEADLINE);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(mode(&out_dir), 0o700);
    assert_eq!(mode(&dir.path().join("new")), 0o700);
    assert_eq!(mode(&out_dir.join("sa.key")), 0o600);
    assert_eq!(mode(&out_dir.join("sa.pub")), 0o644);
}
