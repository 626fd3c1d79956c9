//! Noise streams over real sockets: handshakes, messages, and hostile peers.

use std::time::{Duration, Instant};

use herd_wire::{
    ClusterKey, HandshakeError, NodeKeypair, SecureStream, StreamError, StreamOptions, MAX_MESSAGE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};

/// Bytes the initiator sends during the handshake: two length-prefixed
/// messages of 54 and 64 bytes.
const INITIATOR_HANDSHAKE_BYTES: usize = 2 + 54 + 2 + 64;

/// Upper bound for anything that must not hang.
const NO_HANG: Duration = Duration::from_secs(10);

fn key(b: u8) -> ClusterKey {
    ClusterKey::from_bytes([b; 32])
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.unwrap(), server.unwrap().0)
}

async fn handshake_over_tcp(
    client_key: &ClusterKey,
    server_key: &ClusterKey,
    options: &StreamOptions,
) -> (
    Result<SecureStream<TcpStream>, StreamError>,
    Result<SecureStream<TcpStream>, StreamError>,
) {
    let (c, s) = tcp_pair().await;
    let (ck, sk) = (
        NodeKeypair::generate().unwrap(),
        NodeKeypair::generate().unwrap(),
    );
    tokio::time::timeout(NO_HANG, async {
        tokio::join!(
            SecureStream::connect_with(c, client_key, &ck, options),
            SecureStream::accept_with(s, server_key, &sk, options)
        )
    })
    .await
    .expect("the handshake hung")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_both_ways_over_tcp() {
    let (c, s) = tcp_pair().await;
    let (ck, sk) = (
        NodeKeypair::generate().unwrap(),
        NodeKeypair::generate().unwrap(),
    );
    let k = key(1);
    let server = {
        let (k, sk) = (k.clone(), sk.clone());
        tokio::spawn(async move {
            let mut stream = SecureStream::accept(s, &k, &sk).await.unwrap();
            // Echo every message back, reversed, until the client closes.
            loop {
                match stream.recv().await {
                    Ok(mut m) => {
                        m.reverse();
                        stream.send(&m).await.unwrap();
                    }
                    Err(StreamError::Closed) => return stream.remote_static(),
                    Err(e) => panic!("server: {e}"),
                }
            }
        })
    };
    let mut stream = SecureStream::connect(c, &k, &ck).await.unwrap();
    assert_eq!(stream.remote_static(), sk.public());
    assert_eq!(
        stream.get_ref().peer_addr().unwrap().ip().to_string(),
        "127.0.0.1"
    );

    let frame = 65535 - 16;
    let sizes = [
        0,
        1,
        1000,
        frame - 4,
        frame - 3,
        frame,
        frame + 1,
        2 * frame - 4,
        2 * frame - 3,
        5 << 20,
    ];
    for (i, len) in sizes.into_iter().enumerate() {
        let message = pattern(len, i as u8);
        stream.send(&message).await.unwrap();
        let mut back = stream.recv().await.unwrap();
        back.reverse();
        assert!(
            back == message,
            "message of {len} bytes came back different"
        );
    }
    // A message sent in parts is the message of the parts joined, wherever the
    // parts and the frames are cut.
    let whole = pattern(3 * frame + 17, 99);
    for cuts in [vec![], vec![0], vec![2], vec![frame - 4], vec![frame - 3, frame - 3], vec![5, frame, 2 * frame + 1, whole.len()]] {
        let mut parts = Vec::new();
        let mut from = 0;
        for &c in &cuts {
            parts.push(&whole[from..c]);
            from = c;
        }
        parts.push(&whole[from..]);
        stream.send_parts(&parts).await.unwrap();
        let mut back = stream.recv().await.unwrap();
        back.reverse();
        assert!(back == whole, "a message cut at {cuts:?} came back different");
    }
    stream.shutdown().await.unwrap();
    assert_eq!(server.await.unwrap(), ck.public());
}

/// Threads that write their messages themselves, at once, through one shared
/// sender: every message arrives whole, each thread's in its order, and a
/// shutdown ends the stream cleanly for the receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_senders_from_threads_interleave_whole_messages() {
    let (c, s) = handshake_over_tcp(&key(4), &key(4), &StreamOptions::default()).await;
    let (mut rx, _unused) = s.unwrap().into_split();
    let (_c_rx, direct) = c.unwrap().into_direct_split().unwrap();
    let threads: Vec<_> = (0..3u8)
        .map(|t| {
            let direct = direct.clone();
            std::thread::spawn(move || {
                for i in 0..40u32 {
                    // Small messages and ones of several frames (up to 1.5 MiB: the
                    // socket's buffer fills and the writer waits in poll).
                    let len = if i % 7 == 3 { 1_500_000 } else { 10 + i as usize * 997 };
                    let mut m = vec![t];
                    m.extend_from_slice(&i.to_be_bytes());
                    m.extend_from_slice(&pattern(len, t ^ i as u8));
                    direct.send_parts(&[&m[..5], &m[5..]]).unwrap();
                }
            })
        })
        .collect();
    let mut next = [0u32; 3];
    for _ in 0..120 {
        let m = tokio::time::timeout(NO_HANG, rx.recv()).await.expect("a message hung").unwrap();
        let (t, i) = (m[0], u32::from_be_bytes(m[1..5].try_into().unwrap()));
        assert_eq!(i, next[t as usize], "thread {t}'s messages out of order");
        next[t as usize] += 1;
        let len = if i % 7 == 3 { 1_500_000 } else { 10 + i as usize * 997 };
        assert!(m[5..] == pattern(len, t ^ i as u8)[..], "message {i} of thread {t} damaged");
    }
    for t in threads {
        t.join().unwrap();
    }
    direct.shutdown();
    assert!(matches!(rx.recv().await, Err(StreamError::Closed)));
}

#[tokio::test]
async fn split_halves_work_concurrently() {
    let (c, s) = tokio::io::duplex(1 << 16);
    let k = key(2);
    let (ck, sk) = (
        NodeKeypair::generate().unwrap(),
        NodeKeypair::generate().unwrap(),
    );
    let (c, s) = tokio::join!(
        SecureStream::connect(c, &k, &ck),
        SecureStream::accept(s, &k, &sk)
    );
    let (mut c_rx, mut c_tx) = c.unwrap().into_split();
    let (mut s_rx, mut s_tx) = s.unwrap().into_split();
    assert_eq!(c_rx.remote_static(), sk.public());
    assert_eq!(s_tx.remote_static(), ck.public());
    // Both ends send 1 MiB before reading: halves must not block each other.
    let big = pattern(1 << 20, 9);
    let (a, b, x, y) = tokio::join!(c_tx.send(&big), s_tx.send(&big), c_rx.recv(), s_rx.recv());
    a.unwrap();
    b.unwrap();
    assert!(x.unwrap() == big);
    assert!(y.unwrap() == big);
    c_tx.shutdown().await.unwrap();
    assert!(matches!(s_rx.recv().await, Err(StreamError::Closed)));
}

fn is_key_mismatch(e: &StreamError) -> bool {
    matches!(
        e,
        StreamError::Handshake(HandshakeError::WrongClusterKey | HandshakeError::RejectedByPeer)
    ) && e.to_string().contains("peer does not hold the cluster key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_fails_on_both_ends_whichever_side_has_it() {
    let options = StreamOptions::default();
    for (client_key, server_key) in [(key(3), key(4)), (key(4), key(3))] {
        let started = Instant::now();
        let (c, s) = handshake_over_tcp(&client_key, &server_key, &options).await;
        let (c, s) = (c.unwrap_err(), s.unwrap_err());
        assert!(is_key_mismatch(&c), "client: {c}");
        assert!(is_key_mismatch(&s), "server: {s}");
        assert!(
            matches!(s, StreamError::Handshake(HandshakeError::WrongClusterKey)),
            "server: {s}"
        );
        assert!(
            matches!(c, StreamError::Handshake(HandshakeError::RejectedByPeer)),
            "client: {c}"
        );
        // Not through the timeout: the failure is detected, not waited out.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn silent_peer_times_out_on_both_roles() {
    let options = StreamOptions {
        handshake_timeout: Duration::from_millis(200),
        ..StreamOptions::default()
    };
    let kp = NodeKeypair::generate().unwrap();

    let (silent, s) = tokio::io::duplex(1024);
    let err = SecureStream::accept_with(s, &key(5), &kp, &options)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StreamError::Timeout(d) if d == Duration::from_millis(200)),
        "{err}"
    );
    drop(silent);

    let (c, silent) = tokio::io::duplex(1024);
    let err = SecureStream::connect_with(c, &key(5), &kp, &options)
        .await
        .unwrap_err();
    assert!(matches!(err, StreamError::Timeout(_)), "{err}");
    assert_eq!(err.to_string(), "handshake did not finish within 200ms");
    drop(silent);
}

#[tokio::test]
async fn garbage_instead_of_a_handshake_is_refused() {
    let kp = NodeKeypair::generate().unwrap();
    let garbage: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        &[0, 54],
        &[0, 0],
        &[0xff; 4096],
        // Right size, but not a Noise message of this prologue.
        &[&[0u8, 54][..], &[0x41; 54]].concat(),
    ];
    for bytes in garbage {
        let (mut peer, s) = tokio::io::duplex(1 << 16);
        peer.write_all(bytes).await.unwrap();
        peer.shutdown().await.unwrap();
        let err = tokio::time::timeout(NO_HANG, SecureStream::accept(s, &key(6), &kp))
            .await
            .expect("responder hung on garbage")
            .unwrap_err();
        assert!(matches!(err, StreamError::Handshake(_)), "{bytes:?}: {err}");

        // The same garbage as an answer to an initiator.
        let (mut peer, c) = tokio::io::duplex(1 << 16);
        peer.write_all(bytes).await.unwrap();
        peer.shutdown().await.unwrap();
        let err = tokio::time::timeout(NO_HANG, SecureStream::connect(c, &key(6), &kp))
            .await
            .expect("initiator hung on garbage")
            .unwrap_err();
        assert!(matches!(err, StreamError::Handshake(_)), "{bytes:?}: {err}");
    }

    // An HTTP client gets a message that says what happened.
    let (mut peer, s) = tokio::io::duplex(1 << 16);
    peer.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let err = SecureStream::accept(s, &key(6), &kp).await.unwrap_err();
    assert!(
        err.to_string().contains("not speaking the herd protocol"),
        "{err}"
    );
}

#[tokio::test]
async fn garbage_after_a_valid_first_message_is_refused() {
    // A real first message from an initiator, then junk of the right size
    // for the third: the responder must fail, not hang or panic.
    let (c, mut mitm_c) = tokio::io::duplex(1 << 16);
    let (mut mitm_s, s) = tokio::io::duplex(1 << 16);
    let kp = NodeKeypair::generate().unwrap();
    let k = key(7);
    let client = tokio::spawn({
        let (k, kp) = (k.clone(), kp.clone());
        async move { SecureStream::connect(c, &k, &kp).await }
    });
    let mut first = [0u8; 2 + 54];
    mitm_c.read_exact(&mut first).await.unwrap();
    mitm_s.write_all(&first).await.unwrap();
    mitm_s.write_all(&[0, 64]).await.unwrap();
    mitm_s.write_all(&[0x99; 64]).await.unwrap();
    let err = SecureStream::accept(s, &k, &kp).await.unwrap_err();
    assert!(matches!(err, StreamError::Handshake(_)), "{err}");
    drop(mitm_c);
    assert!(client.await.unwrap().is_err());
}

/// A client and a server joined through a relay that can damage the
/// client-to-server bytes after the handshake: `damage(offset, byte)` may
/// change a byte, and the relay closes the connection after `cut_at` bytes.
async fn through_relay(
    cut_at: Option<usize>,
    damage: fn(usize, &mut u8),
    server_options: StreamOptions,
) -> (SecureStream<DuplexStream>, SecureStream<DuplexStream>) {
    let (c, mut relay_c) = tokio::io::duplex(1 << 16);
    let (mut relay_s, s) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        let (mut c_read, mut c_write) = tokio::io::split(&mut relay_c);
        let (mut s_read, mut s_write) = tokio::io::split(&mut relay_s);
        let up = async {
            let mut offset = 0;
            let mut buf = vec![0u8; 8192];
            loop {
                let n = match c_read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let mut n = n;
                if let Some(cut) = cut_at {
                    n = n.min(cut - offset);
                }
                for (i, b) in buf[..n].iter_mut().enumerate() {
                    damage(offset + i, b);
                }
                if s_write.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                offset += n;
                if Some(offset) == cut_at {
                    break;
                }
            }
            let _ = s_write.shutdown().await;
        };
        let down = async {
            let _ = tokio::io::copy(&mut s_read, &mut c_write).await;
        };
        // The relay ends when the client-to-server side is done; dropping
        // both duplex ends then closes the server's connection.
        tokio::select! {
            _ = up => {}
            _ = async { down.await; std::future::pending::<()>().await } => {}
        }
    });
    let k = key(8);
    let (ck, sk) = (
        NodeKeypair::generate().unwrap(),
        NodeKeypair::generate().unwrap(),
    );
    let (client, server) = tokio::join!(
        SecureStream::connect(c, &k, &ck),
        SecureStream::accept_with(s, &k, &sk, &server_options)
    );
    (client.unwrap(), server.unwrap())
}

fn no_damage(_: usize, _: &mut u8) {}

#[tokio::test]
async fn truncated_frame_is_truncated() {
    let h = INITIATOR_HANDSHAKE_BYTES;
    // Inside the first frame's length, inside its body, between two frames
    // of one message, and in the last frame.
    for cut in [
        h + 1,
        h + 2 + 1000,
        h + 2 + 65535,
        h + 2 + 65535 + 1,
        h + 2 + 65535 + 2 + 10,
    ] {
        let (mut client, mut server) =
            through_relay(Some(cut), no_damage, StreamOptions::default()).await;
        let sending = tokio::spawn(async move {
            let _ = client.send(&pattern(100_000, 1)).await;
            client
        });
        let err = tokio::time::timeout(NO_HANG, server.recv())
            .await
            .expect("recv hung")
            .unwrap_err();
        assert!(matches!(err, StreamError::Truncated), "cut at {cut}: {err}");
        assert!(matches!(server.recv().await, Err(StreamError::Broken)));
        drop(sending.await.unwrap());
    }
}

#[tokio::test]
async fn close_between_messages_is_closed() {
    let h = INITIATOR_HANDSHAKE_BYTES;
    let (mut client, mut server) = through_relay(
        Some(h + 2 + 16 + 4 + 5),
        no_damage,
        StreamOptions::default(),
    )
    .await;
    client.send(b"hello").await.unwrap();
    assert_eq!(server.recv().await.unwrap(), b"hello");
    let err = server.recv().await.unwrap_err();
    assert!(matches!(err, StreamError::Closed), "{err}");
    assert!(matches!(server.recv().await, Err(StreamError::Closed)));
}

#[tokio::test]
async fn tampered_transport_frame_fails_to_decrypt() {
    fn flip_in_first_frame(offset: usize, b: &mut u8) {
        if offset == INITIATOR_HANDSHAKE_BYTES + 2 + 10 {
            *b ^= 0x01;
        }
    }
    fn flip_in_second_frame(offset: usize, b: &mut u8) {
        if offset == INITIATOR_HANDSHAKE_BYTES + 2 + 65535 + 2 + 100 {
            *b ^= 0x80;
        }
    }
    fn shorten_first_frame(offset: usize, b: &mut u8) {
        // Length prefix 0xffff becomes 0xfffe: the tag no longer lines up.
        if offset == INITIATOR_HANDSHAKE_BYTES + 1 {
            *b = 0xfe;
        }
    }
    for damage in [
        flip_in_first_frame as fn(usize, &mut u8),
        flip_in_second_frame,
        shorten_first_frame,
    ] {
        let (mut client, mut server) = through_relay(None, damage, StreamOptions::default()).await;
        let sending = tokio::spawn(async move {
            let _ = client.send(&pattern(200_000, 2)).await;
            client
        });
        let err = tokio::time::timeout(NO_HANG, server.recv())
            .await
            .expect("recv hung")
            .unwrap_err();
        assert!(matches!(err, StreamError::Decrypt), "{err}");
        assert!(matches!(server.recv().await, Err(StreamError::Broken)));
        drop(sending.await.unwrap());
    }
}

#[tokio::test]
async fn message_over_the_receivers_limit_is_refused() {
    let small = StreamOptions {
        max_message: 1 << 20,
        ..StreamOptions::default()
    };
    let (mut client, mut server) = through_relay(None, no_damage, small).await;
    let sending = tokio::spawn(async move {
        // Blocks once the relay's buffers fill: the server reads only the
        // first frame.
        let _ = client.send(&pattern(5 << 20, 3)).await;
    });
    let err = tokio::time::timeout(NO_HANG, server.recv())
        .await
        .expect("recv hung")
        .unwrap_err();
    assert!(
        matches!(err, StreamError::MessageTooLarge { len, max } if len == 5 << 20 && max == 1 << 20),
        "{err}"
    );
    drop(server);
    sending.await.unwrap();

    // The sender refuses what is over its own limit, and stays usable.
    let (mut client, mut server) = through_relay(None, no_damage, StreamOptions::default()).await;
    let err = client.send(&vec![0; MAX_MESSAGE + 1]).await.unwrap_err();
    assert!(matches!(err, StreamError::MessageTooLarge { .. }), "{err}");
    client.send(b"still fine").await.unwrap();
    assert_eq!(server.recv().await.unwrap(), b"still fine");
}
