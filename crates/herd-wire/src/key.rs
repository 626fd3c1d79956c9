//! The cluster key: 32 random bytes that every node of one cluster holds.
//!
//! It is never used directly: each use derives its own key with
//! `blake3::derive_key` and a context string, so that a datagram key can never
//! be confused with the Noise pre-shared key. On disk it is one line of text,
//! `herd-cluster-key-v1 <64 lowercase hex digits>`, in a file that only its
//! owner may read.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rand::TryRngCore;

/// The first word of a key file; the version lets a later format coexist.
pub const KEY_FILE_HEADER: &str = "herd-cluster-key-v1";

/// Context of the fingerprint derivation: a fingerprint is a hash of a derived
/// key, so publishing it reveals nothing that could forge traffic.
const FINGERPRINT_CONTEXT: &str = "herd 2026 cluster key fingerprint v1";

/// A key file is one short line; anything larger is not ours, and this caps
/// what `load` reads.
const MAX_KEY_FILE: u64 = 4096;

/// The secret shared by the nodes of one cluster.
#[derive(Clone)]
pub struct ClusterKey([u8; ClusterKey::LEN]);

/// Why a cluster key could not be created, read or written. Each message says
/// how to fix it, because operators meet these at the command line.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no cluster key at {path}: create one with `herd keygen --output {path}`")]
    Missing { path: PathBuf },
    #[error("cluster key {path} is not a regular file")]
    NotRegularFile { path: PathBuf },
    #[error(
        "cluster key {path} is accessible by others (mode {mode:04o}): run `chmod 600 {path}`"
    )]
    AccessibleByOthers { path: PathBuf, mode: u32 },
    #[error(
        "cluster key {path} belongs to uid {owner}, but herd runs as uid {euid}: \
         run `chown {euid} {path}` or use a key file of your own"
    )]
    WrongOwner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error("cannot read cluster key {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cluster key {path} is malformed ({reason}): expected one line \
         `herd-cluster-key-v1 <64 lowercase hex digits>` as written by `herd keygen`"
    )]
    Malformed { path: PathBuf, reason: &'static str },
    #[error("cluster key {path} already exists: refusing to overwrite it")]
    Exists { path: PathBuf },
    #[error("cannot write cluster key {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the operating system's random source failed")]
    Random(#[source] rand::rand_core::OsError),
}

impl ClusterKey {
    /// Length of the key in bytes.
    pub const LEN: usize = 32;

    /// A new key from the operating system's random source (getrandom), not
    /// from a user-space generator whose state a fork could duplicate.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; Self::LEN];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(KeyError::Random)?;
        Ok(Self(bytes))
    }

    /// A key from known bytes: for tests, and for keys that come from
    /// elsewhere than a key file.
    pub fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        Self(bytes)
    }

    /// A key derived for one purpose. Distinct contexts give independent keys,
    /// so no two uses ever share key material. Contexts are fixed strings of
    /// the form `"herd 2026 gossip datagram v1"`.
    pub fn derive(&self, context: &'static str) -> [u8; 32] {
        blake3::derive_key(context, &self.0)
    }

    /// A short printable name of the key, e.g. `herd:1a2b-3c4d-5e6f-7a8b`, to
    /// check that two nodes hold the same key without showing it.
    pub fn fingerprint(&self) -> String {
        let digest = blake3::derive_key(FINGERPRINT_CONTEXT, &self.0);
        let hex = to_hex(&digest[..8]);
        format!(
            "herd:{}-{}-{}-{}",
            &hex[0..4],
            &hex[4..8],
            &hex[8..12],
            &hex[12..16]
        )
    }

    /// Parses the text of a key file; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, KeyError> {
        let malformed = |reason| KeyError::Malformed {
            path: path.to_owned(),
            reason,
        };
        let text = text.trim();
        let hex = text
            .strip_prefix(KEY_FILE_HEADER)
            .ok_or_else(|| malformed("it does not start with `herd-cluster-key-v1`"))?;
        let hex = hex
            .strip_prefix(' ')
            .ok_or_else(|| malformed("no single space after `herd-cluster-key-v1`"))?;
        if hex.len() != 2 * Self::LEN {
            return Err(malformed("the key is not 64 hex digits"));
        }
        let mut bytes = [0u8; Self::LEN];
        for (byte, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let digit = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            match (digit(pair[0]), digit(pair[1])) {
                (Some(high), Some(low)) => *byte = high << 4 | low,
                _ => return Err(malformed("the key is not lowercase hex digits")),
            }
        }
        Ok(Self(bytes))
    }

    /// Reads a key file, refusing one that others could read or change: a
    /// leaked cluster key lets anyone join the cluster and run processes on it.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let read_error = |source| KeyError::Read {
            path: path.to_owned(),
            source,
        };
        // O_NONBLOCK: opening a FIFO put in place of the key must not hang;
        // the checks below run on the opened file, so it cannot be swapped
        // between check and read.
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(KeyError::Missing {
                    path: path.to_owned(),
                })
            }
            Err(e) => return Err(read_error(e)),
        };
        let meta = file.metadata().map_err(read_error)?;
        if !meta.file_type().is_file() {
            return Err(KeyError::NotRegularFile {
                path: path.to_owned(),
            });
        }
        let euid = nix::unistd::geteuid().as_raw();
        if euid != 0 && meta.uid() != euid {
            return Err(KeyError::WrongOwner {
                path: path.to_owned(),
                owner: meta.uid(),
                euid,
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::AccessibleByOthers {
                path: path.to_owned(),
                mode,
            });
        }
        let mut bytes = Vec::new();
        file.take(MAX_KEY_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() as u64 > MAX_KEY_FILE {
            return Err(KeyError::Malformed {
                path: path.to_owned(),
                reason: "the file is far too large",
            });
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| KeyError::Malformed {
            path: path.to_owned(),
            reason: "the file is not text",
        })?;
        Self::parse(text, path)
    }

    /// Writes the key to a new file of mode 0600. An existing file is never
    /// replaced: overwriting a cluster's key by mistake would cut this node
    /// off the cluster.
    pub fn write_new(&self, path: impl AsRef<Path>) -> Result<(), KeyError> {
        let path = path.as_ref();
        let write_error = |source| KeyError::Write {
            path: path.to_owned(),
            source,
        };
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(KeyError::Exists {
                    path: path.to_owned(),
                })
            }
            Err(e) => return Err(write_error(e)),
        };
        let text = format!("{KEY_FILE_HEADER} {}\n", to_hex(&self.0));
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(e) = written {
            // A half-written key must not stay behind to be loaded later.
            let _ = std::fs::remove_file(path);
            return Err(write_error(e));
        }
        // Make the new directory entry durable too (best effort: some file
        // systems refuse fsync on directories).
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl PartialEq for ClusterKey {
    /// Constant time, through blake3's `Hash` comparison.
    fn eq(&self, other: &Self) -> bool {
        blake3::Hash::from_bytes(self.0) == blake3::Hash::from_bytes(other.0)
    }
}

impl Eq for ClusterKey {}

impl fmt::Debug for ClusterKey {
    /// Shows the fingerprint only: keys end up in logs through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey({})", self.fingerprint())
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_surrounding_whitespace_only() {
        let key = ClusterKey::from_bytes([0xab; 32]);
        let line = format!("{KEY_FILE_HEADER} {}\n", to_hex(&key.0));
        let p = Path::new("k");
        assert_eq!(
            ClusterKey::parse(&format!("  \n{line}\n\n"), p).unwrap(),
            key
        );
        for bad in [
            String::new(),
            line.replace(' ', "  "),
            line.replace(KEY_FILE_HEADER, "herd-cluster-key-v2"),
            line.to_uppercase()
                .replace("HERD-CLUSTER-KEY-V1", KEY_FILE_HEADER),
            format!("{line}extra"),
            line[..line.len() - 2].to_owned(),
            format!("{line} {}", to_hex(&key.0)),
            line.replace('a', "é"),
        ] {
            let err = ClusterKey::parse(&bad, p).unwrap_err();
            assert!(matches!(err, KeyError::Malformed { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn debug_hides_the_key() {
        let key = ClusterKey::from_bytes([0x5a; 32]);
        let shown = format!("{key:?}");
        assert!(!shown.contains("5a5a"), "{shown}");
        assert!(shown.contains(&key.fingerprint()));
    }
}
