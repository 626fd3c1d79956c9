//! Content hashes of mapped files, so that clean file pages are not stored
//! in an image but re-mapped from an identical file where it is restored.
//!
//! Hashing a file costs one read of it; the result is cached by
//! (device, inode, size, mtime, ctime) in memory and in a small cache file
//! (`$XDG_CACHE_HOME/herd/file-hashes`, else `~/.cache/herd/file-hashes`),
//! so a library is read once per change, not once per checkpoint.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

type Key = (u64, u64, u64, i64, i64, i64, i64);

pub struct FileHashes {
    known: HashMap<Key, [u8; 32]>,
    path: Option<PathBuf>,
    dirty: bool,
}

fn key(m: &std::fs::Metadata) -> Key {
    (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec())
}

fn cache_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("herd").join("file-hashes"))
}

impl FileHashes {
    /// An in-memory cache only.
    pub fn ephemeral() -> Self {
        FileHashes { known: HashMap::new(), path: None, dirty: false }
    }

    /// The per-user cache file; a missing or unreadable one starts empty.
    pub fn load() -> Self {
        let mut me = FileHashes { known: HashMap::new(), path: cache_path(), dirty: false };
        if let Some(text) = me.path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
            for line in text.lines() {
                let f: Vec<&str> = line.split(' ').collect();
                if f.len() != 8 {
                    continue;
                }
                let nums: Option<Vec<i64>> = f[..7].iter().map(|x| x.parse::<i64>().ok()).collect();
                let (Some(n), Some(h)) = (nums, parse_hex(f[7])) else { continue };
                me.known.insert((n[0] as u64, n[1] as u64, n[2] as u64, n[3], n[4], n[5], n[6]), h);
            }
        }
        me
    }

    /// blake3 of the file's whole contents, and its size.
    pub fn hash(&mut self, path: &Path) -> std::io::Result<([u8; 32], u64)> {
        self.hash_with(path, true)
    }

    /// [`FileHashes::hash`] read from the file whatever the cache says: for a file
    /// written through a shared mapping, whose times change only at the first write
    /// to a page after it was written back, not at every write.
    pub fn hash_fresh(&mut self, path: &Path) -> std::io::Result<([u8; 32], u64)> {
        self.hash_with(path, false)
    }

    fn hash_with(&mut self, path: &Path, cached: bool) -> std::io::Result<([u8; 32], u64)> {
        let mut f = File::open(path)?;
        let m = f.metadata()?;
        let k = key(&m);
        if let Some(h) = self.known.get(&k).filter(|_| cached) {
            return Ok((*h, m.size()));
        }
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let h = *hasher.finalize().as_bytes();
        // A file changed while we read it is not cached.
        if key(&f.metadata()?) == k {
            self.known.insert(k, h);
            self.dirty = true;
        }
        Ok((h, m.size()))
    }

    /// Writes the cache file back (atomically); failures are not errors.
    pub fn save(&mut self) {
        let Some(path) = self.path.clone() else { return };
        if !self.dirty {
            return;
        }
        let Some(dir) = path.parent() else { return };
        if std::fs::create_dir_all(dir).is_err() {
            return;
        }
        let tmp = dir.join(format!(".file-hashes.{}", std::process::id()));
        let mut out = String::new();
        for (k, h) in self.known.iter().take(100_000) {
            let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
            out.push_str(&format!("{} {} {} {} {} {} {} {hex}\n", k.0, k.1, k.2, k.3, k.4, k.5, k.6));
        }
        let ok = File::create(&tmp).and_then(|mut f| f.write_all(out.as_bytes())).is_ok();
        if ok && std::fs::rename(&tmp, &path).is_ok() {
            self.dirty = false;
        } else {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
