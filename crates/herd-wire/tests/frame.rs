//! Control socket framing, sync and async.

use std::io::{Cursor, Read};

use herd_wire::{read_frame, read_frame_async, write_frame, write_frame_async, FrameError};
use tokio::io::AsyncWriteExt;

#[test]
fn sync_round_trip() {
    let mut buf = Vec::new();
    for payload in [&b""[..], b"a", &[7u8; 100_000][..]] {
        write_frame(&mut buf, payload, 1 << 20).unwrap();
    }
    assert_eq!(&buf[..4], &[0, 0, 0, 0]);
    let mut r = Cursor::new(buf);
    assert_eq!(read_frame(&mut r, 1 << 20).unwrap(), b"");
    assert_eq!(read_frame(&mut r, 1 << 20).unwrap(), b"a");
    assert_eq!(read_frame(&mut r, 1 << 20).unwrap(), vec![7u8; 100_000]);
    assert!(matches!(
        read_frame(&mut r, 1 << 20),
        Err(FrameError::Closed)
    ));
}

#[test]
fn sync_truncations() {
    let mut buf = Vec::new();
    write_frame(&mut buf, b"hello", 100).unwrap();
    for len in 1..buf.len() {
        let err = read_frame(&mut Cursor::new(&buf[..len]), 100).unwrap_err();
        assert!(matches!(err, FrameError::Truncated), "len {len}: {err}");
    }
}

/// A reader that fails the test if more than the length prefix is read.
struct OnlyPrefix<'a>(&'a [u8]);

impl Read for OnlyPrefix<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        assert!(
            !self.0.is_empty(),
            "read past the length prefix of an oversized frame"
        );
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn oversized_declared_length_is_refused_before_reading_the_body() {
    let prefix = u32::MAX.to_be_bytes();
    let err = read_frame(&mut OnlyPrefix(&prefix), 1 << 20).unwrap_err();
    assert!(
        matches!(err, FrameError::TooLarge { len, max } if len == u64::from(u32::MAX) && max == 1 << 20)
    );
    assert_eq!(
        err.to_string(),
        "frame of 4294967295 bytes exceeds the limit of 1048576"
    );

    let prefix = 101u32.to_be_bytes();
    assert!(matches!(
        read_frame(&mut OnlyPrefix(&prefix), 100),
        Err(FrameError::TooLarge { .. })
    ));

    // Writers refuse too, before writing anything.
    let mut out = Vec::new();
    assert!(matches!(
        write_frame(&mut out, &[0; 101], 100),
        Err(FrameError::TooLarge { len: 101, .. })
    ));
    assert!(out.is_empty());
}

#[test]
fn a_large_claim_with_little_data_is_truncated_not_allocated() {
    // Claims 16 MiB, carries 3 bytes: reading must not reserve 16 MiB first
    // (not observable here beyond not failing), and must say Truncated.
    let mut data = (16u32 << 20).to_be_bytes().to_vec();
    data.extend_from_slice(b"abc");
    assert!(matches!(
        read_frame(&mut Cursor::new(data), 16 << 20),
        Err(FrameError::Truncated)
    ));
}

#[tokio::test]
async fn async_round_trip_over_a_socket_pair() {
    let (mut a, mut b) = tokio::net::UnixStream::pair().unwrap();
    let big = vec![0x5a; 3 << 20];
    let writer = {
        let big = big.clone();
        tokio::spawn(async move {
            write_frame_async(&mut a, b"first", 4 << 20).await.unwrap();
            write_frame_async(&mut a, &big, 4 << 20).await.unwrap();
            write_frame_async(&mut a, b"", 4 << 20).await.unwrap();
            a.shutdown().await.unwrap();
        })
    };
    assert_eq!(read_frame_async(&mut b, 4 << 20).await.unwrap(), b"first");
    assert_eq!(read_frame_async(&mut b, 4 << 20).await.unwrap(), big);
    assert_eq!(read_frame_async(&mut b, 4 << 20).await.unwrap(), b"");
    assert!(matches!(
        read_frame_async(&mut b, 4 << 20).await,
        Err(FrameError::Closed)
    ));
    writer.await.unwrap();
}

#[tokio::test]
async fn async_errors() {
    let (mut a, mut b) = tokio::io::duplex(64);
    a.write_all(&[0, 0, 1]).await.unwrap();
    drop(a);
    assert!(matches!(
        read_frame_async(&mut b, 100).await,
        Err(FrameError::Truncated)
    ));

    let (mut a, mut b) = tokio::io::duplex(64);
    // The writer stays open: a reader that tried to read the body would hang.
    a.write_all(&1000u32.to_be_bytes()).await.unwrap();
    assert!(matches!(
        read_frame_async(&mut b, 999).await,
        Err(FrameError::TooLarge {
            len: 1000,
            max: 999
        })
    ));

    let (mut a, mut b) = tokio::io::duplex(64);
    a.write_all(&[0, 0, 0, 5, b'a']).await.unwrap();
    drop(a);
    assert!(matches!(
        read_frame_async(&mut b, 100).await,
        Err(FrameError::Truncated)
    ));
}
