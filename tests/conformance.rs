//! PROTOCOL §9 conformance: private inference equals the integer reference
//! bit for bit, transcripts are fresh, and bad input gets typed errors.
//! Packing round trips and the sigmoid/tanh symmetries are unit-tested next
//! to their code (tandem-crypto `packing`, tandem-model `activation`).

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tandem::{test_key_1024, Harness};
use tandem_crypto::ring::encode_vec;
use tandem_crypto::CryptoError;
use tandem_model::testing::{random_cnn, random_input, random_mlp};
use tandem_model::{ActivationKind, Layer, Model, ModelError, OutputMode, QuantConfig, Shape};
use tandem_protocol::{ProtocolError, ToActivation};

const ACTS: [ActivationKind; 3] = [ActivationKind::Relu, ActivationKind::Sigmoid, ActivationKind::Tanh];

fn act_strategy() -> impl Strategy<Value = Vec<ActivationKind>> {
    prop::collection::vec(prop::sample::select(ACTS.to_vec()), 1..3)
}

/// Runs every mode the model offers and compares with the reference.
fn check_all_modes(h: &mut Harness, x: &[f64]) -> Result<(), TestCaseError> {
    for mode in h.model.modes() {
        let got = h.infer(x, mode).map_err(|e| TestCaseError::fail(format!("{mode}: {e}")))?;
        prop_assert_eq!(got, h.reference(x, mode), "mode {}", mode);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Dense networks, 1–3 hidden layers, any mix of activations, 1–6
    /// outputs (1 output exercises sigmoid and binary label), k = 128.
    #[test]
    fn dense_equals_reference_k128(
        seed in any::<u64>(),
        hidden in prop::collection::vec(1usize..7, 1..4),
        acts in act_strategy(),
        inputs in 1usize..7,
        outputs in 1usize..7,
        scale in prop::sample::select(vec![0.25f32, 1.0, 4.0]),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut dims = vec![inputs];
        dims.extend(&hidden);
        dims.push(outputs);
        let m = random_mlp(&mut rng, &dims, &acts, scale, OutputMode::Label);
        let mut h = Harness::new(&m, test_key_1024()).unwrap();
        prop_assert_eq!(h.model.ring_bits, 128);
        let x = random_input(&mut rng, &m);
        check_all_modes(&mut h, &x)?;
    }

    /// The same networks run in the 256-bit ring.
    #[test]
    fn dense_equals_reference_k256(
        seed in any::<u64>(),
        hidden in prop::collection::vec(1usize..6, 1..3),
        acts in act_strategy(),
        outputs in 1usize..5,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut dims = vec![3];
        dims.extend(&hidden);
        dims.push(outputs);
        let m = random_mlp(&mut rng, &dims, &acts, 1.0, OutputMode::Label);
        let mut h = Harness::with_config(&m, test_key_1024(), QuantConfig::default(), Some(256)).unwrap();
        let x = random_input(&mut rng, &m);
        check_all_modes(&mut h, &x)?;
    }

    /// Conv2d (stride, padding) → activation → AvgPool2d → Dense.
    #[test]
    fn conv_equals_reference(
        seed in any::<u64>(),
        act in prop::sample::select(ACTS.to_vec()),
        outputs in 1usize..4,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let m = random_cnn(&mut rng, act, outputs, OutputMode::Label);
        let mut h = Harness::new(&m, test_key_1024()).unwrap();
        let x = random_input(&mut rng, &m);
        check_all_modes(&mut h, &x)?;
    }
}

/// A deep ReLU network with a wide input range overflows k = 128 and must
/// run (exactly) in k = 256.
#[test]
fn budget_picks_k256_and_it_is_exact() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut dims = vec![4];
    dims.extend([6; 10]);
    dims.push(3);
    let mut m = random_mlp(&mut rng, &dims, &[ActivationKind::Relu], 2.0, OutputMode::Label);
    m.input_range = (-1000.0, 1000.0);
    let mut h = Harness::new(&m, test_key_1024()).unwrap();
    assert_eq!(h.model.ring_bits, 256, "budget: {:?}", h.model.budget);
    for _ in 0..3 {
        let x: Vec<f64> = (0..4).map(|_| rng.gen_range(-1000.0..1000.0)).collect();
        for mode in h.model.modes() {
            assert_eq!(h.infer(&x, mode).unwrap(), h.reference(&x, mode), "{mode}");
        }
    }
}

/// A model too large for either ring is refused, naming the layer.
#[test]
fn budget_rejects_with_layer_and_bits() {
    let mut rng = StdRng::seed_from_u64(8);
    let mut dims = vec![4];
    dims.extend([6; 24]);
    dims.push(3);
    let mut m = random_mlp(&mut rng, &dims, &[ActivationKind::Relu], 4.0, OutputMode::Label);
    m.input_range = (-1e6, 1e6);
    let err = tandem_model::QuantizedModel::new(&m, QuantConfig::default()).unwrap_err();
    match &err {
        ModelError::Budget { layer, bits_needed, available } => {
            assert!(layer.starts_with("layer "), "{layer}");
            assert!(*bits_needed > 256 && *available == 256);
        }
        other => panic!("expected a budget error, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("needs") && msg.contains("bits"), "{msg}");
}

/// Ties among logits: the reference picks the lowest index; the private
/// label must too, whatever permutation S1 draws.
#[test]
fn label_ties_break_like_the_reference() {
    // Two identical rows → identical logits for every input.
    let w = vec![0.5f32, -0.25, 0.5, -0.25, 0.1, 0.3];
    let m = Model {
        name: "tie".into(),
        input_shape: Shape::Vector(2),
        input_range: (-1.0, 1.0),
        default_mode: OutputMode::Label,
        layers: vec![Layer::Dense { inputs: 2, outputs: 3, weights: w, bias: vec![0.0, 0.0, -5.0] }],
    };
    let mut h = Harness::new(&m, test_key_1024()).unwrap();
    for _ in 0..12 {
        assert_eq!(h.infer(&[0.3, -0.2], OutputMode::Label).unwrap(), tandem_model::Output::Label(0));
    }
    // An all-zero logit vector is a three-way tie.
    let zero =
        Model { layers: vec![Layer::Dense { inputs: 2, outputs: 3, weights: vec![0.0; 6], bias: vec![0.0; 3] }], ..m };
    let mut h = Harness::new(&zero, test_key_1024()).unwrap();
    for _ in 0..6 {
        assert_eq!(h.infer(&[0.3, -0.2], OutputMode::Label).unwrap(), tandem_model::Output::Label(0));
    }
}

/// §9.2: two runs on the same input share no S1- or S2-visible message.
#[test]
fn transcripts_are_fresh() {
    let mut rng = StdRng::seed_from_u64(3);
    let m =
        random_mlp(&mut rng, &[5, 4, 4, 3], &[ActivationKind::Relu, ActivationKind::Sigmoid], 1.0, OutputMode::Label);
    let mut h = Harness::new(&m, test_key_1024()).unwrap();
    let x = random_input(&mut rng, &m);
    for mode in h.model.modes() {
        let a = h.transcript_128(&x, mode).unwrap();
        let b = h.transcript_128(&x, mode).unwrap();
        // S1's view: ỹ, the encrypted seed, [r], h, [ρ].
        assert_ne!(encode_vec(&a.query.masked_input), encode_vec(&b.query.masked_input));
        assert_ne!(a.query.enc_seed, b.query.enc_seed);
        assert_ne!(a.masks.enc_r, b.masks.enc_r);
        for (ra, rb) in a.from_s2.iter().zip(&b.from_s2) {
            assert_ne!(ra.h, rb.h);
            assert_ne!(ra.enc_rho, rb.enc_rho);
        }
        // S2's view: the rerandomized seed, e and packed C per round.
        assert_ne!(a.session_start.enc_seed, b.session_start.enc_seed);
        assert_ne!(a.session_start.enc_seed, a.query.enc_seed, "S1 must rerandomize the seed");
        assert_ne!(a.session_start.session_id, b.session_start.session_id);
        for (sa, sb) in a.to_s2.iter().zip(&b.to_s2) {
            let (ea, pa, eb, pb) = match (sa, sb) {
                (ToActivation::Activate(x), ToActivation::Activate(y)) => (&x.e, &x.packed, &y.e, &y.packed),
                (ToActivation::Finish(x), ToActivation::Finish(y)) => (&x.e, &x.packed, &y.e, &y.packed),
                _ => panic!("rounds differ in kind"),
            };
            if !ea.is_empty() {
                assert_ne!(ea, eb, "{mode}");
            }
            assert_ne!(pa, pb, "{mode}");
        }
        // The client's result channel is fresh too.
        assert_ne!(a.output.sealed, b.output.sealed);
    }
}

fn tiny_model() -> Model {
    let mut rng = StdRng::seed_from_u64(11);
    random_mlp(&mut rng, &[3, 4, 2], &[ActivationKind::Relu], 1.0, OutputMode::Label)
}

#[test]
fn wrong_input_length_is_a_typed_error() {
    let mut h = Harness::new(&tiny_model(), test_key_1024()).unwrap();
    let err = h.infer(&[0.1, 0.2], OutputMode::Label).unwrap_err();
    assert_eq!(err, ProtocolError::Model(ModelError::InputLength { expected: 3, got: 2 }));
    assert!(err.to_string().contains("exactly 3"), "{err}");
}

#[test]
fn out_of_range_and_non_finite_inputs_are_typed_errors() {
    let mut h = Harness::new(&tiny_model(), test_key_1024()).unwrap();
    for bad in [1.5, -1.01, f64::NAN, f64::INFINITY] {
        match h.infer(&[0.1, bad, 0.2], OutputMode::Label).unwrap_err() {
            ProtocolError::Model(ModelError::InputOutOfRange { index: 1, lo, hi, .. }) => {
                assert_eq!((lo, hi), (-1.0, 1.0));
            }
            other => panic!("{bad}: {other}"),
        }
    }
}

#[test]
fn unsupported_mode_is_a_typed_error() {
    let mut h = Harness::new(&tiny_model(), test_key_1024()).unwrap();
    let err = h.infer(&[0.1, 0.2, 0.3], OutputMode::Sigmoid).unwrap_err();
    assert!(matches!(err, ProtocolError::Model(ModelError::UnsupportedMode { .. })), "{err}");
    assert!(err.to_string().contains("label, probabilities, logits"), "{err}");
}

#[test]
fn unknown_layer_in_model_file_is_a_typed_error() {
    let bytes = tandem_model::format::to_bytes(&tiny_model()).unwrap();
    // Rename the activation in the JSON header to something unsupported.
    let text = bytes.iter().map(|&b| b as char).collect::<String>();
    let at = text.find("\"relu\"").expect("header names relu");
    let mut bad = bytes.clone();
    bad[at + 1..at + 5].copy_from_slice(b"gelu");
    match tandem_model::format::from_bytes(&bad).unwrap_err() {
        ModelError::UnknownLayer { index, kind, supported } => {
            assert_eq!((index, kind.as_str()), (1, "gelu"));
            assert!(supported.contains("dense"));
        }
        other => panic!("{other}"),
    }
    assert!(tandem_model::format::from_bytes(b"not a model").is_err());
    assert!(tandem_model::format::from_bytes(&bytes[..bytes.len() - 4]).is_err());
}

#[test]
fn tampered_sealed_result_is_rejected() {
    let mut h = Harness::new(&tiny_model(), test_key_1024()).unwrap();
    let x = [0.1, 0.2, 0.3];
    let info = h.info.clone();
    let (pending, query) = h.client.prepare::<u128>(&info, &x, OutputMode::Label).unwrap();
    // Drive S1 and S2 by hand so the response can be altered in flight.
    let s1 = tandem_protocol::ModelServer::<u128>::new(
        h.model.clone(),
        h.s2.public_key().clone(),
        std::sync::Arc::new(tandem_crypto::NoiseSource::new(h.s2.public_key())),
    )
    .unwrap();
    let (mut q, start) = s1.start_query(query).unwrap();
    let (mut sess, masks) = h.s2.start_session::<u128>(&start).unwrap();
    let mut step = q.on_input_masks(masks).unwrap();
    let out = loop {
        match step {
            ToActivation::Activate(r) => step = q.on_activation(sess.activate(&r).unwrap()).unwrap(),
            ToActivation::Finish(r) => break sess.finish(&r).unwrap(),
        }
    };
    let mut resp = q.on_output(out).unwrap();
    resp.sealed[3] ^= 0x40;
    let err = pending.finish(resp).unwrap_err();
    assert_eq!(err, ProtocolError::Crypto(CryptoError::SealedResultRejected));
    // The seed was consumed: replaying the same SessionStart is refused.
    assert!(matches!(h.s2.start_session::<u128>(&start), Err(ProtocolError::ReplayedSeed)));
}

#[test]
fn out_of_order_messages_are_typed_errors() {
    let mut h = Harness::new(&tiny_model(), test_key_1024()).unwrap();
    let info = h.info.clone();
    let (_p, query) = h.client.prepare::<u128>(&info, &[0.0, 0.0, 0.0], OutputMode::Label).unwrap();
    let s1 = tandem_protocol::ModelServer::<u128>::new(
        h.model.clone(),
        h.s2.public_key().clone(),
        std::sync::Arc::new(tandem_crypto::NoiseSource::new(h.s2.public_key())),
    )
    .unwrap();
    let (mut q, start) = s1.start_query(query).unwrap();
    let err = q.on_output(tandem_protocol::OutputResponse { sealed: vec![] }).unwrap_err();
    assert!(matches!(err, ProtocolError::BadMessage(_)));
    let (_s, masks) = h.s2.start_session::<u128>(&start).unwrap();
    let mut short = masks.clone();
    short.enc_r.pop();
    assert!(matches!(q.on_input_masks(short), Err(ProtocolError::BadMessage(_))));
}

/// The full-size check: a 2048-bit key, exact in every mode.
#[test]
fn end_to_end_at_2048_bits() {
    let sk = tandem_crypto::SecretKey::generate(2048).unwrap();
    assert_eq!(sk.public().bits(), 2048);
    let mut rng = StdRng::seed_from_u64(2048);
    let m =
        random_mlp(&mut rng, &[16, 12, 8, 4], &[ActivationKind::Relu, ActivationKind::Tanh], 1.0, OutputMode::Label);
    let mut h = Harness::new(&m, &sk).unwrap();
    let x = random_input(&mut rng, &m);
    for mode in h.model.modes() {
        assert_eq!(h.infer(&x, mode).unwrap(), h.reference(&x, mode), "{mode}");
    }
}
