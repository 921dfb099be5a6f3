//! The Paillier **public-key** operations a tandem client needs, in pure
//! Rust: parse and fingerprint the activation server's key, and encrypt one
//! plaintext (the query's seed secret, PROTOCOL §4.1) with a full-size
//! `r^N`. No GMP, no C, no OS randomness: it builds for
//! `wasm32-unknown-unknown` and `aarch64-unknown-linux-gnu`.
//!
//! The encodings are byte-identical to `tandem-paillier`'s GMP implementation
//! (`tandem_paillier::PublicKey`): the same accepted key sizes, the same
//! canonical key bytes and fingerprint, and ciphertexts that its
//! `SecretKey` decrypts (`g = N + 1`; `c = (1 + m·N)·r^N mod N²`, written
//! big-endian at the fixed width `⌈2|N|/8⌉`).
//!
//! # Randomness
//!
//! The caller supplies the RNG ([`rand_core::RngCore`] +
//! [`rand_core::CryptoRng`]); nothing here draws from the OS. With a seeded
//! RNG the ciphertext is reproducible, which transcript tests rely on. The
//! draw of `r` is part of the contract (changing it changes recorded
//! transcripts): repeatedly fill `⌈|N|/8⌉` bytes, clear the bits above `|N|`
//! in the first (most significant) byte, read them big-endian as `r`, and
//! accept the first `r` with `1 < r < N` and `gcd(r, N) = 1`.
//!
//! # Timing
//!
//! Arithmetic is `crypto-bigint`'s (RustCrypto), whose Montgomery
//! operations are constant-time. `r^N mod N²` is a fixed-window (4-bit)
//! Montgomery exponentiation whose sequence of operations and memory
//! accesses does not depend on the base `r` (table lookups are
//! constant-time selects over the whole table); the exponent `N` and its
//! length are public. `m·N`, the conversions into and out of Montgomery form
//! and the final multiplication are fixed-length loops; `m < N` and
//! `1 < r < N` are constant-time comparisons, and a plaintext is read at its
//! full byte length (leading zero bytes are not stripped).
//!
//! Not constant-time, by design, and on public data only: the unit check
//! runs a variable-time gcd on the ciphertext `c` rather than on `r` (`c ≡
//! r^N (mod N)`, so `gcd(c, N) = 1` exactly when `gcd(r, N) = 1`, and `c`
//! is sent on the wire anyway); a constant-time gcd on `r` would cost about
//! a quarter of the encryption. How many candidates are rejected depends on
//! the RNG's output, but rejected candidates are discarded. Key parsing works
//! on the public key and is not constant-time. The plaintext's byte length
//! (32 for a seed secret) and the key size are visible in the timing.
//!
//! Secret intermediates (`m`, `1 + m·N`, `r`, `r^N`, the RNG buffer) are
//! zeroized when `encrypt` is done with them; crypto-bigint's own
//! temporaries inside the exponentiation are not (best effort).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::subtle::{ConstantTimeEq, ConstantTimeLess};
use crypto_bigint::{BoxedUint, ConstantTimeSelect, Gcd, NonZero, Odd};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use zeroize::Zeroize;

/// Key sizes the project accepts: 2048 bits by default, 3072 optional, 1024
/// only for tests and benchmarks of small keys (as `tandem-paillier`).
pub const ALLOWED_KEY_BITS: &[u32] = &[1024, 2048, 3072];

/// The domain tag hashed in front of the canonical key bytes in
/// [`PublicKey::fingerprint`].
pub const FINGERPRINT_TAG: &[u8] = b"tandem/v1/paillier-public-key";

/// How many candidates `r` [`PublicKey::encrypt`] draws before it gives up
/// on the RNG. Each candidate is accepted with probability above 1/2 for a
/// well-formed key, so a working RNG fails this with probability below
/// `2^-128`; a broken one (say, all zeros) gets an error, not an endless loop.
pub const MAX_NOISE_DRAWS: usize = 128;

/// What can go wrong with a key or an encryption.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The modulus does not have one of the [`ALLOWED_KEY_BITS`] sizes
    /// (an empty or all-zero key has 0 bits).
    #[error("invalid Paillier key: modulus has {bits} bits; accepted sizes are {ALLOWED_KEY_BITS:?}")]
    UnsupportedKeySize {
        /// The modulus' size in bits.
        bits: u64,
    },
    /// The modulus is even (a Paillier modulus is a product of two odd primes).
    #[error("invalid Paillier key: modulus is even")]
    EvenModulus,
    /// The plaintext is not below `N`.
    #[error("plaintext out of range: it must be an integer in [0, N)")]
    PlaintextOutOfRange,
    /// The RNG produced no acceptable `r` in [`MAX_NOISE_DRAWS`] draws.
    #[error("the RNG produced no usable randomness in {MAX_NOISE_DRAWS} draws (is it broken?)")]
    RngFailure,
    /// A [`NoiseTable`] was used with a key it was not built for.
    #[error("the noise table was built for another Paillier key")]
    NoiseTableMismatch,
    /// A ciphertext to rerandomize is not `ciphertext_bytes` long, or not a
    /// unit below `N²`.
    #[error("ciphertext out of range: it must be exactly 2|N|/8 bytes, big-endian, a unit mod N^2")]
    CiphertextOutOfRange,
}

/// A Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// A Paillier public key `N` (with `g = N + 1`), validated as
/// `tandem_paillier::PublicKey::from_n` does, with its Montgomery constants
/// for `N²` computed once.
#[derive(Clone)]
pub struct PublicKey {
    /// `N`, at a precision of `bits` rounded up to whole limbs.
    n: Odd<BoxedUint>,
    /// `N` at `N²`'s precision, to reduce ciphertexts mod `N`.
    n_wide: NonZero<BoxedUint>,
    /// Montgomery parameters for `N²` (precision twice `n`'s).
    nn_params: Arc<BoxedMontyParams>,
    bits: u32,
}

impl PartialEq for PublicKey {
    fn eq(&self, o: &Self) -> bool {
        self.bits == o.bits && self.n == o.n
    }
}
impl Eq for PublicKey {}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey {{ bits: {}, fingerprint: {} }}", self.bits, self.fingerprint())
    }
}

impl PublicKey {
    /// Parses a big-endian modulus `N`. Leading zero bytes are allowed (as
    /// in the GMP implementation); `N` must have exactly one of the
    /// [`ALLOWED_KEY_BITS`] sizes and be odd.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
        let s = &b[start..];
        let bits: u64 = match s.first() {
            None => 0,
            Some(&top) => (s.len() as u64 - 1) * 8 + u64::from(8 - top.leading_zeros()),
        };
        let bits = match u32::try_from(bits) {
            Ok(b) if ALLOWED_KEY_BITS.contains(&b) => b,
            _ => return Err(Error::UnsupportedKeySize { bits }),
        };
        // `s` is non-empty here: an allowed size is never 0 bits.
        if s[s.len() - 1] & 1 == 0 {
            return Err(Error::EvenModulus);
        }
        let n = BoxedUint::from_be_slice(s, bits).map_err(|_| Error::UnsupportedKeySize { bits: bits.into() })?;
        let n = Odd::new(n).into_option().ok_or(Error::EvenModulus)?;
        let nn = n.mul(n.as_ref());
        let n_wide = NonZero::new(n.widen(nn.bits_precision())).into_option().ok_or(Error::EvenModulus)?;
        let nn = Odd::new(nn).into_option().ok_or(Error::EvenModulus)?;
        // The modulus is public: variable-time set-up is fine.
        let nn_params = Arc::new(BoxedMontyParams::new_vartime(nn));
        Ok(PublicKey { n, n_wide, nn_params, bits })
    }

    /// `|N|` in bits.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Bytes of `N` (and of any plaintext) at fixed width: `⌈|N|/8⌉`.
    pub fn modulus_bytes(&self) -> usize {
        (self.bits as usize).div_ceil(8)
    }

    /// Bytes of one ciphertext on the wire (big-endian, fixed width):
    /// `⌈2|N|/8⌉`.
    pub fn ciphertext_bytes(&self) -> usize {
        (2 * self.bits as usize).div_ceil(8)
    }

    /// Canonical bytes: big-endian `N` at the fixed width `⌈|N|/8⌉`.
    pub fn to_bytes(&self) -> Vec<u8> {
        tail(&self.n.to_be_bytes(), self.modulus_bytes())
    }

    /// Hex SHA-256 of [`FINGERPRINT_TAG`] and the canonical bytes: what
    /// clients pin. Equal to `tandem_paillier::PublicKey::fingerprint`.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(FINGERPRINT_TAG);
        h.update(self.to_bytes());
        hex::encode(h.finalize())
    }

    /// Encrypts the big-endian plaintext `m < N` (any byte length; leading
    /// zeros are fine) with a full-size `r^N`, `r` uniform in `Z*_N` drawn
    /// from `rng` as the crate documentation describes:
    /// `c = (1 + m·N)·r^N mod N²`, returned big-endian at the fixed width
    /// [`PublicKey::ciphertext_bytes`] (as `tandem_paillier`'s
    /// `ciphertext_to_bytes`).
    ///
    /// The client's one encryption per query: `m` is its 32-byte seed
    /// secret read big-endian (PROTOCOL §4.1).
    pub fn encrypt<R: RngCore + CryptoRng + ?Sized>(&self, m: &[u8], rng: &mut R) -> Result<Vec<u8>> {
        let mut m = self.plaintext(m)?;
        // g^m = 1 + m·N < N² for m < N: no reduction needed.
        let mut gm = m.mul(self.n.as_ref()).wrapping_add(&BoxedUint::one());
        m.zeroize();
        let mut gm_monty = BoxedMontyForm::new_with_arc(gm.clone(), self.nn_params.clone());
        gm.zeroize();
        let result = self.times_noise(&gm_monty, rng);
        gm_monty.zeroize();
        result
    }

    /// [`PublicKey::encrypt`] with short-exponent noise from `table`
    /// (Damgård–Jurik–Nielsen): `c = (1 + m·N)·h_s^x mod N²` with a fresh
    /// `x` of `⌈|N|/2⌉` bits from `rng`. About a tenth of the cost of
    /// [`PublicKey::encrypt`] once the table is built. Sound toward a party
    /// without the secret key only (S1, to whom the client sends its
    /// `[secret]`; S1 rerandomizes it with full-size noise before S2, the
    /// key holder, sees it): see [`NoiseTable`].
    pub fn encrypt_with_table<R: RngCore + CryptoRng + ?Sized>(
        &self,
        m: &[u8],
        table: &NoiseTable,
        rng: &mut R,
    ) -> Result<Vec<u8>> {
        if table.n != *self.n.as_ref() {
            return Err(Error::NoiseTableMismatch);
        }
        let mut m = self.plaintext(m)?;
        let mut gm = m.mul(self.n.as_ref()).wrapping_add(&BoxedUint::one());
        m.zeroize();
        let mut gm_monty = BoxedMontyForm::new_with_arc(gm.clone(), self.nn_params.clone());
        gm.zeroize();
        let mut noise = table.sample(rng);
        let c = (&gm_monty * &noise).retrieve();
        gm_monty.zeroize();
        noise.zeroize();
        Ok(tail(&c.to_be_bytes(), self.ciphertext_bytes()))
    }

    /// Rerandomizes a ciphertext `c` (big-endian, exactly
    /// [`PublicKey::ciphertext_bytes`]): `c·r^N mod N²` with a fresh full-size
    /// `r` drawn exactly as [`PublicKey::encrypt`] draws it. The result
    /// decrypts to the same plaintext and is unlinkable to `c` for anyone
    /// without the secret key. S1 does this to every `[secret]` it relays to
    /// S2 (PROTOCOL §4.2, §4.1a).
    ///
    /// A `c` that is not a unit mod `N²` (never produced by an honest
    /// encryption) gives [`Error::CiphertextOutOfRange`].
    pub fn rerandomize<R: RngCore + CryptoRng + ?Sized>(&self, c: &[u8], rng: &mut R) -> Result<Vec<u8>> {
        if c.len() != self.ciphertext_bytes() {
            return Err(Error::CiphertextOutOfRange);
        }
        let prec = 2 * self.n.bits_precision();
        let v = BoxedUint::from_be_slice(c, prec).map_err(|_| Error::CiphertextOutOfRange)?;
        // Public value: variable-time checks are fine.
        let nn = self.nn_params.modulus().as_ref().clone();
        // Refused up front rather than by `times_noise`'s unit check, which
        // would spend all its draws (128 exponentiations) on such a `c`.
        let unit = self.n.gcd_vartime(&v.rem_vartime(&self.n_wide).shorten(self.n.bits_precision())).is_one();
        if v >= nn || !bool::from(unit) {
            return Err(Error::CiphertextOutOfRange);
        }
        let base = BoxedMontyForm::new_with_arc(v, self.nn_params.clone());
        self.times_noise(&base, rng)
    }

    /// `base·r^N mod N²` for the first acceptable `r` from `rng`, fixed-width
    /// big-endian.
    fn times_noise<R: RngCore + CryptoRng + ?Sized>(&self, base: &BoxedMontyForm, rng: &mut R) -> Result<Vec<u8>> {
        let prec = self.n.bits_precision();
        let width = self.modulus_bytes();
        let top_mask = 0xffu8 >> (8 * width - self.bits as usize);
        let one = BoxedUint::one_with_precision(prec);
        let mut buf = vec![0u8; width];
        let mut result = Err(Error::RngFailure);
        for _ in 0..MAX_NOISE_DRAWS {
            rng.fill_bytes(&mut buf);
            buf[0] &= top_mask;
            let Ok(mut r) = BoxedUint::from_be_slice(&buf, prec) else {
                continue; // unreachable: |N| bits fit N's precision
            };
            let in_range = one.ct_lt(&r) & r.ct_lt(self.n.as_ref());
            if !bool::from(in_range) {
                r.zeroize();
                continue;
            }
            let mut r_wide = r.widen(2 * prec);
            r.zeroize();
            let mut noise = BoxedMontyForm::new_with_arc(r_wide.clone(), self.nn_params.clone())
                // The exponent N and its size are public; only the base is secret.
                .pow_bounded_exp(self.n.as_ref(), self.bits);
            r_wide.zeroize();
            let c = (base * &noise).retrieve();
            noise.zeroize();
            // `r` is a unit mod N iff `c` is (c ≡ base·r^N mod N, and base
            // is a unit), and `c` is public (it goes on the wire; a rejected
            // one is discarded), so this variable-time gcd reveals nothing
            // about `r`. It accepts and rejects exactly the candidates
            // `gcd(r, N) = 1` would, at a fraction of the cost of a
            // constant-time gcd on `r` (≈ 6 ms at 2048 bits in crypto-bigint
            // 0.6, a quarter of the whole encryption).
            let c_mod_n = c.rem_vartime(&self.n_wide).shorten(prec);
            if bool::from(self.n.gcd_vartime(&c_mod_n).is_one()) {
                result = Ok(tail(&c.to_be_bytes(), self.ciphertext_bytes()));
                break;
            }
        }
        buf.zeroize();
        result
    }

    /// Reads a plaintext at `N`'s precision without stripping leading zero
    /// bytes (so the time does not depend on how many there are), and checks
    /// `m < N` in constant time.
    fn plaintext(&self, m: &[u8]) -> Result<BoxedUint> {
        let width = self.modulus_bytes();
        let (high, low) = m.split_at(m.len().saturating_sub(width));
        let high_zero = high.iter().fold(0u8, |acc, &x| acc | x).ct_eq(&0);
        let v = BoxedUint::from_be_slice(low, self.n.bits_precision()).map_err(|_| Error::PlaintextOutOfRange)?;
        if bool::from(high_zero & v.ct_lt(self.n.as_ref())) {
            Ok(v)
        } else {
            Err(Error::PlaintextOutOfRange)
        }
    }
}

/// Bits of a [`NoiseTable`] window: `⌈1024/4⌉ = 256` multiplications per
/// sample at 2048 bits, each after a constant-time scan of its window's 16
/// entries; 256·16 entries of 512 bytes (2 MiB) built once in about 4,600
/// multiplications (about two full-size encryptions).
pub const NOISE_TABLE_WINDOW: u32 = 4;
// `NoiseTable::sample` reads the exponent two windows per byte.
const _: () = assert!(NOISE_TABLE_WINDOW == 4);

/// Short-exponent encryption noise for a client that encrypts many times
/// under one key (a gateway, the load generator): `h_s = (−y²)^N mod N²`
/// for a uniform unit `y` drawn once from the caller's RNG (so only this
/// table's owner knows the discrete logarithms), and a fixed-base table of
/// `h_s^{d·2^{4i}}` in Montgomery form. Each encryption uses
/// `h_s^x` for a fresh uniform `x` of `⌈|N|/2⌉` bits.
///
/// This is the Damgård–Jurik–Nielsen variant the servers already use toward
/// S1 (`tandem_paillier::NoiseSource`, the same `h_s` and exponent length):
/// semantically secure under DCR plus the assumption that `h_s^x` with a
/// `|N|/2`-bit `x` is indistinguishable from a uniform `N`-th residue, **for
/// a party that does not know the factorization**. The client's `[secret]`
/// goes to S1, which rerandomizes it with full-size `r^N` before S2 sees it
/// (SECURITY.md, "Cryptographic parameters and assumptions").
///
/// Timing: the window digits of `x` select table entries by a constant-time
/// scan over the whole window, and the multiplications are crypto-bigint's
/// constant-time Montgomery products, so the time does not depend on `x`.
pub struct NoiseTable {
    n: BoxedUint,
    exp_bits: u32,
    nn_params: Arc<BoxedMontyParams>,
    /// `windows × 16` entries, Montgomery form: `[i·16 + d] = h_s^{d·16^i}`.
    table: Vec<BoxedUint>,
}

impl std::fmt::Debug for NoiseTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NoiseTable {{ exp_bits: {}, entries: {} }}", self.exp_bits, self.table.len())
    }
}

impl Drop for NoiseTable {
    fn drop(&mut self) {
        // The entries are powers of a secret-exponent-free public value, but
        // h_s's root y is this table's secret: keep nothing of it around.
        self.table.iter_mut().for_each(|e| e.zeroize());
    }
}

impl NoiseTable {
    /// Draws `y` (as [`PublicKey::encrypt`] draws `r`) and builds the
    /// table: one full-size exponentiation and about 4,600 multiplications
    /// mod `N²`.
    pub fn new<R: RngCore + CryptoRng + ?Sized>(pk: &PublicKey, rng: &mut R) -> Result<Self> {
        let prec = pk.n.bits_precision();
        let width = pk.modulus_bytes();
        let top_mask = 0xffu8 >> (8 * width - pk.bits as usize);
        let one = BoxedUint::one_with_precision(prec);
        let n_params = BoxedMontyParams::new_vartime(pk.n.clone());
        let mut buf = vec![0u8; width];
        let mut hs = None;
        for _ in 0..MAX_NOISE_DRAWS {
            rng.fill_bytes(&mut buf);
            buf[0] &= top_mask;
            let Ok(mut y) = BoxedUint::from_be_slice(&buf, prec) else { continue };
            // Once per table, so a variable-time unit check is acceptable
            // here only because a rejected y is discarded and an accepted
            // one's gcd is 1 whatever y is.
            let ok = bool::from(one.ct_lt(&y) & y.ct_lt(pk.n.as_ref())) && bool::from(pk.n.gcd_vartime(&y).is_one());
            if !ok {
                y.zeroize();
                continue;
            }
            let mut y_m = BoxedMontyForm::new(y.clone(), n_params.clone());
            y.zeroize();
            // h = −y² mod N, in [0, N).
            let mut sq = y_m.square().retrieve();
            y_m.zeroize();
            let mut h = pk.n.as_ref().wrapping_sub(&sq);
            sq.zeroize();
            let mut h_wide = h.widen(2 * prec);
            h.zeroize();
            let h_s = BoxedMontyForm::new_with_arc(h_wide.clone(), pk.nn_params.clone())
                .pow_bounded_exp(pk.n.as_ref(), pk.bits);
            h_wide.zeroize();
            hs = Some(h_s);
            break;
        }
        buf.zeroize();
        let mut base = hs.ok_or(Error::RngFailure)?;
        let exp_bits = pk.bits.div_ceil(2);
        let windows = exp_bits.div_ceil(NOISE_TABLE_WINDOW) as usize;
        let digits = 1usize << NOISE_TABLE_WINDOW;
        let mut table = Vec::with_capacity(windows * digits);
        let one_m = BoxedMontyForm::new_with_arc(BoxedUint::one_with_precision(2 * prec), pk.nn_params.clone());
        for _ in 0..windows {
            let mut acc = one_m.clone();
            for _ in 0..digits {
                table.push(acc.to_montgomery());
                acc = &acc * &base;
            }
            // acc = base^16: the next window's base.
            base.zeroize();
            base = acc;
        }
        base.zeroize();
        Ok(NoiseTable { n: pk.n.as_ref().clone(), exp_bits, nn_params: pk.nn_params.clone(), table })
    }

    /// `h_s^x mod N²` (Montgomery form) for a fresh uniform `x` of
    /// `⌈|N|/2⌉` bits.
    fn sample<R: RngCore + CryptoRng + ?Sized>(&self, rng: &mut R) -> BoxedMontyForm {
        let mut x = vec![0u8; (self.exp_bits as usize).div_ceil(8)];
        rng.fill_bytes(&mut x);
        let extra = 8 * x.len() as u32 - self.exp_bits;
        if let Some(last) = x.last_mut() {
            *last &= 0xff >> extra;
        }
        let digits = 1usize << NOISE_TABLE_WINDOW;
        let prec = self.nn_params.bits_precision();
        let mut acc = BoxedMontyForm::from_montgomery(self.table[0].clone(), (*self.nn_params).clone());
        let mut sel = BoxedUint::zero_with_precision(prec);
        for (i, window) in self.table.chunks(digits).enumerate() {
            // x read little-endian, NOISE_TABLE_WINDOW (4) bits per window.
            let byte = x[i / 2];
            let d = if i % 2 == 0 { byte & 0x0f } else { byte >> 4 };
            for (j, e) in window.iter().enumerate() {
                sel.ct_assign(e, (j as u8).ct_eq(&d));
            }
            acc = &acc * &BoxedMontyForm::from_montgomery(sel.clone(), (*self.nn_params).clone());
        }
        sel.zeroize();
        x.zeroize();
        acc
    }
}

/// The last `len` bytes of a big-endian encoding, left-padded with zeros if
/// it is shorter.
fn tail(b: &[u8], len: usize) -> Vec<u8> {
    if b.len() >= len {
        b[b.len() - len..].to_vec()
    } else {
        let mut out = vec![0u8; len - b.len()];
        out.extend_from_slice(b);
        out
    }
}
