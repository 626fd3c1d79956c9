//! Sealed datagrams: round trips, and every way a datagram can be bad.

use herd_wire::seal::{HEADER_LEN, MAX_PLAINTEXT, OVERHEAD, VERSION};
use herd_wire::{ClusterKey, Purpose, SealError, Sealer, MAX_DATAGRAM};

fn key(b: u8) -> ClusterKey {
    ClusterKey::from_bytes([b; 32])
}

#[test]
fn round_trip_and_layout() {
    let sealer = Sealer::new(&key(1), Purpose::Gossip);
    for len in [0, 1, 100, 1400, MAX_PLAINTEXT] {
        let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let datagram = sealer.seal(&plaintext).unwrap();
        assert_eq!(datagram.len(), len + OVERHEAD);
        assert_eq!(datagram[0], VERSION);
        assert_eq!(datagram[1], Purpose::Gossip as u8);
        assert_eq!(sealer.open(&datagram).unwrap(), plaintext);
        // Another sealer with the same key and purpose opens it too.
        assert_eq!(
            Sealer::new(&key(1), Purpose::Gossip)
                .open(&datagram)
                .unwrap(),
            plaintext
        );
    }
}

#[test]
fn nonces_are_fresh() {
    let sealer = Sealer::new(&key(1), Purpose::Beacon);
    let a = sealer.seal(b"same").unwrap();
    let b = sealer.seal(b"same").unwrap();
    assert_ne!(a[2..HEADER_LEN], b[2..HEADER_LEN]);
    assert_ne!(a, b);
}

#[test]
fn wrong_key_is_forged() {
    let datagram = Sealer::new(&key(1), Purpose::Gossip)
        .seal(b"alive")
        .unwrap();
    let err = Sealer::new(&key(2), Purpose::Gossip)
        .open(&datagram)
        .unwrap_err();
    assert_eq!(err, SealError::Forged);
    assert!(err.to_string().contains("another cluster key"), "{err}");
}

#[test]
fn every_single_bit_flip_is_rejected() {
    let sealer = Sealer::new(&key(3), Purpose::Gossip);
    let datagram = sealer.seal(b"member 7 is suspect, incarnation 42").unwrap();
    for bit in 0..datagram.len() * 8 {
        let mut bad = datagram.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let err = sealer.open(&bad).unwrap_err();
        let expected = match bit / 8 {
            0 => matches!(err, SealError::UnknownVersion(_)),
            1 => matches!(err, SealError::WrongPurpose { .. }),
            _ => err == SealError::Forged,
        };
        assert!(expected, "bit {bit}: {err}");
    }
}

#[test]
fn truncations_and_extensions_are_rejected() {
    let sealer = Sealer::new(&key(4), Purpose::Beacon);
    let datagram = sealer.seal(b"node a at 10.0.0.1:7946").unwrap();
    for len in 0..datagram.len() {
        let err = sealer.open(&datagram[..len]).unwrap_err();
        if len < OVERHEAD {
            assert_eq!(err, SealError::TooShort { len });
        } else {
            assert_eq!(err, SealError::Forged, "len {len}");
        }
    }
    let mut longer = datagram.clone();
    longer.push(0);
    assert_eq!(sealer.open(&longer).unwrap_err(), SealError::Forged);
}

#[test]
fn wrong_purpose_is_rejected() {
    let k = key(5);
    let beacon = Sealer::new(&k, Purpose::Beacon).seal(b"hello").unwrap();
    let err = Sealer::new(&k, Purpose::Gossip).open(&beacon).unwrap_err();
    assert_eq!(
        err,
        SealError::WrongPurpose {
            expected: Purpose::Gossip,
            found: Purpose::Beacon as u8
        }
    );
    assert_eq!(
        err.to_string(),
        "datagram is sealed for beacon but gossip was expected"
    );

    // Relabelled as gossip: the purpose byte is authenticated and the keys differ.
    let mut relabelled = beacon.clone();
    relabelled[1] = Purpose::Gossip as u8;
    assert_eq!(
        Sealer::new(&k, Purpose::Gossip)
            .open(&relabelled)
            .unwrap_err(),
        SealError::Forged
    );

    let mut unknown = beacon;
    unknown[1] = 77;
    let err = Sealer::new(&k, Purpose::Beacon).open(&unknown).unwrap_err();
    assert!(err.to_string().contains("unknown purpose 77"), "{err}");
}

#[test]
fn size_limits() {
    let sealer = Sealer::new(&key(6), Purpose::Gossip);
    assert!(matches!(
        sealer.seal(&vec![0; MAX_PLAINTEXT + 1]),
        Err(SealError::TooLarge { .. })
    ));
    let err = sealer.open(&vec![0; MAX_DATAGRAM + 1]).unwrap_err();
    assert_eq!(
        err,
        SealError::TooLarge {
            len: MAX_DATAGRAM + 1
        }
    );
    assert_eq!(
        sealer.open(&[]).unwrap_err(),
        SealError::TooShort { len: 0 }
    );
    let mut other_version = sealer.seal(b"x").unwrap();
    other_version[0] = 2;
    assert_eq!(
        sealer.open(&other_version).unwrap_err(),
        SealError::UnknownVersion(2)
    );
}
