//! Known-answer tests for `lamina-crypto`.
//!
//! Two kinds of vectors live here (CONTRIBUTING.md P14):
//!
//! - **RFC vectors**, run through this crate's own wrappers so that a wrong
//!   argument order, a missing clamp or a swapped key in our code is caught,
//!   not only a bug in the dependency: RFC 7748 (X25519), RFC 8032
//!   (Ed25519), RFC 8439 (ChaCha20-Poly1305) and RFC 5869 (HKDF-SHA256).
//! - **Frozen vectors** of Lamina's own constructions (the circuit handshake
//!   of spec §4–§5 and the relay-cell layers of spec §6), produced from fixed
//!   keys and a seeded `ChaCha20Rng`. They pin the wire behaviour: any change
//!   to a label, a byte order, a nonce layout or the filler makes them fail.

use lamina_crypto::handshake::{self, HopKeys};
use lamina_crypto::keys::{self, IdentityKeypair, StaticKeypair};
use lamina_crypto::layer::{self, LayerStack, Peeled, RelayLayers, BODY_LEN, TAG_LEN};
use lamina_crypto::{kdf, sign, CryptoError};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroizing;

/// Decode a hex string of exactly `N` bytes.
fn h<const N: usize>(s: &str) -> [u8; N] {
    let v = hex::decode(s).expect("valid hex in a test vector");
    v.try_into().expect("test vector of the expected length")
}

/// Decode a hex string of any length.
fn hv(s: &str) -> Vec<u8> {
    hex::decode(s).expect("valid hex in a test vector")
}

// ---------------------------------------------------------------------------
// RFC 7748 — X25519
// ---------------------------------------------------------------------------

/// RFC 7748 §5.2, the two single-call test vectors.
#[test]
fn rfc7748_x25519_vectors() {
    let cases = [
        (
            "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        ),
        (
            "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
            "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        ),
    ];
    for (scalar, u, out) in cases {
        assert_eq!(keys::x25519(h(scalar), h(u)), h::<32>(out));
    }
}

/// Run the RFC 7748 §5.2 iteration `iterations` times from `k = u = 9`.
fn x25519_iterate(iterations: u32) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[0] = 9;
    let mut u = k;
    for _ in 0..iterations {
        let next = keys::x25519(k, u);
        u = k;
        k = next;
    }
    k
}

/// RFC 7748 §5.2, the iterated vector after 1 and 1,000 iterations.
#[test]
fn rfc7748_x25519_iterated() {
    assert_eq!(x25519_iterate(1), h::<32>("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"));
    assert_eq!(x25519_iterate(1_000), h::<32>("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"));
}

/// RFC 7748 §5.2, the iterated vector after 1,000,000 iterations (slow in a
/// debug build: run with `cargo test --release -- --ignored`).
#[test]
#[ignore = "one million scalar multiplications"]
fn rfc7748_x25519_iterated_million() {
    assert_eq!(x25519_iterate(1_000_000), h::<32>("7c3911e0ab2586fd864497297e575e6f3bc601c0883c30df5f4dd2d24f665424"));
}

/// RFC 7748 §6.1: Alice's and Bob's key pairs and their shared secret,
/// through [`StaticKeypair`] and the raw function.
#[test]
fn rfc7748_diffie_hellman() {
    let alice_secret = h::<32>("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    let alice_public = h::<32>("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
    let bob_secret = h::<32>("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    let bob_public = h::<32>("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    let shared = h::<32>("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");

    let alice = StaticKeypair::from_secret_bytes(&alice_secret);
    let bob = StaticKeypair::from_secret_bytes(&bob_secret);
    assert_eq!(alice.public_bytes(), alice_public);
    assert_eq!(bob.public_bytes(), bob_public);
    assert_eq!(alice.onion_public().0, alice_public);
    assert_eq!(bob.link_public().0, bob_public);
    assert_eq!(*alice.secret_bytes(), alice_secret);

    // The shared secret through the raw function, in both directions, using
    // the public keys our key type derived.
    assert_eq!(keys::x25519(alice_secret, bob.public_bytes()), shared);
    assert_eq!(keys::x25519(bob_secret, alice.public_bytes()), shared);
}

// ---------------------------------------------------------------------------
// RFC 8032 — Ed25519
// ---------------------------------------------------------------------------

/// RFC 8032 §7.1 TEST 1, TEST 2 and TEST 3 through [`IdentityKeypair`] and
/// [`sign::verify`].
#[test]
fn rfc8032_ed25519_tests_1_2_3() {
    let cases = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            concat!(
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155",
                "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
            ),
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            concat!(
                "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da",
                "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
            ),
        ),
        (
            "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            "af82",
            concat!(
                "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac",
                "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"
            ),
        ),
    ];
    for (secret, public, msg, sig) in cases {
        let identity = IdentityKeypair::from_secret_bytes(&h(secret));
        let msg = hv(msg);
        let expected_sig = h::<64>(sig);

        assert_eq!(identity.relay_id().0, h::<32>(public));
        assert_eq!(*identity.secret_bytes(), h::<32>(secret));
        let produced = identity.sign(&msg);
        assert_eq!(produced.0, expected_sig);
        assert_eq!(sign::verify(&identity.relay_id(), &msg, &produced), Ok(()));

        // The same signature over a different message must not verify.
        let mut other = msg.clone();
        other.push(0);
        assert_eq!(sign::verify(&identity.relay_id(), &other, &produced), Err(CryptoError::BadSignature));
    }
}

// ---------------------------------------------------------------------------
// RFC 8439 — ChaCha20-Poly1305
// ---------------------------------------------------------------------------

/// RFC 8439 §2.8.2: the AEAD example (sunscreen), sealed and opened through
/// the raw helpers of [`layer`].
#[test]
fn rfc8439_aead_example() {
    let plaintext: &[u8] = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    let aad = hv("50515253c0c1c2c3c4c5c6c7");
    let key = h::<32>("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    // 32-bit constant 07000000 followed by the 64-bit IV 4041424344454647.
    let nonce = h::<12>("070000004041424344454647");
    let ciphertext = hv(concat!(
        "d31a8d34648e60db7b86afbc53ef7ec2",
        "a4aded51296e08fea9e2b5a736ee62d6",
        "3dbea45e8ca9671282fafb69da92728b",
        "1a71de0a9e060b2905d6a5b67ecd3b36",
        "92ddbd7f2d778b8c9803aee328091b58",
        "fab324e4fad675945585808b4831d7bc",
        "3ff4def08e4b7a9de576d26586cec64b",
        "6116",
    ));
    let tag = h::<16>("1ae10b594f09e26a7e902ecbd0600691");

    let mut buf = plaintext.to_vec();
    let produced_tag = layer::chacha20poly1305_seal_raw(&key, &nonce, &aad, &mut buf).unwrap();
    assert_eq!(buf, ciphertext);
    assert_eq!(produced_tag, tag);

    layer::chacha20poly1305_open_raw(&key, &nonce, &aad, &mut buf, &tag).unwrap();
    assert_eq!(buf, plaintext);

    // A wrong tag, a wrong AD and a flipped ciphertext bit all fail, and a
    // failed open leaves the buffer untouched.
    let mut bad_tag = tag;
    bad_tag[0] ^= 1;
    let mut ct = ciphertext.clone();
    assert_eq!(
        layer::chacha20poly1305_open_raw(&key, &nonce, &aad, &mut ct, &bad_tag),
        Err(CryptoError::AuthenticationFailed)
    );
    assert_eq!(ct, ciphertext);
    assert_eq!(
        layer::chacha20poly1305_open_raw(&key, &nonce, &aad[1..], &mut ct, &tag),
        Err(CryptoError::AuthenticationFailed)
    );
    ct[7] ^= 0x80;
    assert_eq!(
        layer::chacha20poly1305_open_raw(&key, &nonce, &aad, &mut ct, &tag),
        Err(CryptoError::AuthenticationFailed)
    );
}

// ---------------------------------------------------------------------------
// RFC 5869 — HKDF-SHA256
// ---------------------------------------------------------------------------

/// One RFC 5869 case: input key material, salt, info, expected OKM (hex).
type HkdfCase = (Vec<u8>, Option<Vec<u8>>, Vec<u8>, &'static str);

/// RFC 5869 Appendix A, test cases 1, 2 and 3 (the SHA-256 ones).
#[test]
fn rfc5869_hkdf_sha256_cases_1_2_3() {
    let ikm_22 = "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b";
    let long = |from: u8| -> Vec<u8> { (0..80).map(|i| from + i).collect() };
    let cases: [HkdfCase; 3] = [
        // Test case 1: basic.
        (
            hv(ikm_22),
            Some(hv("000102030405060708090a0b0c")),
            hv("f0f1f2f3f4f5f6f7f8f9"),
            concat!("3cb25f25faacd57a90434f64d0362f2a", "2d2d0a90cf1a5a4c5db02d56ecc4c5bf", "34007208d5b887185865"),
        ),
        // Test case 2: longer inputs and outputs.
        (
            long(0x00),
            Some(long(0x60)),
            long(0xb0),
            concat!(
                "b11e398dc80327a1c8e7f78c596a4934",
                "4f012eda2d4efad8a050cc4c19afa97c",
                "59045a99cac7827271cb41c65e590e09",
                "da3275600c2f09b8367793a9aca3db71",
                "cc30c58179ec3e87c14c01d5c1f3434f",
                "1d87"
            ),
        ),
        // Test case 3: zero-length salt and info.
        (
            hv(ikm_22),
            Some(Vec::new()),
            Vec::new(),
            concat!("8da4e775a563c18f715f802a063c5a31", "b8a11f5c5ee1879ec3454e5f3c738d2d", "9d201395faa4b61a96c8"),
        ),
    ];
    for (ikm, salt, info, okm) in cases {
        let expected = hv(okm);
        let mut out = vec![0u8; expected.len()];
        kdf::hkdf_sha256_into(salt.as_deref(), &ikm, &info, &mut out).unwrap();
        assert_eq!(out, expected);
    }

    // RFC 5869 §2.2: an absent salt is a string of HashLen zeros, and so is
    // the empty salt of test case 3.
    let mut absent = [0u8; 42];
    kdf::hkdf_sha256_into(None, &hv(ikm_22), &[], &mut absent).unwrap();
    assert_eq!(
        absent.as_slice(),
        hv("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")
    );

    // More than 255 hash lengths of output is refused, not truncated.
    let mut too_long = vec![0u8; 255 * 32 + 1];
    assert_eq!(kdf::hkdf_sha256_into(None, b"ikm", b"info", &mut too_long), None);
}

// ---------------------------------------------------------------------------
// Frozen vectors: the circuit handshake (spec §4–§5)
// ---------------------------------------------------------------------------

/// Secret seed of the relay identity used by the frozen vectors.
const RELAY_IDENTITY_SECRET: [u8; 32] = [0x11; 32];
/// Secret bytes of the relay onion key used by the frozen vectors.
const RELAY_ONION_SECRET: [u8; 32] = [0x22; 32];

// FROZEN from version 1 of the spec (§4 handshake, §5 labels). These values
// pin the wire format: they must never change silently. If a deliberate
// protocol change moves them, bump the PROTOID version, regenerate them and
// say so in the spec and the changelog.

/// Frozen: the onionskin `ID | B | X` with the client RNG seeded `[1; 32]`.
const FROZEN_ONIONSKIN: &str = concat!(
    "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737",
    "0faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f20",
    "d53b9fea1dd4d570dbe38180767c236456ca6633f103f1aa0637e7b613d25274",
);
/// Frozen: the reply `Y | AUTH` with the relay RNG seeded `[2; 32]`.
const FROZEN_REPLY: &str = concat!(
    "c5c4aede10f07dc551ae692813183793bbcc96f56020f8e11dcb8e4824871338",
    "e121e276aadc061262694f302427d9fd396affc620df3362782f4fc991e3526b",
);
/// Frozen: the hop's forward layer key.
const FROZEN_FORWARD_KEY: &str = "cb3068a9202c71ba5632be1968f9ef61d80ac0596719e46e1939eb8276bbbf0c";
/// Frozen: the hop's backward layer key.
const FROZEN_BACKWARD_KEY: &str = "640ca18457d26abdf0a64eefd5f163386e0028262b6f0d95b899ace561334b92";

/// The circuit handshake from fixed relay keys and seeded RNGs produces the
/// frozen onionskin, reply and hop keys, on both sides.
#[test]
fn frozen_circuit_handshake_v1() {
    let identity = IdentityKeypair::from_secret_bytes(&RELAY_IDENTITY_SECRET);
    let onion = StaticKeypair::from_secret_bytes(&RELAY_ONION_SECRET);
    let relay_id = identity.relay_id();
    let mut client_rng = ChaCha20Rng::from_seed([1; 32]);
    let mut relay_rng = ChaCha20Rng::from_seed([2; 32]);

    let (pending, onionskin) = handshake::client_start(&mut client_rng, &relay_id, &onion.onion_public());
    let (reply, relay_keys) = handshake::relay_respond(&mut relay_rng, &relay_id, &onion, &onionskin).unwrap();
    let client_keys = pending.finish(&reply).unwrap();

    assert_eq!(hex::encode(onionskin), FROZEN_ONIONSKIN);
    assert_eq!(hex::encode(reply), FROZEN_REPLY);
    assert_eq!(hex::encode(*client_keys.forward), FROZEN_FORWARD_KEY);
    assert_eq!(hex::encode(*client_keys.backward), FROZEN_BACKWARD_KEY);
    assert_eq!(*relay_keys.forward, *client_keys.forward);
    assert_eq!(*relay_keys.backward, *client_keys.backward);
}

// ---------------------------------------------------------------------------
// Frozen vectors: the relay-cell layers (spec §6)
// ---------------------------------------------------------------------------

/// The fixed keys of hop `h` of the frozen 3-hop circuit.
fn frozen_hop_keys(h: u8) -> HopKeys {
    HopKeys { forward: Zeroizing::new([0xf0 | h; 32]), backward: Zeroizing::new([0xb0 | h; 32]) }
}

/// A 3-hop client stack and the three relays' layers, all at counter 0.
fn frozen_circuit() -> (LayerStack, Vec<RelayLayers>) {
    let mut stack = LayerStack::new();
    let mut relays = Vec::new();
    for h in 0..3 {
        let keys = frozen_hop_keys(h);
        stack.push(&keys).expect("three hops fit in a stack");
        relays.push(RelayLayers::new(&keys));
    }
    (stack, relays)
}

/// The fixed message of cell number `cell`: bytes `cell, cell+1, …` (mod 256).
fn frozen_message(cell: u8, len: usize) -> Vec<u8> {
    (0..=u8::MAX).cycle().take(len).map(|i| cell.wrapping_add(i)).collect()
}

/// Hex of a body's first 32 bytes, last 32 bytes, for compact frozen values.
fn ends(body: &[u8; BODY_LEN]) -> String {
    format!("{}..{}", hex::encode(&body[..32]), hex::encode(&body[BODY_LEN - 32..]))
}

// FROZEN from version 1 of the spec (§6.2 forward layers with filler, §6.3
// backward layers). They must never change silently; see the note above the
// handshake vectors.

/// Frozen: the first forward cell to hop 2, as the client sends it.
const FROZEN_FORWARD_CELL_0: &str = concat!(
    "d284791dd3ed75680f2aa533ca33ece1b2f068464ec897e80e766a4839c90238",
    "faec37650c98533d929f5e16a5fa1e53bb93c5f9ab7fdb510a106f8e860a67ce",
    "0ec5913c8fdc7a830c5dbec547c7fe7aabb6cae3b549a62832d07f6ae067829b",
    "dc4d65121a84dd231092ea2903f57eb7af805e80aefebf149407f7734aacb5c2",
    "d544b4510d6e3207a9e3299457fef55d9ae9a154c6daa96b193deda330b3d1c1",
    "bfb7d140d540cf753594fbdf6631cd3e88ca8037ca0e79724a2303e6ab15ee3f",
    "1c11353aeaf993541086f47d6ea97f2e1448c68ba15df96cf3b490c530e43a93",
    "4a9d1dc548724e434c8ce2dfbb9d4ad72a638731a6a5957ee60ba50f54fb3884",
    "f5b7d6b1daa7b67b8c2d03a6126a7b46761fe0892c1afa5cdfd97f1859772ba4",
    "0963962d0b15f1f35dbd6492caf178a442b2a63db0c50e41ac0fdb451d0416e8",
    "d850fc572943bff681c3917dde6dc3d16399bb4789c328c4c1440b70208a1984",
    "81eb09bae6db6c9da5d66c02987c07bbc5cd405b3c1ea3bbd65d5b22562c593f",
    "f4488aa6359935f0014ea8a87bd5ff98ed25ded87ffe490333349a4fbd385783",
    "f3c31d652e815ac4fdd57f4a9a5f822555a6c7334fbd896e7c12214e2b862b96",
    "bbadf5736fbafafc0b1cda8555fde7be51b71a482c37355876ebc0e702c170bf",
    "1211791cb9d6a1337c2683d69723aa137b605a9bee8b9b1f2367e7",
);
/// Frozen: the tag of hop 2's layer on that cell.
const FROZEN_FORWARD_TAG_0: &str = "5a44d5bc2b3dc31432ef219e0902936d";
/// Frozen: first and last 32 bytes of the second forward cell to hop 2.
const FROZEN_FORWARD_CELL_1_ENDS: &str = concat!(
    "3f5cea69de58abc6720d712284af120484e1400e3d06af5f79490be25005f7a5",
    "..",
    "11ccd596df3b05c4548ab2e3b574a32c38d28dabedbc07aa131099c9df08dd08",
);
/// Frozen: the first backward cell from hop 2, as the client receives it.
const FROZEN_BACKWARD_CELL_0: &str = concat!(
    "1aa59a7a52f6e176b8cac41b4eb37eb46629d09018563b486904b2304e705e31",
    "27955e1abc4eb6012d71c9038093d3410d1cccb76c725b5439020333e46ff3b1",
    "1778cc5a1c211b4464cf65ca840a6276f46aba359da068541fffdd09be5faede",
    "a1b8492ee4a8bacbb6fd5b5b92d3abcf69a1530ff4797f7f7b35f8cf450c4e7d",
    "2a6afaa18941aa9ef8c1a34caa44fcc485d09c8b5c95dcbc743f397ff886ba9d",
    "3797b54affb350d4aa8295fff540b20558ae104a211ce760520506a4cfc231d1",
    "c34f591048b57d08e5fdd97e43241b09cf3965d7c91f3912c3525e3268bd9448",
    "f9a63c1bbce5d1c13a151114f82518574264fbf4f8babae143065c3db21da752",
    "76181d56692ec42f6c2293acf8d9de40a50bd1f9b3a9a51f73217b9967a1466e",
    "4d815524f55577bd70cf61bd8573c983cf2daaaaa28396a0be4b84bdf175e780",
    "822985b2028d94b9863c6fcdf6358cc68127954da68f2eec0d46317899a54ea5",
    "09df34ea88f783630028d272351407d6e55d9337784534327ad3f6b6298522fe",
    "c5e163322a94fca255584b6f4772259b6176ea8de9c50a3d9ac7e4866c618eba",
    "9b6a3d22bc3a55d25473a3a66737a7316d029bec19a389fb9ad89e9e1e7ed13b",
    "619c552032a3a8c81b7239dc1af9f6e42b2af57a562add3b75e33f78f9451218",
    "12b4adc47d19e9fd559aa805c445b4c49443aebf820370c009a699",
);
/// Frozen: the origin tag hop 2 put on that cell.
const FROZEN_BACKWARD_TAG_0: &str = "88ed5f02d9198c96566b553500a1989f";
/// Frozen: first and last 32 bytes of the second backward cell from hop 2.
const FROZEN_BACKWARD_CELL_1_ENDS: &str = concat!(
    "2c83597388491b898b5265351b71919513e5bc27c4bcfa339e6726c7d7289e5c",
    "..",
    "701de9e6b02d2c1f3212b532c0a0398cecbc46260d034904bca353801f38d7db",
);

/// Forward: two cells wrapped to hop 2 of a fixed 3-hop circuit match the
/// frozen bytes and are recognized by hop 2 with the frozen message.
#[test]
fn frozen_forward_layers_v1() {
    let (mut stack, mut relays) = frozen_circuit();
    let cap = layer::forward_capacity(2);
    let mut observed = Vec::new();
    for cell in 0..2u8 {
        let msg = frozen_message(cell, cap);
        let mut body = [0u8; BODY_LEN];
        body[TAG_LEN..TAG_LEN + cap].copy_from_slice(&msg);
        let tag = stack.wrap_forward(2, &mut body).unwrap();
        observed.push((body, tag));

        assert_eq!(relays[0].peel_forward(&mut body, true), Ok(Peeled::Onward));
        assert_eq!(relays[1].peel_forward(&mut body, true), Ok(Peeled::Onward));
        assert_eq!(relays[2].peel_forward(&mut body, false), Ok(Peeled::Recognized { tag }));
        assert_eq!(&body[..cap], msg.as_slice());
    }
    assert_eq!(hex::encode(observed[0].0), FROZEN_FORWARD_CELL_0);
    assert_eq!(hex::encode(observed[0].1), FROZEN_FORWARD_TAG_0);
    assert_eq!(ends(&observed[1].0), FROZEN_FORWARD_CELL_1_ENDS);
}

/// Backward: two cells originated by hop 2 and relayed by hops 1 and 0 match
/// the frozen bytes and unwrap at the client to hop 2 and the message.
#[test]
fn frozen_backward_layers_v1() {
    let (mut stack, mut relays) = frozen_circuit();
    let mut observed = Vec::new();
    for cell in 0..2u8 {
        let msg = frozen_message(0x80 | cell, layer::BACKWARD_CAPACITY);
        let mut body = [0u8; BODY_LEN];
        body[TAG_LEN..].copy_from_slice(&msg);
        let tag = relays[2].originate_backward(&mut body).unwrap();
        relays[1].relay_backward(&mut body).unwrap();
        relays[0].relay_backward(&mut body).unwrap();
        observed.push((body, tag));

        assert_eq!(stack.unwrap_backward(&mut body), Ok((2, tag)));
        assert_eq!(&body[TAG_LEN..], msg.as_slice());
    }
    assert_eq!(hex::encode(observed[0].0), FROZEN_BACKWARD_CELL_0);
    assert_eq!(hex::encode(observed[0].1), FROZEN_BACKWARD_TAG_0);
    assert_eq!(ends(&observed[1].0), FROZEN_BACKWARD_CELL_1_ENDS);
}

// ---------------------------------------------------------------------------
// Reference models: the frozen vectors recomputed from the spec's formulas
// with raw primitives only, so the frozen values are known to implement the
// spec and not merely to be what the code happened to output.
// ---------------------------------------------------------------------------

/// RFC 4231 §4.2 and §4.3 (HMAC-SHA256 test cases 1 and 2) through
/// [`kdf::hmac_sha256`], with the message split into parts.
#[test]
fn rfc4231_hmac_sha256_cases_1_2() {
    assert_eq!(
        kdf::hmac_sha256(&[0x0b; 20], &[b"Hi ", b"There"]),
        h::<32>("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
    );
    assert_eq!(
        kdf::hmac_sha256(b"Jefe", &[b"what do ya want ", b"", b"for nothing?"]),
        h::<32>("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    );
}

/// The first 32 bytes a `ChaCha20Rng` seeded with `seed` produces: the
/// ephemeral scalar the handshake draws from it.
fn first_32_bytes(seed: [u8; 32]) -> [u8; 32] {
    use rand_chacha::rand_core::RngCore;
    let mut out = [0u8; 32];
    ChaCha20Rng::from_seed(seed).fill_bytes(&mut out);
    out
}

/// The frozen handshake equals spec §4's formula evaluated with raw X25519,
/// HMAC-SHA256 and HKDF-SHA256.
#[test]
fn frozen_circuit_handshake_matches_spec_formula() {
    let mut base = [0u8; 32];
    base[0] = 9;
    let id = IdentityKeypair::from_secret_bytes(&RELAY_IDENTITY_SECRET).relay_id().0;
    let b = keys::x25519(RELAY_ONION_SECRET, base);
    let x = first_32_bytes([1; 32]);
    let y = first_32_bytes([2; 32]);
    let x_pub = keys::x25519(x, base);
    let y_pub = keys::x25519(y, base);

    let onionskin = [id, b, x_pub].concat();
    assert_eq!(hex::encode(&onionskin), FROZEN_ONIONSKIN);

    // secret_input = x·Y | x·B | ID | B | X | Y | PROTOID
    let secret_input =
        [&keys::x25519(x, y_pub)[..], &keys::x25519(x, b), &id, &b, &x_pub, &y_pub, kdf::PROTOID].concat();
    // The relay's view of the same secret: y·X | b·X.
    assert_eq!(keys::x25519(y, x_pub), keys::x25519(x, y_pub));
    assert_eq!(keys::x25519(RELAY_ONION_SECRET, x_pub), keys::x25519(x, b));

    let verify = kdf::hmac_sha256(kdf::T_VERIFY, &[&secret_input]);
    let auth = kdf::hmac_sha256(kdf::T_MAC, &[&verify, &id, &b, &y_pub, &x_pub, kdf::PROTOID, kdf::SERVER_ROLE]);
    assert_eq!(hex::encode([&y_pub[..], &auth].concat()), FROZEN_REPLY);

    let okm = kdf::hkdf_sha256::<64>(kdf::T_KEY_EXTRACT, &secret_input, kdf::M_EXPAND);
    assert_eq!(hex::encode(&okm[..32]), FROZEN_FORWARD_KEY);
    assert_eq!(hex::encode(&okm[32..]), FROZEN_BACKWARD_KEY);
}

/// Nonce of counter `n` (spec §6.1): four zero bytes, then `n` big-endian.
fn counter_nonce(n: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&n.to_be_bytes());
    nonce
}

/// The frozen forward cell, peeled by three reference relays written with
/// the raw AEAD only (spec §6.2: open under the onward or recognized AD with
/// the counter nonce, shift left by one tag, append 16 zeros).
#[test]
fn frozen_forward_cell_matches_reference_relays() {
    let mut body = hv(FROZEN_FORWARD_CELL_0);
    assert_eq!(body.len(), BODY_LEN);
    for hop in 0..3u8 {
        let key = *frozen_hop_keys(hop).forward;
        let ad = if hop == 2 { kdf::AD_FORWARD_RECOGNIZED } else { kdf::AD_FORWARD_ONWARD };
        let tag: [u8; TAG_LEN] = body[..TAG_LEN].try_into().unwrap();
        let mut ct = body[TAG_LEN..].to_vec();
        layer::chacha20poly1305_open_raw(&key, &counter_nonce(0), ad, &mut ct, &tag).unwrap();
        if hop == 2 {
            assert_eq!(hex::encode(tag), FROZEN_FORWARD_TAG_0);
        }
        body = [ct, vec![0u8; TAG_LEN]].concat();
    }
    let cap = layer::forward_capacity(2);
    assert_eq!(&body[..cap], frozen_message(0, cap).as_slice());
}

/// The frozen backward cell, built by a reference written with the raw AEAD
/// only (spec §6.3: the origin seals under its backward key, every earlier
/// hop XORs the whole body with its ChaCha20 keystream from block 1, which
/// is what sealing zeros produces).
#[test]
fn frozen_backward_cell_matches_reference_hops() {
    let nonce = counter_nonce(0);
    let mut body = [0u8; BODY_LEN];
    body[TAG_LEN..].copy_from_slice(&frozen_message(0x80, layer::BACKWARD_CAPACITY));
    let origin_key = *frozen_hop_keys(2).backward;
    let tag =
        layer::chacha20poly1305_seal_raw(&origin_key, &nonce, kdf::AD_BACKWARD_ORIGIN, &mut body[TAG_LEN..]).unwrap();
    body[..TAG_LEN].copy_from_slice(&tag);
    assert_eq!(hex::encode(tag), FROZEN_BACKWARD_TAG_0);
    for hop in [1u8, 0] {
        let mut keystream = [0u8; BODY_LEN];
        let key = *frozen_hop_keys(hop).backward;
        layer::chacha20poly1305_seal_raw(&key, &nonce, b"", &mut keystream).unwrap();
        for (b, k) in body.iter_mut().zip(keystream) {
            *b ^= k;
        }
    }
    assert_eq!(hex::encode(body), FROZEN_BACKWARD_CELL_0);
}
