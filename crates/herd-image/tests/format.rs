//! Integration tests of the image byte format: round trips, and that every kind
//! of damage or hostile input is refused with the right error, without panics
//! and without allocating what a header merely claims.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};

use herd_image::format::{EXT_STATE, MAX_PAGES_LEN, MAX_PROCESS_LEN, WRITE_CHUNK};
use herd_image::*;

// ---------------------------------------------------------------------------
// An allocator that remembers, per thread, the largest single allocation, so a
// test can check that a header claiming a huge length allocates nothing like it.

struct PeakAlloc;

thread_local! {
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    // `try_with` on a const-initialised thread local with no destructor never
    // allocates, so this cannot recurse into the allocator.
    let _ = PEAK.try_with(|p| {
        if size > p.get() {
            p.set(size);
        }
    });
}

// SAFETY: every method forwards to `System` with the caller's own arguments,
// so `System`'s guarantees carry over; the bookkeeping touches no memory the
// allocator hands out.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` via this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc(new_size);
        // SAFETY: `ptr` came from `System` via this allocator with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: PeakAlloc = PeakAlloc;

/// Runs `f` and returns its result and the largest single allocation it made
/// on this thread.
fn peak_alloc_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    PEAK.with(|p| p.set(0));
    let out = f();
    (out, PEAK.with(|p| p.get()))
}

// ---------------------------------------------------------------------------
// Building images.

const KIND_PROCESS: u32 = 1;
const KIND_PAGES: u32 = 2;
const KIND_END: u32 = 3;
const PAGE: usize = PAGE_SIZE as usize;
/// Address of the highest page of a 64-bit address space.
const LAST_PAGE: u64 = !(PAGE_SIZE - 1);

fn aligned(x: u64) -> bool {
    x & (PAGE_SIZE - 1) == 0
}

fn vma(start: u64, end: u64, kind: VmaKind, stored_bytes: u64) -> Vma {
    Vma { start, end, prot: PROT_READ | PROT_WRITE, shared: false, kind, stored_bytes }
}

fn image_with(vmas: Vec<Vma>) -> ProcessImage {
    ProcessImage {
        origin: Origin {
            hostname: "node7".into(),
            kernel_release: "6.8.0-herd".into(),
            created_unix_ms: 1_700_000_000_123,
            herd_version: "0.1.0".into(),
            vdso_hash: [0xa5; 32],
            xfeatures: 0x2e7,
        },
        task: Task {
            pid: 4242,
            comm: "worker".into(),
            cmdline: vec!["/usr/bin/worker".into(), "--threads=1".into()],
            exe: "/usr/bin/worker".into(),
            cwd: "/srv".into(),
            umask: 0o022,
            personality: 0,
            uid: 1000,
            gid: 1000,
            groups: vec![1000, 27],
            rlimits: vec![Rlimit { resource: 7, cur: 1024, max: 4096 }],
            clear_child_tid: 0x7f00_0000_1000,
            robust_list: (0x7f00_0000_2000, 24),
            rseq: Some(Rseq { ptr: 0x7f00_0000_3000, len: 32, sig: 0x5305_3053 }),
            sched: Sched { policy: 0, priority: 0, nice: 5 },
        },
        regs: Registers { gp: (0..27u64).map(|i| i * 0x1111).collect(), xstate: vec![0x5a; 64] },
        signals: Signals {
            blocked: 1 << 13,
            handlers: vec![SigAction { signo: 2, handler: 0x401234, flags: 0x0400_0000, restorer: 0x401000, mask: 0 }],
            altstack: SigAltStack::default(),
            pending: vec![PendingSignal { shared: true, signo: 10, siginfo: vec![3; 128] }],
        },
        mm: MmFields {
            start_code: 0x400000,
            end_code: 0x402000,
            start_brk: 0x600000,
            brk: 0x603000,
            auxv: vec![6, 4096, 0, 0],
            ..MmFields::default()
        },
        vmas,
        files: vec![
            OpenFile { fd: 0, cloexec: false, kind: FileKind::Inherited { what: "pipe".into() } },
            OpenFile {
                fd: 3,
                cloexec: true,
                kind: FileKind::Regular { path: "/srv/log".into(), flags: 0o2001, offset: 77 },
            },
            OpenFile { fd: 4, cloexec: false, kind: FileKind::Device { path: "/dev/null".into(), flags: 2 } },
        ],
        threads: vec![Thread {
            tid: 4243,
            comm: "worker-1".into(),
            regs: Registers { gp: (0..27u64).map(|i| i * 0x2222).collect(), xstate: vec![0x3c; 64] },
            blocked: 1 << 9,
            pending: vec![PendingSignal { shared: false, signo: 12, siginfo: vec![4; 128] }],
            altstack: SigAltStack { sp: 0x7f00_0001_0000, flags: 0, size: 8192 },
            clear_child_tid: 0x7f00_0000_5000,
            robust_list: (0x7f00_0000_6000, 24),
            rseq: Some(Rseq { ptr: 0x7f00_0000_7000, len: 32, sig: 0x5305_3053 }),
            sched: Sched { policy: 3, priority: 0, nice: 19 },
        }],
        state: None,
        increment: None,
        seccomp: Vec::new(),
    }
}

/// The sample image as version 3 writes it: with process state and fd kinds
/// version 2 did not have.
fn sample_v3() -> (ProcessImage, Vec<(u64, Vec<u8>)>) {
    let (mut image, pages) = sample();
    image.files.extend([
        OpenFile { fd: 5, cloexec: true, kind: FileKind::Directory { path: "/srv".into(), flags: 0o200000, offset: 3 } },
        OpenFile { fd: 6, cloexec: false, kind: FileKind::PathOnly { path: "/srv/log".into(), flags: 0o10000000 } },
        OpenFile { fd: 7, cloexec: false, kind: FileKind::EventFd { count: 9, flags: 1 } },
        OpenFile {
            fd: 8,
            cloexec: false,
            kind: FileKind::TimerFd { clockid: 1, flags: 0, interval_ns: 1_000_000, value_ns: 500, ticks: 2 },
        },
        OpenFile { fd: 9, cloexec: false, kind: FileKind::SignalFd { mask: 1 << 9, flags: 0 } },
        OpenFile {
            fd: 10,
            cloexec: false,
            kind: FileKind::Epoll { flags: 0, targets: vec![EpollTarget { fd: 7, events: 1, data: 7 }] },
        },
    ]);
    image.state = Some(ProcessState {
        itimers: vec![Itimer { which: 0, interval_us: 0, value_us: 1_500_000 }],
        oom_score_adj: 300,
        child_subreaper: true,
        thp_disable: true,
        no_new_privs: true,
        dumpable: 1,
        locks: vec![FileLock { fd: 3, kind: LockKind::Posix, write: true, start: 10, len: 0 }],
        posix_timers: vec![PosixTimer { id: 7, clockid: 1, notify: 4, signo: 10, value: 0x1234, tid: 4243, interval_ns: 0, value_ns: 5_000_000 }],
        regions: vec![RegionState { start: 0x600000, end: 0x603000, advice: vec![16], locked: true, guards: vec![(0x601000, 0x1000)] }],
        caps: Caps { inheritable: 0, permitted: 1 << 21, effective: 1 << 21, bounding: u64::MAX >> 23, ambient: 0 },
        membarrier: 1 << 4,
        loginuid: 1000,
    });
    (image, pages)
}

/// Four VMAs, three of them with stored pages, and the pages themselves.
fn sample() -> (ProcessImage, Vec<(u64, Vec<u8>)>) {
    let file = FileRef { path: "/usr/bin/worker".into(), size: 8192, hash: [7; 32] };
    let image = image_with(vec![
        vma(0x400000, 0x402000, VmaKind::File { file, offset: 0 }, 0x1000),
        vma(0x600000, 0x603000, VmaKind::Heap, 0x2000),
        vma(0x7ffd_0000, 0x7ffd_2000, VmaKind::Stack, 0x1000),
        vma(0x7fff_0000, 0x7fff_2000, VmaKind::Vdso, 0),
    ]);
    let pages = vec![
        (0x401000, pattern(1, 1)),
        (0x600000, pattern(2, 1)),
        (0x602000, pattern(3, 1)),
        (0x7ffd_1000, pattern(4, 1)),
    ];
    (image, pages)
}

/// A smaller image (one stored page) for exhaustive per-byte loops.
fn small() -> (ProcessImage, Vec<(u64, Vec<u8>)>) {
    let image = image_with(vec![
        vma(0x10000, 0x12000, VmaKind::Anonymous, 0x1000),
        vma(0x20000, 0x21000, VmaKind::Vvar, 0),
    ]);
    (image, vec![(0x11000, pattern(9, 1))])
}

fn pattern(seed: u8, pages: usize) -> Vec<u8> {
    (0..pages * PAGE).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed).rotate_left(3) ^ seed).collect()
}

fn encode(image: &ProcessImage, pages: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut w = ImageWriter::new(Vec::new()).unwrap();
    w.write_process(image).unwrap();
    for (addr, data) in pages {
        w.write_pages(*addr, data).unwrap();
    }
    w.finish().unwrap()
}

fn header(version: u32) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&version.to_le_bytes());
    v.extend_from_slice(&herd_image::format::header_check(version).to_le_bytes());
    v
}

/// A section with a correct checksum, built by hand (to make streams the
/// writer refuses to make).
fn raw_section(kind: u32, payload: &[u8]) -> Vec<u8> {
    raw_section_len(kind, payload.len() as u64, payload)
}

/// A section whose header claims `len` bytes, followed by `payload`, with a
/// checksum over kind, claimed length and the given payload.
fn raw_section_len(kind: u32, len: u64, payload: &[u8]) -> Vec<u8> {
    let mut h = crc32fast::Hasher::new();
    h.update(&kind.to_le_bytes());
    h.update(&len.to_le_bytes());
    h.update(payload);
    let mut v = kind.to_le_bytes().to_vec();
    v.extend_from_slice(&len.to_le_bytes());
    v.extend_from_slice(&h.finalize().to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// A Process section as version 3 writes it: the description, then the state
/// extension.
fn process_section(image: &ProcessImage) -> Vec<u8> {
    let mut payload = postcard::to_stdvec(image).unwrap();
    let state = postcard::to_stdvec(&image.state).unwrap();
    payload.extend_from_slice(&EXT_STATE.to_le_bytes());
    payload.extend_from_slice(&(state.len() as u32).to_le_bytes());
    payload.extend_from_slice(&state);
    raw_section(KIND_PROCESS, &payload)
}

fn pages_section(addr: u64, data: &[u8]) -> Vec<u8> {
    let mut p = addr.to_le_bytes().to_vec();
    p.extend_from_slice(data);
    raw_section(KIND_PAGES, &p)
}

fn end_section(total: u64) -> Vec<u8> {
    raw_section(KIND_END, &total.to_le_bytes())
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

// ---------------------------------------------------------------------------
// Decoding.

#[derive(Debug, PartialEq)]
struct Decoded {
    image: ProcessImage,
    pages: Vec<(u64, Vec<u8>)>,
    total: u64,
    offset: u64,
}

/// Reads a whole image, checking the reader's own contract as it goes: one
/// Process first, End last, `None` after End.
fn decode_from<R: Read>(input: R) -> Result<Decoded, FormatError> {
    let mut r = ImageReader::new(input)?;
    assert_eq!(r.offset(), 16);
    let mut image: Option<ProcessImage> = None;
    let mut pages = Vec::new();
    let total = loop {
        let before = r.offset();
        let section = r.next_section()?;
        match section {
            Some(Section::Process(p)) => {
                assert!(image.is_none(), "reader returned a second process section");
                image = Some(*p);
            }
            Some(Section::Pages { addr, data }) => {
                assert!(image.is_some(), "reader returned pages before the process section");
                pages.push((addr, data.to_vec()));
            }
            Some(Section::End { page_bytes }) => break page_bytes,
            None => panic!("reader returned None before End"),
        }
        assert!(r.offset() > before, "offset did not advance");
    };
    assert!(matches!(r.next_section(), Ok(None)), "a section after End");
    assert!(matches!(r.next_section(), Ok(None)), "a section after End");
    let image = image.expect("End without a process section");
    Ok(Decoded { image, pages, total, offset: r.offset() })
}

/// Like [`decode_from`], with pages taken in place ([`ImageReader::next_in_place`]), each
/// verified as it comes.
fn decode_in_place(bytes: &[u8]) -> Result<Decoded, FormatError> {
    let mut r = ImageReader::new(bytes)?;
    let mut image: Option<ProcessImage> = None;
    let mut pages = Vec::new();
    let total = loop {
        match r.next_in_place()? {
            Some(InPlaceSection::Process(p)) => image = Some(*p),
            Some(InPlaceSection::Pages(p)) => {
                p.verify()?;
                pages.push((p.addr, p.data().to_vec()));
            }
            Some(InPlaceSection::End { page_bytes }) => break page_bytes,
            None => panic!("reader returned None before End"),
        }
    };
    assert!(matches!(r.next_in_place(), Ok(None)), "a section after End");
    let image = image.expect("End without a process section");
    Ok(Decoded { image, pages, total, offset: r.offset() })
}

/// Decodes `bytes` both ways, streamed and in place: they must agree on the image, or
/// both refuse it (the streamed error is returned: the in-place reader checks a pages
/// section's place before its checksum, so its error may name another fault).
fn decode(bytes: &[u8]) -> Result<Decoded, FormatError> {
    let streamed = decode_from(bytes);
    let in_place = decode_in_place(bytes);
    match (&streamed, &in_place) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "in place and streamed decode differently"),
        (Err(_), Err(_)) => {}
        _ => panic!("streamed: {streamed:?}; in place: {in_place:?}"),
    }
    streamed
}

fn expect_corrupt(bytes: &[u8], what: &str) -> String {
    match decode(bytes) {
        Err(FormatError::Corrupt(msg)) => msg,
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Round trips.

#[test]
fn round_trip() {
    let (image, pages) = sample();
    let bytes = encode(&image, &pages);
    let d = decode(&bytes).unwrap();
    assert_eq!(d.image, image);
    assert_eq!(d.pages, pages);
    assert_eq!(d.total, 4 * PAGE_SIZE);
    assert_eq!(d.total, image.vmas.iter().map(|v| v.stored_bytes).sum::<u64>());
    assert_eq!(d.offset, bytes.len() as u64);
    // The header is what the documentation says it is.
    assert_eq!(&bytes[..8], b"HERDIMG\0");
    assert_eq!(bytes[8..12], FORMAT_VERSION.to_le_bytes());
    assert_eq!(bytes[12..16], (!FORMAT_VERSION).to_le_bytes());
    // And the writer's framing is the hand-built one.
    let mut expected = header(FORMAT_VERSION);
    expected.extend(process_section(&image));
    for (addr, data) in &pages {
        expected.extend(pages_section(*addr, data));
    }
    expected.extend(end_section(4 * PAGE_SIZE));
    assert_eq!(bytes, expected);
}

#[test]
fn round_trip_without_pages() {
    let image = image_with(vec![vma(0x1000, 0x3000, VmaKind::Anonymous, 0)]);
    let bytes = encode(&image, &[]);
    let d = decode(&bytes).unwrap();
    assert_eq!(d.image, image);
    assert!(d.pages.is_empty());
    assert_eq!(d.total, 0);
}

#[test]
fn round_trip_through_a_trickling_stream() {
    /// Hands out at most 7 bytes per read, like a slow socket.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(7);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let (image, pages) = sample();
    let bytes = encode(&image, &pages);
    let d = decode_from(Trickle(&bytes)).unwrap();
    assert_eq!(d.image, image);
    assert_eq!(d.pages, pages);
}

#[test]
fn bytes_after_end_are_not_read() {
    let (image, pages) = sample();
    let mut bytes = encode(&image, &pages);
    let len = bytes.len();
    bytes.extend_from_slice(b"next message on the socket");
    let mut input = &bytes[..];
    let d = decode_from(&mut input).unwrap();
    assert_eq!(d.offset, len as u64);
    assert_eq!(input, b"next message on the socket");
}

#[test]
fn large_writes_are_cut_into_chunks() {
    let n = WRITE_CHUNK + 3 * PAGE;
    let image = image_with(vec![vma(0x1000_0000, 0x1000_0000 + 2 * n as u64, VmaKind::Anonymous, n as u64)]);
    let data: Vec<u8> = (0..n).map(|i| (i / PAGE) as u8 ^ (i as u8)).collect();
    let bytes = encode(&image, &[(0x1000_0000, data.clone())]);
    let d = decode(&bytes).unwrap();
    assert_eq!(d.pages.len(), 2);
    assert_eq!(d.pages[0].0, 0x1000_0000);
    assert_eq!(d.pages[0].1.len(), WRITE_CHUNK);
    assert_eq!(d.pages[1].0, 0x1000_0000 + WRITE_CHUNK as u64);
    assert_eq!(d.pages[1].1.len(), 3 * PAGE);
    assert_eq!(d.pages.concat_data(), data);
    assert_eq!(d.total, n as u64);
}

trait ConcatData {
    fn concat_data(&self) -> Vec<u8>;
}
impl ConcatData for Vec<(u64, Vec<u8>)> {
    fn concat_data(&self) -> Vec<u8> {
        self.iter().flat_map(|(_, d)| d.iter().copied()).collect()
    }
}

// ---------------------------------------------------------------------------
// Damage.

#[test]
fn every_bit_flip_is_detected() {
    let (image, pages) = small();
    let good = encode(&image, &pages);
    let mut bytes = good.clone();
    for off in 0..good.len() {
        for bit in 0..8 {
            bytes[off] ^= 1 << bit;
            let r = catch_unwind(AssertUnwindSafe(|| decode(&bytes)));
            match r {
                Err(_) => panic!("decoder panicked with bit {bit} of byte {off} flipped"),
                Ok(Ok(d)) => panic!("bit {bit} of byte {off} flipped went unnoticed: {d:?}"),
                Ok(Err(_)) => {}
            }
            bytes[off] ^= 1 << bit;
        }
    }
    assert_eq!(bytes, good);
}

#[test]
fn every_byte_change_is_detected() {
    let (image, pages) = small();
    let good = encode(&image, &pages);
    let mut bytes = good.clone();
    for off in 0..good.len() {
        for x in [0xffu8, 0x80, 0x55] {
            bytes[off] ^= x;
            assert!(decode(&bytes).is_err(), "byte {off} xor {x:#x} went unnoticed");
            bytes[off] ^= x;
        }
    }
}

#[test]
fn header_damage_gives_the_right_error() {
    let (image, pages) = small();
    let good = encode(&image, &pages);
    for off in 0..16 {
        let mut bytes = good.clone();
        bytes[off] ^= 0x10;
        let e = decode(&bytes).unwrap_err();
        match off {
            0..=7 => assert!(matches!(e, FormatError::BadMagic), "byte {off}: {e:?}"),
            8..=11 => assert!(
                matches!(e, FormatError::Version { found } if found == FORMAT_VERSION ^ (0x10 << (8 * (off - 8)))),
                "byte {off}: {e:?}"
            ),
            _ => assert!(matches!(e, FormatError::Corrupt(_)), "byte {off}: {e:?}"),
        }
    }
}

#[test]
fn every_truncation_is_detected() {
    let (image, pages) = small();
    let good = encode(&image, &pages);
    for n in 0..good.len() {
        let r = catch_unwind(AssertUnwindSafe(|| decode(&good[..n])));
        match r {
            Err(_) => panic!("decoder panicked on the first {n} bytes"),
            Ok(Ok(_)) => panic!("the first {n} of {} bytes decoded as a whole image", good.len()),
            Ok(Err(FormatError::BadMagic)) => assert!(n < 8, "{n} bytes: BadMagic"),
            Ok(Err(FormatError::Truncated(_))) => assert!(n >= 8, "{n} bytes: Truncated"),
            Ok(Err(e)) => panic!("the first {n} bytes: expected Truncated, got {e:?}"),
        }
    }
    assert!(decode(&good).is_ok());
}

#[test]
fn bad_magic() {
    assert!(matches!(decode(b""), Err(FormatError::BadMagic)));
    assert!(matches!(decode(b"HERD"), Err(FormatError::BadMagic)));
    assert!(matches!(decode(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\0\0"), Err(FormatError::BadMagic)));
    let mut v = header(FORMAT_VERSION);
    v[7] = b'X';
    assert!(matches!(decode(&v), Err(FormatError::BadMagic)));
    // A gzip of an image, say.
    assert!(matches!(decode(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0]), Err(FormatError::BadMagic)));
}

#[test]
fn round_trip_of_version_3_state_and_fd_kinds() {
    let (image, pages) = sample_v3();
    let bytes = encode(&image, &pages);
    assert_eq!(decode(&bytes).unwrap().image, image);
}

/// A version 2 image (no extensions) as the previous release wrote it.
fn version_2(image: &ProcessImage, pages: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut v = header(2);
    v.extend(raw_section(KIND_PROCESS, &postcard::to_stdvec(image).unwrap()));
    let mut total = 0;
    for (a, d) in pages {
        v.extend(pages_section(*a, d));
        total += d.len() as u64;
    }
    v.extend(end_section(total));
    v
}

#[test]
fn version_2_images_still_read() {
    let (image, pages) = sample();
    let d = decode(&version_2(&image, &pages)).unwrap();
    assert_eq!(d.image, image);
    assert_eq!(d.image.state, None);
    // Version 2 had no extensions and none of the new fd kinds.
    let (v3, _) = sample_v3();
    let mut with_new_kind = image.clone();
    with_new_kind.files = v3.files.clone();
    let msg = expect_corrupt(&version_2(&with_new_kind, &pages), "a version 3 fd kind in a version 2 image");
    assert!(msg.contains("format version 2"), "{msg}");
    let mut payload = postcard::to_stdvec(&image).unwrap();
    payload.extend_from_slice(&[1, 0, 0, 0, 0, 0]);
    let bytes = concat(&[&header(2), &raw_section(KIND_PROCESS, &payload), &end_section(0)]);
    expect_corrupt(&bytes, "an extension in a version 2 image");
}

#[test]
fn process_state_out_of_bounds_is_refused() {
    let (mut image, pages) = sample_v3();
    let base = image.state.clone().unwrap();
    let cases: Vec<(&str, ProcessState)> = vec![
        ("advice that takes pages offline", ProcessState { regions: vec![RegionState { start: 0x600000, end: 0x603000, advice: vec![100], ..Default::default() }], ..base.clone() }),
        ("an empty region", ProcessState { regions: vec![RegionState { start: 0x603000, end: 0x600000, advice: vec![16], ..Default::default() }], ..base.clone() }),
        ("guard pages outside their region", ProcessState { regions: vec![RegionState { start: 0x600000, end: 0x603000, guards: vec![(0x603000, 0x1000)], ..Default::default() }], ..base.clone() }),
        ("interval timer 7", ProcessState { itimers: vec![Itimer { which: 7, interval_us: 0, value_us: 1 }], ..base.clone() }),
        ("a lock past i64", ProcessState { locks: vec![FileLock { fd: 3, kind: LockKind::Posix, write: true, start: u64::MAX, len: 1 }], ..base.clone() }),
    ];
    for (what, st) in cases {
        image.state = Some(st);
        expect_corrupt(&encode(&image, &pages), what);
    }
}

#[test]
fn extensions_are_checked() {
    let (image, _) = small();
    let core = postcard::to_stdvec(&image).unwrap();
    let state = postcard::to_stdvec(&Some(ProcessState { oom_score_adj: -5, ..Default::default() })).unwrap();
    let ext = |tag: u16, body: &[u8], claimed: u32| {
        let mut v = tag.to_le_bytes().to_vec();
        v.extend_from_slice(&claimed.to_le_bytes());
        v.extend_from_slice(body);
        v
    };
    let with = |exts: &[Vec<u8>]| {
        let mut payload = core.clone();
        for e in exts {
            payload.extend_from_slice(e);
        }
        // Pages are left out: the error comes from the process section.
        concat(&[&header(FORMAT_VERSION), &raw_section(KIND_PROCESS, &payload)])
    };
    let good = ext(EXT_STATE, &state, state.len() as u32);
    // A good one reads (the stream then ends before End: truncated, not corrupt).
    let one = with(std::slice::from_ref(&good));
    let mut r = ImageReader::new(&one[..]).unwrap();
    match r.next_section().unwrap() {
        Some(Section::Process(p)) => assert_eq!(p.state.as_ref().map(|s| s.oom_score_adj), Some(-5)),
        other => panic!("{other:?}"),
    }
    let msg = expect_corrupt(&with(&[good.clone(), ext(77, b"x", 1)]), "an unknown extension");
    assert!(msg.contains("newer herd"), "{msg}");
    let msg = expect_corrupt(&with(&[]), "no state extension");
    assert!(msg.contains("lacks its state"), "{msg}");
    expect_corrupt(&with(&[good.clone(), good.clone()]), "a second state extension");
    expect_corrupt(&with(&[ext(EXT_STATE, &state, state.len() as u32 + 1)]), "an extension longer than the section");
    expect_corrupt(&with(&[good[..4].to_vec()]), "a cut extension header");
    let mut long = state.clone();
    long.push(0);
    expect_corrupt(&with(&[ext(EXT_STATE, &long, long.len() as u32)]), "bytes after the state");
    expect_corrupt(&with(&[ext(EXT_STATE, &state[..state.len() - 1], state.len() as u32 - 1)]), "a cut state");
}

#[test]
fn wrong_version() {
    let (image, pages) = small();
    let good = encode(&image, &pages);
    for version in [0, 1, FORMAT_VERSION + 1, 0x0100_0000, u32::MAX] {
        let mut bytes = good.clone();
        bytes[8..12].copy_from_slice(&version.to_le_bytes());
        match decode(&bytes) {
            Err(FormatError::Version { found }) => assert_eq!(found, version),
            other => panic!("version {version}: {other:?}"),
        }
    }
    // A header alone with the wrong version, nothing after it.
    assert!(matches!(decode(&header(FORMAT_VERSION + 7)), Err(FormatError::Version { found }) if found == FORMAT_VERSION + 7));
}

#[test]
fn reserved_header_word_must_be_zero() {
    let mut v = header(FORMAT_VERSION);
    v[12] = 1;
    expect_corrupt(&v, "reserved word 1");
}

#[test]
fn header_alone_is_truncated() {
    assert!(matches!(decode(&header(FORMAT_VERSION)), Err(FormatError::Truncated(_))));
    assert!(matches!(decode(&header(FORMAT_VERSION)[..12]), Err(FormatError::Truncated(_))));
}

#[test]
fn checksum_mismatch_is_reported_as_such() {
    let (image, pages) = small();
    let mut bytes = encode(&image, &pages);
    // Last byte of the process section's payload.
    let process_len = u64::from_le_bytes(bytes[20..28].try_into().unwrap()) as usize;
    bytes[16 + 16 + process_len - 1] ^= 1;
    match decode(&bytes) {
        Err(FormatError::Checksum { kind: "process", offset: 16 }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn errors_are_final() {
    let (image, pages) = small();
    let mut bytes = encode(&image, &pages);
    let process_end = 32 + u64::from_le_bytes(bytes[20..28].try_into().unwrap()) as usize;
    bytes[process_end + 16] ^= 1; // the pages section's address
    let mut r = ImageReader::new(&bytes[..]).unwrap();
    assert!(matches!(r.next_section(), Ok(Some(Section::Process(_)))));
    assert!(matches!(r.next_section(), Err(FormatError::Checksum { kind: "pages", .. })));
    // The reader must not carry on past the damage (here, into the End section).
    for _ in 0..3 {
        assert!(r.next_section().is_err());
    }
}

#[test]
fn io_errors_are_passed_on() {
    struct Failing<'a>(&'a [u8]);
    impl Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "peer went away"));
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let (image, pages) = small();
    let bytes = encode(&image, &pages);
    for n in [0, 5, 12, 16, 20, 40, bytes.len() - 3] {
        match decode_from(Failing(&bytes[..n])) {
            Err(FormatError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
            other => panic!("{n} bytes then an error: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Hostile lengths.

#[test]
fn huge_section_lengths_are_refused_without_allocating() {
    let (image, _) = small();
    let process = process_section(&image);
    let cases: &[(u32, u64, bool)] = &[
        (KIND_PAGES, u64::MAX, true),
        (KIND_PAGES, MAX_PAGES_LEN + 1, true),
        (KIND_PAGES, 1 << 63, true),
        (KIND_PROCESS, u64::MAX, false),
        (KIND_PROCESS, MAX_PROCESS_LEN + 1, false),
        (KIND_END, 9, true),
        (KIND_END, u64::MAX, true),
    ];
    for &(kind, len, after_process) in cases {
        let mut hdr = kind.to_le_bytes().to_vec();
        hdr.extend_from_slice(&len.to_le_bytes());
        hdr.extend_from_slice(&0u32.to_le_bytes());
        let prefix = if after_process { concat(&[&header(FORMAT_VERSION), &process]) } else { header(FORMAT_VERSION) };
        // An endless supply of bytes after the header: had the reader believed
        // the length, it would read (and allocate) all of it.
        let input = io::Cursor::new(concat(&[&prefix, &hdr])).chain(io::repeat(0));
        let (result, peak) = peak_alloc_during(|| decode_from(input));
        match result {
            Err(FormatError::Corrupt(msg)) => assert!(msg.contains("claims"), "{msg}"),
            other => panic!("kind {kind} len {len}: {other:?}"),
        }
        assert!(peak < (1 << 20), "kind {kind} len {len}: allocated {peak} bytes at once");
    }
}

#[test]
fn claimed_lengths_within_limits_cost_only_what_arrives() {
    // A header claiming the largest allowed Pages section, then silence: the
    // reader must not set aside 64 MiB for bytes that never come.
    let (image, _) = small();
    let mut hdr = KIND_PAGES.to_le_bytes().to_vec();
    hdr.extend_from_slice(&MAX_PAGES_LEN.to_le_bytes());
    hdr.extend_from_slice(&0u32.to_le_bytes());
    let bytes = concat(&[&header(FORMAT_VERSION), &process_section(&image), &hdr, &[0u8; 100]]);
    let (result, peak) = peak_alloc_during(|| decode(&bytes));
    assert!(matches!(result, Err(FormatError::Truncated(_))), "{result:?}");
    assert!(peak < (1 << 20), "allocated {peak} bytes at once");
}

#[test]
fn unknown_section_kind() {
    let (image, _) = small();
    for kind in [0, 4, 0x100, u32::MAX] {
        let bytes = concat(&[&header(FORMAT_VERSION), &raw_section(kind, b"hello")]);
        let msg = expect_corrupt(&bytes, "unknown kind first");
        assert!(msg.contains("unknown section kind"), "{msg}");
        let bytes = concat(&[&header(FORMAT_VERSION), &process_section(&image), &raw_section(kind, b"")]);
        expect_corrupt(&bytes, "unknown kind after process");
    }
}

// ---------------------------------------------------------------------------
// Section order and page placement.

/// small(): VMA 0x10000-0x12000 with one stored page, VVAR 0x20000-0x21000
/// with none.
fn small_with(sections: &[Vec<u8>]) -> Vec<u8> {
    let mut v = header(FORMAT_VERSION);
    for s in sections {
        v.extend_from_slice(s);
    }
    v
}

#[test]
fn hand_built_small_image_is_valid() {
    // The baseline the following tests change one thing of.
    let (image, _) = small();
    let p = pattern(1, 1);
    let d = decode(&small_with(&[process_section(&image), pages_section(0x11000, &p), end_section(4096)])).unwrap();
    assert_eq!(d.pages, vec![(0x11000, p)]);
}

#[test]
fn pages_outside_a_stored_vma() {
    let (image, _) = small();
    let p = pattern(1, 1);
    let p2 = pattern(1, 2);
    for (addr, data, what) in [
        (0x20000, &p, "in a VMA with no stored bytes"),
        (0x30000, &p, "in no VMA"),
        (0x0, &p, "at address 0"),
        (0xf000, &p, "just below the VMA"),
        (0x12000, &p, "just above the VMA"),
        (0xf000, &p2, "straddling the VMA's start"),
        (0x11000, &p2, "straddling the VMA's end"),
        (LAST_PAGE, &p, "at the top of the address space"),
    ] {
        let bytes = small_with(&[process_section(&image), pages_section(addr, data), end_section(4096)]);
        expect_corrupt(&bytes, what);
    }
}

#[test]
fn pages_overflowing_the_address_space() {
    let image = image_with(vec![vma(0x10000, 0x12000, VmaKind::Anonymous, 0x1000)]);
    let bytes = small_with(&[process_section(&image), pages_section(u64::MAX - 0xfff, &pattern(1, 2)), end_section(8192)]);
    expect_corrupt(&bytes, "overflow");
}

#[test]
fn misaligned_pages() {
    let (image, _) = small();
    // Misaligned address.
    for addr in [0x10001, 0x10800, 0x10fff] {
        let bytes = small_with(&[process_section(&image), pages_section(addr, &pattern(1, 1)), end_section(4096)]);
        expect_corrupt(&bytes, "misaligned address");
    }
    // Not whole pages.
    for n in [0, 1, PAGE - 1, PAGE + 1, PAGE + 8] {
        let bytes = small_with(&[process_section(&image), pages_section(0x10000, &vec![0; n]), end_section(n as u64)]);
        let msg = expect_corrupt(&bytes, "partial page");
        assert!(msg.contains("whole pages"), "{n} bytes: {msg}");
    }
    // Shorter than the address itself.
    for n in 0..8 {
        let bytes = small_with(&[process_section(&image), raw_section(KIND_PAGES, &vec![0; n])]);
        expect_corrupt(&bytes, "short pages section");
    }
}

#[test]
fn pages_before_the_process_section() {
    let (image, _) = small();
    let bytes = small_with(&[pages_section(0x11000, &pattern(1, 1)), process_section(&image), end_section(4096)]);
    let msg = expect_corrupt(&bytes, "pages first");
    assert!(msg.contains("before the process"), "{msg}");
}

#[test]
fn end_before_the_process_section() {
    expect_corrupt(&small_with(&[end_section(0)]), "end first");
}

#[test]
fn second_process_section() {
    let (image, pages) = small();
    // With the writer, which does not stop it.
    let mut w = ImageWriter::new(Vec::new()).unwrap();
    w.write_process(&image).unwrap();
    w.write_pages(pages[0].0, &pages[0].1).unwrap();
    w.write_process(&image).unwrap();
    let bytes = w.finish().unwrap();
    let msg = expect_corrupt(&bytes, "second process");
    assert!(msg.contains("second process"), "{msg}");
    // Back to back.
    let bytes = small_with(&[process_section(&image), process_section(&image)]);
    expect_corrupt(&bytes, "second process");
}

#[test]
fn end_with_a_wrong_total() {
    let (image, _) = small();
    let p = pattern(1, 1);
    for total in [0, 1, 4095, 4097, 8192, u64::MAX] {
        let bytes = small_with(&[process_section(&image), pages_section(0x11000, &p), end_section(total)]);
        let msg = expect_corrupt(&bytes, "wrong total");
        assert!(msg.contains("mismatch"), "{msg}");
    }
    // The End's total agrees with the sections, but a region's stored bytes are missing.
    let bytes = small_with(&[process_section(&image), end_section(0)]);
    expect_corrupt(&bytes, "missing pages");
}

#[test]
fn end_section_of_the_wrong_length() {
    // Checksummed, so only a broken or hostile writer makes these; the reader
    // must refuse them, not index past them.
    let (image, _) = small();
    let image = ProcessImage { vmas: vec![], ..image };
    for n in 0..8 {
        let bytes = small_with(&[process_section(&image), raw_section(KIND_END, &vec![0; n])]);
        expect_corrupt(&bytes, "short end");
    }
}

#[test]
fn too_many_pages_for_a_region() {
    // Two stored regions of one page each; the stream gives the first two
    // pages and the second none. The total is right, the placement is not.
    let image = image_with(vec![
        vma(0x10000, 0x13000, VmaKind::Anonymous, 0x1000),
        vma(0x20000, 0x21000, VmaKind::Anonymous, 0x1000),
    ]);
    let bytes = small_with(&[process_section(&image), pages_section(0x10000, &pattern(1, 2)), end_section(8192)]);
    expect_corrupt(&bytes, "two pages into a one-page region");
    let bytes = small_with(&[
        process_section(&image),
        pages_section(0x10000, &pattern(1, 1)),
        pages_section(0x11000, &pattern(2, 1)),
        end_section(8192),
    ]);
    expect_corrupt(&bytes, "two pages into a one-page region, in two sections");
}

#[test]
fn duplicate_or_unordered_pages() {
    let image = image_with(vec![
        vma(0x10000, 0x14000, VmaKind::Anonymous, 0x2000),
        vma(0x20000, 0x21000, VmaKind::Anonymous, 0x1000),
    ]);
    let a = pages_section(0x10000, &pattern(1, 1));
    let b = pages_section(0x11000, &pattern(2, 1));
    let c = pages_section(0x20000, &pattern(3, 1));
    let p = process_section(&image);
    let e = end_section(3 * 4096);
    assert!(decode(&small_with(&[p.clone(), a.clone(), b.clone(), c.clone(), e.clone()])).is_ok());
    // The same page twice (and another one missing): the total still matches.
    expect_corrupt(&small_with(&[p.clone(), a.clone(), a.clone(), c.clone(), e.clone()]), "duplicate page");
    // Overlapping sections.
    let ab = pages_section(0x10000, &pattern(1, 2));
    let bb = pages_section(0x11000, &pattern(1, 1));
    let image3 = image_with(vec![vma(0x10000, 0x14000, VmaKind::Anonymous, 0x3000)]);
    expect_corrupt(&small_with(&[process_section(&image3), ab, bb, end_section(3 * 4096)]), "overlap");
    // Descending order.
    expect_corrupt(&small_with(&[p.clone(), b.clone(), a.clone(), c.clone(), e.clone()]), "descending in a region");
    expect_corrupt(&small_with(&[p, c, a, b, e]), "descending across regions");
}

// ---------------------------------------------------------------------------
// VMAs in the Process section.

#[test]
fn bad_vmas_are_refused() {
    let anon = |s, e, stored| vma(s, e, VmaKind::Anonymous, stored);
    let cases: Vec<(&str, Vec<Vma>)> = vec![
        ("out of order", vec![anon(0x20000, 0x21000, 0), anon(0x10000, 0x11000, 0)]),
        ("overlapping", vec![anon(0x10000, 0x13000, 0), anon(0x12000, 0x14000, 0)]),
        ("identical", vec![anon(0x10000, 0x11000, 0), anon(0x10000, 0x11000, 0)]),
        ("misaligned start", vec![anon(0x10010, 0x11000, 0)]),
        ("misaligned end", vec![anon(0x10000, 0x11001, 0)]),
        ("empty", vec![anon(0x10000, 0x10000, 0)]),
        ("reversed", vec![anon(0x11000, 0x10000, 0)]),
        ("stored_bytes > len", vec![anon(0x10000, 0x11000, 0x2000)]),
        ("stored_bytes huge", vec![anon(0x10000, 0x11000, LAST_PAGE)]),
        ("stored_bytes not whole pages", vec![anon(0x10000, 0x12000, 0x800)]),
        ("second of three overlaps", vec![anon(0x1000, 0x2000, 0), anon(0x3000, 0x5000, 0), anon(0x4000, 0x6000, 0)]),
    ];
    for (what, vmas) in cases {
        let image = image_with(vmas);
        let bytes = encode(&image, &[]);
        let mut r = ImageReader::new(&bytes[..]).unwrap();
        match r.next_section() {
            Err(FormatError::Corrupt(msg)) => assert!(msg.contains("memory region"), "{what}: {msg}"),
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
    }
    // Adjacent regions are fine, as is a region at the very top.
    let top = LAST_PAGE - 0x1000;
    let image = image_with(vec![
        vma(0, 0x1000, VmaKind::Anonymous, 0),
        vma(0x1000, 0x2000, VmaKind::Anonymous, 0x1000),
        vma(top, top + 0x1000, VmaKind::Anonymous, 0x1000),
    ]);
    let d = decode(&encode(&image, &[(0x1000, pattern(1, 1)), (top, pattern(2, 1))])).unwrap();
    assert_eq!(d.image, image);
    assert_eq!(d.pages[1].0, top);
}

#[test]
fn bad_register_count_is_refused() {
    let (mut image, _) = small();
    image.regs.gp.pop();
    expect_corrupt(&encode(&image, &[]), "26 registers");
}

#[test]
fn process_section_with_trailing_bytes_is_refused() {
    let (image, pages) = small();
    let mut payload = postcard::to_stdvec(&image).unwrap();
    payload.push(0);
    let bytes = small_with(&[raw_section(KIND_PROCESS, &payload), pages_section(pages[0].0, &pages[0].1), end_section(4096)]);
    let msg = expect_corrupt(&bytes, "trailing byte");
    assert!(msg.contains("after the process"), "{msg}");
}

#[test]
fn process_section_that_is_not_postcard() {
    for payload in [&b""[..], b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"hello, world"] {
        expect_corrupt(&small_with(&[raw_section(KIND_PROCESS, payload)]), "garbage process section");
    }
    // Valid framing but a claimed string length far beyond the section.
    let mut payload = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
    payload.extend_from_slice(b"abc");
    let (r, peak) = peak_alloc_during(|| decode(&small_with(&[raw_section(KIND_PROCESS, &payload)])));
    assert!(matches!(r, Err(FormatError::Corrupt(_))), "{r:?}");
    assert!(peak < (1 << 20), "allocated {peak} bytes at once");
}

// ---------------------------------------------------------------------------
// A deterministic fuzz run over mutations of a valid image.

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// (offset, total length) of each section of a well-formed image.
fn section_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut off = 16;
    while off < bytes.len() {
        let len = u64::from_le_bytes(bytes[off + 4..off + 12].try_into().unwrap()) as usize;
        spans.push((off, 16 + len));
        off += 16 + len;
    }
    spans
}

fn reseal(bytes: &mut [u8], off: usize) {
    let len = u64::from_le_bytes(bytes[off + 4..off + 12].try_into().unwrap());
    let payload_end = (off + 16).saturating_add(len.min(bytes.len() as u64) as usize).min(bytes.len());
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[off..off + 12]);
    h.update(&bytes[off + 16..payload_end]);
    bytes[off + 12..off + 16].copy_from_slice(&h.finalize().to_le_bytes());
}

/// What any successfully decoded image must satisfy, whatever its bytes.
fn check_invariants(d: &Decoded) {
    let mut per_vma = vec![0u64; d.image.vmas.len()];
    let mut next = 0u64;
    let mut sum = 0u64;
    for (addr, data) in &d.pages {
        let n = data.len() as u64;
        assert!(n > 0 && aligned(n) && aligned(*addr));
        assert!(*addr >= next, "pages out of order");
        next = addr + n;
        let i = d.image.vmas.iter().position(|v| v.contains(*addr, addr + n)).expect("pages outside every VMA");
        per_vma[i] += n;
        sum += n;
    }
    for (v, got) in d.image.vmas.iter().zip(&per_vma) {
        assert_eq!(v.stored_bytes, *got, "VMA {:#x}-{:#x}", v.start, v.end);
    }
    assert_eq!(d.total, sum);
}

#[test]
fn mini_fuzz() {
    const RUNS: usize = 20_000;
    let (image, pages) = small();
    let image = ProcessImage {
        vmas: vec![
            vma(0x10000, 0x12000, VmaKind::Anonymous, 0x1000),
            vma(0x20000, 0x22000, VmaKind::Heap, 0x1000),
            vma(0x30000, 0x31000, VmaKind::Vvar, 0),
        ],
        ..image
    };
    let pages = vec![pages[0].clone(), (0x21000, pattern(5, 1))];
    let good = encode(&image, &pages);
    let original = decode(&good).unwrap();
    let spans = section_spans(&good);
    assert_eq!(spans.len(), 4);

    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut outcomes = [0usize; 7]; // ok, bad magic, version, truncated, checksum, corrupt, io
    for run in 0..RUNS {
        let mut bytes = good.clone();
        let kind = rng.below(10);
        // Mutations after which a successful decode may legitimately differ.
        let mut resealed = false;
        match kind {
            0 => {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(bytes.len());
                    bytes[i] ^= 1 << rng.below(8);
                }
            }
            1 => {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(bytes.len());
                    bytes[i] = rng.next() as u8;
                }
            }
            2 => bytes.truncate(rng.below(bytes.len())),
            3 | 4 => {
                // Splice a random length into a section header.
                let (off, _) = spans[rng.below(spans.len())];
                let len = match rng.below(6) {
                    0 => rng.next(),
                    1 => rng.next() % 64,
                    2 => MAX_PAGES_LEN.wrapping_add(rng.next() % 3).wrapping_sub(1),
                    3 => MAX_PROCESS_LEN.wrapping_add(rng.next() % 3).wrapping_sub(1),
                    _ => {
                        let cur = u64::from_le_bytes(bytes[off + 4..off + 12].try_into().unwrap());
                        cur.wrapping_add(rng.next() % 17).wrapping_sub(8)
                    }
                };
                bytes[off + 4..off + 12].copy_from_slice(&len.to_le_bytes());
                if kind == 4 {
                    reseal(&mut bytes, off);
                    resealed = true;
                }
            }
            5 => {
                // Change a section's payload and fix its checksum: exercises
                // the decoding and checks behind the checksum.
                let (off, len) = spans[rng.below(spans.len())];
                for _ in 0..1 + rng.below(3) {
                    if len > 16 {
                        let i = off + 16 + rng.below(len - 16);
                        bytes[i] = if rng.below(2) == 0 { bytes[i] ^ (1 << rng.below(8)) } else { rng.next() as u8 };
                    }
                }
                reseal(&mut bytes, off);
                resealed = true;
            }
            6 => {
                // Insert or delete a run of bytes.
                let at = rng.below(bytes.len());
                if rng.below(2) == 0 {
                    let n = 1 + rng.below(16);
                    let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                    bytes.splice(at..at, junk);
                } else {
                    let n = (1 + rng.below(16)).min(bytes.len() - at);
                    bytes.drain(at..at + n);
                }
            }
            7 => {
                // Duplicate a section.
                let (off, len) = spans[rng.below(spans.len())];
                let copy = bytes[off..off + len].to_vec();
                let (at, _) = spans[rng.below(spans.len())];
                bytes.splice(at..at, copy);
            }
            8 => {
                // Drop a section.
                let (off, len) = spans[rng.below(spans.len())];
                bytes.drain(off..off + len);
            }
            _ => {
                // Swap two different sections.
                let a = rng.below(spans.len());
                let b = (a + 1 + rng.below(spans.len() - 1)) % spans.len();
                let (a, b) = (a.min(b), a.max(b));
                let (ao, al) = spans[a];
                let (bo, bl) = spans[b];
                let mut v = bytes[..ao].to_vec();
                v.extend_from_slice(&bytes[bo..bo + bl]);
                v.extend_from_slice(&bytes[ao + al..bo]);
                v.extend_from_slice(&bytes[ao..ao + al]);
                v.extend_from_slice(&bytes[bo + bl..]);
                bytes = v;
            }
        }
        let result = catch_unwind(AssertUnwindSafe(|| decode(&bytes)))
            .unwrap_or_else(|_| panic!("run {run} (mutation {kind}) panicked on {} bytes", bytes.len()));
        let slot = match &result {
            Ok(_) => 0,
            Err(FormatError::BadMagic) => 1,
            Err(FormatError::Version { .. }) => 2,
            Err(FormatError::Truncated(_)) => 3,
            Err(FormatError::Checksum { .. }) => 4,
            Err(FormatError::Corrupt(_)) => 5,
            Err(FormatError::Io(_)) => 6,
        };
        outcomes[slot] += 1;
        if let Ok(d) = result {
            check_invariants(&d);
            if !resealed {
                assert_eq!(d.image, original.image, "run {run} (mutation {kind}) decoded a different process");
                assert_eq!(d.pages, original.pages, "run {run} (mutation {kind}) decoded different pages");
                assert_eq!(d.total, original.total);
            }
        }
    }
    // The mutations reach every kind of check (a broken mutator would not).
    eprintln!("mini_fuzz outcomes (ok, bad magic, version, truncated, checksum, corrupt, io): {outcomes:?}");
    let [ok, magic, version, truncated, checksum, corrupt, io] = outcomes;
    assert_eq!(io, 0);
    assert!(ok > 0 && magic > 0 && version > 0, "{outcomes:?}");
    assert!(truncated > RUNS / 50 && checksum > RUNS / 10 && corrupt > RUNS / 20, "{outcomes:?}");
}

/// A thread with a register set of the wrong size, a process-wide signal queued to it,
/// or an id that is no thread id: the image is corrupt, whatever follows.
#[test]
fn malformed_threads_are_corrupt() {
    let (image, pages) = small();
    assert!(decode(&encode(&image, &pages)).is_ok(), "the image with its thread decodes");
    type Spoil = fn(&mut Thread);
    let cases: [(&str, Spoil); 3] = [
        ("26 register words", |t| t.regs.gp.truncate(26)),
        ("a process-wide pending signal", |t| t.pending[0].shared = true),
        ("thread id 0", |t| t.tid = 0),
    ];
    for (what, spoil) in cases {
        let mut bad = image.clone();
        spoil(&mut bad.threads[0]);
        let bytes = [header(FORMAT_VERSION), process_section(&bad)].concat();
        match decode(&bytes) {
            Err(FormatError::Corrupt(_)) => {}
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
    }
}

/// Memory-object regions (version 4) round-trip, are refused in a version 3 image,
/// and must start at a page of the object.
#[test]
fn memory_object_regions_are_version_4() {
    let (mut image, _) = sample_v3();
    image.vmas = vec![Vma { start: 0x10000, end: 0x12000, prot: PROT_READ | PROT_WRITE, shared: true, kind: VmaKind::Memory { object: 1, offset: 0x3000 }, stored_bytes: 0x1000 }];
    let pages = vec![(0x11000, pattern(9, 1))];
    let d = decode(&encode(&image, &pages)).unwrap();
    assert_eq!(d.image, image);
    let v3 = concat(&[&header(3), &process_section(&image), &pages_section(0x11000, &pattern(9, 1)), &end_section(4096)]);
    let msg = expect_corrupt(&v3, "a version 4 region kind in a version 3 image");
    assert!(msg.contains("format version 3"), "{msg}");
    image.vmas[0].kind = VmaKind::Memory { object: 1, offset: 0x3001 };
    expect_corrupt(&encode(&image, &pages), "a memory object mapped from an unaligned offset");
}

/// Regions kept at home (version 5) round-trip, are refused in a version 4 image,
/// and store no contents.
#[test]
fn regions_kept_at_home_are_version_5() {
    let (mut image, _) = sample_v3();
    image.vmas = vec![
        Vma { start: 0x10000, end: 0x11000, prot: PROT_READ | PROT_WRITE, shared: false, kind: VmaKind::Anonymous, stored_bytes: 0x1000 },
        Vma { start: 0x20000, end: 0x22000, prot: PROT_READ | PROT_WRITE, shared: true, kind: VmaKind::AtHome { name: "/dev/shm/sem.x (deleted)".into() }, stored_bytes: 0 },
    ];
    let pages = vec![(0x10000, pattern(3, 1))];
    let d = decode(&encode(&image, &pages)).unwrap();
    assert_eq!(d.image, image);
    let v4 = concat(&[&header(4), &process_section(&image), &pages_section(0x10000, &pattern(3, 1)), &end_section(4096)]);
    let msg = expect_corrupt(&v4, "a version 5 region kind in a version 4 image");
    assert!(msg.contains("format version 4"), "{msg}");
    image.vmas[1].stored_bytes = 0x1000;
    let msg = expect_corrupt(&encode(&image, &[(0x10000, pattern(3, 1)), (0x20000, pattern(4, 1))]), "a region kept at home with contents");
    assert!(msg.contains("kept at home"), "{msg}");
}

/// Checks that `image` round-trips, and that the same bytes under a version 5
/// header are Corrupt (`what`); returns what the refusal says.
fn version_6_only(image: &ProcessImage, pages: &[(u64, Vec<u8>)], what: &str) -> String {
    let bytes = encode(image, pages);
    assert_eq!(&decode(&bytes).unwrap().image, image);
    let mut v5 = header(5);
    v5.extend(&bytes[header(6).len()..]);
    expect_corrupt(&v5, what)
}

/// Leases (version 6) round-trip, are refused in a version 5 image, and carry a
/// signal (at most 64) and no length.
#[test]
fn leases_are_version_6() {
    let (mut image, pages) = sample_v3();
    let mut st = image.state.clone().unwrap();
    st.locks.push(FileLock { fd: 4, kind: LockKind::Lease, write: true, start: 36, len: 0 });
    image.state = Some(st.clone());
    let msg = version_6_only(&image, &pages, "a lease in a version 5 image");
    assert!(msg.contains("format version 5"), "{msg}");
    for (what, start, len) in [("a lease with a length", 36, 1), ("a lease with signal 65", 65, 0)] {
        st.locks.last_mut().unwrap().start = start;
        st.locks.last_mut().unwrap().len = len;
        image.state = Some(st.clone());
        expect_corrupt(&encode(&image, &pages), what);
    }
}

/// Seccomp filters (version 6, an extension) round-trip, are refused in a version 5
/// image, and must be whole instructions within the kernel's bounds.
#[test]
fn seccomp_filters_are_version_6() {
    let (mut image, pages) = sample_v3();
    let allow = [6u8, 0, 0, 0, 0, 0, 0xff, 0x7f].repeat(3);
    image.seccomp = vec![SeccompFilter { flags: 0, insns: allow.clone() }, SeccompFilter { flags: 2, insns: allow[..8].to_vec() }];
    let msg = version_6_only(&image, &pages, "seccomp filters in a version 5 image");
    assert!(msg.contains("extension 3"), "{msg}");
    for (what, insns) in [("a filter without an instruction", vec![]), ("half an instruction", allow[..4].to_vec()), ("4,097 instructions", allow[..8].repeat(4097))] {
        image.seccomp = vec![SeccompFilter { flags: 0, insns }];
        expect_corrupt(&encode(&image, &pages), what);
    }
    image.seccomp = vec![SeccompFilter { flags: 0, insns: allow[..8].repeat(4096) }; 8];
    expect_corrupt(&encode(&image, &pages), "32,800 instructions in all");
}

/// A chain of a full image and two increments merges into the image the last one
/// stands for: each page from the newest image that stored it, inherited pages
/// from older ones, pages nobody stored left out (zero); a broken chain is refused.
#[test]
fn chains_of_increments_merge_into_one_image() {
    let dir = std::env::temp_dir().join(format!("herd-chain-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = |n: u64| 0x10000 + n * PAGE as u64;
    let image = |stored: u64, inc: Option<Increment>| {
        let mut i = image_with(vec![vma(0x10000, 0x20000, VmaKind::Anonymous, stored), vma(0x30000, 0x31000, VmaKind::Vvar, 0)]);
        i.state = Some(ProcessState::default());
        i.increment = inc;
        i
    };
    let file = |name: &str, img: &ProcessImage, pages: &[(u64, Vec<u8>)]| {
        let path = dir.join(name);
        std::fs::write(&path, encode(img, pages)).unwrap();
        std::fs::File::open(path).unwrap()
    };
    // Base: pages 0-7 (A). Increment 1: page 2 (B); 0-1 and 3-7 inherited; page 9 written then
    // emptied: neither. Increment 2: page 4 (C); 0-3 and 5-7 inherited.
    let a = pattern(1, 8);
    let base = file("0", &image(8 * 4096, None), &[(page(0), a.clone())]);
    let inc1 = Increment { id: 11, parent: 10, inherit: vec![(page(0), 2 * 4096), (page(3), 5 * 4096)] };
    let one = file("1", &image(4096, Some(inc1)), &[(page(2), pattern(2, 1))]);
    let inc2 = Increment { id: 12, parent: 11, inherit: vec![(page(0), 4 * 4096), (page(5), 3 * 4096)] };
    let two = file("2", &image(4096, Some(inc2.clone())), &[(page(4), pattern(3, 1))]);
    let (bytes, n) = chain::merge(vec![(10, base.try_clone().unwrap()), (11, one.try_clone().unwrap()), (12, two.try_clone().unwrap())], Vec::new()).unwrap();
    assert_eq!(n, 8 * 4096);
    let d = decode(&bytes).unwrap();
    assert_eq!(d.image.increment, None);
    assert_eq!(d.image.vmas[0].stored_bytes, 8 * 4096);
    let mut want = a.clone();
    want[2 * PAGE..3 * PAGE].copy_from_slice(&pattern(2, 1));
    want[4 * PAGE..5 * PAGE].copy_from_slice(&pattern(3, 1));
    let got: Vec<u8> = d.pages.iter().flat_map(|(_, p)| p.clone()).collect();
    assert_eq!(d.pages.first().map(|p| p.0), Some(page(0)));
    assert_eq!(got, want);
    // A wrong parent, an increment first, a full image in the middle: refused.
    for (what, files) in [
        ("wrong ids", vec![(10, base.try_clone().unwrap()), (12, one.try_clone().unwrap())]),
        ("increment first", vec![(11, one.try_clone().unwrap())]),
        ("full image in the middle", vec![(10, base.try_clone().unwrap()), (11, base.try_clone().unwrap())]),
    ] {
        assert!(matches!(chain::merge(files, Vec::new()), Err(FormatError::Corrupt(_))), "{what} was merged");
    }
    // An increment whose range is outside every anonymous region is refused when read.
    let bad = Increment { inherit: vec![(0x30000, 4096)], ..inc2 };
    expect_corrupt(&encode(&image(4096, Some(bad)), &[(page(4), pattern(3, 1))]), "an increment range in the vvar");
    std::fs::remove_dir_all(&dir).unwrap();
}
