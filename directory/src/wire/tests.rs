//! Gossip message round trips and every decoder bound.

use super::*;
use crate::error::DescriptorError;
use crate::testing::verified;

/// Two fixture descriptors as unverified values.
fn descs() -> Vec<Unverified<Descriptor>> {
    vec![verified(1, 1).to_unverified(), verified(2, 1).to_unverified()]
}

/// Sorted ids of fixture relays.
fn ids(n: u8) -> Vec<RelayId> {
    let mut v: Vec<RelayId> = (1..=n).map(|i| crate::testing::identity(i).relay_id()).collect();
    v.sort();
    v
}

/// One message of every kind.
fn samples() -> Vec<Message> {
    let ids = ids(3);
    vec![
        Message::Push(Push { descriptors: descs() }),
        Message::DigestRequest(DigestRequest { epoch: Epoch(5), root: [7; 32], count: 42 }),
        Message::Summary(Summary {
            epoch: Epoch(5),
            root: [8; 32],
            count: 3,
            buckets: Box::new([[9; BUCKET_HASH_LEN]; BUCKETS]),
        }),
        Message::Digest(Digest {
            epoch: Epoch(5),
            lo: RelayId([0; 32]),
            hi: RelayId([0xff; 32]),
            entries: ids.iter().map(|id| DigestEntry { id: *id, sequence: 3, hash: DescriptorHash([7; 32]) }).collect(),
        }),
        Message::Want(Want { ids: ids.clone() }),
        Message::SnapshotRequest(SnapshotRequest { start: 3, max_chunks: 16, epoch: Epoch(9) }),
        Message::InSync(InSync { epoch: Epoch(4), root: [5; 32] }),
        Message::Unavailable { newest: 3 },
        Message::Statement(EpochStatement::sign(&crate::testing::identity(1), Epoch(5), [1; 32], 2, [3; 32])),
        Message::SnapshotChunk(SnapshotChunk {
            epoch: Epoch(5),
            root: [1; 32],
            index: 1,
            total: 2,
            descriptors: descs(),
        }),
        Message::Attestations(AttestationBatch { scope: Epoch(6), attestations: vec![attestation(1), attestation(2)] }),
    ]
}

/// A signed attestation by fixture identity `n` (IPv4 and IPv6 alternate).
fn attestation(n: u8) -> Attestation {
    let address = if n % 2 == 0 { "[2001:4860::1]:443" } else { "192.0.2.7:9001" };
    let body = crate::attest::AttestationBody {
        attester: RelayId([0; 32]),
        subject: crate::testing::identity(n + 1).relay_id(),
        link_key: lamina_crypto::keys::LinkPublicKey([3; 32]),
        address: address.parse().unwrap(),
        epoch: 4,
        observed_at: 44,
    };
    Attestation::sign(&crate::testing::identity(n), body)
}

/// An `Attestations` message with no entry, more than the maximum, or a
/// truncated entry is refused before anything is allocated past its bound.
#[test]
fn attestation_batch_bounds() {
    let one = Message::Attestations(AttestationBatch { scope: Epoch(1), attestations: vec![attestation(1)] });
    let bytes = one.to_vec().unwrap();
    let mut empty = bytes[..9].to_vec();
    empty.push(0);
    assert!(matches!(Message::decode(&empty), Err(WireError::Malformed { .. })));
    let mut many = bytes.clone();
    many[9] = 65;
    assert!(matches!(Message::decode(&many), Err(WireError::Malformed { .. })));
    assert!(Message::decode(&bytes[..bytes.len() - 1]).is_err(), "truncated");
    let too_many = AttestationBatch { scope: Epoch(1), attestations: vec![attestation(1); MAX_BATCH_ATTESTATIONS + 1] };
    assert!(Message::Attestations(too_many).to_vec().is_err());
}

/// Every kind round-trips, and `encoded_len` is exact.
#[test]
fn round_trips() {
    for msg in samples() {
        let bytes = msg.to_vec().unwrap();
        assert_eq!(bytes.len(), msg.encoded_len(), "{}", msg.kind());
        assert!(bytes.len() <= MAX_MESSAGE_LEN);
        assert_eq!(Message::decode(&bytes).unwrap(), msg);
    }
}

/// Whole-message bounds: size cap first, unknown type, trailing bytes.
#[test]
fn message_bounds() {
    let huge = vec![T_PUSH; MAX_MESSAGE_LEN + 1];
    assert_eq!(Message::decode(&huge), Err(WireError::Oversized { len: MAX_MESSAGE_LEN + 1, max: MAX_MESSAGE_LEN }));
    assert_eq!(Message::decode(&[0x7f]), Err(WireError::UnknownType(0x7f)));
    assert!(matches!(Message::decode(&[]), Err(WireError::Truncated { .. })));
    for msg in samples() {
        let mut bytes = msg.to_vec().unwrap();
        bytes.push(0);
        assert_eq!(Message::decode(&bytes), Err(WireError::TrailingBytes), "{}", msg.kind());
    }
}

/// Push counts are checked before anything else is read.
#[test]
fn push_counts() {
    assert_eq!(Message::decode(&[T_PUSH, 17]), Err(WireError::CountAboveMax { what: "push", count: 17, max: 16 }));
    assert_eq!(Message::decode(&[T_PUSH, 0]), Err(WireError::Malformed { what: "push", reason: "empty list" }));
    let too_many = Message::Push(Push { descriptors: vec![descs()[0].clone(); 17] });
    assert!(too_many.to_vec().is_err());
}

/// A descriptor longer than the cap is refused from its length prefix; a
/// malformed one fails the message with its reason.
#[test]
fn descriptors_inside_messages() {
    let mut bytes = vec![T_PUSH, 1];
    bytes.extend_from_slice(&1025u16.to_be_bytes());
    assert_eq!(
        Message::decode(&bytes),
        Err(WireError::Descriptor { index: 0, source: DescriptorError::Oversized { len: 1025, max: 1024 } })
    );
    let mut good = Message::Push(Push { descriptors: descs() }).to_vec().unwrap();
    // Corrupt the version byte of the first descriptor (type, count, len u16).
    good[4] = 0x09;
    assert_eq!(
        Message::decode(&good),
        Err(WireError::Descriptor { index: 0, source: DescriptorError::UnknownVersion(9) })
    );
}

/// Digest entries must be strictly ascending and inside [lo, hi]; counts
/// above 512 are refused before reading entries.
#[test]
fn digest_canonical_form() {
    let ids = ids(3);
    let base = Digest { epoch: Epoch(1), lo: RelayId([0; 32]), hi: RelayId([0xff; 32]), entries: vec![] };
    let encode_raw = |d: &Digest| {
        let mut w = Writer::new();
        w.put_u8(T_DIGEST);
        w.put_u64(d.epoch.0);
        w.put_bytes(d.lo.as_bytes());
        w.put_bytes(d.hi.as_bytes());
        w.put_u16(u16::try_from(d.entries.len()).unwrap());
        for e in &d.entries {
            w.put_bytes(e.id.as_bytes());
            w.put_u64(e.sequence);
            w.put_bytes(&e.hash.0);
        }
        w.into_vec()
    };
    let mut unsorted = base.clone();
    unsorted.entries = vec![
        DigestEntry { id: ids[1], sequence: 1, hash: DescriptorHash([1; 32]) },
        DigestEntry { id: ids[0], sequence: 1, hash: DescriptorHash([1; 32]) },
    ];
    assert_eq!(
        Message::decode(&encode_raw(&unsorted)),
        Err(WireError::Malformed { what: "digest", reason: "entries not strictly ascending" })
    );
    assert!(Message::Digest(unsorted).to_vec().is_err());
    let mut outside = base.clone();
    outside.lo = ids[1];
    outside.entries = vec![DigestEntry { id: ids[0], sequence: 1, hash: DescriptorHash([1; 32]) }];
    assert_eq!(
        Message::decode(&encode_raw(&outside)),
        Err(WireError::Malformed { what: "digest", reason: "entry outside the range" })
    );
    let mut inverted = base.clone();
    inverted.lo = RelayId([0xff; 32]);
    inverted.hi = RelayId([0; 32]);
    assert_eq!(
        Message::decode(&encode_raw(&inverted)),
        Err(WireError::Malformed { what: "digest", reason: "empty range" })
    );
    let mut header = encode_raw(&base);
    let n = header.len();
    header[n - 2..].copy_from_slice(&513u16.to_be_bytes());
    assert_eq!(Message::decode(&header), Err(WireError::CountAboveMax { what: "digest", count: 513, max: 512 }));
}

/// Want lists: 1 to 64 strictly ascending ids.
#[test]
fn want_bounds() {
    let ids = ids(2);
    assert_eq!(Message::decode(&[T_WANT, 65]), Err(WireError::CountAboveMax { what: "want", count: 65, max: 64 }));
    assert_eq!(Message::decode(&[T_WANT, 0]), Err(WireError::Malformed { what: "want", reason: "empty list" }));
    let mut bytes = vec![T_WANT, 2];
    bytes.extend_from_slice(ids[1].as_bytes());
    bytes.extend_from_slice(ids[0].as_bytes());
    assert_eq!(
        Message::decode(&bytes),
        Err(WireError::Malformed { what: "want", reason: "ids not strictly ascending" })
    );
}

/// Snapshot requests ask for 1 to 16 chunks; a chunk's index is below its
/// total.
#[test]
fn snapshot_message_bounds() {
    assert!(matches!(Message::decode(&[T_SNAPSHOT_REQUEST, 0, 0, 0]), Err(WireError::Malformed { .. })));
    assert!(matches!(Message::decode(&[T_SNAPSHOT_REQUEST, 0, 0, 17]), Err(WireError::CountAboveMax { .. })));
    let chunk = SnapshotChunk { epoch: Epoch(1), root: [0; 32], index: 2, total: 2, descriptors: vec![] };
    assert!(Message::SnapshotChunk(chunk.clone()).to_vec().is_err());
    let mut bytes = Message::SnapshotChunk(SnapshotChunk { index: 0, ..chunk }).to_vec().unwrap();
    bytes[41..43].copy_from_slice(&2u16.to_be_bytes());
    assert_eq!(
        Message::decode(&bytes),
        Err(WireError::Malformed { what: "snapshot chunk", reason: "index not below total" })
    );
}

/// The largest messages of each bounded kind fit the 64 KiB cap.
#[test]
fn maxima_fit_the_cap() {
    let big_push = 2 + MAX_PUSH * (2 + MAX_DESCRIPTOR_LEN);
    let big_digest = 1 + 8 + 64 + 2 + MAX_DIGEST_ENTRIES * ENTRY_LEN;
    let big_chunk = 1 + 8 + 32 + 4 + 1 + MAX_CHUNK_DESCRIPTORS * (2 + MAX_DESCRIPTOR_LEN);
    assert!(big_push <= MAX_MESSAGE_LEN && big_digest <= MAX_MESSAGE_LEN && big_chunk <= MAX_MESSAGE_LEN);
}
