//! Creating our own descriptor: canonicalize the fields, check them with the
//! same rules the decoder applies, encode, attach the proof of work, sign.

use rand_core::{CryptoRng, RngCore};

use lamina_crypto::keys::IdentityKeypair;
use lamina_crypto::sign::sign_with_context;
use lamina_proto::codec::Writer;

use super::{
    addr, encode_body, exit, pow, Descriptor, DescriptorFields, PowNonce, DESCRIPTOR_SIG_CONTEXT, MAX_ADDRESSES,
    MAX_DESCRIPTOR_LEN, MAX_FAMILY, MAX_LIFETIME_S,
};
use crate::error::{BuildError, DescriptorError};
use crate::verify::Unverified;

impl Descriptor {
    /// Sign a descriptor for `identity` with `fields` and a proof-of-work
    /// nonce already found for this identity (see [`pow::solve`]; relays
    /// compute it once per identity and persist it).
    ///
    /// Addresses and family are sorted and deduplicated; every other rule of
    /// the format is checked and reported as [`BuildError::InvalidFields`].
    /// `difficulty` is the work the nonce must carry (checked, so a relay
    /// never publishes a descriptor its peers will reject).
    ///
    /// Returns the descriptor still wrapped as [`Unverified`]: callers that
    /// need the value verify it at their clock, like any other descriptor.
    pub fn sign(
        identity: &IdentityKeypair,
        mut fields: DescriptorFields,
        nonce: PowNonce,
        difficulty: u8,
    ) -> Result<Unverified<Self>, BuildError> {
        let id = identity.relay_id();
        let found = pow::work_bits(&id, nonce);
        if found < u32::from(difficulty) {
            return Err(BuildError::WeakNonce { required: difficulty, found });
        }
        addr::canonicalize(&mut fields.addresses);
        fields.family.sort();
        fields.family.dedup();
        check_fields(&fields)?;
        let mut w = Writer::with_capacity(MAX_DESCRIPTOR_LEN);
        encode_body(&mut w, &id, &fields);
        w.put_u64(nonce.0);
        // Ed25519 over len | "lamina-descriptor-v1" | body (README "Descriptor").
        let signature = sign_with_context(identity, DESCRIPTOR_SIG_CONTEXT, w.as_slice());
        w.put_bytes(&signature.0);
        // Re-parse: the decoder is the one authority on canonical form, so a
        // builder bug cannot publish bytes our peers would reject.
        Self::decode(w.as_slice()).map_err(BuildError::InvalidFields)
    }

    /// Like [`Descriptor::sign`], but first search a fresh proof of work of
    /// `difficulty` bits, starting from a random nonce drawn from `rng`.
    pub fn sign_with_new_work<R: RngCore + CryptoRng>(
        identity: &IdentityKeypair,
        fields: DescriptorFields,
        difficulty: u8,
        rng: &mut R,
    ) -> Result<Unverified<Self>, BuildError> {
        let nonce = pow::solve(&identity.relay_id(), difficulty, rng.next_u64())?;
        Self::sign(identity, fields, nonce, difficulty)
    }
}

/// The rules the decoder cannot see from a well-formed encoding of these
/// fields (counts that would not fit, the family naming us) plus the
/// validity-window rules, checked before signing.
fn check_fields(fields: &DescriptorFields) -> Result<(), BuildError> {
    let invalid = BuildError::InvalidFields;
    let n_addr = fields.addresses.len();
    if n_addr == 0 || n_addr > MAX_ADDRESSES {
        return Err(invalid(DescriptorError::AddressCount(u8::try_from(n_addr).unwrap_or(u8::MAX))));
    }
    for a in &fields.addresses {
        addr::check_address(a).map_err(invalid)?;
    }
    exit::check_summary(&fields.exit).map_err(invalid)?;
    if fields.family.len() > MAX_FAMILY {
        return Err(invalid(DescriptorError::FamilyCount(u8::try_from(fields.family.len()).unwrap_or(u8::MAX))));
    }
    if fields.expires <= fields.published {
        return Err(invalid(DescriptorError::ExpiresBeforePublished {
            published: fields.published,
            expires: fields.expires,
        }));
    }
    let lifetime = fields.expires - fields.published;
    if lifetime > MAX_LIFETIME_S {
        return Err(invalid(DescriptorError::LifetimeTooLong { lifetime, max: MAX_LIFETIME_S }));
    }
    Ok(())
}
