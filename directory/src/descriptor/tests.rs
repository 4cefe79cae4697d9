//! Descriptor encoding, decoding and verification: one test per rejection
//! rule, each asserting the exact error.

use lamina_crypto::keys::{IdentityKeypair, RelayId};
use lamina_crypto::sign::sign_with_context;
use lamina_proto::codec::Writer;

use super::*;
use crate::error::BuildError;
use crate::testing::{addr, fields, identity, signed, T0, TEST_DIFFICULTY};
use crate::verify::Verified;

/// Offset of the flags byte in the layout.
const OFF_FLAGS: usize = 125;
/// Offset of the address count.
const OFF_NADDR: usize = 126;
/// Offset of the first address's kind byte.
const OFF_ADDR0: usize = 127;
/// Offset of the port-range count in a one-IPv4-address descriptor.
const OFF_NPORTS: usize = 134;
/// Offset of the family count in a one-IPv4-address, non-exit descriptor.
const OFF_NFAMILY: usize = 135;

/// Encode and sign `fields` for the claimed `id` with `signer`, bypassing
/// every builder check, so tests can produce non-canonical or out-of-window
/// descriptors with valid signatures.
fn sign_raw(signer: &IdentityKeypair, id: &RelayId, fields: &DescriptorFields) -> Vec<u8> {
    let nonce = pow::solve(id, TEST_DIFFICULTY, 0).unwrap();
    let mut w = Writer::new();
    encode_body(&mut w, id, fields);
    w.put_u64(nonce.0);
    let sig = sign_with_context(signer, DESCRIPTOR_SIG_CONTEXT, w.as_slice());
    w.put_bytes(&sig.0);
    w.into_vec()
}

/// Raw-sign `fields` with the fixture identity 1.
fn raw(fields: &DescriptorFields) -> Vec<u8> {
    let id = identity(1);
    sign_raw(&id, &id.relay_id(), fields)
}

/// The minimal fixture's bytes.
fn minimal() -> Vec<u8> {
    signed(&identity(1), fields(1)).as_bytes().to_vec()
}

/// Decode and verify at T0 with the test difficulty.
fn check(bytes: &[u8]) -> Result<Verified<Descriptor>, DescriptorError> {
    Descriptor::decode(bytes)?.verify(T0, TEST_DIFFICULTY)
}

/// Decode only, returning the error.
fn decode_err(bytes: &[u8]) -> DescriptorError {
    Descriptor::decode(bytes).unwrap_err()
}

/// A signed minimal descriptor round-trips and has the documented layout.
#[test]
fn minimal_descriptor_round_trips() {
    let bytes = minimal();
    assert_eq!(bytes.len(), MIN_DESCRIPTOR_LEN);
    assert_eq!(bytes[0], DESCRIPTOR_VERSION);
    assert_eq!(&bytes[1..33], identity(1).relay_id().as_bytes());
    let d = check(&bytes).unwrap();
    assert_eq!(d.fields(), &fields(1));
    assert_eq!(d.id(), identity(1).relay_id());
    assert_eq!(d.as_bytes(), bytes.as_slice());
    assert_eq!(d.hash(), DescriptorHash::of(&bytes));
}

/// The largest descriptor the format allows is 597 bytes and verifies;
/// the builder sorts addresses and family and merges port ranges.
#[test]
fn largest_descriptor_verifies_and_builder_canonicalizes() {
    let mut f = fields(1);
    f.addresses =
        vec![addr("[2001:db8::2]:9"), addr("[2001:db8::3]:443"), addr("[2001:db8::1]:9"), addr("[2001:db8::1]:8")];
    let ranges: Vec<PortRange> = (0..16u16).rev().map(|i| PortRange::new(i * 100 + 1, i * 100 + 50)).collect();
    f.exit = ExitSummary::exit(ranges).unwrap();
    f.family = (10..18u8).rev().map(|s| identity(s).relay_id()).collect();
    let d = check(signed(&identity(1), f).as_bytes()).unwrap();
    assert_eq!(d.as_bytes().len(), 597);
    assert!(d.addresses().windows(2).all(|w| addr::canonical_cmp(&w[0], &w[1]).is_lt()));
    assert!(d.family().windows(2).all(|w| w[0] < w[1]));
    assert!(d.exit().allows_port(1) && d.exit().allows_port(1550) && !d.exit().allows_port(51));
}

/// Port ranges given to the builder are sorted and merged.
#[test]
fn exit_summary_merges_ranges() {
    let e = ExitSummary::exit(vec![PortRange::new(80, 80), PortRange::new(443, 443), PortRange::new(81, 100)]);
    assert_eq!(e.unwrap().ports(), &[PortRange::new(80, 100), PortRange::new(443, 443)]);
    assert_eq!(ExitSummary::exit(vec![]), Err(DescriptorError::ExitPolicyMismatch));
}

/// Anything above 1024 bytes is refused before a single field is read.
#[test]
fn oversized_rejected_before_parsing() {
    let junk = vec![0xffu8; MAX_DESCRIPTOR_LEN + 1];
    assert_eq!(decode_err(&junk), DescriptorError::Oversized { len: 1025, max: 1024 });
}

/// A missing last byte is a truncation.
#[test]
fn truncated_rejected() {
    let bytes = minimal();
    assert_eq!(decode_err(&bytes[..bytes.len() - 1]), DescriptorError::Truncated { deficit: 1 });
    assert!(matches!(decode_err(&[]), DescriptorError::Truncated { .. }));
}

/// Bytes after the signature are rejected.
#[test]
fn trailing_bytes_rejected() {
    let mut bytes = minimal();
    bytes.push(0);
    assert_eq!(decode_err(&bytes), DescriptorError::TrailingBytes);
}

/// Unknown version byte.
#[test]
fn unknown_version_rejected() {
    let mut bytes = minimal();
    bytes[0] = 0x02;
    assert_eq!(decode_err(&bytes), DescriptorError::UnknownVersion(2));
}

/// Reserved flag bits must be zero.
#[test]
fn reserved_flags_rejected() {
    let mut bytes = minimal();
    bytes[OFF_FLAGS] = 0x80;
    assert_eq!(decode_err(&bytes), DescriptorError::ReservedFlags(0x80));
}

/// Zero addresses or more than four.
#[test]
fn address_count_rejected() {
    let mut bytes = minimal();
    bytes[OFF_NADDR] = 0;
    assert_eq!(decode_err(&bytes), DescriptorError::AddressCount(0));
    bytes[OFF_NADDR] = 5;
    assert_eq!(decode_err(&bytes), DescriptorError::AddressCount(5));
}

/// An address kind other than 4 or 6.
#[test]
fn address_kind_rejected() {
    let mut bytes = minimal();
    bytes[OFF_ADDR0] = 0x05;
    assert_eq!(decode_err(&bytes), DescriptorError::AddressKind(5));
}

/// Port 0, unspecified IPs and IPv4-mapped IPv6 cannot be advertised.
#[test]
fn unusable_addresses_rejected() {
    for (a, why) in [
        ("192.0.2.1:0", "port 0"),
        ("0.0.0.0:443", "unspecified IP"),
        ("[::]:443", "unspecified IP"),
        ("[::ffff:192.0.2.1]:443", "IPv4-mapped IPv6 address"),
    ] {
        let mut f = fields(1);
        f.addresses = vec![addr(a)];
        assert_eq!(decode_err(&raw(&f)), DescriptorError::InvalidAddress(why), "{a}");
        let built = Descriptor::sign(&identity(1), f, pow::solve(&identity(1).relay_id(), 4, 0).unwrap(), 4);
        assert_eq!(built.unwrap_err(), BuildError::InvalidFields(DescriptorError::InvalidAddress(why)));
    }
}

/// Addresses must be strictly ascending: unsorted and duplicated fail.
#[test]
fn non_canonical_addresses_rejected() {
    let mut f = fields(1);
    f.addresses = vec![addr("198.51.100.7:443"), addr("192.0.2.1:443")];
    assert_eq!(decode_err(&raw(&f)), DescriptorError::AddressesNotCanonical);
    f.addresses = vec![addr("[2001:db8::1]:9"), addr("192.0.2.1:443")];
    assert_eq!(decode_err(&raw(&f)), DescriptorError::AddressesNotCanonical);
    f.addresses = vec![addr("192.0.2.1:443"), addr("192.0.2.1:443")];
    assert_eq!(decode_err(&raw(&f)), DescriptorError::AddressesNotCanonical);
}

/// More than 16 port ranges.
#[test]
fn port_range_count_rejected() {
    let mut f = fields(1);
    f.exit = ExitSummary::Exit { ports: (0..17u16).map(|i| PortRange::new(i * 10 + 1, i * 10 + 2)).collect() };
    assert_eq!(decode_err(&raw(&f)), DescriptorError::PortRangeCount(17));
}

/// A range starting at 0 or ending before it starts.
#[test]
fn invalid_port_range_rejected() {
    let mut f = fields(1);
    f.exit = ExitSummary::Exit { ports: vec![PortRange::new(0, 80)] };
    assert_eq!(decode_err(&raw(&f)), DescriptorError::InvalidPortRange { lo: 0, hi: 80 });
    f.exit = ExitSummary::Exit { ports: vec![PortRange::new(90, 80)] };
    assert_eq!(decode_err(&raw(&f)), DescriptorError::InvalidPortRange { lo: 90, hi: 80 });
}

/// Ranges unsorted, overlapping or adjacent.
#[test]
fn non_canonical_port_ranges_rejected() {
    for ports in [
        vec![PortRange::new(443, 443), PortRange::new(80, 80)],
        vec![PortRange::new(80, 90), PortRange::new(85, 100)],
        vec![PortRange::new(80, 90), PortRange::new(91, 100)],
    ] {
        let mut f = fields(1);
        f.exit = ExitSummary::Exit { ports: ports.clone() };
        assert_eq!(decode_err(&raw(&f)), DescriptorError::PortRangesNotCanonical, "{ports:?}");
    }
}

/// The exit flag and the port list must agree.
#[test]
fn exit_flag_mismatch_rejected() {
    let mut bytes = minimal();
    bytes[OFF_FLAGS] = 0x01;
    assert_eq!(decode_err(&bytes), DescriptorError::ExitPolicyMismatch);
    let mut f = fields(1);
    f.exit = ExitSummary::Exit { ports: vec![PortRange::new(80, 80)] };
    let mut bytes = raw(&f);
    bytes[OFF_FLAGS] = 0x00;
    assert_eq!(decode_err(&bytes), DescriptorError::ExitPolicyMismatch);
}

/// More than eight family members.
#[test]
fn family_count_rejected() {
    let mut bytes = minimal();
    bytes[OFF_NFAMILY] = 9;
    assert_eq!(decode_err(&bytes), DescriptorError::FamilyCount(9));
    assert_eq!(bytes[OFF_NPORTS], 0);
}

/// Family unsorted or duplicated.
#[test]
fn non_canonical_family_rejected() {
    let (a, b) = (identity(2).relay_id(), identity(3).relay_id());
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let mut f = fields(1);
    f.family = vec![hi, lo];
    assert_eq!(decode_err(&raw(&f)), DescriptorError::FamilyNotCanonical);
    f.family = vec![lo, lo];
    assert_eq!(decode_err(&raw(&f)), DescriptorError::FamilyNotCanonical);
}

/// A relay cannot declare itself as family.
#[test]
fn family_containing_self_rejected() {
    let mut f = fields(1);
    f.family = vec![identity(1).relay_id()];
    assert_eq!(decode_err(&raw(&f)), DescriptorError::FamilyContainsSelf);
    let nonce = pow::solve(&identity(1).relay_id(), 4, 0).unwrap();
    let err = Descriptor::sign(&identity(1), f, nonce, 4).unwrap_err();
    assert_eq!(err, BuildError::InvalidFields(DescriptorError::FamilyContainsSelf));
}

/// Expiry not after publish.
#[test]
fn expiry_before_publish_rejected() {
    let mut f = fields(1);
    f.expires = f.published;
    assert_eq!(check(&raw(&f)).unwrap_err(), DescriptorError::ExpiresBeforePublished { published: T0, expires: T0 });
}

/// Lifetime above 24 h, even by one second.
#[test]
fn lifetime_above_24h_rejected() {
    let mut f = fields(1);
    f.expires = f.published + MAX_LIFETIME_S + 1;
    assert_eq!(check(&raw(&f)).unwrap_err(), DescriptorError::LifetimeTooLong { lifetime: 86_401, max: 86_400 });
    let nonce = pow::solve(&identity(1).relay_id(), 4, 0).unwrap();
    let err = Descriptor::sign(&identity(1), f, nonce, 4).unwrap_err();
    assert!(matches!(err, BuildError::InvalidFields(DescriptorError::LifetimeTooLong { .. })));
}

/// Published more than 5 minutes ahead of the verifier's clock.
#[test]
fn future_dated_rejected() {
    let d = Descriptor::decode(&minimal()).unwrap();
    let now = T0 - MAX_CLOCK_SKEW_S - 1;
    assert_eq!(
        d.clone().verify(now, TEST_DIFFICULTY).unwrap_err(),
        DescriptorError::FutureDated { published: T0, now }
    );
    assert!(d.verify(T0 - MAX_CLOCK_SKEW_S, TEST_DIFFICULTY).is_ok());
}

/// At or after the expiry.
#[test]
fn expired_rejected() {
    let d = Descriptor::decode(&minimal()).unwrap();
    let expires = T0 + MAX_LIFETIME_S;
    assert_eq!(
        d.clone().verify(expires, TEST_DIFFICULTY).unwrap_err(),
        DescriptorError::Expired { expires, now: expires }
    );
    assert!(d.verify(expires - 1, TEST_DIFFICULTY).is_ok());
}

/// Proof of work below the verifier's difficulty.
#[test]
fn insufficient_work_rejected() {
    let d = Descriptor::decode(&minimal()).unwrap();
    let found = d.clone().dangerously_assume_verified().work_bits();
    let required = u8::try_from(found + 1).unwrap();
    assert_eq!(d.verify(T0, required).unwrap_err(), DescriptorError::InsufficientWork { required, found });
}

/// A nonce without the work is refused by the builder.
#[test]
fn builder_refuses_weak_nonce() {
    let id = identity(1).relay_id();
    let weak = (0..).map(PowNonce).find(|n| pow::work_bits(&id, *n) < 8).unwrap();
    let err = Descriptor::sign(&identity(1), fields(1), weak, 8).unwrap_err();
    assert!(matches!(err, BuildError::WeakNonce { required: 8, .. }));
}

/// Any altered signed byte breaks the signature (forgery).
#[test]
fn altered_descriptor_has_bad_signature() {
    let mut bytes = minimal();
    bytes[121] ^= 0x01; // bandwidth
    assert_eq!(check(&bytes).unwrap_err(), DescriptorError::BadSignature);
    let mut bytes = minimal();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01; // signature
    assert_eq!(check(&bytes).unwrap_err(), DescriptorError::BadSignature);
}

/// A descriptor claiming relay A but signed by key B (wrongly bound).
#[test]
fn descriptor_signed_by_another_key_rejected() {
    let claimed = identity(1).relay_id();
    let bytes = sign_raw(&identity(2), &claimed, &fields(1));
    assert_eq!(check(&bytes).unwrap_err(), DescriptorError::BadSignature);
}

/// A signature under another context string does not verify.
#[test]
fn signature_is_bound_to_the_context() {
    let id = identity(1);
    let nonce = pow::solve(&id.relay_id(), TEST_DIFFICULTY, 0).unwrap();
    let mut w = Writer::new();
    encode_body(&mut w, &id.relay_id(), &fields(1));
    w.put_u64(nonce.0);
    let sig = sign_with_context(&id, b"lamina-link-cert-v1", w.as_slice());
    w.put_bytes(&sig.0);
    assert_eq!(check(w.as_slice()).unwrap_err(), DescriptorError::BadSignature);
}

/// The builder reports an empty address list.
#[test]
fn builder_requires_an_address() {
    let mut f = fields(1);
    f.addresses.clear();
    let nonce = pow::solve(&identity(1).relay_id(), 4, 0).unwrap();
    let err = Descriptor::sign(&identity(1), f, nonce, 4).unwrap_err();
    assert_eq!(err, BuildError::InvalidFields(DescriptorError::AddressCount(0)));
    assert_eq!(err.blame(), crate::error::Blame::Local);
}

/// Signing with a freshly searched proof of work works end to end.
#[test]
fn sign_with_new_work_verifies() {
    use rand_core::SeedableRng;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
    let d = Descriptor::sign_with_new_work(&identity(4), fields(9), 6, &mut rng).unwrap();
    let v = d.verify(T0, 6).unwrap();
    assert_eq!(v.sequence(), 9);
    assert!(v.work_bits() >= 6);
}
