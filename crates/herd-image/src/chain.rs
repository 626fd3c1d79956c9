//! A chain of checkpoints made whole again: a full image, then incremental ones
//! (each with an [`Increment`] naming the one before it), merged into the one
//! image the last of them stands for. The merged image is the last one's process
//! description and pages, where each inherited page is taken from the nearest
//! image before it that stored it (a page no image stored is a zero page, as in
//! any image).
//!
//! The images are read once to index where each one's pages are, then the pages
//! are copied from those places in address order: memory use follows the number
//! of page runs, not their size.

use std::fs::File;
use std::io::{BufReader, Write};
use std::os::unix::fs::FileExt;

use crate::format::{FormatError, ImageReader, ImageWriter, Section, WRITE_CHUNK};
use crate::model::ProcessImage;

/// One image of the chain, read and indexed.
struct Indexed {
    file: File,
    image: ProcessImage,
    /// Its Pages sections: (address, length, offset of the data in the file), ascending.
    pages: Vec<(u64, u64, u64)>,
}

/// Reads a file from its start whatever its descriptor's position (it may be shared).
struct FromStart<'a> {
    file: &'a File,
    pos: u64,
}

impl std::io::Read for FromStart<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn index(file: File) -> Result<Indexed, FormatError> {
    let mut reader = ImageReader::new(BufReader::with_capacity(1 << 16, FromStart { file: &file, pos: 0 }))?;
    let image = match reader.next_section()? {
        Some(Section::Process(p)) => *p,
        _ => return Err(FormatError::Corrupt("image does not start with a process section".into())),
    };
    let mut pages = Vec::new();
    loop {
        match reader.next_section()? {
            Some(Section::Pages { addr, data }) => {
                let len = data.len() as u64;
                pages.push((addr, len, reader.offset() - len));
            }
            Some(Section::End { .. }) => break,
            Some(Section::Process(_)) | None => return Err(FormatError::Truncated("an image of the chain")),
        }
    }
    drop(reader);
    Ok(Indexed { file, image, pages })
}

/// Where the bytes of `[a, b)` come from in image `k` and those before it: runs
/// (address, length, image, offset in its file), ascending; pages no image stored
/// are left out (zero).
fn resolve(chain: &[Indexed], k: usize, a: u64, b: u64, out: &mut Vec<(u64, u64, usize, u64)>) {
    let img = &chain[k];
    let mut holes = Vec::new();
    let mut at = a;
    let first = img.pages.partition_point(|&(p, l, _)| p + l <= a);
    for &(p, l, off) in &img.pages[first..] {
        if p >= b {
            break;
        }
        let (lo, hi) = (p.max(a), (p + l).min(b));
        if lo > at {
            holes.push((at, lo));
        }
        out.push((lo, hi - lo, k, off + (lo - p)));
        at = hi;
    }
    if at < b {
        holes.push((at, b));
    }
    let (Some(inc), true) = (&img.image.increment, k > 0) else { return };
    for (h0, h1) in holes {
        for &(i, l) in &inc.inherit {
            let (lo, hi) = (i.max(h0), (i + l).min(h1));
            if lo < hi {
                resolve(chain, k - 1, lo, hi, out);
            }
        }
    }
}

/// Merges the chain `files` (oldest first, each with the id it was kept under: the
/// first a full image, each other an increment of the one before) into one image
/// written to `out`. Returns `out` and the page bytes written.
pub fn merge<W: Write>(files: Vec<(u64, File)>, out: W) -> Result<(W, u64), FormatError> {
    let mut chain = Vec::with_capacity(files.len());
    let mut ids = Vec::with_capacity(files.len());
    for (id, f) in files {
        chain.push(index(f)?);
        ids.push(id);
    }
    let Some(last) = chain.last() else { return Err(FormatError::Corrupt("an empty chain of checkpoints".into())) };
    for (k, img) in chain.iter().enumerate() {
        match (&img.image.increment, k) {
            (None, 0) => {}
            (Some(_), 0) => return Err(FormatError::Corrupt(format!("checkpoint {} is an increment, and nothing comes before it", ids[0]))),
            (None, _) => return Err(FormatError::Corrupt(format!("checkpoint {} of the chain is not an increment", ids[k]))),
            (Some(inc), _) if inc.parent != ids[k - 1] || inc.id != ids[k] => {
                return Err(FormatError::Corrupt(format!(
                    "checkpoint {} (an increment {} of {}) does not follow checkpoint {}",
                    ids[k], inc.id, inc.parent, ids[k - 1]
                )))
            }
            (Some(_), _) => {}
        }
    }
    let top = chain.len() - 1;
    let mut runs = Vec::new();
    for v in &last.image.vmas {
        resolve(&chain, top, v.start, v.end, &mut runs);
    }
    runs.sort_unstable_by_key(|r| r.0);
    let mut image = last.image.clone();
    image.increment = None;
    for v in &mut image.vmas {
        v.stored_bytes = runs.iter().filter(|r| v.contains(r.0, r.0 + r.1)).map(|r| r.1).sum();
    }
    let mut w = ImageWriter::new(out).map_err(FormatError::Io)?;
    w.write_process(&image).map_err(FormatError::Io)?;
    let mut buf = Vec::new();
    for (addr, len, k, off) in runs {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(WRITE_CHUNK as u64);
            buf.resize(n as usize, 0);
            chain[k].file.read_exact_at(&mut buf, off + done).map_err(FormatError::Io)?;
            w.write_pages(addr + done, &buf).map_err(FormatError::Io)?;
            done += n;
        }
    }
    let bytes = w.page_bytes();
    Ok((w.finish().map_err(FormatError::Io)?, bytes))
}
