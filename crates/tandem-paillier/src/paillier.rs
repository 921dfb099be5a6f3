//! Paillier with `g = N + 1` on kzen-paillier's GMP-backed `BigInt`
//! (PROTOCOL §2).
//!
//! kzen-paillier supplies prime generation and the reference encryption /
//! decryption we test against. Its `decrypt` recomputes every CRT constant on
//! each call and its key generation may return a 2047-bit `N` or `p = q`, so
//! the key types here wrap it: keys are generated until `N` has exactly the
//! requested size, and the secret key precomputes its CRT constants once.

use crate::fixed_base::FixedBase;
use curv::arithmetic::traits::*;
use kzen_paillier::{BigInt, KeyGeneration, Paillier};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tandem_core::CryptoError;

/// Uniform in `[0, 2^bits)` from the caller's CSPRNG.
pub fn sample_bits<G: RngCore + CryptoRng + ?Sized>(bits: usize, rng: &mut G) -> BigInt {
    let mut buf = vec![0u8; bits.div_ceil(8)];
    rng.fill_bytes(&mut buf);
    let extra = buf.len() * 8 - bits;
    if extra > 0 {
        buf[0] &= 0xff >> extra;
    }
    BigInt::from_bytes(&buf)
}

/// Uniform in `[0, n)` by rejection from the caller's CSPRNG (`n > 0`).
pub fn sample_below<G: RngCore + CryptoRng + ?Sized>(n: &BigInt, rng: &mut G) -> BigInt {
    let bits = n.bit_length();
    loop {
        let v = sample_bits(bits, rng);
        if &v < n {
            return v;
        }
    }
}

/// Key sizes the project accepts: 2048 bits by default, 3072 optional.
/// 1024 is accepted only for tests and benchmarks of small keys.
pub const ALLOWED_KEY_BITS: &[u32] = &[1024, 2048, 3072];

/// `[m]`: a Paillier ciphertext, an element of `Z*_{N²}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ciphertext(pub(crate) BigInt);

impl Ciphertext {
    pub fn as_bigint(&self) -> &BigInt {
        &self.0
    }
}

/// A Paillier public key `N` (with `g = N + 1`).
#[derive(Clone, Debug)]
pub struct PublicKey {
    n: BigInt,
    nn: BigInt,
    half_n: BigInt,
    bits: u32,
}

impl PartialEq for PublicKey {
    fn eq(&self, o: &Self) -> bool {
        self.n == o.n
    }
}
impl Eq for PublicKey {}

/// The secret key: `p, q` and the CRT constants decryption needs.
///
/// Deliberately not `Clone`: one copy lives in S2, shared by reference, and
/// it is wiped when dropped.
pub struct SecretKey {
    pk: PublicKey,
    p: BigInt,
    q: BigInt,
    pp: BigInt,
    qq: BigInt,
    p_minus_1: BigInt,
    q_minus_1: BigInt,
    /// `h_p = L_p(g^{p-1} mod p²)^{-1} mod p`.
    hp: BigInt,
    hq: BigInt,
    /// `p^{-1} mod q`, for recombining `m mod p` and `m mod q`.
    p_inv_q: BigInt,
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for v in [
            &mut self.p,
            &mut self.q,
            &mut self.pp,
            &mut self.qq,
            &mut self.p_minus_1,
            &mut self.q_minus_1,
            &mut self.hp,
            &mut self.hq,
            &mut self.p_inv_q,
        ] {
            v.zeroize();
        }
    }
}

impl std::fmt::Debug for SecretKey {
    // Never print the factors: Debug output ends up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey {{ bits: {}, fingerprint: {} }}", self.pk.bits, self.pk.fingerprint())
    }
}

fn to_be_padded(v: &BigInt, len: usize) -> Vec<u8> {
    let b = v.to_bytes();
    let mut out = vec![0u8; len.saturating_sub(b.len())];
    out.extend_from_slice(&b);
    out
}

impl PublicKey {
    pub fn from_n(n: BigInt) -> Result<Self, CryptoError> {
        let bits = n.bit_length() as u32;
        if !ALLOWED_KEY_BITS.contains(&bits) {
            return Err(CryptoError::InvalidKey(format!(
                "modulus has {bits} bits; accepted sizes are {ALLOWED_KEY_BITS:?}"
            )));
        }
        if n.is_even() {
            return Err(CryptoError::InvalidKey("modulus is even".into()));
        }
        let nn = &n * &n;
        let half_n = &n >> 1;
        Ok(PublicKey { n, nn, half_n, bits })
    }

    /// `|N|` in bits.
    pub fn bits(&self) -> u32 {
        self.bits
    }
    pub fn n(&self) -> &BigInt {
        &self.n
    }
    pub fn nn(&self) -> &BigInt {
        &self.nn
    }
    /// Bytes of `N` (and of any plaintext) at fixed width: `⌈|N|/8⌉`.
    pub fn modulus_bytes(&self) -> usize {
        (self.bits as usize).div_ceil(8)
    }
    /// Bytes of one ciphertext on the wire (big-endian, fixed width).
    pub fn ciphertext_bytes(&self) -> usize {
        (2 * self.bits as usize).div_ceil(8)
    }
    /// Canonical bytes: big-endian `N`, fixed width `|N|/8`.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_be_padded(&self.n, (self.bits as usize).div_ceil(8))
    }
    pub fn from_bytes(b: &[u8]) -> Result<Self, CryptoError> {
        Self::from_n(BigInt::from_bytes(b))
    }
    /// The same key in the client's pure-Rust form.
    pub fn to_pure(&self) -> tandem_core::paillier_pk::PublicKey {
        tandem_core::paillier_pk::PublicKey::from_bytes(&self.to_bytes()).expect("a valid key is valid in both forms")
    }

    /// Hex SHA-256 of a domain tag and the canonical bytes. Clients pin it.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"tandem/v1/paillier-public-key");
        h.update(self.to_bytes());
        hex::encode(h.finalize())
    }

    /// Encodes a signed integer as `m mod N` (PROTOCOL §2).
    pub fn encode_signed(&self, m: &BigInt) -> BigInt {
        BigInt::modulus(m, &self.n)
    }
    /// Decodes `m ∈ [0, N)` as `m − N` if `m > N/2`.
    pub fn decode_signed(&self, m: &BigInt) -> BigInt {
        if m > &self.half_n {
            m - &self.n
        } else {
            m.clone()
        }
    }

    /// `g^m = 1 + m·N mod N²` — the deterministic part of an encryption.
    /// Only safe to send after rerandomization.
    pub fn encrypt_deterministic(&self, m: &BigInt) -> Ciphertext {
        let m = self.encode_signed(m);
        Ciphertext(BigInt::mod_add(&(m * &self.n), &BigInt::one(), &self.nn))
    }

    /// Full encryption with fresh `r ∈ Z*_N` and a full `r^N`
    /// exponentiation (the client's encryption; servers encrypt toward S1
    /// with [`NoiseSource`]).
    pub fn encrypt<G: RngCore + CryptoRng + ?Sized>(&self, m: &BigInt, rng: &mut G) -> Ciphertext {
        self.rerandomize_full(&self.encrypt_deterministic(m), rng)
    }

    /// A full-size `r^N mod N²`, `r` uniform in `Z*_N`: a uniformly random
    /// `N`-th residue, whoever knows the factors of `N`.
    pub fn full_noise<G: RngCore + CryptoRng + ?Sized>(&self, rng: &mut G) -> BigInt {
        let r = loop {
            let r = sample_below(&self.n, rng);
            if r > BigInt::one() && r.gcd(&self.n) == BigInt::one() {
                break r;
            }
        };
        BigInt::mod_pow(&r, &self.n, &self.nn)
    }

    /// `[a]·r^N` with a full-size `r^N`: the rerandomization for every
    /// ciphertext sent toward the key holder (S2). The cheaper short-exponent
    /// noise of [`NoiseSource`] is not sound against S2, which knows `p, q`
    /// (SECURITY.md, "Rerandomization toward the key holder").
    pub fn rerandomize_full<G: RngCore + CryptoRng + ?Sized>(&self, a: &Ciphertext, rng: &mut G) -> Ciphertext {
        self.rerandomize_with(a, &self.full_noise(rng))
    }

    /// `[a + b]`.
    pub fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Ciphertext {
        Ciphertext(BigInt::mod_mul(&a.0, &b.0, &self.nn))
    }
    /// `[a]` ← `[a + b]` in place.
    pub fn add_assign(&self, a: &mut Ciphertext, b: &Ciphertext) {
        a.0 *= &b.0;
        a.0 %= &self.nn;
    }
    /// `[a + m]` for a plaintext integer `m`.
    pub fn add_plain(&self, a: &Ciphertext, m: &BigInt) -> Ciphertext {
        self.add(a, &self.encrypt_deterministic(m))
    }
    /// `[−a]`: the modular inverse of the ciphertext.
    pub fn neg(&self, a: &Ciphertext) -> Ciphertext {
        // A valid ciphertext is a unit mod N²; `validate` enforces it for
        // anything that came from outside.
        Ciphertext(BigInt::mod_inv(&a.0, &self.nn).expect("ciphertext is a unit mod N²"))
    }
    /// `[k·a]` for a signed integer `k`.
    pub fn scalar_mul(&self, a: &Ciphertext, k: &BigInt) -> Ciphertext {
        if k.is_zero() {
            return Ciphertext(BigInt::one());
        }
        let base = if k < &BigInt::zero() { self.neg(a) } else { a.clone() };
        Ciphertext(BigInt::mod_pow(&base.0, &k.abs(), &self.nn))
    }
    /// `[a]·s` for a noise value `s = h^{N·x}`: a fresh encryption of the same
    /// plaintext (PROTOCOL §5: every ciphertext S1 sends S2 is rerandomized).
    pub fn rerandomize_with(&self, a: &Ciphertext, noise: &BigInt) -> Ciphertext {
        Ciphertext(BigInt::mod_mul(&a.0, noise, &self.nn))
    }

    /// Fixed-width big-endian bytes of a ciphertext.
    pub fn ciphertext_to_bytes(&self, c: &Ciphertext) -> Vec<u8> {
        to_be_padded(&c.0, self.ciphertext_bytes())
    }

    /// Parses untrusted bytes: exact width, `0 < c < N²` and `gcd(c, N) = 1`.
    /// A non-unit would make decryption meaningless (and would factor `N`).
    pub fn ciphertext_from_bytes(&self, b: &[u8]) -> Result<Ciphertext, CryptoError> {
        if b.len() != self.ciphertext_bytes() {
            return Err(CryptoError::MalformedCiphertext(format!(
                "{} bytes; a ciphertext under this {}-bit key is exactly {} bytes",
                b.len(),
                self.bits,
                self.ciphertext_bytes()
            )));
        }
        let c = BigInt::from_bytes(b);
        if c.is_zero() || c >= self.nn {
            return Err(CryptoError::MalformedCiphertext("value is not in (0, N²)".into()));
        }
        if c.gcd(&self.n) != BigInt::one() {
            return Err(CryptoError::MalformedCiphertext("value is not a unit mod N".into()));
        }
        Ok(Ciphertext(c))
    }
}

fn l_function(x: &BigInt, n: &BigInt) -> BigInt {
    (x - BigInt::one()) / n
}

impl SecretKey {
    /// Generates a key whose modulus has exactly `bits` bits, with `p ≠ q`.
    pub fn generate(bits: u32) -> Result<Self, CryptoError> {
        if !ALLOWED_KEY_BITS.contains(&bits) {
            return Err(CryptoError::InvalidKey(format!(
                "cannot generate a {bits}-bit key; accepted sizes are {ALLOWED_KEY_BITS:?}"
            )));
        }
        loop {
            let kp = Paillier::keypair_with_modulus_size(bits as usize);
            if kp.p == kp.q {
                continue;
            }
            let n = &kp.p * &kp.q;
            if n.bit_length() as u32 != bits {
                // kzen's primes have their top bit set, but the product of
                // two (bits/2)-bit primes can still be one bit short.
                continue;
            }
            return Self::from_primes(kp.p, kp.q);
        }
    }

    pub fn from_primes(p: BigInt, q: BigInt) -> Result<Self, CryptoError> {
        if p == q {
            return Err(CryptoError::InvalidKey("p = q".into()));
        }
        let pk = PublicKey::from_n(&p * &q)?;
        let pp = &p * &p;
        let qq = &q * &q;
        let p_minus_1 = &p - BigInt::one();
        let q_minus_1 = &q - BigInt::one();
        let g = pk.n() + BigInt::one();
        let hp_inv = l_function(&BigInt::mod_pow(&BigInt::modulus(&g, &pp), &p_minus_1, &pp), &p);
        let hq_inv = l_function(&BigInt::mod_pow(&BigInt::modulus(&g, &qq), &q_minus_1, &qq), &q);
        let bad = || CryptoError::InvalidKey("p, q do not form a Paillier key".into());
        let hp = BigInt::mod_inv(&hp_inv, &p).ok_or_else(bad)?;
        let hq = BigInt::mod_inv(&hq_inv, &q).ok_or_else(bad)?;
        let p_inv_q = BigInt::mod_inv(&p, &q).ok_or_else(bad)?;
        Ok(SecretKey { pk, p, q, pp, qq, p_minus_1, q_minus_1, hp, hq, p_inv_q })
    }

    pub fn public(&self) -> &PublicKey {
        &self.pk
    }

    /// CRT decryption: `m ∈ [0, N)`.
    pub fn decrypt_raw(&self, c: &Ciphertext) -> BigInt {
        let cp = BigInt::modulus(&c.0, &self.pp);
        let cq = BigInt::modulus(&c.0, &self.qq);
        let (mp, mq) = rayon::join(
            || {
                let x = BigInt::mod_pow(&cp, &self.p_minus_1, &self.pp);
                BigInt::mod_mul(&l_function(&x, &self.p), &self.hp, &self.p)
            },
            || {
                let x = BigInt::mod_pow(&cq, &self.q_minus_1, &self.qq);
                BigInt::mod_mul(&l_function(&x, &self.q), &self.hq, &self.q)
            },
        );
        // m = mp + p·((mq − mp)·p^{-1} mod q)
        let diff = BigInt::mod_sub(&mq, &BigInt::modulus(&mp, &self.q), &self.q);
        let t = BigInt::mod_mul(&diff, &self.p_inv_q, &self.q);
        mp + &self.p * t
    }

    /// Decrypts and decodes as a signed integer.
    pub fn decrypt(&self, c: &Ciphertext) -> BigInt {
        self.pk.decode_signed(&self.decrypt_raw(c))
    }

    /// Serializable form (hex primes). Write it with mode 0600.
    pub fn to_file(&self) -> SecretKeyFile {
        SecretKeyFile {
            format: SECRET_KEY_FORMAT.into(),
            p: self.p.to_hex(),
            q: self.q.to_hex(),
            fingerprint: self.pk.fingerprint(),
        }
    }

    pub fn from_file(f: &SecretKeyFile) -> Result<Self, CryptoError> {
        if f.format != SECRET_KEY_FORMAT {
            return Err(CryptoError::InvalidKey(format!(
                "key file format {:?}; this build reads {:?}",
                f.format, SECRET_KEY_FORMAT
            )));
        }
        let parse =
            |s: &str| BigInt::from_hex(s).map_err(|_| CryptoError::InvalidKey("a prime is not valid hex".into()));
        let sk = Self::from_primes(parse(&f.p)?, parse(&f.q)?)?;
        if sk.pk.fingerprint() != f.fingerprint {
            return Err(CryptoError::InvalidKey(
                "the stored fingerprint does not match the key's primes (corrupted file?)".into(),
            ));
        }
        Ok(sk)
    }

    /// A noise source for S2's encryptions of `r` and `ρ`.
    pub fn noise_source<G: RngCore + CryptoRng + ?Sized>(&self, rng: &mut G) -> NoiseSource {
        NoiseSource::with_factors(self, NOISE_WINDOW, rng)
    }

    /// [`SecretKey::noise_source`] with another table window (benches
    /// compare windows side by side; the product uses the default).
    #[doc(hidden)]
    pub fn noise_source_with_window<G: RngCore + CryptoRng + ?Sized>(&self, window: usize, rng: &mut G) -> NoiseSource {
        NoiseSource::with_factors(self, window, rng)
    }
}

pub const SECRET_KEY_FORMAT: &str = "tandem-paillier-secret-key-v1";

/// On-disk form of a secret key (JSON).
#[derive(Serialize, Deserialize, Clone)]
pub struct SecretKeyFile {
    pub format: String,
    pub p: String,
    pub q: String,
    pub fingerprint: String,
}

/// On-the-wire / on-disk form of a public key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PublicKeyFile {
    /// Hex big-endian `N`.
    pub n: String,
    pub fingerprint: String,
}

impl PublicKey {
    pub fn to_file(&self) -> PublicKeyFile {
        PublicKeyFile { n: self.n.to_hex(), fingerprint: self.fingerprint() }
    }
    pub fn from_file(f: &PublicKeyFile) -> Result<Self, CryptoError> {
        let n = BigInt::from_hex(&f.n).map_err(|_| CryptoError::InvalidKey("N is not valid hex".into()))?;
        let pk = Self::from_n(n)?;
        if pk.fingerprint() != f.fingerprint {
            return Err(CryptoError::InvalidKey("fingerprint does not match N".into()));
        }
        Ok(pk)
    }
}

/// Cheap encryption randomness `s = h_s^x mod N²` (the Damgård–Jurik–Nielsen
/// variant): `h_s = (−y²)^N mod N²` for a random `y` chosen once, and a fresh
/// exponent `x` of `|N|/2` bits per use, evaluated with a fixed-base table.
/// Security rests on DCR plus the assumption that a `|N|/2`-bit exponent of
/// a random `N`-th residue is indistinguishable from a uniform one (see
/// SECURITY.md). Each party builds its own `h_s`, so no one else knows the
/// discrete logarithms.
///
/// S2 knows `p, q` and evaluates the table mod `p²` and `q²` separately
/// (half-width numbers, several times cheaper per multiplication), then
/// recombines by CRT; S1 and others use the table mod `N²`.
pub struct NoiseSource {
    inner: NoiseInner,
    exp_bits: usize,
}

enum NoiseInner {
    Public(FixedBase),
    Crt {
        tp: FixedBase,
        tq: FixedBase,
        pp: BigInt,
        qq: BigInt,
        /// `(p²)^{-1} mod q²`.
        pp_inv_qq: BigInt,
    },
}

/// Window of the fixed-base tables: 8 bits → ⌈1024/8⌉ = 128 multiplications
/// per sample at 2048 bits (6 bits took 171), tables of 128·255 entries
/// (16 MiB for S1's mod-`N²` table, the same for S2's two CRT halves) built
/// once at start-up in about 0.2 s.
const NOISE_WINDOW: usize = 8;

fn random_hs<G: RngCore + CryptoRng + ?Sized>(pk: &PublicKey, rng: &mut G) -> BigInt {
    let y = sample_below(pk.n(), rng);
    let h = BigInt::mod_sub(&BigInt::zero(), &BigInt::mod_mul(&y, &y, pk.n()), pk.n());
    BigInt::mod_pow(&h, pk.n(), pk.nn())
}

impl NoiseSource {
    /// For a party that only has the public key (S1).
    pub fn new<G: RngCore + CryptoRng + ?Sized>(pk: &PublicKey, rng: &mut G) -> Self {
        Self::with_window(pk, NOISE_WINDOW, rng)
    }

    /// [`NoiseSource::new`] with another table window (benches only).
    #[doc(hidden)]
    pub fn with_window<G: RngCore + CryptoRng + ?Sized>(pk: &PublicKey, window: usize, rng: &mut G) -> Self {
        let exp_bits = (pk.bits() as usize).div_ceil(2);
        let hs = random_hs(pk, rng);
        NoiseSource { inner: NoiseInner::Public(FixedBase::new(&hs, pk.nn(), exp_bits, window)), exp_bits }
    }

    fn with_factors<G: RngCore + CryptoRng + ?Sized>(sk: &SecretKey, window: usize, rng: &mut G) -> Self {
        let pk = &sk.pk;
        let exp_bits = (pk.bits() as usize).div_ceil(2);
        let hs = random_hs(pk, rng);
        let (tp, tq) = rayon::join(
            || FixedBase::new(&BigInt::modulus(&hs, &sk.pp), &sk.pp, exp_bits, window),
            || FixedBase::new(&BigInt::modulus(&hs, &sk.qq), &sk.qq, exp_bits, window),
        );
        let pp_inv_qq = BigInt::mod_inv(&sk.pp, &sk.qq).expect("p² and q² are coprime");
        NoiseSource { inner: NoiseInner::Crt { tp, tq, pp: sk.pp.clone(), qq: sk.qq.clone(), pp_inv_qq }, exp_bits }
    }

    /// A fresh `h_s^x mod N²`.
    pub fn sample<G: RngCore + CryptoRng + ?Sized>(&self, rng: &mut G) -> BigInt {
        let x = sample_bits(self.exp_bits, rng);
        match &self.inner {
            NoiseInner::Public(t) => t.pow(&x),
            NoiseInner::Crt { tp, tq, pp, qq, pp_inv_qq } => {
                let (sp, sq) = (tp.pow(&x), tq.pow(&x));
                // s = sp + p²·((sq − sp)·(p²)^{-1} mod q²)
                let diff = BigInt::mod_sub(&sq, &BigInt::modulus(&sp, qq), qq);
                sp + pp * BigInt::mod_mul(&diff, pp_inv_qq, qq)
            }
        }
    }
    /// `[m]` with fresh noise: `(1 + mN)·h_s^x mod N²`.
    pub fn encrypt<G: RngCore + CryptoRng + ?Sized>(&self, pk: &PublicKey, m: &BigInt, rng: &mut G) -> Ciphertext {
        pk.rerandomize_with(&pk.encrypt_deterministic(m), &self.sample(rng))
    }
    /// `[a]` with fresh short-exponent noise (sound toward S1 only).
    pub fn rerandomize<G: RngCore + CryptoRng + ?Sized>(
        &self,
        pk: &PublicKey,
        c: &Ciphertext,
        rng: &mut G,
    ) -> Ciphertext {
        pk.rerandomize_with(c, &self.sample(rng))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kzen_paillier::{Decrypt, Encrypt, EncryptionKey, RawCiphertext, RawPlaintext};
    use rand_core::OsRng;
    use std::borrow::Cow;
    use std::sync::OnceLock;

    pub(crate) fn key1024() -> &'static SecretKey {
        static K: OnceLock<SecretKey> = OnceLock::new();
        K.get_or_init(|| SecretKey::generate(1024).unwrap())
    }

    #[test]
    fn exact_size_and_distinct_primes() {
        let sk = key1024();
        assert_eq!(sk.public().bits(), 1024);
        assert_eq!(sk.public().n().bit_length(), 1024);
        assert_ne!(sk.p, sk.q);
    }

    #[test]
    fn agrees_with_kzen_paillier() {
        let sk = key1024();
        let pk = sk.public();
        let ek = EncryptionKey::from(pk.n());
        for m in [0i32, 1, -1, 123456789, -987654321] {
            let m = BigInt::from(m);
            // ours → kzen's decryption
            let c = pk.encrypt(&m, &mut OsRng);
            let dk = kzen_paillier::DecryptionKey { p: sk.p.clone(), q: sk.q.clone() };
            let raw: RawPlaintext = Paillier::decrypt(&dk, RawCiphertext(Cow::Borrowed(&c.0)));
            assert_eq!(pk.decode_signed(&raw.0), m);
            // kzen's encryption → ours
            let kc: RawCiphertext = Paillier::encrypt(&ek, RawPlaintext::from(pk.encode_signed(&m)));
            assert_eq!(sk.decrypt(&Ciphertext(kc.0.into_owned())), m);
        }
    }

    #[test]
    fn homomorphic_ops() {
        let sk = key1024();
        let pk = sk.public();
        let noise = sk.noise_source(&mut OsRng);
        let a = noise.encrypt(pk, &BigInt::from(-17), &mut OsRng);
        let b = noise.encrypt(pk, &BigInt::from(5), &mut OsRng);
        assert_eq!(sk.decrypt(&pk.add(&a, &b)), BigInt::from(-12));
        assert_eq!(sk.decrypt(&pk.neg(&a)), BigInt::from(17));
        assert_eq!(sk.decrypt(&pk.scalar_mul(&a, &BigInt::from(-3))), BigInt::from(51));
        assert_eq!(sk.decrypt(&pk.scalar_mul(&a, &BigInt::zero())), BigInt::zero());
        assert_eq!(sk.decrypt(&pk.add_plain(&b, &BigInt::from(-6))), BigInt::from(-1));
        let r = noise.rerandomize(pk, &a, &mut OsRng);
        assert_ne!(r, a);
        assert_eq!(sk.decrypt(&r), BigInt::from(-17));
        // The public-key noise source works the same way.
        let public = NoiseSource::new(pk, &mut OsRng);
        let c = public.encrypt(pk, &BigInt::from(41), &mut OsRng);
        assert_eq!(sk.decrypt(&public.rerandomize(pk, &c, &mut OsRng)), BigInt::from(41));
    }

    #[test]
    fn key_files_round_trip_and_detect_corruption() {
        let sk = key1024();
        let f = sk.to_file();
        let back = SecretKey::from_file(&f).unwrap();
        assert_eq!(back.public(), sk.public());
        let mut bad = f.clone();
        bad.fingerprint = "00".repeat(32);
        assert!(SecretKey::from_file(&bad).is_err());
        let pf = sk.public().to_file();
        assert_eq!(&PublicKey::from_file(&pf).unwrap(), sk.public());
        assert!(!format!("{sk:?}").contains(&sk.p.to_hex()));
    }

    #[test]
    fn rejects_malformed_ciphertexts() {
        let sk = key1024();
        let pk = sk.public();
        let len = pk.ciphertext_bytes();
        assert!(pk.ciphertext_from_bytes(&vec![0u8; len - 1]).is_err());
        assert!(pk.ciphertext_from_bytes(&vec![0u8; len]).is_err());
        assert!(pk.ciphertext_from_bytes(&vec![0xffu8; len]).is_err());
        let mut not_unit = vec![0u8; len];
        let nb = pk.to_bytes();
        not_unit[len - nb.len()..].copy_from_slice(&nb); // c = N
        assert!(pk.ciphertext_from_bytes(&not_unit).is_err());
        let c = pk.encrypt(&BigInt::from(3), &mut OsRng);
        let parsed = pk.ciphertext_from_bytes(&pk.ciphertext_to_bytes(&c)).unwrap();
        assert_eq!(parsed, c);
    }

    /// Euler's criterion: `a^((p−1)/2) mod p` is 1 for a square, −1 else.
    fn is_square_mod(a: &BigInt, p: &BigInt) -> bool {
        BigInt::mod_pow(&BigInt::modulus(a, p), &((p - BigInt::one()) >> 1), p) == BigInt::one()
    }

    /// Issue 14 item 4: what S1 sends S2 must carry randomness that is
    /// uniform even to the key holder. S2 knows `p, q`, so it can read the
    /// quadratic characters of a ciphertext's randomness mod `p` and mod `q`
    /// (for `c = (1 + mN)·R^N`, `c mod p` is a square iff `R` is). Noise
    /// `h^x` with `h = (−y²)^N` confines the pair of characters to a subgroup
    /// of size at most 2 (their values are `((−1|p)^x, (−1|q)^x)`), so S2
    /// learns a parity of the exponents (linear in the weights) when the
    /// character of `−1` is trivial. A full-size `r^N` makes all four pairs
    /// appear. With 64 samples the chance that one pair is missing by
    /// accident is below 4·(3/4)^64 < 10^-7.
    #[test]
    fn what_s1_sends_s2_has_uniform_characters_for_the_key_holder() {
        let sk = key1024();
        let pk = sk.public();
        let pair = |c: &Ciphertext| (is_square_mod(&c.0, &sk.p), is_square_mod(&c.0, &sk.q));
        // The plaintext part 1 + mN is 1 mod p and mod q: only R counts.
        let c = pk.encrypt_deterministic(&BigInt::from(12345));
        let packing = crate::packing::PackingParams::new(40, 40, pk.bits()).unwrap();
        let mut full = std::collections::HashSet::new();
        let mut djn = std::collections::HashSet::new();
        let noise = NoiseSource::new(pk, &mut OsRng);
        for _ in 0..64 {
            full.insert(pair(&crate::packing::pack(pk, &packing, std::slice::from_ref(&c), &mut OsRng)[0]));
            djn.insert(pair(&noise.rerandomize(pk, &c, &mut OsRng)));
        }
        assert_eq!(full.len(), 4, "packing must rerandomize with a full-size r^N: {full:?}");
        // The reason: short-exponent noise from a public base never covers them.
        assert!(djn.len() <= 2, "{djn:?}");
    }

    #[test]
    fn refuses_unsupported_sizes() {
        assert!(SecretKey::generate(512).is_err());
    }
}
