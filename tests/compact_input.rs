//! The compact masked input (issue 17 item 2, docs/PROTOCOL.md §4.1) on the
//! bundled models: its parameters, the bytes a client's `InferRequest`
//! takes with it and with the full-ring mask it replaced, and the narrower
//! first-layer slots it gives the Paillier plan. Exactness of the private
//! result with these masks is the conformance and service tests' job; the
//! encoding's round trip is `tandem_core::masking`'s proptest.
//!
//! `cargo test --test compact_input -- --nocapture` prints the table quoted
//! in BENCHMARKS.md.

use prost::Message;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::path::Path;
use tandem_core::{Client, InputMasking, ModelInfo, SeedEpoch};
use tandem_model::testing::random_input;
use tandem_model::{OutputMode, QuantConfig, QuantizedModel, KAPPA, TAU};
use tandem_paillier::packing::PackingParams;
use tandem_paillier::plan::bits_u64;
use tandem_paillier::Plan;

const KEY_BITS: u32 = 2048;

fn bundled() -> Vec<(String, QuantizedModel)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut out = Vec::new();
    for name in [
        "breast_cancer_mlp",
        "breast_cancer_pipeline",
        "digits_mlp",
        "mnist_cnn",
        "mnist_mlp",
        "pima_mlp",
        "wine_pipeline",
    ] {
        let path = dir.join(format!("{name}.onnx"));
        let sidecar = tandem_onnx::read_input_sidecar(&path).unwrap();
        let opts = tandem_onnx::InputSidecar::fill(sidecar, Default::default());
        let m = tandem_onnx::import_file(&path, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        out.push((name.to_string(), QuantizedModel::new(&m, QuantConfig::default()).unwrap()));
    }
    let demo = tandem_model::format::load(&dir.join("demo/demo.tandem")).unwrap();
    out.push(("demo".into(), QuantizedModel::new(&demo, QuantConfig::default()).unwrap()));
    out
}

/// A 2048-bit modulus for the client's one encryption; its factors are not
/// needed to measure a request.
fn client_key() -> tandem_core::paillier_pk::PublicKey {
    let mut n = vec![0u8; 256];
    n[0] = 0x80;
    n[127] = 0x01;
    n[255] = 0x01;
    tandem_core::paillier_pk::PublicKey::from_bytes(&n).unwrap()
}

/// The client's `InferRequest` for `model`, with the masked input encoded
/// compactly and, for comparison, as full `k/8`-byte ring values (the
/// encoding before issue 17: the same fields, only wider values).
fn request_bytes(info: &ModelInfo, model: &QuantizedModel) -> (usize, usize) {
    let mut rng = StdRng::seed_from_u64(17);
    let x = random_input(&mut rng, &model.float);
    let client = Client::new(client_key(), SeedEpoch([0xab; 16]));
    let (_, q) = client.prepare::<u128, _>(info, &x, OutputMode::Label, &mut rng).unwrap();
    let compact = tandem_grpc::query_request_to_proto(&q, &info.masking().unwrap()).unwrap();
    let full = InputMasking { offset: 0, mask_bits: 128, ring_bits: 128 };
    let wide = tandem_grpc::query_request_to_proto(&q, &full).unwrap();
    (wide.encoded_len(), compact.encoded_len())
}

#[test]
fn bundled_models_send_compact_inputs_and_get_narrower_first_slots() {
    println!("| model | d | f_in | k | B | m | bits/feature | masked input before → after | InferRequest before → after | first-layer slot bits | slots/ct | cts |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, q) in bundled() {
        let info = ModelInfo::of(&name, &q);
        let m = info.masking().unwrap();
        let d = q.input_len();
        let k = q.ring_bits;
        // Every bundled model fits the compact mask with k = 128.
        assert!(m.is_compact() && k == 128, "{name}: {m:?}");
        // m = b + 1 + 40 whatever d is; m + 1 bits a feature, packed.
        let b = 64 - m.offset.leading_zeros();
        assert_eq!((m.mask_bits, m.value_bits()), (b + 41, b + 42), "{name}");
        let packed = m.encoded_len(d).unwrap();
        assert_eq!(packed, (d * (b as usize + 42)).div_ceil(8), "{name}");
        let (before, after) = request_bytes(&info, &q);
        // Only the masked input shrinks (and with it, maybe, the varint
        // holding its length).
        let field = |n: usize| n + prost::encoding::encoded_len_varint(n as u64);
        assert_eq!(before - after, field(d * 16) - field(packed), "{name}: only the masked input shrinks");

        // The plan bounds the first layer's [D] = [r] by 2^m, not 2^k: its
        // slots are k − m bits narrower than with the full-ring mask.
        let plan = Plan::new(&q, KEY_BITS).unwrap();
        assert_eq!(plan.input_masking, m, "{name}");
        // The linear layers before the first activation (a convolution may
        // be followed by pooling) each add their row norm's bits.
        let firsts: Vec<_> = q
            .layers
            .iter()
            .map_while(|l| match l {
                tandem_model::QLayer::Linear(l) => Some(l),
                _ => None,
            })
            .collect();
        let g_bits = m.mask_bits + firsts.iter().map(|l| bits_u64(l.max_row_l1)).sum::<u32>();
        assert_eq!(plan.rounds[0].g_bits, g_bits, "{name}");
        let first = firsts.last().expect("a linear first layer");
        let (slots, cts) = match plan.hidden_packing.first() {
            Some(p) => {
                let t_bits = p.offset_bits - plan.rounds[0].g_bits;
                assert!(t_bits == TAU || t_bits == 0, "{name}");
                let wide = PackingParams::new(p.offset_bits + (k - m.mask_bits), KAPPA, KEY_BITS).unwrap();
                assert_eq!(wide.slot_bits - p.slot_bits, k - m.mask_bits, "{name}");
                let n = first.rows.len();
                (
                    format!("{} → {}", wide.slot_bits, p.slot_bits),
                    (
                        format!("{} → {}", wide.slots_per_ciphertext, p.slots_per_ciphertext),
                        format!("{} → {}", wide.ciphertexts_for(n), p.ciphertexts_for(n)),
                    ),
                )
            }
            None => ("(no hidden layer)".into(), ("".into(), "".into())),
        };
        println!(
            "| {name} | {d} | {} | {k} | {} | {} | {} | {} → {packed} | {before} → {after} | {slots} | {} | {} |",
            q.f_in,
            m.offset,
            m.mask_bits,
            m.value_bits(),
            d * 16,
            cts.0,
            cts.1
        );
        if name.starts_with("mnist") {
            // f_in = 8 (the sidecar): B = 2^8, m = 9 + 1 + 40 = 50, 51 bits
            // a feature: 784 of them in 4,998 bytes.
            assert_eq!((d, q.f_in, m.offset, m.mask_bits, m.value_bits()), (784, 8, 1 << 8, 50, 51), "{name}");
            assert_eq!((d * 16, packed), (12544, 4998));
        }
    }
}
