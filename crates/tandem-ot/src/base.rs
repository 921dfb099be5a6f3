//! Setup: 128 base OTs by Chou–Orlandi ("The Simplest Protocol for Oblivious
//! Transfer", 2015) over Ristretto255, semi-honest.
//!
//! Roles are reversed with respect to the extension (as in IKNP): S1 is the
//! base-OT *sender* (it ends up with both seeds `k_j^0, k_j^1`), S2 the
//! base-OT *receiver* with choice bits `Δ` (it ends up with `k_j^{Δ_j}`).

use core::fmt;

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::error::{Error, Result};

/// Number of base OTs (the IKNP security parameter κ).
pub const BASE_OTS: usize = 128;

const BASE_OT_DOMAIN: &[u8] = b"tandem/v1/base-ot";

/// S1 → S2: S1's point `A = a·G`, compressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupRequest {
    /// `A = a·G`, compressed Ristretto255 (public).
    pub a_point: [u8; 32],
}

impl SetupRequest {
    /// Wire length: 32 bytes.
    pub const LEN: usize = 32;

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.a_point.to_vec()
    }

    /// Parses exactly 32 bytes. The point itself is checked by [`s2_setup`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let a_point: [u8; 32] = bytes.try_into().map_err(|_| Error::Length {
            what: "base-OT setup request",
            got: bytes.len(),
            expected: Self::LEN,
        })?;
        Ok(Self { a_point })
    }
}

/// S2 → S1: the setup's public id and the 128 points `B_j = b_j·G + Δ_j·A`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupReply {
    /// The setup's id, drawn at random by S2 (public).
    pub id: [u8; 16],
    /// `B_j`, compressed Ristretto255; exactly [`BASE_OTS`] of them.
    pub b_points: Vec<[u8; 32]>,
}

impl SetupReply {
    /// Wire length: 16 + 128·32 = 4112 bytes.
    pub const LEN: usize = 16 + 32 * BASE_OTS;

    /// `id ‖ B_0 ‖ … ‖ B_127`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 32 * self.b_points.len());
        out.extend_from_slice(&self.id);
        for b in &self.b_points {
            out.extend_from_slice(b);
        }
        out
    }

    /// Parses exactly [`SetupReply::LEN`] bytes. Points are checked by
    /// [`s1_setup_finish`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != Self::LEN {
            return Err(Error::Length { what: "base-OT setup reply", got: bytes.len(), expected: Self::LEN });
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[..16]);
        let b_points = bytes[16..]
            .chunks_exact(32)
            .map(|c| {
                let mut p = [0u8; 32];
                p.copy_from_slice(c);
                p
            })
            .collect();
        Ok(Self { id, b_points })
    }
}

/// S1's state between [`s1_setup_request`] and [`s1_setup_finish`]: the
/// secret scalar `a` (zeroized on drop).
pub struct S1SetupPending {
    a: Scalar,
    a_bytes: [u8; 32],
}

impl Drop for S1SetupPending {
    fn drop(&mut self) {
        self.a.zeroize();
    }
}

impl fmt::Debug for S1SetupPending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S1SetupPending").finish_non_exhaustive()
    }
}

/// S2's long-lived key from the setup (the OT-extension *sender* side):
/// the IKNP correlation `Δ` and the seeds `k_j^{Δ_j}`. Zeroized on drop; its
/// `Debug` shows only the public id.
pub struct OtSenderKey {
    id: [u8; 16],
    pub(crate) delta: u128,
    pub(crate) seeds: Box<[[u8; 32]; BASE_OTS]>,
}

/// S1's long-lived key from the setup (the OT-extension *receiver* side):
/// both seeds `k_j^0, k_j^1` of every base OT. Zeroized on drop; its `Debug`
/// shows only the public id.
pub struct OtReceiverKey {
    id: [u8; 16],
    pub(crate) seeds0: Box<[[u8; 32]; BASE_OTS]>,
    pub(crate) seeds1: Box<[[u8; 32]; BASE_OTS]>,
}

impl OtSenderKey {
    /// The setup's public id (the same as the S1 key's).
    pub fn id(&self) -> [u8; 16] {
        self.id
    }
}

impl OtReceiverKey {
    /// The setup's public id (the same as the S2 key's).
    pub fn id(&self) -> [u8; 16] {
        self.id
    }
}

impl Drop for OtSenderKey {
    fn drop(&mut self) {
        self.delta.zeroize();
        self.seeds.zeroize();
    }
}

impl Drop for OtReceiverKey {
    fn drop(&mut self) {
        self.seeds0.zeroize();
        self.seeds1.zeroize();
    }
}

impl fmt::Debug for OtSenderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtSenderKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl fmt::Debug for OtReceiverKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtReceiverKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// `H_base(j, A, B_j, P) = SHA-256("tandem/v1/base-ot" ‖ j (u32 LE) ‖ A ‖ B_j ‖ P)`.
fn h_base(j: usize, a: &[u8; 32], b: &[u8; 32], p: &RistrettoPoint) -> [u8; 32] {
    let mut pc = p.compress().to_bytes();
    let out = Sha256::new()
        .chain_update(BASE_OT_DOMAIN)
        .chain_update((j as u32).to_le_bytes())
        .chain_update(a)
        .chain_update(b)
        .chain_update(pc)
        .finalize()
        .into();
    pc.zeroize();
    out
}

fn decode(bytes: &[u8; 32], what: &'static str, index: usize) -> Result<RistrettoPoint> {
    CompressedRistretto(*bytes).decompress().ok_or(Error::MalformedPoint { what, index, extra: "" })
}

/// S1, first step: draws the secret scalar `a` and sends `A = a·G`.
pub fn s1_setup_request<R: RngCore + CryptoRng>(rng: &mut R) -> (S1SetupPending, SetupRequest) {
    let a = Scalar::random(rng);
    let a_bytes = RistrettoPoint::mul_base(&a).compress().to_bytes();
    (S1SetupPending { a, a_bytes }, SetupRequest { a_point: a_bytes })
}

/// S2: draws `Δ` and the setup id, answers with `B_j = b_j·G + Δ_j·A` and
/// keeps `k_j^{Δ_j} = H_base(j, A, B_j, b_j·A)`.
///
/// Refuses an `A` that is not a canonical Ristretto255 encoding or is the
/// identity.
pub fn s2_setup<R: RngCore + CryptoRng>(req: &SetupRequest, rng: &mut R) -> Result<(OtSenderKey, SetupReply)> {
    let a = decode(&req.a_point, "A", 0)?;
    if a == RistrettoPoint::identity() {
        return Err(Error::MalformedPoint { what: "A", index: 0, extra: ", the identity is refused" });
    }
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    let delta = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
    let mut seeds = Box::new([[0u8; 32]; BASE_OTS]);
    let mut b_points = Vec::with_capacity(BASE_OTS);
    for (j, seed) in seeds.iter_mut().enumerate() {
        let mut b = Scalar::random(rng);
        // Δ_j·A as a constant-time scalar multiplication (no branch on Δ_j).
        let mut bit = Scalar::from(((delta >> j) & 1) as u8);
        let b_point = (RistrettoPoint::mul_base(&b) + a * bit).compress().to_bytes();
        *seed = h_base(j, &req.a_point, &b_point, &(a * b));
        b_points.push(b_point);
        b.zeroize();
        bit.zeroize();
    }
    Ok((OtSenderKey { id, delta, seeds }, SetupReply { id, b_points }))
}

/// S1, second step: `k_j^0 = H_base(j, A, B_j, a·B_j)` and
/// `k_j^1 = H_base(j, A, B_j, a·(B_j − A))`.
///
/// Refuses a reply without exactly [`BASE_OTS`] points or with a point that
/// is not a canonical Ristretto255 encoding.
pub fn s1_setup_finish(pending: S1SetupPending, reply: &SetupReply) -> Result<OtReceiverKey> {
    if reply.b_points.len() != BASE_OTS {
        return Err(Error::PointCount { got: reply.b_points.len(), expected: BASE_OTS });
    }
    let b: Vec<RistrettoPoint> =
        reply.b_points.iter().enumerate().map(|(j, p)| decode(p, "B", j)).collect::<Result<_>>()?;
    let a_times_a = RistrettoPoint::mul_base(&pending.a) * pending.a;
    let mut seeds0 = Box::new([[0u8; 32]; BASE_OTS]);
    let mut seeds1 = Box::new([[0u8; 32]; BASE_OTS]);
    for (j, bj) in b.iter().enumerate() {
        let p0 = bj * pending.a;
        let p1 = p0 - a_times_a;
        seeds0[j] = h_base(j, &pending.a_bytes, &reply.b_points[j], &p0);
        seeds1[j] = h_base(j, &pending.a_bytes, &reply.b_points[j], &p1);
    }
    Ok(OtReceiverKey { id: reply.id, seeds0, seeds1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn chosen_seed_matches_and_other_differs() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (pending, req) = s1_setup_request(&mut rng);
        let req = SetupRequest::from_bytes(&req.to_bytes()).unwrap();
        let (sk, reply) = s2_setup(&req, &mut rng).unwrap();
        let reply = SetupReply::from_bytes(&reply.to_bytes()).unwrap();
        let rk = s1_setup_finish(pending, &reply).unwrap();
        assert_eq!(rk.id(), sk.id());
        assert_ne!(sk.delta, 0);
        let ones = sk.delta.count_ones();
        assert!((32..=96).contains(&ones), "Δ should look random, has {ones} ones");
        for j in 0..BASE_OTS {
            let bit = (sk.delta >> j) & 1;
            let (chosen, other) =
                if bit == 0 { (&rk.seeds0[j], &rk.seeds1[j]) } else { (&rk.seeds1[j], &rk.seeds0[j]) };
            assert_eq!(&sk.seeds[j], chosen, "base OT {j}: S2's seed must equal k_j^Δj");
            assert_ne!(&sk.seeds[j], other, "base OT {j}: S2's seed must differ from k_j^(1-Δj)");
        }
        // Seeds are pairwise distinct (index separation in H_base).
        let mut all: Vec<[u8; 32]> = rk.seeds0.iter().chain(rk.seeds1.iter()).copied().collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 2 * BASE_OTS);
    }

    #[test]
    fn debug_hides_secrets() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let (pending, req) = s1_setup_request(&mut rng);
        let (sk, reply) = s2_setup(&req, &mut rng).unwrap();
        let rk = s1_setup_finish(pending, &reply).unwrap();
        let s = format!("{sk:?} {rk:?}");
        assert!(!s.contains("delta") && !s.contains("seeds"), "{s}");
        assert!(!s.contains(&format!("{}", sk.delta)));
    }
}
