//! Plain length-prefixed frames for the local control socket (a Unix socket
//! between `herd` and `herdd`, protected by file permissions, hence no
//! encryption): a `u32` big-endian length, then that many payload bytes.
//!
//! A reader is given a maximum and refuses a larger declared length before
//! reading or allocating anything for it; below the maximum, memory grows
//! with the bytes that actually arrive, never with what a header claims.

use std::io::{self, Read, Write};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes of the length prefix.
pub const LENGTH_LEN: usize = 4;
/// A sensible maximum for control messages.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// Reads grow the buffer by at most this much ahead of the data.
const INITIAL_CAPACITY: usize = 64 << 10;

/// Why a frame was not read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: u64, max: usize },
    #[error("connection closed")]
    Closed,
    #[error("frame i/o failed")]
    Io(#[source] io::Error),
}

fn check_len(len: usize, max: usize) -> Result<[u8; LENGTH_LEN], FrameError> {
    match u32::try_from(len) {
        Ok(l) if len <= max => Ok(l.to_be_bytes()),
        _ => Err(FrameError::TooLarge {
            len: len as u64,
            max,
        }),
    }
}

fn declared_len(prefix: [u8; LENGTH_LEN], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix);
    match usize::try_from(len) {
        Ok(l) if l <= max => Ok(l),
        _ => Err(FrameError::TooLarge {
            len: u64::from(len),
            max,
        }),
    }
}

/// Writes one frame; a payload over `max` is refused before anything is
/// written.
pub fn write_frame<W: Write + ?Sized>(
    w: &mut W,
    payload: &[u8],
    max: usize,
) -> Result<(), FrameError> {
    let prefix = check_len(payload.len(), max)?;
    w.write_all(&prefix).map_err(FrameError::Io)?;
    w.write_all(payload).map_err(FrameError::Io)?;
    w.flush().map_err(FrameError::Io)
}

/// Reads one frame. End of input before the first byte is [`FrameError::Closed`]
/// (the peer is done), anywhere else [`FrameError::Truncated`].
pub fn read_frame<R: Read + ?Sized>(r: &mut R, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut prefix = [0u8; LENGTH_LEN];
    let mut got = 0;
    while got < LENGTH_LEN {
        match r.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let len = declared_len(prefix, max)?;
    let mut payload = Vec::with_capacity(len.min(INITIAL_CAPACITY));
    r.take(len as u64)
        .read_to_end(&mut payload)
        .map_err(FrameError::Io)?;
    if payload.len() < len {
        return Err(FrameError::Truncated);
    }
    Ok(payload)
}

/// Async [`write_frame`].
pub async fn write_frame_async<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    payload: &[u8],
    max: usize,
) -> Result<(), FrameError> {
    let prefix = check_len(payload.len(), max)?;
    w.write_all(&prefix).await.map_err(FrameError::Io)?;
    w.write_all(payload).await.map_err(FrameError::Io)?;
    w.flush().await.map_err(FrameError::Io)
}

/// Async [`read_frame`]. Not cancel safe: dropping the future part way
/// leaves the stream in the middle of a frame.
pub async fn read_frame_async<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    max: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut prefix = [0u8; LENGTH_LEN];
    let mut got = 0;
    while got < LENGTH_LEN {
        match r.read(&mut prefix[got..]).await {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let len = declared_len(prefix, max)?;
    let mut payload = Vec::with_capacity(len.min(INITIAL_CAPACITY));
    (&mut *r)
        .take(len as u64)
        .read_to_end(&mut payload)
        .await
        .map_err(FrameError::Io)?;
    if payload.len() < len {
        return Err(FrameError::Truncated);
    }
    Ok(payload)
}
