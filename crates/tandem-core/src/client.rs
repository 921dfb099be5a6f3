//! The thin client (PROTOCOL §4.1, §4.8 "C computes"): one Paillier
//! encryption, one PRG expansion and one AEAD open per query.

use crate::convert::signed_num;
use crate::crypto_error::CryptoError;
use crate::error::{ProtocolError, Result};
use crate::messages::*;
use crate::model_info::ModelInfo;
use crate::ring::Ring;
use crate::seed::{Seed, SeedEpoch, SeedSecret, SessionKey};
use rand_core::{CryptoRng, RngCore};
use std::marker::PhantomData;
use tandem_model::{quantize_input, Output, OutputMode};
use std::sync::Arc;
use tandem_paillier_pk::{NoiseTable, PublicKey};

/// A client bound to one activation-server key (pin it: see SECURITY.md)
/// and the seed epoch S2 currently holds (public, from the model info).
pub struct Client {
    pk: PublicKey,
    epoch: SeedEpoch,
    /// Short-exponent noise for the `[secret]` (toward S1 only; S1
    /// rerandomizes with full-size noise before S2 sees it). `None`: the
    /// full-size `r^N` of [`PublicKey::encrypt`].
    noise: Option<Arc<NoiseTable>>,
}

/// The client's secret state between request and response.
pub struct PendingQuery<R> {
    seed: Seed,
    info: ModelInfo,
    mode: OutputMode,
    /// The ticket's session id, when the query runs on one.
    session_id: Option<SessionId>,
    _r: PhantomData<R>,
}

impl Client {
    /// A client for S2's key `pk` (pinned by its fingerprint) and epoch.
    pub fn new(pk: PublicKey, epoch: SeedEpoch) -> Self {
        Client { pk, epoch, noise: None }
    }
    /// Encrypts with `table`'s short-exponent noise from now on: about a
    /// tenth of the cost of an encryption, for a client that sends many
    /// one-shot queries under this key (building the table costs about two
    /// encryptions). `table` must be built for this client's key.
    pub fn with_noise_table(mut self, table: Arc<NoiseTable>) -> Self {
        self.noise = Some(table);
        self
    }
    /// The seed epoch this client derives seeds under.
    pub fn epoch(&self) -> SeedEpoch {
        self.epoch
    }
    /// S2's public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.pk
    }

    /// Quantizes, masks and encrypts the seed: the whole cost of a one-shot
    /// query.
    pub fn prepare<R: Ring, G: RngCore + CryptoRng + ?Sized>(
        &self,
        info: &ModelInfo,
        x: &[f64],
        mode: OutputMode,
        rng: &mut G,
    ) -> Result<(PendingQuery<R>, QueryRequest<R>)> {
        let (ticket, req) = self.request_ticket(info, mode, rng)?;
        ticket.into_query(req.seed, x)
    }

    /// Quantizes and masks with the next seed of a seed session (§4.1a): a
    /// PRG expansion and additions, no Paillier at all. `Ok(None)` when the
    /// session has served all its queries (open a new one).
    pub fn prepare_in_session<R: Ring>(
        &self,
        session: &mut SeedSession,
        info: &ModelInfo,
        x: &[f64],
        mode: OutputMode,
    ) -> Result<Option<(PendingQuery<R>, QueryRequest<R>)>> {
        let Some((ticket, req)) = self.request_ticket_in_session(session, info, mode)? else {
            return Ok(None);
        };
        ticket.into_query(req.seed, x).map(Some)
    }

    /// Ahead of any input: a fresh seed encrypted to S2 (the client's one
    /// Paillier encryption), to be preprocessed into a ticket (§4.0).
    pub fn request_ticket<R: Ring, G: RngCore + CryptoRng + ?Sized>(
        &self,
        info: &ModelInfo,
        mode: OutputMode,
        rng: &mut G,
    ) -> Result<(PendingTicket<R>, TicketRequest)> {
        check_info::<R>(info, mode)?;
        // The client encrypts a fresh secret; its seed is what S2 will derive
        // from the decrypted plaintext under the epoch (§4.1).
        let secret = SeedSecret::random(rng);
        let enc_seed = self.encrypt(&secret, rng)?;
        let seed = secret.seed(&self.epoch, self.pk.modulus_bytes());
        Ok(ticket(info, mode, seed, SeedSource::Encrypted { enc_seed, epoch: self.epoch }))
    }

    /// A ticket request with the next seed of a seed session; `Ok(None)`
    /// when the session is used up.
    pub fn request_ticket_in_session<R: Ring>(
        &self,
        session: &mut SeedSession,
        info: &ModelInfo,
        mode: OutputMode,
    ) -> Result<Option<(PendingTicket<R>, TicketRequest)>> {
        check_info::<R>(info, mode)?;
        let Some((seed, source)) = session.next_seed() else {
            return Ok(None);
        };
        Ok(Some(ticket(info, mode, seed, source)))
    }

    /// Opens a seed session (§4.1a): the client's one Paillier encryption
    /// for many queries. Send the request; turn S2's answer into a
    /// [`SeedSession`] with [`PendingSeedSession::opened`].
    pub fn open_session<G: RngCore + CryptoRng + ?Sized>(
        &self,
        rng: &mut G,
    ) -> Result<(PendingSeedSession, OpenSeedSession)> {
        let secret = SeedSecret::random(rng);
        let enc_secret = self.encrypt(&secret, rng)?;
        let key = secret.session_key(&self.epoch, self.pk.modulus_bytes());
        Ok((PendingSeedSession { key }, OpenSeedSession { enc_secret, epoch: self.epoch }))
    }

    fn encrypt<G: RngCore + CryptoRng + ?Sized>(&self, secret: &SeedSecret, rng: &mut G) -> Result<EncryptedSeed> {
        match &self.noise {
            Some(t) => self.pk.encrypt_with_table(secret.plaintext_be(), t, rng),
            None => self.pk.encrypt(secret.plaintext_be(), rng),
        }
        .map(EncryptedSeed)
            .map_err(|e| CryptoError::InvalidKey(e.to_string()).into())
    }
}

fn check_info<R: Ring>(info: &ModelInfo, mode: OutputMode) -> Result<()> {
    if info.ring_bits != R::BITS {
        return Err(ProtocolError::RingMismatch { model: info.ring_bits, code: R::BITS });
    }
    info.check_mode(mode)?;
    // Before any work: the mask parameters must be the ones the model's
    // public range implies.
    info.masking()?;
    Ok(())
}

fn ticket<R: Ring>(info: &ModelInfo, mode: OutputMode, seed: Seed, source: SeedSource) -> (PendingTicket<R>, TicketRequest) {
    let req = TicketRequest { model_id: info.id.clone(), mode, seed: source };
    (PendingTicket { seed, info: info.clone(), mode, _r: PhantomData }, req)
}

/// A seed session the client asked S2 to open; it keeps the key until the
/// answer comes.
pub struct PendingSeedSession {
    key: SessionKey,
}

impl PendingSeedSession {
    /// S2 opened the session.
    pub fn opened(self, o: &SeedSessionOpened) -> SeedSession {
        SeedSession { key: self.key, id: o.id, next: 0, max: o.max_queries }
    }
}

/// An open seed session: the key and the next unused counter. Each
/// [`Client::prepare_in_session`] takes the next counter, so no seed is
/// used twice. (S2 also forgets the session after its lifetime, which the
/// caller tracks: `SeedSessionOpened::expires_in_seconds`.)
pub struct SeedSession {
    key: SessionKey,
    id: SeedSessionId,
    next: u64,
    max: u64,
}

impl SeedSession {
    /// The session's id.
    pub fn id(&self) -> SeedSessionId {
        self.id
    }
    /// Queries left.
    pub fn remaining(&self) -> u64 {
        self.max - self.next
    }
    /// A session of exactly the next counter, which this one gives up: for
    /// a caller that hands single queries to other threads. `None` when all
    /// are used.
    pub fn split_one(&mut self) -> Option<SeedSession> {
        if self.next >= self.max {
            return None;
        }
        let one = SeedSession { key: self.key.clone(), id: self.id, next: self.next, max: self.next + 1 };
        self.next += 1;
        Some(one)
    }

    /// The next counter's seed, or `None` when all are used.
    pub fn next_seed(&mut self) -> Option<(Seed, SeedSource)> {
        if self.next >= self.max {
            return None;
        }
        let counter = self.next;
        self.next += 1;
        Some((self.key.query_seed(counter), SeedSource::Session { id: self.id, counter }))
    }
}

/// A seed the client has sent for preprocessing; it becomes a query once S1
/// confirms the ticket and the client has an input.
pub struct PendingTicket<R> {
    seed: Seed,
    info: ModelInfo,
    mode: OutputMode,
    _r: PhantomData<R>,
}

impl<R: Ring> PendingTicket<R> {
    /// A one-shot query: the ticket's seed masks `x` at once.
    fn into_query(self, seed: SeedSource, x: &[f64]) -> Result<(PendingQuery<R>, QueryRequest<R>)> {
        let masked_input = self.mask(x)?;
        let query = QueryRequest { model_id: self.info.id.clone(), mode: self.mode, masked_input, seed };
        Ok((PendingQuery { seed: self.seed, info: self.info, mode: self.mode, session_id: None, _r: PhantomData }, query))
    }

    /// The mode the ticket was requested in.
    pub fn mode(&self) -> OutputMode {
        self.mode
    }
    /// The model the ticket was requested for.
    pub fn model_id(&self) -> &str {
        &self.info.id
    }
    /// The model's input mask, which encodes the masked input on the wire.
    pub fn masking(&self) -> Result<crate::InputMasking> {
        self.info.masking()
    }

    /// `ỹ = x_int + r`, `r_i ∈ [0, 2^m)`: quantize and mask (a PRG
    /// expansion, no Paillier). The wire encoding adds `B`
    /// ([`crate::InputMasking::encode`]).
    fn mask(&self, x: &[f64]) -> Result<Vec<R>> {
        let info = &self.info;
        let masking = info.masking()?;
        let x_int = quantize_input(x, info.input_len(), info.input_range, info.f_in)?;
        let r: Vec<R> = self.seed.input_mask(x_int.len(), masking.mask_bits);
        Ok(x_int.iter().zip(&r).map(|(&x, &r)| R::from_i64(x).add(r)).collect())
    }

    /// The online query on a confirmed ticket: the client's whole online cost.
    pub fn query(self, ticket: &Ticket, x: &[f64]) -> Result<(PendingQuery<R>, TicketQuery<R>)> {
        if ticket.model_id != self.info.id || ticket.mode != self.mode {
            return Err(bad(format!(
                "the ticket is for model {} in {} mode, but this seed was requested for {} in {} mode",
                ticket.model_id, ticket.mode, self.info.id, self.mode
            )));
        }
        let masked_input = self.mask(x)?;
        let q =
            TicketQuery { ticket: ticket.session_id, model_id: self.info.id.clone(), mode: self.mode, masked_input };
        let pending = PendingQuery {
            seed: self.seed,
            info: self.info,
            mode: self.mode,
            session_id: Some(ticket.session_id),
            _r: PhantomData,
        };
        Ok((pending, q))
    }
}

fn bad(msg: impl Into<String>) -> ProtocolError {
    ProtocolError::PeerMisbehaved(msg.into())
}

fn check_perm(perm: &[u32], n: usize) -> Result<()> {
    // Length first: `n` comes from the server's model info, the permutation
    // from its response; only a matching pair may size an allocation.
    if perm.len() != n {
        return Err(bad(format!("permutation of length {} for {n} outputs", perm.len())));
    }
    let mut seen = vec![false; n];
    for &p in perm {
        let p = p as usize;
        if p >= n || std::mem::replace(&mut seen[p], true) {
            return Err(bad("the permutation is not a permutation"));
        }
    }
    Ok(())
}

impl<R: Ring> PendingQuery<R> {
    /// Opens S2's sealed part and combines it with S1's aux.
    pub fn finish(self, resp: QueryResponse<R>) -> Result<Output> {
        if self.session_id.is_some_and(|id| id != resp.session_id) {
            return Err(bad("the response is for another session than the ticket's"));
        }
        let plain = self.seed.open(&resp.session_id, &resp.sealed)?;
        let n = self.info.output_len;
        let f_act = self.info.f_act;
        let u64s = |b: &[u8]| -> Vec<u64> {
            b.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8"))).collect()
        };
        match (self.mode, resp.aux) {
            (OutputMode::Logits, OutputAux::Logits(u_mu)) => {
                let c = crate::ring::decode_vec::<R>(&plain).ok_or_else(|| bad("sealed logits have a bad length"))?;
                if c.len() != n || u_mu.len() != n {
                    return Err(bad("logit count does not match the model"));
                }
                let values = u_mu.iter().zip(&c).map(|(a, c)| signed_num(a.sub(*c))).collect();
                Ok(Output::Logits { values, scale: self.info.output_scale })
            }
            (OutputMode::Probabilities, OutputAux::Permutation(perm)) => {
                check_perm(&perm, n)?;
                if plain.len() != 8 * n {
                    return Err(bad("sealed probabilities have a bad length"));
                }
                let by_pos = u64s(&plain);
                if by_pos.iter().any(|&v| v > 1u64 << f_act) {
                    return Err(bad("sealed probability above 1"));
                }
                let mut values = vec![0u64; n];
                for (p, &j) in perm.iter().enumerate() {
                    values[j as usize] = by_pos[p];
                }
                Ok(Output::Probabilities { values, scale: f_act })
            }
            (OutputMode::Label, OutputAux::Permutation(perm)) if n > 1 => {
                check_perm(&perm, n)?;
                let p =
                    u32::from_le_bytes(plain.as_slice().try_into().map_err(|_| bad("sealed label has a bad length"))?);
                let j = perm.get(p as usize).ok_or_else(|| bad("sealed label position out of range"))?;
                Ok(Output::Label(*j as usize))
            }
            (OutputMode::Label, OutputAux::Negated(neg)) if n == 1 => match plain.as_slice() {
                [bit @ (0 | 1)] => Ok(Output::Label(usize::from((*bit == 1) ^ neg))),
                _ => Err(bad("sealed binary label is not one bit")),
            },
            (OutputMode::Sigmoid, OutputAux::Negated(neg)) => {
                let v = u64::from_le_bytes(
                    plain.as_slice().try_into().map_err(|_| bad("sealed sigmoid has a bad length"))?,
                );
                let one = 1u64 << f_act;
                if v > one {
                    return Err(bad("sealed sigmoid above 1"));
                }
                // F_σ(−v) = 2^{f_act} − F_σ(v) (§3)
                Ok(Output::Sigmoid { value: if neg { one - v } else { v }, scale: f_act })
            }
            (mode, _) => Err(bad(format!("the response does not fit {mode} mode"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::rand_core::SeedableRng;

    fn info(n: usize) -> ModelInfo {
        ModelInfo {
            id: "m".into(),
            input_shape: vec![2],
            input_range: (-1.0, 1.0),
            f_in: 16,
            f_act: 16,
            ring_bits: 128,
            output_len: n,
            output_scale: 20,
            modes: vec![OutputMode::Label, OutputMode::Probabilities, OutputMode::Logits, OutputMode::Sigmoid],
            default_mode: OutputMode::Label,
            input_offset: 1 << 16,
            input_mask_bits: 17 + 1 + 40,
        }
    }

    fn pending(n: usize, mode: OutputMode, seed: &Seed) -> PendingQuery<u128> {
        PendingQuery { seed: seed.clone(), info: info(n), mode, session_id: None, _r: PhantomData }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Issue 14 item 11: payloads that are validly sealed for this
        /// client (so they pass authentication) but whose content is
        /// hostile — any length, any value, any aux — give a typed error or
        /// a well-formed output, never a panic or an out-of-range value.
        #[test]
        fn validly_sealed_hostile_payloads(
            n in 1usize..12,
            mode_i in 0usize..4,
            payload in prop::collection::vec(any::<u8>(), 0..100),
            perm in prop::collection::vec(0u32..14, 0..14),
            aux_i in 0usize..3,
            neg in any::<bool>(),
            logits in prop::collection::vec(any::<u128>(), 0..14),
        ) {
            let seed = Seed::from_bytes([7; 32]);
            let mode = [OutputMode::Label, OutputMode::Probabilities, OutputMode::Logits, OutputMode::Sigmoid][mode_i];
            let sid = [1u8; 16];
            let aux = match aux_i {
                0 => OutputAux::Permutation(perm),
                1 => OutputAux::Negated(neg),
                _ => OutputAux::Logits(logits),
            };
            let resp = QueryResponse { session_id: sid, sealed: seed.seal(&sid, &payload, &mut rand_chacha::ChaCha20Rng::from_seed([3; 32])), aux };
            match pending(n, mode, &seed).finish(resp) {
                Ok(Output::Label(l)) => prop_assert!(l < n.max(2)),
                Ok(Output::Probabilities { values, scale }) => {
                    prop_assert_eq!(values.len(), n);
                    prop_assert!(values.iter().all(|&v| v <= 1u64 << scale));
                }
                Ok(Output::Logits { values, .. }) => prop_assert_eq!(values.len(), n),
                Ok(Output::Sigmoid { value, scale }) => prop_assert!(value <= 1u64 << scale),
                Err(e) => prop_assert!(matches!(e, ProtocolError::PeerMisbehaved(_)), "{e}"),
            }
        }
    }

    #[test]
    fn hostile_payloads_that_fit_the_mode_in_size_are_still_refused() {
        let seed = Seed::from_bytes([9; 32]);
        let sid = [2u8; 16];
        let answer = |n, mode, payload: &[u8], aux| {
            pending(n, mode, &seed).finish(QueryResponse {
                session_id: sid,
                sealed: seed.seal(&sid, payload, &mut rand_chacha::ChaCha20Rng::from_seed([4; 32])),
                aux,
            })
        };
        // A label position beyond the permutation.
        assert!(answer(3, OutputMode::Label, &7u32.to_le_bytes(), OutputAux::Permutation(vec![2, 0, 1])).is_err());
        // A binary label that is not a bit.
        assert!(answer(1, OutputMode::Label, &[2], OutputAux::Negated(false)).is_err());
        // A sigmoid above 1.
        assert!(answer(1, OutputMode::Sigmoid, &((1u64 << 16) + 1).to_le_bytes(), OutputAux::Negated(true)).is_err());
        // A permutation that repeats an index.
        assert!(answer(2, OutputMode::Probabilities, &[0; 16], OutputAux::Permutation(vec![1, 1])).is_err());
        // Logits for a different output count.
        assert!(answer(2, OutputMode::Logits, &[0; 48], OutputAux::Logits(vec![0; 3])).is_err());
        // An aux of another mode.
        assert!(answer(2, OutputMode::Label, &0u32.to_le_bytes(), OutputAux::Negated(false)).is_err());
    }

    /// Regression (found by tests/hostile_formats.rs): a server claiming a
    /// huge output count is refused before the count sizes anything.
    #[test]
    fn a_permutation_is_checked_before_it_sizes_anything() {
        assert!(check_perm(&[0, 1], 1 << 40).is_err());
        assert!(check_perm(&[1, 0], 2).is_ok());
        assert!(check_perm(&[1, 1], 2).is_err());
        assert!(check_perm(&[2, 0], 2).is_err());
    }
}
