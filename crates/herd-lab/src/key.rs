//! The cluster key file. (`herd keygen` will own this format; until then
//! the lab writes it itself.)
//!
//! One line: `herd-cluster-key-v1 <64 lowercase hex digits>\n`, 32 random
//! bytes, mode 0600.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rand::RngCore;

/// Writes a fresh random key to `path` (replacing any old one).
pub fn write_cluster_key(path: &Path) -> std::io::Result<()> {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = path.with_extension("key.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    // The umask cannot widen 0600, but be explicit.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(format!("herd-cluster-key-v1 {hex}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_format_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        write_cluster_key(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let hex = text.strip_prefix("herd-cluster-key-v1 ").unwrap().strip_suffix('\n').unwrap();
        assert_eq!(hex.len(), 64);
        assert!(hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        write_cluster_key(&path).unwrap();
        assert_ne!(std::fs::read_to_string(&path).unwrap(), text);
    }
}
