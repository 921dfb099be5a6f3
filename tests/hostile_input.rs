//! Decoders of untrusted bytes never panic and bound their allocations:
//! property-based fuzzing (bounded cases here; `scripts/fuzz.sh` runs the
//! same properties with many more cases).

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tandem::test_key_1024;
use tandem_core::ring::decode_vec;
use tandem_model::testing::random_mlp;
use tandem_model::{format, ActivationKind, OutputMode};
use tandem_paillier::packing::{unpack, PackingParams};
use tandem_paillier::{BigInt, Seed, U256};

fn cases() -> u32 {
    std::env::var("TANDEM_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

fn valid_model_bytes() -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(5);
    let m = random_mlp(&mut rng, &[3, 4, 2], &[ActivationKind::Relu], 1.0, OutputMode::Label);
    format::to_bytes(&m).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn model_file_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = format::from_bytes(&bytes);
        let mut with_magic = b"TANDEMMD\x01\0\0\0".to_vec();
        with_magic.extend(&bytes);
        let _ = format::from_bytes(&with_magic);
    }

    /// Flip, overwrite or truncate bytes of a valid file: an error or a
    /// valid model, never a panic.
    #[test]
    fn model_file_mutations(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>()) {
        let mut b = valid_model_bytes();
        for (i, v) in edits {
            let i = i.index(b.len());
            b[i] = v;
        }
        let _ = format::from_bytes(&b);
        let keep = cut.index(b.len());
        let _ = format::from_bytes(&b[..keep]);
    }

    /// Header JSON with hostile numbers: huge dimensions, overflowing
    /// products, tensors outside the blob.
    #[test]
    fn model_header_hostile_numbers(inputs in any::<u64>(), outputs in any::<u64>(), off in any::<u64>(), len in any::<u64>(), dim in any::<u64>()) {
        let header = format!(
            r#"{{"name":"x","input_shape":[{dim}],"input_range":[-1,1],"default_mode":"label",
            "layers":[{{"type":"dense","inputs":{inputs},"outputs":{outputs},"weights":[{off},{len}],"bias":[0,1]}}]}}"#
        );
        let mut b = b"TANDEMMD\x01\0\0\0".to_vec();
        b.extend((header.len() as u64).to_le_bytes());
        b.extend(header.as_bytes());
        b.extend([0u8; 64]);
        let _ = format::from_bytes(&b);
    }

    #[test]
    fn ciphertext_decoder(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let pk = test_key_1024().public();
        let _ = pk.ciphertext_from_bytes(&bytes);
        let mut full = vec![0u8; pk.ciphertext_bytes()];
        let n = bytes.len().min(full.len());
        full[..n].copy_from_slice(&bytes[..n]);
        if let Ok(c) = pk.ciphertext_from_bytes(&full) {
            // Anything accepted decrypts without panicking.
            let _ = test_key_1024().decrypt(&c);
        }
    }

    #[test]
    fn ring_and_seed_decoders(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
        let _ = decode_vec::<u128>(&bytes);
        let _ = decode_vec::<U256>(&bytes);
        // Any plaintext, of any width, turns into a seed: there is no refusal
        // after decryption (SECURITY.md, the seed oracle).
        let m = &bytes[..];
        let epoch = tandem_paillier::SeedEpoch([bytes.len() as u8; 16]);
        let a = Seed::from_plaintext(&epoch, m, 128);
        prop_assert_eq!(a.clone(), Seed::from_plaintext(&epoch, m, 128));
        let _ = Seed::from_plaintext(&epoch, m, 16);
    }

    /// Packing layouts and plaintexts from a peer: validated, never trusted.
    #[test]
    fn packing_layouts(offset in any::<u32>(), slot in any::<u32>(), n in any::<u32>(), count in 0usize..64, bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let p = PackingParams { offset_bits: offset % 4096, slot_bits: slot % 4096, slots_per_ciphertext: n % 64 };
        if p.validate(1024).is_ok() {
            let v: BigInt = tandem_paillier::bigint_traits::Converter::from_bytes(&bytes[..]);
            let _ = unpack(&p, &v, count);
        }
    }
}
