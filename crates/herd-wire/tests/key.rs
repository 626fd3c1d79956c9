//! Cluster key files: format, permissions, ownership, fingerprints.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;

use herd_wire::{ClusterKey, KeyError};

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn generate_write_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.key");
    let key = ClusterKey::generate().unwrap();
    key.write_new(&path).unwrap();

    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    let text = fs::read_to_string(&path).unwrap();
    let hex = text
        .strip_prefix("herd-cluster-key-v1 ")
        .unwrap()
        .strip_suffix('\n')
        .unwrap();
    assert_eq!(hex.len(), 64);
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{hex}"
    );

    let loaded = ClusterKey::load(&path).unwrap();
    assert_eq!(loaded, key);
    assert_eq!(loaded.fingerprint(), key.fingerprint());
    assert_ne!(ClusterKey::generate().unwrap(), key);
}

#[test]
fn write_new_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.key");
    let first = ClusterKey::generate().unwrap();
    first.write_new(&path).unwrap();
    let err = ClusterKey::generate()
        .unwrap()
        .write_new(&path)
        .unwrap_err();
    assert!(matches!(err, KeyError::Exists { .. }), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(ClusterKey::load(&path).unwrap(), first);
}

#[test]
fn surrounding_whitespace_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    let key = ClusterKey::from_bytes(*b"0123456789abcdef0123456789abcdef");
    let hex: String = b"0123456789abcdef0123456789abcdef"
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    fs::write(&path, format!("\n\t herd-cluster-key-v1 {hex}  \n\n")).unwrap();
    chmod(&path, 0o600);
    assert_eq!(ClusterKey::load(&path).unwrap(), key);
}

#[test]
fn group_or_world_access_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.key");
    ClusterKey::generate().unwrap().write_new(&path).unwrap();
    for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660] {
        chmod(&path, mode);
        let err = ClusterKey::load(&path).unwrap_err();
        assert!(
            matches!(err, KeyError::AccessibleByOthers { mode: m, .. } if m == mode),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("chmod 600 {}", path.display())),
            "{msg}"
        );
        assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
    }
    chmod(&path, 0o400);
    ClusterKey::load(&path).unwrap();
}

#[test]
fn missing_file_says_how_to_create_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.key");
    let err = ClusterKey::load(&path).unwrap_err();
    assert!(matches!(err, KeyError::Missing { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("herd keygen --output {}", path.display())),
        "{msg}"
    );
}

#[test]
fn directories_and_fifos_are_not_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("dir");
    fs::create_dir(&sub).unwrap();
    chmod(&sub, 0o700);
    let err = ClusterKey::load(&sub).unwrap_err();
    assert!(matches!(err, KeyError::NotRegularFile { .. }), "{err}");

    // A FIFO must be refused without blocking in open or read.
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let err = ClusterKey::load(&fifo).unwrap_err();
    assert!(matches!(err, KeyError::NotRegularFile { .. }), "{err}");
}

#[test]
fn unreadable_path_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    fs::write(&file, "x").unwrap();
    // ENOTDIR: fails even for root, unlike a mode-000 file.
    let err = ClusterKey::load(file.join("key")).unwrap_err();
    assert!(matches!(err, KeyError::Read { .. }), "{err}");
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn malformed_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.key");
    let hex = "ab".repeat(32);
    for text in [
        String::new(),
        "hello\n".to_owned(),
        format!("herd-cluster-key-v1 {}\n", &hex[..62]),
        format!("herd-cluster-key-v1 {}\n", hex.to_uppercase()),
        format!("herd-cluster-key-v1 {hex}\nsecond line\n"),
        format!("herd-cluster-key-v2 {hex}\n"),
        format!("herd-cluster-key-v1\t{hex}\n"),
        "x".repeat(10_000),
    ] {
        fs::write(&path, &text).unwrap();
        chmod(&path, 0o600);
        let err = ClusterKey::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::Malformed { .. }), "{text:?}: {err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
    fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
    assert!(matches!(
        ClusterKey::load(&path).unwrap_err(),
        KeyError::Malformed { .. }
    ));
}

#[test]
fn fingerprints_are_stable_and_distinct() {
    let a = ClusterKey::from_bytes([1; 32]);
    let b = ClusterKey::from_bytes([2; 32]);
    let fp = a.fingerprint();
    assert_eq!(fp, ClusterKey::from_bytes([1; 32]).fingerprint());
    assert_ne!(fp, b.fingerprint());
    // herd:xxxx-xxxx-xxxx-xxxx
    assert_eq!(fp.len(), 5 + 4 * 4 + 3, "{fp}");
    assert!(fp.starts_with("herd:"));
    let groups: Vec<&str> = fp["herd:".len()..].split('-').collect();
    assert_eq!(groups.len(), 4);
    assert!(groups
        .iter()
        .all(|g| g.len() == 4 && g.bytes().all(|c| c.is_ascii_hexdigit())));
    // Pinned: a fingerprint printed by one version must match the next one's.
    assert_eq!(fp, "herd:f818-f82b-4f04-5caf");
    // It never shows key bytes.
    assert!(!format!("{a:?}").contains("0101"));
}

#[test]
fn derived_keys_differ_by_context_and_key() {
    let a = ClusterKey::from_bytes([1; 32]);
    let b = ClusterKey::from_bytes([2; 32]);
    assert_ne!(
        a.derive("herd 2026 gossip datagram v1"),
        a.derive("herd 2026 beacon datagram v1")
    );
    assert_ne!(
        a.derive("herd 2026 gossip datagram v1"),
        b.derive("herd 2026 gossip datagram v1")
    );
    assert_eq!(
        a.derive("herd 2026 noise psk v1"),
        a.derive("herd 2026 noise psk v1")
    );
    assert_ne!(a.derive("herd 2026 noise psk v1"), [1; 32]);
}

/// The child half of `key_of_another_user_is_refused`: runs as `nobody`.
const CHILD_ENV: &str = "HERD_WIRE_TEST_FOREIGN_KEY";

#[test]
fn key_of_another_user_is_refused() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        // Mode 0644 so that open succeeds: the owner check must still refuse.
        let err = ClusterKey::load(&path).unwrap_err();
        assert!(
            matches!(
                err,
                KeyError::WrongOwner {
                    owner: 0,
                    euid: 65534,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("chown 65534"), "{err}");
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("Skipped: needs root to create a key file that belongs to another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let path = dir.path().join("root.key");
    ClusterKey::generate().unwrap().write_new(&path).unwrap();
    chmod(&path, 0o644);

    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "key_of_another_user_is_refused",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "the child running as nobody failed: {}\n{}{}",
        child.status,
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );

    // Root may read anyone's key (still mode 0600).
    let other = dir.path().join("nobody.key");
    let key = ClusterKey::generate().unwrap();
    key.write_new(&other).unwrap();
    nix::unistd::chown(&other, Some(65534.into()), Some(65534.into())).unwrap();
    assert_eq!(ClusterKey::load(&other).unwrap(), key);
}
