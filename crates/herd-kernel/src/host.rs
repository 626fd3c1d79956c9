//! Facts about this machine that decide whether an image can run here.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// A special mapping of this process, by its /proc/self/maps name.
fn own_mapping(name: &str) -> Option<(u64, u64)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find(|l| l.split_whitespace().nth(5) == Some(name)).and_then(|l| {
        let (a, b) = l.split_whitespace().next()?.split_once('-')?;
        Some((u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?))
    })
}

/// This process's vDSO text: (start address, bytes).
pub fn own_vdso() -> Option<(u64, Vec<u8>)> {
    let (start, end) = own_mapping("[vdso]")?;
    let mut buf = vec![0u8; (end - start) as usize];
    File::open("/proc/self/mem").ok()?.read_exact_at(&mut buf, start).ok()?;
    Some((start, buf))
}

/// blake3 of the vDSO text: equal hashes mean the same kernel vDSO.
pub fn vdso_hash() -> [u8; 32] {
    own_vdso().map(|(_, b)| *blake3::hash(&b).as_bytes()).unwrap_or([0; 32])
}

/// Offset of a `syscall` instruction (0f 05) in vDSO text.
pub fn syscall_offset(vdso: &[u8]) -> Option<u64> {
    vdso.windows(2).position(|w| w == [0x0f, 0x05]).map(|p| p as u64)
}

/// XCR0: the xsave features the kernel enabled on this machine.
pub fn xcr0() -> u64 {
    if !std::arch::is_x86_feature_detected!("xsave") {
        return 0;
    }
    // SAFETY: xgetbv is available: the CPU reports XSAVE (checked above),
    // and XCR0 (index 0) is always readable from user mode when it is.
    unsafe { xgetbv0() }
}

#[target_feature(enable = "xsave")]
unsafe fn xgetbv0() -> u64 {
    // SAFETY: the caller checked XSAVE support.
    unsafe { std::arch::x86_64::_xgetbv(0) }
}

/// Bytes of the xsave area for the features enabled in XCR0 (CPUID leaf 0xD,
/// sub-leaf 0, EBX): a restored process's saved state must fit it.
pub fn xsave_size() -> u32 {
    if !std::arch::is_x86_feature_detected!("xsave") {
        return 0;
    }
    std::arch::x86_64::__cpuid_count(0xd, 0).ebx
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// One line of /proc/self/mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The directory of the file system that is mounted (a cgroup path, for cgroups).
    pub root: String,
    pub point: std::path::PathBuf,
    pub fstype: String,
    /// Per-superblock options, comma-separated (`rw,cpuset` for a v1 cpuset hierarchy).
    pub super_options: String,
}

/// Parses mountinfo text (procfs's parser keeps the `\040` escapes; paths here do not).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(Mount {
                root: unescape_mountinfo(l.get(3)?),
                point: std::path::PathBuf::from(unescape_mountinfo(l.get(4)?)),
                fstype: r.first()?.to_string(),
                super_options: r.get(2).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

/// This process's mounts, in mount order.
pub fn mounts() -> std::io::Result<Vec<Mount>> {
    Ok(parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod mountinfo_tests {
    use super::*;

    #[test]
    fn mountinfo_lines_and_escapes() {
        let m = parse_mountinfo("34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n36 1 8:1 /x /mnt/a\\040b rw - ext4 /dev/sda1 rw\n");
        assert_eq!(m[0].point, std::path::Path::new("/sys/fs/cgroup/cpuset"));
        assert_eq!((m[0].fstype.as_str(), m[0].super_options.as_str()), ("cgroup", "rw,cpuset"));
        assert_eq!(m[1].point, std::path::Path::new("/mnt/a b"));
        assert_eq!(m[1].root, "/x");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
        assert!(mounts().unwrap().iter().any(|m| m.point == std::path::Path::new("/")));
    }
}
