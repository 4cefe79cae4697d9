//! The circuit handshake: one-way authenticated, forward-secret key agreement
//! between an anonymous client and a relay's onion key (spec §4).
//!
//! The construction is ntor-shaped (Tor's tor-spec §5.1.4, analysed by
//! Goldberg, Stebila and Ustaoglu) over X25519 and HMAC/HKDF-SHA256:
//!
//! ```text
//! client:  x, X = x·G                      onionskin = ID | B | X          (96 bytes)
//! relay:   y, Y = y·G
//!          secret_input = x·Y | x·B | ID | B | X | Y | PROTOID   (relay: y·X | b·X)
//!          verify = HMAC(T_VERIFY, secret_input)
//!          AUTH   = HMAC(T_MAC, verify | ID | B | Y | X | PROTOID | "Server")
//!          reply  = Y | AUTH                                               (64 bytes)
//! both:    K = HKDF-SHA256(salt = T_KEY_EXTRACT, ikm = secret_input, info = M_EXPAND, 64)
//!          forward key = K[0..32], backward key = K[32..64]
//! ```
//!
//! Three pure functions: [`client_start`] (randomness injected) returns the
//! onionskin and a [`ClientPending`] state; [`relay_respond`] returns the
//! reply and the hop keys; [`ClientPending::finish`] consumes the state and
//! returns the hop keys. The client's ephemeral secret lives only inside the
//! pending state and is dropped (zeroized) when `finish` consumes it.

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::kdf::{hkdf_sha256, hmac_sha256, M_EXPAND, PROTOID, SERVER_ROLE, T_KEY_EXTRACT, T_MAC, T_VERIFY};
use crate::keys::{contributory, ct_eq, OnionPublicKey, RelayId, StaticKeypair, KEY_LEN};

/// Length of the client's handshake message (the onionskin).
pub const ONIONSKIN_LEN: usize = 3 * KEY_LEN;
/// Length of the relay's reply.
pub const REPLY_LEN: usize = 2 * KEY_LEN;
/// Length of the relay's authenticator.
const AUTH_LEN: usize = 32;

/// The per-hop key material a finished handshake yields (spec §5.2).
pub struct HopKeys {
    /// Key of the forward (client → exit) layer of this hop.
    pub forward: Zeroizing<[u8; KEY_LEN]>,
    /// Key of the backward (exit → client) layer of this hop.
    pub backward: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for HopKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HopKeys { .. }")
    }
}

/// The client's state between sending the onionskin and receiving the reply.
pub struct ClientPending {
    /// The ephemeral secret `x`; used for two DH operations, then dropped.
    x: x25519_dalek::ReusableSecret,
    /// `X = x·G`.
    x_pub: [u8; KEY_LEN],
    /// The relay id the handshake is addressed to.
    relay_id: RelayId,
    /// The onion key the handshake is addressed to.
    onion_key: OnionPublicKey,
}

impl std::fmt::Debug for ClientPending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientPending").field("relay_id", &self.relay_id).finish_non_exhaustive()
    }
}

/// Begin a handshake with the relay `relay_id` whose onion key is `onion_key`.
pub fn client_start<R: RngCore + CryptoRng>(
    rng: &mut R,
    relay_id: &RelayId,
    onion_key: &OnionPublicKey,
) -> (ClientPending, [u8; ONIONSKIN_LEN]) {
    let x = x25519_dalek::ReusableSecret::random_from_rng(rng);
    let x_pub = x25519_dalek::PublicKey::from(&x).to_bytes();
    // onionskin = ID | B | X
    let mut onionskin = [0u8; ONIONSKIN_LEN];
    onionskin[..KEY_LEN].copy_from_slice(relay_id.as_bytes());
    onionskin[KEY_LEN..2 * KEY_LEN].copy_from_slice(&onion_key.0);
    onionskin[2 * KEY_LEN..].copy_from_slice(&x_pub);
    let pending = ClientPending { x, x_pub, relay_id: *relay_id, onion_key: *onion_key };
    (pending, onionskin)
}

/// The relay's side: answer `onionskin` with our identity and onion key.
///
/// Fails with [`CryptoError::UnknownKey`] if the onionskin names another
/// relay or another onion key, and with [`CryptoError::NonContributory`] if
/// the client's `X` is a small-order point.
pub fn relay_respond<R: RngCore + CryptoRng>(
    rng: &mut R,
    relay_id: &RelayId,
    onion_key: &StaticKeypair,
    onionskin: &[u8; ONIONSKIN_LEN],
) -> Result<([u8; REPLY_LEN], HopKeys), CryptoError> {
    let (id, rest) = onionskin.split_at(KEY_LEN);
    let (b_pub, x_pub) = rest.split_at(KEY_LEN);
    if !ct_eq(id, relay_id.as_bytes()) || !ct_eq(b_pub, &onion_key.public_bytes()) {
        return Err(CryptoError::UnknownKey);
    }
    let x_pub: [u8; KEY_LEN] = x_pub.try_into().map_err(|_| CryptoError::OutOfRange("onionskin"))?;
    let y = x25519_dalek::EphemeralSecret::random_from_rng(rng);
    let y_pub = x25519_dalek::PublicKey::from(&y).to_bytes();
    // EXP(X, y), then EXP(X, b); both must be contributory.
    let xy = contributory(y.diffie_hellman(&x25519_dalek::PublicKey::from(x_pub)))?;
    let xb = onion_key.diffie_hellman(&x_pub)?;
    let b_pub = onion_key.public_bytes();
    let (auth, keys) = derive(&xy, &xb, relay_id, &b_pub, &x_pub, &y_pub);
    let mut reply = [0u8; REPLY_LEN];
    reply[..KEY_LEN].copy_from_slice(&y_pub);
    reply[KEY_LEN..].copy_from_slice(&auth);
    Ok((reply, keys))
}

impl ClientPending {
    /// Finish the handshake with the relay's `reply`, consuming the secret.
    pub fn finish(self, reply: &[u8; REPLY_LEN]) -> Result<HopKeys, CryptoError> {
        let (y_pub, auth) = reply.split_at(KEY_LEN);
        let y_pub: [u8; KEY_LEN] = y_pub.try_into().map_err(|_| CryptoError::OutOfRange("reply"))?;
        // EXP(Y, x), then EXP(B, x).
        let xy = contributory(self.x.diffie_hellman(&x25519_dalek::PublicKey::from(y_pub)))?;
        let xb = contributory(self.x.diffie_hellman(&x25519_dalek::PublicKey::from(self.onion_key.0)))?;
        let (expected, keys) = derive(&xy, &xb, &self.relay_id, &self.onion_key.0, &self.x_pub, &y_pub);
        if !ct_eq(&expected, auth) {
            return Err(CryptoError::AuthenticationFailed);
        }
        Ok(keys)
    }

    /// The relay id this handshake is addressed to.
    pub fn relay_id(&self) -> &RelayId {
        &self.relay_id
    }
}

/// The shared computation of both sides: the relay's authenticator and the
/// hop keys.
fn derive(
    xy: &[u8; KEY_LEN],
    xb: &[u8; KEY_LEN],
    relay_id: &RelayId,
    b_pub: &[u8; KEY_LEN],
    x_pub: &[u8; KEY_LEN],
    y_pub: &[u8; KEY_LEN],
) -> ([u8; AUTH_LEN], HopKeys) {
    // secret_input = EXP(X,y) | EXP(X,b) | ID | B | X | Y | PROTOID
    let mut secret_input = Zeroizing::new(Vec::with_capacity(6 * KEY_LEN + PROTOID.len()));
    for part in [xy.as_slice(), xb, relay_id.as_bytes(), b_pub, x_pub, y_pub, PROTOID] {
        secret_input.extend_from_slice(part);
    }
    // verify = HMAC(T_VERIFY, secret_input)
    let verify = Zeroizing::new(hmac_sha256(T_VERIFY, &[&secret_input]));
    // AUTH = HMAC(T_MAC, verify | ID | B | Y | X | PROTOID | "Server")
    let auth = hmac_sha256(T_MAC, &[verify.as_slice(), relay_id.as_bytes(), b_pub, y_pub, x_pub, PROTOID, SERVER_ROLE]);
    // K = HKDF(salt = T_KEY_EXTRACT, ikm = secret_input, info = M_EXPAND, 64)
    let okm = hkdf_sha256::<{ 2 * KEY_LEN }>(T_KEY_EXTRACT, &secret_input, M_EXPAND);
    let mut forward = Zeroizing::new([0u8; KEY_LEN]);
    let mut backward = Zeroizing::new([0u8; KEY_LEN]);
    forward.copy_from_slice(&okm[..KEY_LEN]);
    backward.copy_from_slice(&okm[KEY_LEN..]);
    (auth, HopKeys { forward, backward })
}
