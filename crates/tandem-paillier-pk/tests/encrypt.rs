//! Encryption without GMP: randomness, reproducibility, the documented draw
//! of `r` (recomputed with num-bigint), every key size, a broken RNG.

use num_bigint::BigUint;
use rand_chacha::rand_core::{CryptoRng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tandem_paillier_pk::{Error, PublicKey, MAX_NOISE_DRAWS};

/// A random odd modulus with exactly `bits` bits (not a real Paillier key:
/// encryption does not care, and num-bigint checks the arithmetic).
fn random_key(bits: usize, seed: u64) -> PublicKey {
    let mut b = vec![0u8; bits / 8];
    ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut b);
    b[0] |= 0x80;
    *b.last_mut().unwrap() |= 1;
    PublicKey::from_bytes(&b).unwrap()
}

/// The crate docs' draw of `r` and `c = (1 + m·N)·r^N mod N²`, written
/// again with num-bigint.
fn reference_encrypt(pk: &PublicKey, m: &[u8], rng: &mut impl RngCore) -> Vec<u8> {
    let n = BigUint::from_bytes_be(&pk.to_bytes());
    let nn = &n * &n;
    let width = pk.modulus_bytes();
    let excess = 8 * width - pk.bits() as usize;
    let one = BigUint::from(1u8);
    let r = loop {
        let mut buf = vec![0u8; width];
        rng.fill_bytes(&mut buf);
        buf[0] &= 0xff >> excess;
        let r = BigUint::from_bytes_be(&buf);
        if r > one && r < n && num_integer::Integer::gcd(&r, &n) == one {
            break r;
        }
    };
    let m = BigUint::from_bytes_be(m);
    let c = (&one + &m * &n) * r.modpow(&n, &nn) % &nn;
    let b = c.to_bytes_be();
    let mut out = vec![0u8; pk.ciphertext_bytes() - b.len()];
    out.extend_from_slice(&b);
    out
}

#[test]
fn matches_the_documented_draw_for_every_key_size() {
    for (bits, seed) in [(1024usize, 10u64), (2048, 11), (3072, 12)] {
        let pk = random_key(bits, seed);
        let m = [0x5au8; 32];
        let c = pk.encrypt(&m, &mut ChaCha20Rng::seed_from_u64(seed)).unwrap();
        assert_eq!(c.len(), 2 * bits / 8);
        assert_eq!(c, reference_encrypt(&pk, &m, &mut ChaCha20Rng::seed_from_u64(seed)), "{bits} bits");
    }
}

#[test]
fn fresh_randomness_gives_fresh_ciphertexts() {
    let pk = random_key(1024, 20);
    let mut rng = ChaCha20Rng::seed_from_u64(20);
    let a = pk.encrypt(&[1u8; 32], &mut rng).unwrap();
    let b = pk.encrypt(&[1u8; 32], &mut rng).unwrap();
    assert_ne!(a, b);
}

#[test]
fn a_seeded_rng_reproduces_the_ciphertext() {
    let pk = random_key(1024, 30);
    let c1 = pk.encrypt(&[9u8; 32], &mut ChaCha20Rng::seed_from_u64(99)).unwrap();
    let c2 = pk.encrypt(&[9u8; 32], &mut ChaCha20Rng::seed_from_u64(99)).unwrap();
    assert_eq!(c1, c2);
    let c3 = pk.encrypt(&[9u8; 32], &mut ChaCha20Rng::seed_from_u64(100)).unwrap();
    assert_ne!(c1, c3);
    // The RNG is used only through `fill_bytes`; a `&mut dyn` works too.
    let mut boxed: Box<dyn CryptoRngCore> = Box::new(ChaCha20Rng::seed_from_u64(99));
    assert_eq!(pk.encrypt(&[9u8; 32], &mut *boxed).unwrap(), c1);
}

trait CryptoRngCore: RngCore + CryptoRng {}
impl<T: RngCore + CryptoRng> CryptoRngCore for T {}

/// An RNG that returns only zeros: every candidate `r = 0` is rejected.
struct Zeros(usize);
impl RngCore for Zeros {
    fn next_u32(&mut self) -> u32 {
        0
    }
    fn next_u64(&mut self) -> u64 {
        0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0 += 1;
        dest.fill(0);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_chacha::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for Zeros {}

#[test]
fn a_broken_rng_is_an_error_not_a_hang() {
    let pk = random_key(1024, 40);
    let mut z = Zeros(0);
    assert_eq!(pk.encrypt(&[1u8; 32], &mut z), Err(Error::RngFailure));
    assert_eq!(z.0, MAX_NOISE_DRAWS);
}

#[test]
fn debug_shows_no_more_than_the_fingerprint() {
    let pk = random_key(1024, 50);
    let d = format!("{pk:?}");
    assert!(d.contains(&pk.fingerprint()) && d.contains("1024"), "{d}");
    assert_eq!(pk.clone(), pk);
    assert_ne!(random_key(1024, 51), pk);
}

/// Counts the candidates drawn (one `fill_bytes` per candidate).
struct Counting(ChaCha20Rng, usize);
impl RngCore for Counting {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.1 += 1;
        self.0.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_chacha::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for Counting {}

/// The unit check runs on the ciphertext (`gcd(c, N)`), not on `r`; it must
/// reject exactly the candidates with `gcd(r, N) ≠ 1`. With `3 | N` a third
/// of them are, so rejections do happen here, and every ciphertext must
/// still match the reference, which checks `gcd(r, N)` directly.
#[test]
fn non_units_are_rejected_exactly_as_gcd_r_n_would() {
    // An odd 1024-bit multiple of 3 (and of 5 and 7: fewer units still).
    let base = random_key(1024, 60).to_bytes();
    let n = BigUint::from_bytes_be(&base) / 210u32 * 210u32 + 105u32;
    assert_eq!(n.bits(), 1024);
    let pk = PublicKey::from_bytes(&n.to_bytes_be()).unwrap();
    let mut draws = 0;
    for seed in 0..8u64 {
        let mut rng = Counting(ChaCha20Rng::seed_from_u64(seed), 0);
        let c = pk.encrypt(&[3u8; 32], &mut rng).unwrap();
        draws += rng.1;
        assert_eq!(c, reference_encrypt(&pk, &[3u8; 32], &mut ChaCha20Rng::seed_from_u64(seed)), "seed {seed}");
        let c = BigUint::from_bytes_be(&c);
        assert_eq!(num_integer::Integer::gcd(&c, &n), BigUint::from(1u8));
    }
    assert!(draws > 8, "no candidate was rejected ({draws} draws for 8 encryptions)");
}
