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
    // The compact mask of the MNIST MLP ([0, 1], f_in = 16, d = 784):
    // B = 2^16, m = 17 + 41 + 10 = 68. r_i is the next ⌈68/8⌉ = 9 stream
    // bytes, little-endian, with the bits above 68 (the top 4 of the 9th
    // byte) cleared; the client sends u_i = x_int + B + r_i in ⌈69/8⌉ = 9
    // bytes, little-endian.
    let mut first27 = [0u8; 27];
    rand_chacha::ChaCha20Rng::from_seed(mask_key).fill_bytes(&mut first27);
    let r68: Vec<[u8; 9]> = first27
        .chunks(9)
        .map(|c| {
            let mut r: [u8; 9] = c.try_into().unwrap();
            r[8] &= 0x0f;
            r
        })
        .collect();
    let x_int = [0u128, 1 << 15, 1 << 16]; // x = 0, 0.5, 1
    let u68: Vec<u8> = r68
        .iter()
        .zip(x_int)
        .flat_map(|(r, x)| {
            let mut le = [0u8; 16];
            le[..9].copy_from_slice(r);
            (u128::from_le_bytes(le) + x + (1 << 16)).to_le_bytes()[..9].to_vec()
        })
        .collect();
    let r68 = r68.concat();
    // … and the code: the same r, and the same bytes on the wire.
    let mnist = tandem_core::InputMasking::new((0.0, 1.0), 16, 784, 128);
    assert_eq!((mnist.offset, mnist.mask_bits, mnist.value_bytes()), (1 << 16, 68, 9));
    let r_code: Vec<u128> = code.input_mask(3, 68);
    assert_eq!(r_code.iter().flat_map(|r| r.to_le_bytes()[..9].to_vec()).collect::<Vec<u8>>(), r68);
    let y: Vec<u128> = r_code.iter().zip(x_int).map(|(r, x)| r + x).collect();
    assert_eq!(mnist.encode(&y).unwrap(), u68);
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
        ("v:r_m68", hex::encode(&r68)),
        ("v:u_m68", hex::encode(&u68)),
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
