//! Cross tests against `tandem-paillier`'s GMP implementation (kzen-paillier):
//! its `SecretKey` decrypts what this crate encrypts, and both parse,
//! encode and fingerprint keys identically. On x86_64 hosts only, where
//! tandem-paillier (GMP) is a dev-dependency.
#![cfg(target_arch = "x86_64")]

use std::sync::OnceLock;

use proptest::prelude::*;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tandem_paillier::bigint_traits::{BitManipulation, Converter};
use tandem_paillier::{BigInt, SecretKey};
use tandem_paillier_pk::{Error, PublicKey};

/// One 1024-bit GMP key per test process (key generation dominates).
fn key1024() -> &'static SecretKey {
    static K: OnceLock<SecretKey> = OnceLock::new();
    K.get_or_init(|| SecretKey::generate(1024).expect("1024 is an accepted size"))
}

fn ours(sk: &SecretKey) -> PublicKey {
    PublicKey::from_bytes(&sk.public().to_bytes()).expect("a GMP key parses")
}

/// Encrypts `m` with this crate and decrypts it with GMP's `SecretKey`.
fn roundtrip(sk: &SecretKey, pk: &PublicKey, m: &[u8], rng: &mut ChaCha20Rng) {
    let c = pk.encrypt(m, rng).expect("m < N");
    assert_eq!(c.len(), sk.public().ciphertext_bytes());
    let parsed = sk.public().ciphertext_from_bytes(&c).expect("a well-formed ciphertext");
    assert_eq!(sk.public().ciphertext_to_bytes(&parsed), c, "same fixed-width encoding");
    assert_eq!(sk.decrypt_raw(&parsed), BigInt::from_bytes(m), "plaintext {}", hex_short(m));
}

fn hex_short(b: &[u8]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    if h.len() > 40 {
        format!("{}…{} ({} bytes)", &h[..16], &h[h.len() - 16..], b.len())
    } else {
        h
    }
}

/// `N − k` as big-endian bytes at the modulus width.
fn n_minus(sk: &SecretKey, k: u64) -> Vec<u8> {
    let v = sk.public().n() - BigInt::from(k);
    let b = v.to_bytes();
    let mut out = vec![0u8; sk.public().modulus_bytes() - b.len()];
    out.extend_from_slice(&b);
    out
}

#[test]
fn gmp_decrypts_ours_1024_including_boundaries() {
    let sk = key1024();
    let pk = ours(sk);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut messages: Vec<Vec<u8>> = vec![
        vec![],         // 0, empty encoding
        vec![0],        // 0
        vec![0u8; 32],  // 0 as a 32-byte seed secret
        vec![1],        // 1
        vec![0xff; 32], // the largest seed secret, 2^256 − 1
        n_minus(sk, 1), // N − 1
        n_minus(sk, 2), // N − 2
        n_minus(sk, 1u64 << 40),
    ];
    // Leading zero bytes beyond the modulus width are allowed.
    let mut padded = vec![0u8; 7];
    padded.extend_from_slice(&n_minus(sk, 1));
    messages.push(padded);
    for _ in 0..4 {
        let mut s = [0u8; 32];
        rng.fill_bytes(&mut s);
        messages.push(s.to_vec());
    }
    for _ in 0..3 {
        // Uniform below N (almost surely: clear the top bit).
        let mut s = vec![0u8; pk.modulus_bytes()];
        rng.fill_bytes(&mut s);
        s[0] &= 0x7f;
        messages.push(s);
    }
    for m in &messages {
        roundtrip(sk, &pk, m, &mut rng);
    }
}

#[test]
fn gmp_decrypts_ours_2048() {
    let sk = SecretKey::generate(2048).expect("2048 is an accepted size");
    let pk = ours(&sk);
    assert_eq!(pk.bits(), 2048);
    assert_eq!(pk.ciphertext_bytes(), 512);
    let mut rng = ChaCha20Rng::seed_from_u64(2048);
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    roundtrip(&sk, &pk, &secret, &mut rng);
    roundtrip(&sk, &pk, &n_minus(&sk, 1), &mut rng);
}

#[test]
fn plaintexts_at_or_above_n_are_refused() {
    let sk = key1024();
    let pk = ours(sk);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let n = pk.to_bytes();
    assert_eq!(pk.encrypt(&n, &mut rng), Err(Error::PlaintextOutOfRange));
    assert_eq!(pk.encrypt(&vec![0xff; pk.modulus_bytes()], &mut rng), Err(Error::PlaintextOutOfRange));
    let mut wide = vec![1u8];
    wide.extend_from_slice(&[0u8; 128]);
    assert_eq!(pk.encrypt(&wide, &mut rng), Err(Error::PlaintextOutOfRange));
    let mut long = vec![0u8; 1000];
    long[0] = 1;
    assert_eq!(pk.encrypt(&long, &mut rng), Err(Error::PlaintextOutOfRange));
}

#[test]
fn same_key_bytes_and_fingerprint_as_gmp() {
    let sk = key1024();
    let pk = ours(sk);
    assert_eq!(pk.to_bytes(), sk.public().to_bytes());
    assert_eq!(pk.fingerprint(), sk.public().fingerprint());
    assert_eq!(pk.bits(), sk.public().bits());
    assert_eq!(pk.modulus_bytes(), sk.public().modulus_bytes());
    assert_eq!(pk.ciphertext_bytes(), sk.public().ciphertext_bytes());
    // Random odd moduli of every accepted size, with and without leading
    // zero bytes: GMP's from_bytes accepts them too and agrees on everything.
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    for bits in [1024usize, 2048, 3072] {
        for pad in [0usize, 1, 5] {
            let mut b = vec![0u8; pad + bits / 8];
            rng.fill_bytes(&mut b[pad..]);
            b[pad] |= 0x80;
            *b.last_mut().unwrap() |= 1;
            let g = tandem_paillier::PublicKey::from_bytes(&b).expect("GMP accepts");
            let o = PublicKey::from_bytes(&b).expect("we accept");
            assert_eq!(o.to_bytes(), g.to_bytes());
            assert_eq!(o.to_bytes(), b[pad..]);
            assert_eq!(o.fingerprint(), g.fingerprint());
            assert_eq!(
                (o.bits(), o.modulus_bytes(), o.ciphertext_bytes()),
                (g.bits(), g.modulus_bytes(), g.ciphertext_bytes())
            );
        }
    }
}

#[test]
fn rejects_what_gmp_rejects() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut odd = |len: usize, top: u8| {
        let mut b = vec![0u8; len];
        rng.fill_bytes(&mut b);
        b[0] = top;
        *b.last_mut().unwrap() |= 1;
        b
    };
    let cases: Vec<(&str, Vec<u8>, Error)> = vec![
        ("empty", vec![], Error::UnsupportedKeySize { bits: 0 }),
        ("all zero", vec![0u8; 256], Error::UnsupportedKeySize { bits: 0 }),
        ("one", vec![1], Error::UnsupportedKeySize { bits: 1 }),
        ("2047 bits", odd(256, 0x7f), Error::UnsupportedKeySize { bits: 2047 }),
        ("2049 bits", odd(257, 0x01), Error::UnsupportedKeySize { bits: 2049 }),
        ("4096 bits", odd(512, 0x80), Error::UnsupportedKeySize { bits: 4096 }),
        ("512 bits", odd(64, 0x80), Error::UnsupportedKeySize { bits: 512 }),
        (
            "even 2048",
            {
                let mut b = odd(256, 0x80);
                b[255] &= 0xfe;
                b
            },
            Error::EvenModulus,
        ),
        (
            "even 1024",
            {
                let mut b = odd(128, 0xc0);
                b[127] = 0;
                b
            },
            Error::EvenModulus,
        ),
    ];
    for (what, b, want) in cases {
        assert_eq!(PublicKey::from_bytes(&b).unwrap_err(), want, "{what}");
        assert!(tandem_paillier::PublicKey::from_bytes(&b).is_err(), "GMP rejects {what} too");
    }
}

/// Keys of interesting lengths: mostly around the accepted sizes.
fn key_bytes() -> impl Strategy<Value = Vec<u8>> {
    let len = prop_oneof![
        Just(0usize),
        0usize..8,
        Just(127usize),
        Just(128usize),
        Just(129usize),
        Just(256usize),
        Just(384usize),
        0usize..600,
    ];
    (len, any::<u64>(), any::<u8>()).prop_map(|(len, seed, shape)| {
        let mut b = vec![0u8; len];
        ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut b);
        if let Some(first) = b.first_mut() {
            match shape % 4 {
                0 => *first |= 0x80,                    // exactly len·8 bits
                1 => *first = 0,                        // a leading zero byte
                2 => b.iter_mut().for_each(|x| *x = 0), // all zero
                _ => {}
            }
        }
        if shape & 0x10 != 0 {
            if let Some(last) = b.last_mut() {
                *last |= 1; // odd
            }
        }
        b
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, .. ProptestConfig::default() })]

    /// Random (hostile) key bytes never panic, we accept exactly what GMP
    /// accepts, and an accepted key (a random odd number, not a real
    /// Paillier modulus) still encrypts without panicking.
    #[test]
    fn hostile_keys_never_panic_and_agree_with_gmp(b in key_bytes(), seed in any::<u64>()) {
        let o = PublicKey::from_bytes(&b);
        let g = tandem_paillier::PublicKey::from_bytes(&b);
        prop_assert_eq!(o.is_ok(), g.is_ok(), "{:?}", o);
        if let (Ok(o), Ok(g)) = (o, g) {
            prop_assert_eq!(o.fingerprint(), g.fingerprint());
            if o.bits() == 1024 {
                let mut rng = ChaCha20Rng::seed_from_u64(seed);
                let c = o.encrypt(&[7u8; 32], &mut rng);
                // Drawing r can fail only if gcd(r, N) ≠ 1 for 128 draws.
                let c = c.unwrap();
                prop_assert_eq!(c.len(), 256);
                let cg = BigInt::from_bytes(&c);
                prop_assert!(&cg < g.nn());
                prop_assert!(cg.bit_length() <= 2048);
            }
        }
    }
}

/// A rerandomized ciphertext decrypts to the same plaintext, differs from
/// the original, and a malformed one is refused before any exponentiation.
#[test]
fn rerandomized_ciphertexts_decrypt_the_same_and_bad_ones_are_refused() {
    let sk = key1024();
    let pk = ours(sk);
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let m = [0x5au8; 32];
    let c = pk.encrypt(&m, &mut rng).unwrap();
    let c2 = pk.rerandomize(&c, &mut rng).unwrap();
    assert_ne!(c, c2);
    assert_eq!(c2.len(), c.len());
    let parsed = sk.public().ciphertext_from_bytes(&c2).unwrap();
    assert_eq!(sk.decrypt_raw(&parsed), BigInt::from_bytes(&m));
    // Wrong width, zero, N itself (not a unit), N² − 0 (out of range).
    let zero = vec![0u8; c.len()];
    let mut n_wide = vec![0u8; c.len() - sk.public().modulus_bytes()];
    n_wide.extend(n_minus(sk, 0));
    for bad in [c[1..].to_vec(), zero, n_wide, vec![0xff; c.len()]] {
        assert_eq!(pk.rerandomize(&bad, &mut rng), Err(Error::CiphertextOutOfRange));
    }
}

/// The noise table's short-exponent encryptions decrypt under GMP's key,
/// at the boundaries and on random plaintexts, two encryptions of the same
/// plaintext differ, and a table is refused under another key.
#[test]
fn gmp_decrypts_noise_table_encryptions() {
    use tandem_paillier_pk::NoiseTable;
    let sk = key1024();
    let pk = ours(sk);
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let table = NoiseTable::new(&pk, &mut rng).expect("a working RNG");
    let mut messages: Vec<Vec<u8>> = vec![vec![], vec![0], vec![1], n_minus(sk, 1)];
    for _ in 0..8 {
        let mut m = vec![0u8; 32];
        rng.fill_bytes(&mut m);
        messages.push(m);
    }
    for m in &messages {
        let c = pk.encrypt_with_table(m, &table, &mut rng).expect("m < N");
        assert_eq!(c.len(), sk.public().ciphertext_bytes());
        let parsed = sk.public().ciphertext_from_bytes(&c).expect("a well-formed ciphertext");
        assert_eq!(sk.decrypt_raw(&parsed), BigInt::from_bytes(m), "plaintext {}", hex_short(m));
    }
    let a = pk.encrypt_with_table(&[5], &table, &mut rng).unwrap();
    let b = pk.encrypt_with_table(&[5], &table, &mut rng).unwrap();
    assert_ne!(a, b, "fresh noise per encryption");
    assert_eq!(pk.encrypt_with_table(&n_minus(sk, 0), &table, &mut rng), Err(Error::PlaintextOutOfRange));
    let other = ours(&SecretKey::generate(1024).unwrap());
    assert_eq!(other.encrypt_with_table(&[5], &table, &mut rng), Err(Error::NoiseTableMismatch));
}
