//! The test vectors of docs/PROTOCOL.md §6a, read from the document itself
//! and recomputed twice: from the specification's words with generic
//! primitives (HKDF-SHA256, ChaCha20, ChaCha20-Poly1305, SHA-256), and with
//! tandem's own code. So a client written in another language from the
//! document can check itself against these numbers, and the document cannot
//! drift from the code.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use tandem_paillier::bigint_traits::*;
use tandem_paillier::{BigInt, PublicKey, Seed, SeedEpoch, SeedSecret, U256};

/// `| `name` | `hex` |` rows of the "Test vectors" section.
fn documented() -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
    let start = doc.find("### 6a. Test vectors").expect("docs/PROTOCOL.md has a test-vector section");
    let section = &doc[start..];
    let section = &section[..section[4..].find("\n## ").map_or(section.len(), |e| e + 4)];
    section
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(|c| c.trim().trim_matches('`')).collect();
            (cells.len() >= 4 && cells[1].starts_with("v:")).then(|| (cells[1].to_string(), cells[2].to_string()))
        })
        .collect()
}

fn hkdf(salt: Option<&[u8]>, ikm: &[u8], info: &[u8]) -> [u8; 32] {
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(salt, ikm).expand(info, &mut okm).unwrap();
    okm
}

#[test]
fn the_documented_vectors_follow_from_the_spec_and_the_code() {
    let secret = [0x11u8; 32];
    let epoch = [0xabu8; 16];
    let width = 256; // a 2048-bit key
                     // §4.1 step 3, from the words of the spec.
    let mut ikm = vec![0u8; width];
    ikm[width - 32..].copy_from_slice(&secret);
    let seed = hkdf(Some(&epoch), &ikm, b"tandem/v1/seed");
    // … and from the code.
    assert_eq!(SeedSecret::from_bytes(secret).seed(&SeedEpoch(epoch), width), Seed::from_bytes(seed));
    // §4.1 step 4: r from a ChaCha20 stream keyed by HKDF(seed, input-mask).
    let mask_key = hkdf(None, &seed, b"tandem/v1/input-mask");
    let mut stream = rand_chacha::ChaCha20Rng::from_seed(mask_key);
    let mut first48 = [0u8; 48];
    stream.fill_bytes(&mut first48);
    let code = Seed::from_bytes(seed);
    let r128: Vec<u128> = code.input_mask(3, 128);
    let r128_wire: Vec<u8> = r128.iter().flat_map(|r| r.to_le_bytes()).collect();
    assert_eq!(r128_wire, first48.to_vec(), "k = 128: r_i is the next 16 stream bytes, little-endian");
    let r256: Vec<U256> = code.input_mask(1, 256);
    let mut first32 = [0u8; 32];
    rand_chacha::ChaCha20Rng::from_seed(mask_key).fill_bytes(&mut first32);
    assert_eq!(r256[0].to_le_bytes_vec(), first32.to_vec());
    // The compact mask of the MNIST models ([0, 1], f_in = 8): B = 2^8,
    // b = 9, m = 9 + 1 + 40 = 50. r_i is the next ⌈50/8⌉ = 7 stream bytes,
    // little-endian, with the bits above 50 (the top 6 of the 7th byte)
    // cleared.
    let mut first21 = [0u8; 21];
    rand_chacha::ChaCha20Rng::from_seed(mask_key).fill_bytes(&mut first21);
    let r50: Vec<u64> = first21
        .chunks(7)
        .map(|c| {
            let mut le = [0u8; 8];
            le[..7].copy_from_slice(c);
            le[6] &= 0x03;
            u64::from_le_bytes(le)
        })
        .collect();
    // The client sends u_i = x_int + B + r_i (x = 0, 0.5, 1: x_int = 0,
    // 2^7, 2^8) as 51-bit values packed into one bit string: value i's
    // bit j is bit 51·i + j of the string, bit t of the string is bit
    // t mod 8 of byte ⌊t/8⌋; 153 bits in 20 bytes, the top 7 bits of the
    // last byte zero. Written out bit by bit, as the spec words it.
    let x_int = [0u64, 1 << 7, 1 << 8];
    let u: Vec<u64> = r50.iter().zip(x_int).map(|(r, x)| r + x + (1 << 8)).collect();
    let mut u50 = vec![0u8; (3 * 51usize).div_ceil(8)];
    for (i, v) in u.iter().enumerate() {
        assert!(*v < 1 << 51);
        for j in 0..51 {
            if v >> j & 1 == 1 {
                let t = 51 * i + j;
                u50[t / 8] |= 1 << (t % 8);
            }
        }
    }
    assert_eq!((u50.len(), u50[19] >> 1), (20, 0), "153 bits: 20 bytes, 7 padding bits");
    let r50_wire: Vec<u8> = r50.iter().flat_map(|r| r.to_le_bytes()[..7].to_vec()).collect();
    // … and the code: the same r, and the same bytes on the wire, which S1
    // decodes back to ỹ = x_int + r.
    let mnist = tandem_core::InputMasking::new((0.0, 1.0), 8, 128);
    assert_eq!((mnist.offset, mnist.mask_bits, mnist.value_bits()), (1 << 8, 50, 51));
    let r_code: Vec<u128> = code.input_mask(3, 50);
    assert_eq!(r_code, r50.iter().map(|&r| r as u128).collect::<Vec<_>>());
    let y: Vec<u128> = r_code.iter().zip(x_int).map(|(r, x)| r + x as u128).collect();
    assert_eq!(mnist.encode(&y).unwrap(), u50);
    assert_eq!(mnist.decode::<u128>(&u50, 3, "masked_input").unwrap(), y);
    // §6: the result key; a seal made from the spec opens with the code.
    let result_key = hkdf(None, &seed, b"tandem/v1/result");
    let (sid, nonce, msg) = ([7u8; 16], [0u8; 12], b"label 3".as_slice());
    let ct = ChaCha20Poly1305::new(Key::from_slice(&result_key))
        .encrypt(Nonce::from_slice(&nonce), Payload { msg, aad: &sid })
        .unwrap();
    let sealed = [nonce.to_vec(), ct.clone()].concat();
    assert_eq!(code.open(&sid, &sealed).unwrap(), msg);
    // The key fingerprint: SHA-256 of the tag and N, fixed width, lowercase hex.
    let n = (BigInt::one() << 2047) + (BigInt::one() << 1024) + BigInt::one();
    let pk = PublicKey::from_n(n.clone()).unwrap();
    let mut h = Sha256::new();
    h.update(b"tandem/v1/paillier-public-key");
    h.update(n.to_bytes());
    let fingerprint = hex::encode(h.finalize());
    assert_eq!(pk.fingerprint(), fingerprint);

    // §4.1a: the same secret opening a seed session, and its first two
    // query seeds (counter as 8 bytes big-endian after the info string).
    let session_key = hkdf(Some(&epoch), &ikm, b"tandem/v1/seed-session");
    let code_key = SeedSecret::from_bytes(secret).session_key(&SeedEpoch(epoch), width);
    assert_eq!(code_key, tandem_core::SessionKey::from_bytes(session_key));
    let query_seed = |i: u64| hkdf(None, &session_key, &[b"tandem/v1/query-seed".as_slice(), &i.to_be_bytes()].concat());
    for i in [0, 1] {
        assert_eq!(code_key.query_seed(i), Seed::from_bytes(query_seed(i)), "query seed {i}");
    }

    let computed: BTreeMap<String, String> = [
        ("v:session_key", hex::encode(session_key)),
        ("v:query_seed_0", hex::encode(query_seed(0))),
        ("v:query_seed_1", hex::encode(query_seed(1))),
        ("v:seed", hex::encode(seed)),
        ("v:input_mask_key", hex::encode(mask_key)),
        ("v:r_k128", hex::encode(&r128_wire)),
        ("v:r0_k256", hex::encode(first32)),
        ("v:r_m50", hex::encode(&r50_wire)),
        ("v:u_m50", hex::encode(&u50)),
        ("v:result_key", hex::encode(result_key)),
        ("v:sealed", hex::encode(&sealed)),
        ("v:fingerprint", fingerprint),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let doc = documented();
    let table: String = computed.iter().map(|(k, v)| format!("| `{k}` | `{v}` |\n")).collect();
    assert_eq!(doc, computed, "docs/PROTOCOL.md §6a must list exactly these vectors:\n{table}");
}
