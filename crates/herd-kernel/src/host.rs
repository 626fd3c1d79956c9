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

/// Gives the memory this process's allocator holds free back to the system
/// (glibc `malloc_trim`). herdd calls it after a move: the buffers of a large
/// image are freed but kept by malloc, and every restore forks herdd, whose
/// page tables the fork copies and the restorer then unmaps (a herdd that had
/// moved 2 GiB took 40 ms instead of 8 to start a restore).
pub fn release_free_memory() {
    // SAFETY: malloc_trim takes an integer and only works on the allocator's own
    // free lists; it is thread-safe (glibc takes the arena locks).
    unsafe {
        libc::malloc_trim(0);
    }
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

/// The memory limit of this process's memory cgroup (cgroup v1 or v2), and
/// what is charged against it: what a machine "has" when it is a cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMemory {
    /// Bytes: the smallest memory limit of this process's memory cgroup
    /// and its ancestors (those visible under the mount).
    pub limit: u64,
    /// Bytes charged to the cgroup with that limit, less its inactive file
    /// pages (page cache the kernel reclaims before it goes OOM).
    pub usage: u64,
    /// The cgroup directory whose limit that is.
    pub dir: std::path::PathBuf,
}

impl CgroupMemory {
    /// Bytes left under the limit.
    pub fn free(&self) -> u64 {
        self.limit.saturating_sub(self.usage)
    }
}

/// This process's memory cgroup limit and usage (see [`CgroupMemory`]),
/// found through /proc/self/cgroup and /proc/self/mountinfo: cgroup v1
/// `memory.limit_in_bytes`, `memory.usage_in_bytes` less `total_inactive_file`
/// of `memory.stat`; v2 `memory.max`, `memory.current` less `inactive_file`.
/// None when no limit is below the physical memory (MemTotal), or when
/// the files cannot be read.
pub fn cgroup_memory() -> Option<CgroupMemory> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let physical = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().trim_end_matches("kB").trim().parse::<u64>().ok()? * 1024;
    cgroup_memory_in(&parse_mountinfo(&mountinfo), &own, physical)
}

/// [`cgroup_memory`] from mountinfo and /proc/self/cgroup text, reading the
/// cgroup files where the mounts say they are.
fn cgroup_memory_in(mounts: &[Mount], own: &str, physical: u64) -> Option<CgroupMemory> {
    use std::path::Path;
    let read = |p: &Path| std::fs::read_to_string(p).ok().map(|t| t.trim().to_string());
    let stat_value = |dir: &Path, key: &str| -> Option<u64> {
        read(&dir.join("memory.stat"))?.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
    };
    // A controller is in one hierarchy only: v1 if a memory hierarchy is mounted.
    let v1_path = own.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers.split(',').any(|c| c == "memory").then_some(path)
    });
    let v1_mounts: Vec<&Mount> =
        mounts.iter().filter(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == "memory")).collect();
    let (v1, mounts_of, path) = if !v1_mounts.is_empty() {
        (true, v1_mounts, v1_path?)
    } else {
        (false, mounts.iter().filter(|m| m.fstype == "cgroup2").collect(), own.lines().find_map(|l| l.strip_prefix("0::"))?)
    };
    // The mount that shows our cgroup (its root is our cgroup or above it), compared by
    // path components: a root `/lab` does not show `/lab2/…`.
    let under = |m: &Mount| Path::new(path).strip_prefix(&m.root).ok();
    let m = mounts_of.iter().find(|m| under(m).is_some()).or(mounts_of.first())?;
    let rel = under(m).unwrap_or_else(|| Path::new(path.trim_start_matches('/')));
    let dir = if rel.as_os_str().is_empty() { m.point.clone() } else { m.point.join(rel) };
    let mut best: Option<(u64, &Path)> = None;
    for d in dir.ancestors().take_while(|a| a.starts_with(&m.point)) {
        let limit = if v1 {
            read(&d.join("memory.limit_in_bytes")).and_then(|t| t.parse::<u64>().ok())
        } else {
            // "max" (and the root, which has no memory.max) is no limit.
            read(&d.join("memory.max")).and_then(|t| t.parse::<u64>().ok())
        };
        match (limit, best) {
            (Some(l), Some((b, _))) if l < b => best = Some((l, d)),
            (Some(l), None) => best = Some((l, d)),
            _ => {}
        }
    }
    let (limit, d) = best.filter(|&(l, _)| l < physical)?;
    let (usage, inactive) = if v1 {
        (read(&d.join("memory.usage_in_bytes"))?.parse::<u64>().ok()?, stat_value(d, "total_inactive_file"))
    } else {
        (read(&d.join("memory.current"))?.parse::<u64>().ok()?, stat_value(d, "inactive_file"))
    };
    Some(CgroupMemory { limit, usage: usage.saturating_sub(inactive.unwrap_or(0)), dir: d.to_path_buf() })
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


    /// A scratch directory, removed when dropped.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let d = std::env::temp_dir().join(format!("herd-kernel-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Scratch(d)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn put(dir: &std::path::Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn cgroup_v1_memory_limit_and_usage_without_inactive_file() {
        let t = Scratch::new("memcg-v1");
        let mem = t.0.join("memory");
        let unlimited = "9223372036854771712\n";
        put(&mem, &[("memory.limit_in_bytes", unlimited)]);
        put(&mem.join("lab"), &[("memory.limit_in_bytes", unlimited)]);
        let node = mem.join("lab/herd-1/n1");
        put(&mem.join("lab/herd-1"), &[("memory.limit_in_bytes", unlimited)]);
        put(
            &node,
            &[
                ("memory.limit_in_bytes", "268435456\n"),
                ("memory.usage_in_bytes", "104857600\n"),
                ("memory.stat", "cache 50\ninactive_file 7\ntotal_cache 50\ntotal_inactive_file 4194304\n"),
            ],
        );
        let mountinfo = format!(
            "34 31 0:31 / {}/cpuset rw - cgroup cgroup rw,cpuset\n35 31 0:32 / {} rw,nosuid - cgroup cgroup rw,memory\n41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
            t.0.display(),
            mem.display()
        );
        let own = "4:memory:/lab/herd-1/n1\n3:cpuset:/herd-1/n1\n0::/\n";
        let m = cgroup_memory_in(&parse_mountinfo(&mountinfo), own, 24 * GIB).unwrap();
        assert_eq!(m, CgroupMemory { limit: 256 << 20, usage: (100 << 20) - (4 << 20), dir: node.clone() });
        assert_eq!(m.free(), 160 << 20);
        // A smaller limit further up binds: its cgroup's usage is the one that counts.
        put(&mem.join("lab"), &[("memory.limit_in_bytes", "134217728"), ("memory.usage_in_bytes", "1000"), ("memory.stat", "")]);
        let m = cgroup_memory_in(&parse_mountinfo(&mountinfo), own, 24 * GIB).unwrap();
        assert_eq!((m.limit, m.usage, m.dir), (128 << 20, 1000, mem.join("lab")));
        // Nothing below physical memory: no limit.
        assert_eq!(cgroup_memory_in(&parse_mountinfo(&mountinfo), own, 100 << 20), None);
        assert_eq!(cgroup_memory_in(&parse_mountinfo(&mountinfo), "4:memory:/\n0::/\n", 24 * GIB), None);
        // In a cgroup namespace the mount's root is our cgroup.
        let ns_mountinfo = format!("35 31 0:32 /lab/herd-1/n1 {} rw - cgroup cgroup rw,memory\n", node.display());
        let m = cgroup_memory_in(&parse_mountinfo(&ns_mountinfo), "4:memory:/lab/herd-1/n1\n", 24 * GIB).unwrap();
        assert_eq!(m.limit, 256 << 20);
    }

    #[test]
    fn cgroup_mount_root_matches_whole_components() {
        let t = Scratch::new("memcg-components");
        let unlimited = "9223372036854771712\n";
        // Two mounts of the memory hierarchy, of /lab and of /lab2; we are in /lab2/n1.
        put(&t.0.join("lab"), &[("memory.limit_in_bytes", "134217728\n"), ("memory.usage_in_bytes", "1000\n"), ("memory.stat", "")]);
        put(&t.0.join("lab2"), &[("memory.limit_in_bytes", unlimited)]);
        let node = t.0.join("lab2/n1");
        put(&node, &[("memory.limit_in_bytes", "268435456\n"), ("memory.usage_in_bytes", "2000\n"), ("memory.stat", "")]);
        let mountinfo = format!(
            "35 31 0:32 /lab {} rw - cgroup cgroup rw,memory\n36 31 0:32 /lab2 {} rw - cgroup cgroup rw,memory\n",
            t.0.join("lab").display(),
            t.0.join("lab2").display()
        );
        // `/lab` is a string prefix of `/lab2/n1` but not a path prefix: the second mount.
        let m = cgroup_memory_in(&parse_mountinfo(&mountinfo), "4:memory:/lab2/n1\n", 24 * GIB).unwrap();
        assert_eq!(m, CgroupMemory { limit: 256 << 20, usage: 2000, dir: node });
        // And /lab itself (or below it) is still the first one's.
        let m = cgroup_memory_in(&parse_mountinfo(&mountinfo), "4:memory:/lab\n", 24 * GIB).unwrap();
        assert_eq!((m.limit, m.dir), (128 << 20, t.0.join("lab")));
    }

    #[test]
    fn cgroup_v2_memory_max() {
        let t = Scratch::new("memcg-v2");
        let root = &t.0;
        put(root, &[("cgroup.controllers", "cpuset memory")]);
        let slice = root.join("user.slice");
        put(&slice, &[("memory.max", "max\n")]);
        let node = slice.join("n1");
        put(
            &node,
            &[
                ("memory.max", "536870912\n"),
                ("memory.current", "10485760\n"),
                ("memory.stat", "anon 1\nfile 2\nactive_file 3\ninactive_file 1048576\n"),
            ],
        );
        let mountinfo = format!("41 31 0:38 / {} rw - cgroup2 cgroup2 rw,nsdelegate\n", root.display());
        let m = cgroup_memory_in(&parse_mountinfo(&mountinfo), "0::/user.slice/n1\n", 24 * GIB).unwrap();
        assert_eq!(m, CgroupMemory { limit: 512 << 20, usage: 9 << 20, dir: node });
        assert_eq!(cgroup_memory_in(&parse_mountinfo(&mountinfo), "0::/user.slice\n", 24 * GIB), None);
        // No cgroup file system at all.
        assert_eq!(cgroup_memory_in(&[], "0::/\n", 24 * GIB), None);
        // Whatever this machine has, the real one must not fail.
        let _ = cgroup_memory();
    }
}
