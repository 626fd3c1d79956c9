//! Image bytes between a synchronous capture or restore (a thread) and the
//! asynchronous node stream: a `Write` that hands out chunks, and a `Read`
//! that takes them in.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender};

use crate::proto::{Chunk, CHUNK};

/// Collects written bytes into chunks of [`CHUNK`] and passes each to `send`
/// (which blocks while the stream is behind, and returns false once it is gone).
pub struct ChunkWriter<F: FnMut(Vec<u8>) -> bool> {
    buf: Vec<u8>,
    send: F,
    pub bytes: u64,
}

impl<F: FnMut(Vec<u8>) -> bool> ChunkWriter<F> {
    pub fn new(send: F) -> Self {
        ChunkWriter { buf: Vec::with_capacity(CHUNK), send, bytes: 0 }
    }

    fn push(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.bytes += chunk.len() as u64;
        if (self.send)(chunk) {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "the connection to the other node is gone"))
        }
    }
}

impl<F: FnMut(Vec<u8>) -> bool> Write for ChunkWriter<F> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.push()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.push()
    }
}

/// What arrives for a [`ChunkReader`].
pub enum Piece {
    Data(Chunk),
    End,
    /// The sender gave up (connection lost, capture failed).
    Failed(String),
}

/// Reads the chunks sent into a channel, in order.
pub struct ChunkReader {
    rx: Receiver<Piece>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

/// A channel for image pieces: the sending half stays with the stream task.
pub fn channel() -> (SyncSender<Piece>, ChunkReader) {
    let (tx, rx) = std::sync::mpsc::sync_channel(8);
    (tx, ChunkReader { rx, cur: Vec::new(), pos: 0, done: false })
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Piece::Data(d)) => {
                    (self.cur, self.pos) = d.into_parts();
                }
                Ok(Piece::End) => self.done = true,
                Ok(Piece::Failed(why)) => return Err(io::Error::new(io::ErrorKind::ConnectionAborted, why)),
                Err(_) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the image stream ended early")),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_go_through_in_order_and_in_chunks() {
        let (tx, mut rx) = channel();
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i * 7) as u8).collect();
        let sender = std::thread::spawn({
            let data = data.clone();
            move || {
                let mut sizes = Vec::new();
                let mut w = ChunkWriter::new(|c: Vec<u8>| {
                    sizes.push(c.len());
                    tx.send(Piece::Data(c.into())).is_ok()
                });
                w.write_all(&data).unwrap();
                w.flush().unwrap();
                drop(w);
                tx.send(Piece::End).unwrap();
                sizes
            }
        });
        let mut got = Vec::new();
        rx.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
        assert_eq!(sender.join().unwrap(), vec![CHUNK, CHUNK, CHUNK, 17]);
    }

    #[test]
    fn a_received_chunk_is_read_from_past_its_header() {
        let msg = crate::proto::encode(&crate::proto::ToHome::Image(vec![5u8; 200].into()));
        let crate::proto::ToHome::Image(c) = crate::proto::decode_owned(msg).unwrap() else { panic!("not an image") };
        let (tx, mut rx) = channel();
        tx.send(Piece::Data(c)).unwrap();
        tx.send(Piece::End).unwrap();
        let mut got = Vec::new();
        rx.read_to_end(&mut got).unwrap();
        assert_eq!(got, vec![5u8; 200]);
    }

    #[test]
    fn a_lost_sender_is_an_error_not_an_end() {
        let (tx, mut rx) = channel();
        tx.send(Piece::Data(vec![1, 2, 3].into())).unwrap();
        drop(tx);
        let mut got = Vec::new();
        assert_eq!(rx.read_to_end(&mut got).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let (tx, mut rx) = channel();
        tx.send(Piece::Failed("node n2 went away".into())).unwrap();
        assert!(rx.read_to_end(&mut Vec::new()).unwrap_err().to_string().contains("n2"));
    }
}
