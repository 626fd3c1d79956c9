//! The image byte format. See docs/image-format.md for the full description.
//!
//! ```text
//! header:  "HERDIMG\0" | version u32 LE | check u32 LE (0; from version 5, !version)
//! section: kind u32 LE | len u64 LE | crc32 u32 LE | payload[len]
//!          crc32 covers kind, len and payload
//! order:   Process, Pages*, End
//! ```
//!
//! - Process: postcard encoding of [`ProcessImage`] (at most [`MAX_PROCESS_LEN`]),
//!   then, from version 3, extensions: `tag u16 LE | len u32 LE | bytes[len]`
//!   each; [`EXT_STATE`] (postcard of `Option<ProcessState>`) always. A reader
//!   refuses a tag it does not know: what it cannot restore must not be dropped.
//! - Pages: start address u64 LE, then whole pages (at most [`MAX_PAGES_LEN`]),
//!   which must lie inside one VMA of the Process section that has stored
//!   bytes. Pages sections come in ascending address order without overlap,
//!   and a VMA receives no more than its `stored_bytes`.
//! - End: total page bytes u64 LE; must equal the sum of all Pages sections and
//!   of every VMA's `stored_bytes`. A stream without End is truncated.
//!
//! The format is a stream: a writer never seeks, so the same bytes go to a file
//! or a socket.

use std::io::{self, Read, Write};

use crate::model::{Increment, ProcessImage, ProcessState, SeccompFilter};

pub const MAGIC: [u8; 8] = *b"HERDIMG\0";
/// The version this herd writes.
pub const FORMAT_VERSION: u32 = 6;
/// The oldest version this herd reads (version 2 has no extensions).
pub const MIN_FORMAT_VERSION: u32 = 2;
/// Process-section extension: [`ProcessState`].
pub const EXT_STATE: u16 = 1;
/// Process-section extension (version 4): [`crate::model::Increment`], in an
/// incremental checkpoint only.
pub const EXT_INCREMENT: u16 = 2;
/// Process-section extension (version 6): the process's seccomp filters
/// (`Vec<SeccompFilter>`), only when it has some.
pub const EXT_SECCOMP: u16 = 3;
/// Instructions of one seccomp filter, and of a whole chain (each filter counting
/// 4 more), as the kernel bounds them (BPF_MAXINSNS, MAX_INSNS_PER_PATH).
pub const MAX_FILTER_INSNS: usize = 4096;
pub const MAX_CHAIN_INSNS: usize = 32768;
pub const PAGE_SIZE: u64 = 4096;
/// Largest Process section a reader accepts.
pub const MAX_PROCESS_LEN: u64 = 16 << 20;
/// Largest Pages section a reader accepts (payload, including the address).
pub const MAX_PAGES_LEN: u64 = (64 << 20) + 8;
/// Pages sections a writer produces are cut at this many bytes.
pub const WRITE_CHUNK: usize = 8 << 20;

/// The header's word after the version: 0 up to version 4; from version 5 the
/// version's complement, so that a version damaged into another readable one (5 and
/// 4 differ in one bit) is noticed.
pub fn header_check(version: u32) -> u32 {
    if version >= 5 {
        !version
    } else {
        0
    }
}

const KIND_PROCESS: u32 = 1;
const KIND_PAGES: u32 = 2;
const KIND_END: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not a herd image (bad magic number)")]
    BadMagic,
    #[error("image format version {found} is not supported (this herd reads versions {MIN_FORMAT_VERSION} to {FORMAT_VERSION}{})", if *.found > FORMAT_VERSION { "; it was made by a newer herd" } else { "" })]
    Version { found: u32 },
    #[error("image is truncated: it ends inside {0}")]
    Truncated(&'static str),
    #[error("image is corrupt: checksum mismatch in {kind} section at byte {offset}")]
    Checksum { kind: &'static str, offset: u64 },
    #[error("image is corrupt: {0}")]
    Corrupt(String),
    #[error("image read failed")]
    Io(#[source] io::Error),
}

fn truncated_or_io(e: io::Error, what: &'static str) -> FormatError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        FormatError::Truncated(what)
    } else {
        FormatError::Io(e)
    }
}

/// Whether `x` is a multiple of [`PAGE_SIZE`] (a power of two).
fn page_aligned(x: u64) -> bool {
    x & (PAGE_SIZE - 1) == 0
}

fn kind_name(kind: u32) -> &'static str {
    match kind {
        KIND_PROCESS => "process",
        KIND_PAGES => "pages",
        KIND_END => "end",
        _ => "unknown",
    }
}

fn section_crc(kind: u32, len: u64, parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&kind.to_le_bytes());
    h.update(&len.to_le_bytes());
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// Writes an image as a stream.
pub struct ImageWriter<W: Write> {
    out: W,
    page_bytes: u64,
    wrote_process: bool,
}

impl<W: Write> ImageWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(&MAGIC)?;
        out.write_all(&FORMAT_VERSION.to_le_bytes())?;
        out.write_all(&header_check(FORMAT_VERSION).to_le_bytes())?;
        Ok(Self { out, page_bytes: 0, wrote_process: false })
    }

    fn section(&mut self, kind: u32, parts: &[&[u8]]) -> io::Result<()> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let crc = section_crc(kind, len, parts);
        self.out.write_all(&kind.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&crc.to_le_bytes())?;
        for p in parts {
            self.out.write_all(p)?;
        }
        Ok(())
    }

    pub fn write_process(&mut self, image: &ProcessImage) -> io::Result<()> {
        let mut bytes = postcard::to_stdvec(image).map_err(io::Error::other)?;
        // Always there in version 3 (as `None` when not captured), so that a
        // version field damaged from 3 to 2 or back does not go unnoticed.
        let ext = postcard::to_stdvec(&image.state).map_err(io::Error::other)?;
        bytes.extend_from_slice(&EXT_STATE.to_le_bytes());
        bytes.extend_from_slice(&(ext.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&ext);
        if let Some(inc) = &image.increment {
            let ext = postcard::to_stdvec(inc).map_err(io::Error::other)?;
            bytes.extend_from_slice(&EXT_INCREMENT.to_le_bytes());
            bytes.extend_from_slice(&(ext.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&ext);
        }
        if !image.seccomp.is_empty() {
            let ext = postcard::to_stdvec(&image.seccomp).map_err(io::Error::other)?;
            bytes.extend_from_slice(&EXT_SECCOMP.to_le_bytes());
            bytes.extend_from_slice(&(ext.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&ext);
        }
        self.section(KIND_PROCESS, &[&bytes])?;
        self.wrote_process = true;
        Ok(())
    }

    /// Writes the contents of whole pages starting at `addr`, cut into
    /// sections of at most [`WRITE_CHUNK`] bytes.
    pub fn write_pages(&mut self, addr: u64, data: &[u8]) -> io::Result<()> {
        assert!(self.wrote_process, "pages before process section");
        assert!(page_aligned(addr) && page_aligned(data.len() as u64));
        for (i, chunk) in data.chunks(WRITE_CHUNK).enumerate() {
            let a = addr + (i * WRITE_CHUNK) as u64;
            self.section(KIND_PAGES, &[&a.to_le_bytes(), chunk])?;
            self.page_bytes += chunk.len() as u64;
        }
        Ok(())
    }

    /// Writes the End section and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        let total = self.page_bytes;
        self.section(KIND_END, &[&total.to_le_bytes()])?;
        self.out.flush()?;
        Ok(self.out)
    }

    pub fn page_bytes(&self) -> u64 {
        self.page_bytes
    }
}

/// MADV_* values a restore gives a region again (DONTFORK, MERGEABLE, HUGEPAGE,
/// NOHUGEPAGE, DONTDUMP, WIPEONFORK, RANDOM, SEQUENTIAL): nothing else, least of
/// all advice that takes pages offline.
const ADVICE_ALLOWED: [i32; 8] = [10, 12, 14, 15, 16, 18, 1, 2];

/// An increment's ranges: ascending, disjoint, page-aligned, each inside one private
/// anonymous region of the image.
fn check_increment(image: &ProcessImage, inc: &Increment) -> Result<(), FormatError> {
    use crate::model::VmaKind;
    let mut prev = 0u64;
    for &(at, len) in &inc.inherit {
        let end = at.checked_add(len).filter(|_| len > 0 && page_aligned(at) && page_aligned(len) && at >= prev);
        let Some(end) = end else {
            return Err(FormatError::Corrupt(format!("increment: range {at:#x}+{len:#x} is empty, misaligned or out of order")));
        };
        let inside = image.vmas.iter().any(|v| v.contains(at, end) && !v.shared && matches!(v.kind, VmaKind::Anonymous | VmaKind::Heap | VmaKind::Stack));
        if !inside {
            return Err(FormatError::Corrupt(format!("increment: range {at:#x}-{end:#x} is not inside one private anonymous region")));
        }
        prev = end;
    }
    if inc.id == inc.parent {
        return Err(FormatError::Corrupt(format!("increment {} names itself as its parent", inc.id)));
    }
    Ok(())
}

/// Bounds of the process state a restore acts on.
fn check_state(st: &ProcessState) -> Result<(), FormatError> {
    let bad = |why: String| Err(FormatError::Corrupt(format!("process state: {why}")));
    for r in &st.regions {
        if r.start >= r.end || !page_aligned(r.start) || !page_aligned(r.end) {
            return bad(format!("region {:#x}-{:#x}", r.start, r.end));
        }
        if let Some(a) = r.advice.iter().find(|a| !ADVICE_ALLOWED.contains(a)) {
            return bad(format!("advice {a} for region {:#x}", r.start));
        }
        for &(at, len) in &r.guards {
            if len == 0 || !page_aligned(at) || !page_aligned(len) || at < r.start || at.checked_add(len).is_none_or(|e| e > r.end) {
                return bad(format!("guard pages {at:#x}+{len:#x} outside region {:#x}-{:#x}", r.start, r.end));
            }
        }
    }
    if let Some(t) = st.itimers.iter().find(|t| !(0..=2).contains(&t.which)) {
        return bad(format!("interval timer {}", t.which));
    }
    if let Some(l) = st.locks.iter().find(|l| l.start > i64::MAX as u64 || l.len > i64::MAX as u64) {
        return bad(format!("a lock at {} of {} bytes", l.start, l.len));
    }
    if let Some(l) = st.locks.iter().find(|l| l.kind == crate::model::LockKind::Lease && (l.len != 0 || l.start > 64)) {
        return bad(format!("a lease at fd {} with signal {} and length {}", l.fd, l.start, l.len));
    }
    Ok(())
}

/// What the extensions after the process description hold.
type Extensions = (Option<ProcessState>, Option<Increment>, Vec<SeccompFilter>);

/// The extensions after the process description (version 3): the state
/// extension exactly once, from version 4 an increment at most once, from version
/// 6 seccomp filters at most once; an unknown one is refused, not skipped.
fn read_extensions(mut rest: &[u8], version: u32) -> Result<Extensions, FormatError> {
    let mut state: Option<Option<ProcessState>> = None;
    let mut increment: Option<Increment> = None;
    let mut seccomp: Option<Vec<SeccompFilter>> = None;
    while !rest.is_empty() {
        if rest.len() < 6 {
            return Err(FormatError::Corrupt(format!(
                "process section has {} bytes after the process description, too few for an extension",
                rest.len()
            )));
        }
        let tag = u16::from_le_bytes(rest[0..2].try_into().expect("2 bytes"));
        let len = u32::from_le_bytes(rest[2..6].try_into().expect("4 bytes")) as usize;
        let body = rest
            .get(6..6 + len)
            .ok_or_else(|| FormatError::Corrupt(format!("extension {tag} claims {len} bytes; {} are left", rest.len() - 6)))?;
        match tag {
            EXT_STATE if state.is_none() => {
                let (s, extra): (Option<ProcessState>, &[u8]) =
                    postcard::take_from_bytes(body).map_err(|e| FormatError::Corrupt(format!("process state extension: {e}")))?;
                if !extra.is_empty() {
                    return Err(FormatError::Corrupt(format!("process state extension has {} bytes after it", extra.len())));
                }
                state = Some(s);
            }
            EXT_STATE => return Err(FormatError::Corrupt("second process state extension".into())),
            EXT_INCREMENT if version >= 4 && increment.is_none() => {
                let (inc, extra): (Increment, &[u8]) =
                    postcard::take_from_bytes(body).map_err(|e| FormatError::Corrupt(format!("increment extension: {e}")))?;
                if !extra.is_empty() {
                    return Err(FormatError::Corrupt(format!("increment extension has {} bytes after it", extra.len())));
                }
                increment = Some(inc);
            }
            EXT_SECCOMP if version >= 6 && seccomp.is_none() => {
                let (filters, extra): (Vec<SeccompFilter>, &[u8]) =
                    postcard::take_from_bytes(body).map_err(|e| FormatError::Corrupt(format!("seccomp extension: {e}")))?;
                if !extra.is_empty() {
                    return Err(FormatError::Corrupt(format!("seccomp extension has {} bytes after it", extra.len())));
                }
                check_seccomp(&filters)?;
                seccomp = Some(filters);
            }
            _ => {
                return Err(FormatError::Corrupt(format!(
                    "the image holds state this herd does not know (extension {tag}); it was made by a newer herd"
                )))
            }
        }
        rest = &rest[6 + len..];
    }
    let state = state.ok_or_else(|| FormatError::Corrupt("the process section lacks its state extension (version 3 has one)".into()))?;
    Ok((state, increment, seccomp.unwrap_or_default()))
}

/// A chain of seccomp filters a kernel would take: none empty, each whole
/// instructions, within the kernel's bounds.
fn check_seccomp(filters: &[SeccompFilter]) -> Result<(), FormatError> {
    let bad = |why: String| Err(FormatError::Corrupt(format!("seccomp filters: {why}")));
    if filters.is_empty() {
        return bad("an extension without a filter".into());
    }
    let mut total = 0usize;
    for (i, f) in filters.iter().enumerate() {
        let n = f.insns.len() / 8;
        if f.insns.len() % 8 != 0 || n == 0 || n > MAX_FILTER_INSNS {
            return bad(format!("filter {i} is {} bytes (1 to {MAX_FILTER_INSNS} instructions of 8 bytes)", f.insns.len()));
        }
        total += n + 4;
    }
    if total > MAX_CHAIN_INSNS {
        return bad(format!("{total} instructions in all (at most {MAX_CHAIN_INSNS})"));
    }
    Ok(())
}

/// A section that owns its bytes (see [`ImageReader::next_owned`]).
#[derive(Debug)]
pub enum OwnedSection {
    Process(Box<ProcessImage>),
    /// `buf[8..]` are the pages; `buf[..8]` is the address, as on the wire.
    Pages { addr: u64, buf: Vec<u8> },
    End { page_bytes: u64 },
}

impl OwnedSection {
    /// The page bytes of a Pages section (empty for other kinds).
    pub fn pages(&self) -> &[u8] {
        match self {
            OwnedSection::Pages { buf, .. } => &buf[8..],
            _ => &[],
        }
    }
}

/// One decoded section. `Pages` borrows the reader's buffer.
#[derive(Debug)]
pub enum Section<'a> {
    Process(Box<ProcessImage>),
    Pages { addr: u64, data: &'a [u8] },
    End { page_bytes: u64 },
}

/// A decoded section that does not borrow the reader (see `next_section`).
enum Decoded {
    Process(Box<ProcessImage>),
    Pages { addr: u64 },
    End { page_bytes: u64 },
}

/// A section's header, its kind and length checked.
struct Header {
    kind: u32,
    len: u64,
    crc: u32,
    /// Where the section starts in the stream.
    offset: u64,
}

impl Header {
    fn verify(&self, payload: &[u8]) -> Result<(), FormatError> {
        if section_crc(self.kind, self.len, &[payload]) != self.crc {
            return Err(FormatError::Checksum { kind: kind_name(self.kind), offset: self.offset });
        }
        Ok(())
    }
}

/// An image held in memory (a mapped file), from which Pages sections can be taken in
/// place, without copying ([`ImageReader::next_in_place`]).
pub trait InPlace<'a>: Read {
    /// The next `n` bytes, consumed; None if fewer are left.
    fn take_in_place(&mut self, n: usize) -> Option<&'a [u8]>;
}

impl<'a> InPlace<'a> for &'a [u8] {
    fn take_in_place(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.split_at_checked(n)?;
        *self = rest;
        Some(taken)
    }
}

impl<'a> InPlace<'a> for &mut &'a [u8] {
    fn take_in_place(&mut self, n: usize) -> Option<&'a [u8]> {
        (**self).take_in_place(n)
    }
}

/// A Pages section read in place ([`ImageReader::next_in_place`]): checked against the
/// image's regions like any, but its checksum is left to whoever uses its bytes (on
/// another thread, say): [`PagesInPlace::verify`] before [`PagesInPlace::data`] is
/// trusted.
#[derive(Debug)]
pub struct PagesInPlace<'a> {
    pub addr: u64,
    payload: &'a [u8],
    crc: u32,
    offset: u64,
}

impl<'a> PagesInPlace<'a> {
    /// The page bytes (not verified by this call).
    pub fn data(&self) -> &'a [u8] {
        &self.payload[8..]
    }

    /// Whether the section's checksum is right.
    pub fn verify(&self) -> Result<(), FormatError> {
        Header { kind: KIND_PAGES, len: self.payload.len() as u64, crc: self.crc, offset: self.offset }.verify(self.payload)
    }
}

/// A section of an image held in memory ([`ImageReader::next_in_place`]).
#[derive(Debug)]
pub enum InPlaceSection<'a> {
    Process(Box<ProcessImage>),
    Pages(PagesInPlace<'a>),
    End { page_bytes: u64 },
}

impl<'a, R: InPlace<'a>> ImageReader<R> {
    /// Like [`ImageReader::next_section`] for an image held in memory, but a Pages
    /// section is not copied: its bytes are the input's, their checksum for the caller
    /// to verify ([`PagesInPlace::verify`]). Everything else is checked as by
    /// `next_section`.
    pub fn next_in_place(&mut self) -> Result<Option<InPlaceSection<'a>>, FormatError> {
        if self.failed {
            return Err(FormatError::Corrupt(
                "the image reader already failed; no further sections can be read".into(),
            ));
        }
        let next = self.in_place();
        if next.is_err() {
            self.failed = true;
        }
        next
    }

    fn in_place(&mut self) -> Result<Option<InPlaceSection<'a>>, FormatError> {
        let Some(h) = self.header()? else { return Ok(None) };
        if h.kind != KIND_PAGES {
            return Ok(self.read_decode(&h)?.map(|d| match d {
                Decoded::Process(p) => InPlaceSection::Process(p),
                Decoded::End { page_bytes } => InPlaceSection::End { page_bytes },
                Decoded::Pages { .. } => unreachable!("not a pages section"),
            }));
        }
        let payload = self.input.take_in_place(h.len as usize).ok_or(FormatError::Truncated("a pages section"))?;
        self.offset += 16 + h.len;
        match self.decode(&h, payload)? {
            Some(Decoded::Pages { addr }) => Ok(Some(InPlaceSection::Pages(PagesInPlace { addr, payload, crc: h.crc, offset: h.offset }))),
            _ => unreachable!("a pages section decodes as pages"),
        }
    }
}

/// A VMA that has stored pages, and how many of them the stream has carried.
#[derive(Clone, Copy, Debug)]
struct StoredRange {
    start: u64,
    end: u64,
    declared: u64,
    seen: u64,
}

/// Payloads are read in steps that double from this size, so a section header
/// claiming a large length costs memory only as its bytes actually arrive.
const READ_STEP: usize = 64 << 10;

/// Reads and validates an image stream section by section.
pub struct ImageReader<R: Read> {
    /// Buffers given back by the consumer of [`OwnedSection::Pages`].
    spare: Vec<Vec<u8>>,
    input: R,
    offset: u64,
    buf: Vec<u8>,
    /// VMAs that have stored pages, sorted by start.
    stored_ranges: Vec<StoredRange>,
    expected_page_bytes: u64,
    page_bytes: u64,
    /// Pages sections must come in ascending address order without overlap:
    /// the next one may not start below this address.
    next_page_addr: u64,
    seen_process: bool,
    seen_end: bool,
    failed: bool,
    version: u32,
}

impl<R: Read> ImageReader<R> {
    pub fn new(mut input: R) -> Result<Self, FormatError> {
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                FormatError::BadMagic
            } else {
                FormatError::Io(e)
            }
        })?;
        if magic != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let mut rest = [0u8; 8];
        input
            .read_exact(&mut rest)
            .map_err(|e| truncated_or_io(e, "the header"))?;
        let version = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes"));
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(FormatError::Version { found: version });
        }
        // The header is not checksummed; the word after the version must be exactly
        // what that version puts there so that no bit of the header can change unnoticed.
        let reserved = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if reserved != header_check(version) {
            return Err(FormatError::Corrupt(format!(
                "reserved header field is {reserved:#x}, expected {:#x} in version {version}",
                header_check(version)
            )));
        }
        Ok(Self::over(input, version))
    }

    /// A reader positioned just after a header that has been checked.
    fn over(input: R, version: u32) -> Self {
        Self {
            spare: Vec::new(),
            input,
            offset: 16,
            buf: Vec::new(),
            stored_ranges: Vec::new(),
            expected_page_bytes: 0,
            page_bytes: 0,
            next_page_addr: 0,
            seen_process: false,
            seen_end: false,
            failed: false,
            version,
        }
    }

    /// The format version of the image being read.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next section, or `None` after End. Errors are final: once a call
    /// has failed, every later call fails too.
    pub fn next_section(&mut self) -> Result<Option<Section<'_>>, FormatError> {
        if self.failed {
            return Err(FormatError::Corrupt(
                "the image reader already failed; no further sections can be read".into(),
            ));
        }
        match self.advance() {
            Ok(None) => Ok(None),
            Ok(Some(Decoded::Process(image))) => Ok(Some(Section::Process(image))),
            Ok(Some(Decoded::Pages { addr })) => Ok(Some(Section::Pages { addr, data: &self.buf[8..] })),
            Ok(Some(Decoded::End { page_bytes })) => Ok(Some(Section::End { page_bytes })),
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// Like [`ImageReader::next_section`], but a Pages section hands over the
    /// reader's buffer, so it can travel to another thread. Give buffers back
    /// with [`ImageReader::recycle`] so that the reader does not allocate.
    pub fn next_owned(&mut self) -> Result<Option<OwnedSection>, FormatError> {
        let addr = match self.next_section()? {
            None => return Ok(None),
            Some(Section::Process(p)) => return Ok(Some(OwnedSection::Process(p))),
            Some(Section::End { page_bytes }) => return Ok(Some(OwnedSection::End { page_bytes })),
            Some(Section::Pages { addr, .. }) => addr,
        };
        let spare = self.spare.pop().unwrap_or_default();
        let buf = std::mem::replace(&mut self.buf, spare);
        Ok(Some(OwnedSection::Pages { addr, buf }))
    }

    /// Returns a buffer handed out by [`ImageReader::next_owned`] for reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < 4 {
            self.spare.push(buf);
        }
    }

    /// Reads exactly `len` payload bytes into `buf`, growing it only as data
    /// arrives (never by more than what has arrived plus [`READ_STEP`]). The bytes a
    /// recycled buffer already holds are read over, not zeroed first.
    fn read_payload(&mut self, len: usize, name: &'static str) -> Result<(), FormatError> {
        let mut have = 0;
        while have < len {
            let step = (len - have).min(have.max(READ_STEP));
            if self.buf.len() < have + step {
                self.buf.truncate(have);
                self.buf.reserve_exact(step);
                self.buf.resize(have + step, 0);
            }
            self.input
                .read_exact(&mut self.buf[have..have + step])
                .map_err(|e| truncated_or_io(e, name))?;
            have += step;
        }
        self.buf.truncate(len);
        Ok(())
    }

    fn advance(&mut self) -> Result<Option<Decoded>, FormatError> {
        let Some(h) = self.header()? else { return Ok(None) };
        self.read_decode(&h)
    }

    /// Reads the payload of section `h` into the buffer, verifies and decodes it.
    fn read_decode(&mut self, h: &Header) -> Result<Option<Decoded>, FormatError> {
        self.read_payload(h.len as usize, kind_name(h.kind))?;
        self.offset += 16 + h.len;
        h.verify(&self.buf)?;
        let payload = std::mem::take(&mut self.buf);
        let decoded = self.decode(h, &payload);
        self.buf = payload;
        decoded
    }

    /// The next section's header, checked (a known kind, a length within its limit);
    /// None after End.
    fn header(&mut self) -> Result<Option<Header>, FormatError> {
        if self.seen_end {
            return Ok(None);
        }
        let offset = self.offset;
        let mut hdr = [0u8; 16];
        self.input
            .read_exact(&mut hdr)
            .map_err(|e| truncated_or_io(e, "a section header"))?;
        let kind = u32::from_le_bytes(hdr[0..4].try_into().expect("4 bytes"));
        let len = u64::from_le_bytes(hdr[4..12].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(hdr[12..16].try_into().expect("4 bytes"));
        let name = kind_name(kind);
        let max = match kind {
            KIND_PROCESS => MAX_PROCESS_LEN,
            KIND_PAGES => MAX_PAGES_LEN,
            KIND_END => 8,
            _ => {
                return Err(FormatError::Corrupt(format!(
                    "unknown section kind {kind} at byte {offset}"
                )))
            }
        };
        if len > max {
            return Err(FormatError::Corrupt(format!(
                "{name} section at byte {offset} claims {len} bytes (limit {max})"
            )));
        }
        // `len` is bounded above (at most 64 MiB + 8), so it fits a usize.
        Ok(Some(Header { kind, len, crc, offset }))
    }

    /// Decodes section `h` from its `payload` (checksum verified, or, for pages read in
    /// place, to be verified by the caller) and checks it against what came before.
    fn decode(&mut self, h: &Header, payload: &[u8]) -> Result<Option<Decoded>, FormatError> {
        let (kind, len, section_offset) = (h.kind, h.len, h.offset);
        match kind {
            KIND_PROCESS => {
                if self.seen_process {
                    return Err(FormatError::Corrupt("second process section".into()));
                }
                let (mut image, rest): (ProcessImage, &[u8]) = postcard::take_from_bytes(payload)
                    .map_err(|e| FormatError::Corrupt(format!("process section: {e}")))?;
                if self.version < 3 && !rest.is_empty() {
                    return Err(FormatError::Corrupt(format!(
                        "process section has {} bytes after the process description",
                        rest.len()
                    )));
                }
                if self.version >= 3 {
                    (image.state, image.increment, image.seccomp) = read_extensions(rest, self.version)?;
                }
                self.accept_process(&image)?;
                self.seen_process = true;
                Ok(Some(Decoded::Process(Box::new(image))))
            }
            KIND_PAGES => {
                if !self.seen_process {
                    return Err(FormatError::Corrupt("pages before the process section".into()));
                }
                if len < 8 + PAGE_SIZE || !page_aligned(len - 8) {
                    return Err(FormatError::Corrupt(format!(
                        "pages section at byte {section_offset} is not whole pages ({len} bytes)"
                    )));
                }
                let n = len - 8;
                let addr = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
                let end = addr.checked_add(n).ok_or_else(|| {
                    FormatError::Corrupt(format!("pages at {addr:#x} overflow the address space"))
                })?;
                if !page_aligned(addr) {
                    return Err(FormatError::Corrupt(format!("pages at {addr:#x} are not page aligned")));
                }
                if addr < self.next_page_addr {
                    return Err(FormatError::Corrupt(format!(
                        "pages {addr:#x}-{end:#x} are out of order or overlap earlier pages (next free address {:#x})",
                        self.next_page_addr
                    )));
                }
                let Some(i) = self.stored_vma(addr, end) else {
                    return Err(FormatError::Corrupt(format!(
                        "pages {addr:#x}-{end:#x} lie outside every stored memory region"
                    )));
                };
                let r = &mut self.stored_ranges[i];
                match r.seen.checked_add(n) {
                    Some(seen) if seen <= r.declared => r.seen = seen,
                    _ => {
                        return Err(FormatError::Corrupt(format!(
                            "memory region {:#x}-{:#x} gets more page data than its {} stored bytes",
                            r.start, r.end, r.declared
                        )))
                    }
                }
                // Cannot overflow: every counted byte is a distinct address.
                self.page_bytes += n;
                self.next_page_addr = end;
                Ok(Some(Decoded::Pages { addr }))
            }
            _ => {
                if !self.seen_process {
                    return Err(FormatError::Corrupt("end before the process section".into()));
                }
                let total: [u8; 8] = payload
                    .try_into()
                    .map_err(|_| FormatError::Corrupt(format!("end section is {len} bytes, expected 8")))?;
                let total = u64::from_le_bytes(total);
                if total != self.page_bytes || total != self.expected_page_bytes {
                    return Err(FormatError::Corrupt(format!(
                        "page byte count mismatch: end says {total}, sections hold {}, regions declare {}",
                        self.page_bytes, self.expected_page_bytes
                    )));
                }
                self.seen_end = true;
                Ok(Some(Decoded::End { page_bytes: total }))
            }
        }
    }

    fn accept_process(&mut self, image: &ProcessImage) -> Result<(), FormatError> {
        use crate::model::FileKind;
        if self.version < 3 {
            // Kinds added in version 3 cannot appear in an older image.
            if let Some(f) = image.files.iter().find(|f| !matches!(f.kind, FileKind::Regular { .. } | FileKind::Device { .. } | FileKind::Inherited { .. })) {
                return Err(FormatError::Corrupt(format!("fd {} has a kind that format version {} does not have", f.fd, self.version)));
            }
        }
        for v in &image.vmas {
            match v.kind {
                crate::model::VmaKind::Memory { .. } if self.version < 4 => {
                    return Err(FormatError::Corrupt(format!("memory region {:#x}-{:#x} has a kind that format version {} does not have", v.start, v.end, self.version)));
                }
                crate::model::VmaKind::AtHome { .. } if self.version < 5 => {
                    return Err(FormatError::Corrupt(format!("region {:#x}-{:#x} is kept at home, which format version {} does not have", v.start, v.end, self.version)));
                }
                crate::model::VmaKind::AtHome { .. } if v.stored_bytes != 0 => {
                    return Err(FormatError::Corrupt(format!("region {:#x}-{:#x} is kept at home but stores {} bytes", v.start, v.end, v.stored_bytes)));
                }
                crate::model::VmaKind::Memory { offset, .. } if !page_aligned(offset) || offset.checked_add(v.len()).is_none() => {
                    return Err(FormatError::Corrupt(format!("memory region {:#x}-{:#x} maps a memory object from byte {offset}", v.start, v.end)));
                }
                _ => {}
            }
        }
        crate::model::check_files(&image.files).map_err(|why| FormatError::Corrupt(format!("open files: {why}")))?;
        if let Some(st) = &image.state {
            if self.version < 6 && st.locks.iter().any(|l| l.kind == crate::model::LockKind::Lease) {
                return Err(FormatError::Corrupt(format!("a lease, which format version {} does not have", self.version)));
            }
            check_state(st)?;
        }
        let mut ranges = Vec::new();
        let mut expected: u64 = 0;
        let mut prev_end = 0u64;
        for v in &image.vmas {
            if !page_aligned(v.start) || !page_aligned(v.end) || v.start >= v.end || v.start < prev_end {
                return Err(FormatError::Corrupt(format!(
                    "memory region {:#x}-{:#x} is misaligned, empty or out of order",
                    v.start, v.end
                )));
            }
            if v.stored_bytes > v.len() || !page_aligned(v.stored_bytes) {
                return Err(FormatError::Corrupt(format!(
                    "memory region {:#x}-{:#x} claims {} stored bytes",
                    v.start, v.end, v.stored_bytes
                )));
            }
            prev_end = v.end;
            // Cannot overflow: the regions are disjoint and stored_bytes <= len.
            expected += v.stored_bytes;
            if v.stored_bytes > 0 {
                ranges.push(StoredRange { start: v.start, end: v.end, declared: v.stored_bytes, seen: 0 });
            }
        }
        if image.regs.gp.len() != 27 {
            return Err(FormatError::Corrupt(format!(
                "register set has {} words, expected 27",
                image.regs.gp.len()
            )));
        }
        for t in &image.threads {
            if t.tid <= 0 {
                return Err(FormatError::Corrupt(format!("thread id {} is not a thread id", t.tid)));
            }
            if t.regs.gp.len() != 27 {
                return Err(FormatError::Corrupt(format!(
                    "register set of thread {} has {} words, expected 27",
                    t.tid,
                    t.regs.gp.len()
                )));
            }
            if t.pending.iter().any(|p| p.shared) {
                return Err(FormatError::Corrupt(format!("thread {} holds a process-wide pending signal", t.tid)));
            }
        }
        if let Some(inc) = &image.increment {
            check_increment(image, inc)?;
        }
        self.stored_ranges = ranges;
        self.expected_page_bytes = expected;
        Ok(())
    }

    /// Index of the stored VMA holding all of `start..end`.
    fn stored_vma(&self, start: u64, end: u64) -> Option<usize> {
        let i = self.stored_ranges.partition_point(|r| r.start <= start).checked_sub(1)?;
        let r = &self.stored_ranges[i];
        (r.start <= start && end <= r.end).then_some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader_over(bytes: &[u8]) -> ImageReader<&[u8]> {
        ImageReader::over(bytes, FORMAT_VERSION)
    }

    #[test]
    fn checksum_covers_kind_length_and_payload() {
        let base = section_crc(KIND_PAGES, 3, &[b"abc"]);
        assert_ne!(base, section_crc(KIND_END, 3, &[b"abc"]));
        assert_ne!(base, section_crc(KIND_PAGES, 4, &[b"abc"]));
        assert_ne!(base, section_crc(KIND_PAGES, 3, &[b"abd"]));
        // Split payloads checksum like the joined payload.
        assert_eq!(base, section_crc(KIND_PAGES, 3, &[b"a", b"", b"bc"]));
        let mut h = crc32fast::Hasher::new();
        h.update(&2u32.to_le_bytes());
        h.update(&3u64.to_le_bytes());
        h.update(b"abc");
        assert_eq!(base, h.finalize());
    }

    #[test]
    fn kind_names() {
        assert_eq!(kind_name(KIND_PROCESS), "process");
        assert_eq!(kind_name(KIND_PAGES), "pages");
        assert_eq!(kind_name(KIND_END), "end");
        assert_eq!(kind_name(0), "unknown");
    }

    #[test]
    fn read_payload_reads_exactly_and_grows_with_the_data() {
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let mut r = reader_over(&data);
        r.read_payload(200_000, "pages").unwrap();
        assert_eq!(r.buf, data[..200_000]);
        assert_eq!(r.buf.capacity(), 200_000);
        r.read_payload(100_000, "pages").unwrap();
        assert_eq!(r.buf, data[200_000..]);
        r.read_payload(0, "end").unwrap();
        assert!(r.buf.is_empty());
        assert!(matches!(r.read_payload(1, "end"), Err(FormatError::Truncated("end"))));

        // A claim far beyond what arrives: the buffer stays near what arrived.
        let mut r = reader_over(&data[..10]);
        assert!(matches!(r.read_payload(MAX_PAGES_LEN as usize, "pages"), Err(FormatError::Truncated("pages"))));
        assert!(r.buf.capacity() <= READ_STEP, "{}", r.buf.capacity());
        let mut r = reader_over(&data);
        assert!(r.read_payload(MAX_PAGES_LEN as usize, "pages").is_err());
        assert!(r.buf.capacity() < 2 * data.len() + READ_STEP, "{}", r.buf.capacity());
    }

    #[test]
    fn stored_vma_lookup() {
        let mut r = reader_over(b"");
        let range = |start, end| StoredRange { start, end, declared: 0x1000, seen: 0 };
        r.stored_ranges = vec![range(0x1000, 0x3000), range(0x3000, 0x4000), range(0x8000, 0x9000)];
        assert_eq!(r.stored_vma(0x1000, 0x2000), Some(0));
        assert_eq!(r.stored_vma(0x1000, 0x3000), Some(0));
        assert_eq!(r.stored_vma(0x2000, 0x3000), Some(0));
        assert_eq!(r.stored_vma(0x3000, 0x4000), Some(1));
        assert_eq!(r.stored_vma(0x8000, 0x9000), Some(2));
        // Across two adjacent regions: refused, a section lies in one region.
        assert_eq!(r.stored_vma(0x2000, 0x4000), None);
        assert_eq!(r.stored_vma(0x0, 0x1000), None);
        assert_eq!(r.stored_vma(0x4000, 0x5000), None);
        assert_eq!(r.stored_vma(0x8000, 0xa000), None);
        assert_eq!(r.stored_vma(0x9000, 0xa000), None);
        r.stored_ranges.clear();
        assert_eq!(r.stored_vma(0x1000, 0x2000), None);
    }

    #[test]
    fn writer_header_and_end() {
        let out = ImageWriter::new(Vec::new()).unwrap();
        assert_eq!(out.page_bytes(), 0);
        let bytes = out.finish().unwrap();
        assert_eq!(&bytes[..8], &MAGIC);
        assert_eq!(bytes[8..12], FORMAT_VERSION.to_le_bytes());
        assert_eq!(bytes[12..16], (!FORMAT_VERSION).to_le_bytes());
        assert_eq!(bytes[16..20], KIND_END.to_le_bytes());
        assert_eq!(bytes[20..28], 8u64.to_le_bytes());
        assert_eq!(bytes[28..32], section_crc(KIND_END, 8, &[&0u64.to_le_bytes()]).to_le_bytes());
        assert_eq!(bytes[32..], 0u64.to_le_bytes());
        // An End without a Process section is not an image.
        let mut r = ImageReader::new(&bytes[..]).unwrap();
        assert!(matches!(r.next_section(), Err(FormatError::Corrupt(_))));
    }

    #[test]
    fn end_shorter_than_eight_bytes_is_corrupt_not_a_panic() {
        for n in 0..8usize {
            let payload = vec![0u8; n];
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&KIND_END.to_le_bytes());
            bytes.extend_from_slice(&(n as u64).to_le_bytes());
            bytes.extend_from_slice(&section_crc(KIND_END, n as u64, &[&payload]).to_le_bytes());
            bytes.extend_from_slice(&payload);
            let mut r = reader_over(&bytes);
            r.seen_process = true;
            assert!(matches!(r.next_section(), Err(FormatError::Corrupt(_))), "{n} bytes");
        }
    }
}
