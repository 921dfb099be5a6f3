//! Gilboa's OT-based multiplication (arithmetic OLE) over `Z_{2^128}` on top
//! of the IKNP extension.

use core::fmt;

use zeroize::{Zeroize, Zeroizing};

use crate::base::{OtReceiverKey, OtSenderKey};
use crate::error::{Error, Result};
use crate::hash::{Tccr, CHUNK};
use crate::iknp;

/// Hard cap on the number of OTs in one session (`2^22`): `U` is then at most
/// 64 MiB, each side's per-session state at most 64 MiB.
pub const MAX_OTS: u32 = 1 << 22;

/// S1 → S2: the number of OTs `M` and the IKNP matrix `U` (128 columns of
/// `M` bits, each padded up to a multiple of 128 bits).
#[derive(Clone, PartialEq, Eq)]
pub struct OleRequest {
    /// Number of OTs `M` (at most [`MAX_OTS`]).
    pub ots: u32,
    /// `U`, column `j` at bytes `[j·L, (j+1)·L)` with
    /// `L = 16·⌈M/128⌉` (see [`OleRequest::u_len`]).
    pub u: Vec<u8>,
}

impl fmt::Debug for OleRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OleRequest").field("ots", &self.ots).field("u_len", &self.u.len()).finish()
    }
}

impl OleRequest {
    /// The length `u` must have for `ots` OTs: `128 · 16 · ⌈ots/128⌉` bytes.
    pub fn u_len(ots: u32) -> usize {
        iknp::u_len(ots as usize)
    }

    /// `ots` (u32 LE) ‖ `u`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.u.len());
        out.extend_from_slice(&self.ots.to_le_bytes());
        out.extend_from_slice(&self.u);
        out
    }

    /// Parses `ots ‖ u`, checking `ots <= MAX_OTS` and the exact length
    /// before allocating anything.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 4 {
            return Err(Error::Length { what: "OLE request header (OT count)", got: bytes.len(), expected: 4 });
        }
        let ots = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        check_ots(u64::from(ots))?;
        let expected = 4 + Self::u_len(ots);
        if bytes.len() != expected {
            return Err(Error::Length { what: "OLE request", got: bytes.len(), expected });
        }
        Ok(Self { ots, u: bytes[4..].to_vec() })
    }
}

/// S2 → S1: the corrections `d_i` of one batch, one per OT.
#[derive(Clone, PartialEq, Eq)]
pub struct Corrections(pub Vec<u128>);

impl fmt::Debug for Corrections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Corrections({} values)", self.0.len())
    }
}

impl Corrections {
    /// 16 bytes little-endian per value.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * self.0.len());
        for d in &self.0 {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out
    }

    /// Parses 16 bytes LE per value; at most [`MAX_OTS`] values.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let max = 16 * MAX_OTS as usize;
        if !bytes.len().is_multiple_of(16) || bytes.len() > max {
            return Err(Error::NotMultiple { what: "corrections", got: bytes.len(), unit: 16, max });
        }
        Ok(Self(bytes.chunks_exact(16).map(|c| u128::from_le_bytes(c.try_into().expect("16 bytes"))).collect()))
    }
}

/// S1's scalars of one batch: all of bit count `bits` (public),
/// `0 <= a < 2^bits`. The scalars are secret: zeroized on drop, not shown by
/// `Debug`.
#[derive(Clone)]
pub struct ScalarBatch {
    /// Public bit count `L`, `1..=128`.
    pub bits: u32,
    /// Secret scalars, each below `2^bits`.
    pub scalars: Vec<u128>,
}

impl Drop for ScalarBatch {
    fn drop(&mut self) {
        self.scalars.zeroize();
    }
}

impl fmt::Debug for ScalarBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScalarBatch")
            .field("bits", &self.bits)
            .field("count", &self.scalars.len())
            .finish_non_exhaustive()
    }
}

fn check_bits(bits: u32) -> Result<()> {
    if (1..=128).contains(&bits) {
        Ok(())
    } else {
        Err(Error::BitsOutOfRange { bits })
    }
}

fn check_ots(requested: u64) -> Result<()> {
    if requested > u64::from(MAX_OTS) {
        Err(Error::TooManyOts { requested, max: MAX_OTS })
    } else {
        Ok(())
    }
}

/// S1's per-session state: the hashes `H(tw_i, t_i)` and its batches.
/// Zeroized on drop; `Debug` shows only counts.
pub struct OleReceiver {
    /// `(bits, scalars)` per batch, in order.
    batches: Vec<ScalarBatch>,
    /// `H(tw_i, t_i)` for every OT of the session.
    h: Vec<u128>,
    /// Next batch to receive.
    next: usize,
    /// First OT of the next batch.
    offset: usize,
}

impl Drop for OleReceiver {
    fn drop(&mut self) {
        self.h.zeroize();
    }
}

impl fmt::Debug for OleReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OleReceiver")
            .field("batches", &self.batches.len())
            .field("received", &self.next)
            .field("ots", &self.h.len())
            .finish_non_exhaustive()
    }
}

/// S1: starts a session. Packs the bits of every scalar as choice bits (OT
/// `i` of scalar `p` with `L` bits carries bit `ℓ` of `a_p`, the scalars'
/// OTs consecutive in batch order), runs the IKNP receiver side and returns
/// the request for S2.
///
/// `sid` must be fresh for every session of a key (see the crate docs).
/// Errors: a batch's `bits` outside `1..=128`, a scalar `>= 2^bits`, more
/// than [`MAX_OTS`] OTs in total.
pub fn receiver_extend(
    key: &OtReceiverKey,
    sid: &[u8; 16],
    batches: &[ScalarBatch],
) -> Result<(OleReceiver, OleRequest)> {
    let mut total: u64 = 0;
    for (b, batch) in batches.iter().enumerate() {
        check_bits(batch.bits)?;
        if batch.bits < 128 {
            if let Some(index) = batch.scalars.iter().position(|&a| a >> batch.bits != 0) {
                return Err(Error::ScalarTooLarge { batch: b, index, bits: batch.bits });
            }
        }
        total = total.saturating_add(u64::from(batch.bits).saturating_mul(batch.scalars.len() as u64));
        check_ots(total)?;
    }
    let m = total as usize;
    let words = iknp::words_for(m);
    let mut choice = Zeroizing::new(vec![0u8; 16 * words]);
    let mut i = 0usize;
    for batch in batches {
        for &a in &batch.scalars {
            for l in 0..batch.bits {
                choice[i / 8] |= (((a >> l) & 1) as u8) << (i % 8);
                i += 1;
            }
        }
    }
    let (u, t) = iknp::receiver(key, sid, &choice, words);
    let tccr = Tccr::new(sid);
    let mut h = vec![0u128; m];
    tccr.hash_seq(0, &t[..m], &mut h);
    let rx = OleReceiver { batches: batches.to_vec(), h, next: 0, offset: 0 };
    Ok((rx, OleRequest { ots: m as u32, u }))
}

impl OleReceiver {
    /// S1's shares `x` for the next batch (in order), from S2's corrections
    /// for it: `x_p = Σ_ℓ H(tw_i, t_i) − c_i·d_i`, so `x_p + y_p = a_p·v_p`.
    ///
    /// Errors: no batch left; a correction count other than `bits × count`.
    /// On error the state is unchanged.
    pub fn receive(&mut self, corrections: &Corrections) -> Result<Vec<u128>> {
        let Some(batch) = self.batches.get(self.next) else {
            return Err(Error::NoBatchLeft { batches: self.batches.len() });
        };
        let bits = batch.bits as usize;
        let expected = bits * batch.scalars.len();
        let d = &corrections.0;
        if d.len() != expected {
            return Err(Error::CorrectionCount {
                got: d.len(),
                expected,
                count: batch.scalars.len(),
                bits: batch.bits,
            });
        }
        let h = &mut self.h[self.offset..self.offset + expected];
        let mut x = Vec::with_capacity(batch.scalars.len());
        for ((&a, hp), dp) in batch.scalars.iter().zip(h.chunks_exact_mut(bits)).zip(d.chunks_exact(bits)) {
            let mut acc = 0u128;
            for (l, (hi, &di)) in hp.iter_mut().zip(dp).enumerate() {
                // c_i·d_i without a branch on the secret bit c_i.
                let c_mask = ((a >> l) & 1).wrapping_neg();
                acc = acc.wrapping_add(hi.wrapping_sub(c_mask & di));
                hi.zeroize();
            }
            x.push(acc);
        }
        self.offset += expected;
        self.batches[self.next].scalars.zeroize();
        self.next += 1;
        Ok(x)
    }

    /// Whether every batch has been received.
    pub fn is_done(&self) -> bool {
        self.next == self.batches.len()
    }

    /// The number of OTs of the session (`M`).
    pub fn ots(&self) -> usize {
        self.h.len()
    }
}

/// S2's per-session state: the rows `q_i` and `Δ`. Zeroized on drop;
/// `Debug` shows only counts.
pub struct OleSender {
    delta: u128,
    q: Zeroizing<Vec<u128>>,
    /// Number of OTs `M` of the request.
    m: usize,
    /// First OT of the next batch.
    next: usize,
    tccr: Tccr,
}

impl Drop for OleSender {
    fn drop(&mut self) {
        self.delta.zeroize();
    }
}

impl fmt::Debug for OleSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OleSender").field("ots", &self.m).field("used", &self.next).finish_non_exhaustive()
    }
}

/// S2: starts a session from S1's request: `Q_j = G(k_j^{Δ_j}) ⊕ Δ_j·U_j`,
/// transposed into rows `q_i`.
///
/// Errors: `ots > MAX_OTS`; `u` not exactly [`OleRequest::u_len`] bytes.
pub fn sender_extend(key: &OtSenderKey, sid: &[u8; 16], req: &OleRequest) -> Result<OleSender> {
    check_ots(u64::from(req.ots))?;
    let m = req.ots as usize;
    let expected = iknp::u_len(m);
    if req.u.len() != expected {
        return Err(Error::Length { what: "OLE request matrix U", got: req.u.len(), expected });
    }
    let words = iknp::words_for(m);
    let mut q = iknp::sender(key, sid, &req.u, words);
    q.truncate(m);
    Ok(OleSender { delta: key.delta, q, m, next: 0, tccr: Tccr::new(sid) })
}

impl OleSender {
    /// S2's shares `y` and the corrections for the next batch: `bits` is
    /// public (it must equal S1's batch), `values` are S2's. For OT `i`
    /// carrying bit `ℓ` of scalar `p`: `r_i = H(tw_i, q_i)`,
    /// `d_i = H(tw_i, q_i ⊕ Δ) − r_i − 2^ℓ·v_p`, `y_p = −Σ_ℓ r_i`.
    ///
    /// Errors: `bits` outside `1..=128`; more OTs than are left. On error the
    /// state is unchanged.
    pub fn respond(&mut self, bits: u32, values: &[u128]) -> Result<(Vec<u128>, Corrections)> {
        check_bits(bits)?;
        let needed = u64::from(bits) * values.len() as u64;
        let remaining = (self.m - self.next) as u64;
        if needed > remaining {
            return Err(Error::OtsExhausted { needed, remaining, total: self.m as u64 });
        }
        let n = needed as usize;
        let bits = bits as usize;
        let start = self.next;
        let mut y = vec![0u128; values.len()];
        let mut d = vec![0u128; n];
        // Per OT: two inputs (q_i, q_i ⊕ Δ) under the same tweak.
        const PER: usize = CHUNK / 2;
        let mut xs = [0u128; CHUNK];
        let mut hs = [0u128; CHUNK];
        let mut k0 = 0usize;
        while k0 < n {
            let len = PER.min(n - k0);
            let qs = &mut self.q[start + k0..start + k0 + len];
            for (e, qi) in qs.iter_mut().enumerate() {
                xs[2 * e] = *qi;
                xs[2 * e + 1] = *qi ^ self.delta;
                qi.zeroize();
            }
            let first = (start + k0) as u64;
            self.tccr.hash_chunk(&xs[..2 * len], |k| first + (k / 2) as u64, &mut hs[..2 * len]);
            for e in 0..len {
                let k = k0 + e;
                let (p, l) = (k / bits, k % bits);
                let (r, s) = (hs[2 * e], hs[2 * e + 1]);
                d[k] = s.wrapping_sub(r).wrapping_sub(values[p] << l);
                y[p] = y[p].wrapping_sub(r);
            }
            k0 += len;
        }
        xs.zeroize();
        hs.zeroize();
        self.next += n;
        Ok((y, Corrections(d)))
    }

    /// OTs not yet consumed (S2 checks at the end that this is 0).
    pub fn remaining_ots(&self) -> usize {
        self.m - self.next
    }

    /// The number of OTs of the session (`M`).
    pub fn ots(&self) -> usize {
        self.m
    }
}
