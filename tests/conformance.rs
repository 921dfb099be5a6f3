//! PROTOCOL §9 conformance: private inference equals the integer reference
//! bit for bit, transcripts are fresh, and bad input gets typed errors.
//! Packing round trips and the sigmoid/tanh symmetries are unit-tested next
//! to their code (tandem-paillier `packing`, tandem-model `activation`).

use std::time::Duration;
use rand_core::OsRng;
use std::sync::Arc;
use tandem_core::ActivationServer;
use tandem_paillier::PaillierEngine;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tandem::{test_key_1024, Harness};
use tandem_core::ring::encode_vec;
use tandem_core::CryptoError;
use tandem_core::{issue_ticket, online, preprocess, OnlineStep, ProtocolError};
use tandem_model::testing::{random_cnn, random_input, random_mlp};
use tandem_model::{ActivationKind, Layer, Model, ModelError, OutputMode, QuantConfig, Shape};
use tandem_paillier::{PreprocessingReply, PreprocessingStep};

const ACTS: [ActivationKind; 3] = [ActivationKind::Relu, ActivationKind::Sigmoid, ActivationKind::Tanh];

fn act_strategy() -> impl Strategy<Value = Vec<ActivationKind>> {
    prop::collection::vec(prop::sample::select(ACTS.to_vec()), 1..3)
}

/// Runs every mode the model offers, one-shot and on a ticket, and
/// compares with the reference.
fn check_all_modes(h: &mut Harness, x: &[f64]) -> Result<(), TestCaseError> {
    for mode in h.model.modes() {
        let want = h.reference(x, mode);
        let got = h.infer(x, mode).map_err(|e| TestCaseError::fail(format!("{mode}: {e}")))?;
        prop_assert_eq!(&got, &want, "mode {}", mode);
        let got = h.infer_with_ticket(x, mode).map_err(|e| TestCaseError::fail(format!("{mode} on a ticket: {e}")))?;
        prop_assert_eq!(got, want, "mode {} on a ticket", mode);
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// MaxPool (PROTOCOL §4.9): conv → activation before or after (a ReLU
    /// is folded into the pool's tree), or none → maxpool (kernel 2–3, any
    /// stride, −∞ padding, asymmetric too) → dense; kept operands cross
    /// every round. Every mode, one-shot and on a ticket.
    #[test]
    fn maxpool_equals_reference(
        seed in any::<u64>(),
        act in 0u8..5,
        outputs in 1usize..4,
    ) {
        use tandem_model::testing::{random_maxpool_cnn, PoolAct};
        let act = match act {
            0 => PoolAct::Before(ActivationKind::Relu),
            1 => PoolAct::After(ActivationKind::Relu),
            2 => PoolAct::None,
            3 => PoolAct::Before(ActivationKind::Sigmoid),
            _ => PoolAct::After(ActivationKind::Tanh),
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let m = random_maxpool_cnn(&mut rng, act, outputs, OutputMode::Label);
        let mut h = Harness::new(&m, test_key_1024()).unwrap();
        let x = random_input(&mut rng, &m);
        check_all_modes(&mut h, &x)?;
    }
}

/// Max pools in a row and in the 256-bit ring: two pooling stages (the
/// VGG shape, conv → ReLU → pool twice) with ties in every window (a
/// constant image makes all operands equal), then random inputs.
#[test]
fn stacked_maxpools_with_ties_equal_reference() {
    let mut rng = StdRng::seed_from_u64(18);
    let conv = |rng: &mut StdRng, c: usize, o: usize| Layer::Conv2d {
        in_channels: c,
        out_channels: o,
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
        padding_end: [1, 1],
        weights: (0..o * c * 9).map(|_| rng.gen_range(-1.0..1.0)).collect(),
        bias: (0..o).map(|_| rng.gen_range(-0.5..0.5)).collect(),
    };
    let pool = Layer::MaxPool2d { kernel: [2, 2], stride: [2, 2], padding: [0, 0], padding_end: [0, 0] };
    let m = Model {
        name: "vgg-ish".into(),
        input_shape: Shape::Image(1, 8, 8),
        input_range: (0.0, 1.0),
        input_frac_bits: tandem_model::F_IN,
        default_mode: OutputMode::Label,
        layers: vec![
            conv(&mut rng, 1, 2),
            Layer::Activation(ActivationKind::Relu),
            pool.clone(),
            conv(&mut rng, 2, 2),
            Layer::Activation(ActivationKind::Relu),
            pool,
            Layer::Flatten,
            Layer::Dense {
                inputs: 8,
                outputs: 3,
                weights: (0..24).map(|_| rng.gen_range(-1.0..1.0)).collect(),
                bias: vec![0.0; 3],
            },
        ],
    };
    for ring in [None, Some(256)] {
        let mut h = Harness::with_config(&m, test_key_1024(), QuantConfig::default(), ring).unwrap();
        let inputs = [vec![0.5; 64], vec![0.0; 64], random_input(&mut rng, &m)];
        for x in &inputs {
            for mode in h.model.modes() {
                assert_eq!(h.infer(x, mode).unwrap(), h.reference(x, mode), "{mode}, ring {ring:?}");
            }
        }
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
        input_frac_bits: tandem_model::F_IN,
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
        // S1's view: ỹ, the encrypted seed, [r], [ρ], h.
        assert_ne!(encode_vec(&a.query.masked_input), encode_vec(&b.query.masked_input));
        assert_ne!(a.query.seed, b.query.seed);
        // S2's preprocessing answers: [r], then [ρ] per round.
        assert_eq!(a.preprocessing.to_s1.len(), b.preprocessing.to_s1.len());
        for (ra, rb) in a.preprocessing.to_s1.iter().zip(&b.preprocessing.to_s1) {
            match (ra, rb) {
                (PreprocessingReply::InputMasks(x), PreprocessingReply::InputMasks(y)) => assert_ne!(x.enc_r, y.enc_r),
                (PreprocessingReply::Rho(x), PreprocessingReply::Rho(y)) => assert_ne!(x.enc_rho, y.enc_rho),
                (PreprocessingReply::Ready(_), PreprocessingReply::Ready(_)) => {}
                _ => panic!("answers differ in kind"),
            }
        }
        for (ha, hb) in a.online.from_s2.iter().zip(&b.online.from_s2) {
            assert_ne!(ha.h, hb.h);
        }
        // S2's view: the rerandomized seed, packed C and e per round.
        let start = &a.preprocessing.session_start;
        assert_ne!(start.seed, b.preprocessing.session_start.seed);
        assert_ne!(start.seed, a.query.seed, "S1 must rerandomize the seed");
        assert_ne!(start.session_id, b.preprocessing.session_start.session_id);
        for (sa, sb) in a.preprocessing.to_s2.iter().zip(&b.preprocessing.to_s2) {
            let (pa, pb) = match (sa, sb) {
                (PreprocessingStep::Round(x), PreprocessingStep::Round(y)) => (&x.packed, &y.packed),
                (PreprocessingStep::Output(x), PreprocessingStep::Output(y)) => (&x.packed, &y.packed),
                _ => panic!("rounds differ in kind"),
            };
            assert_ne!(pa, pb, "{mode}");
        }
        for (sa, sb) in a.online.to_s2.iter().zip(&b.online.to_s2) {
            let (ea, eb) = match (sa, sb) {
                (OnlineStep::Round(x), OnlineStep::Round(y)) => (&x.e, &y.e),
                (OnlineStep::Output(x), OnlineStep::Output(y)) => (&x.e, &y.e),
                _ => panic!("rounds differ in kind"),
            };
            if !ea.is_empty() {
                assert_ne!(ea, eb, "{mode}");
            }
        }
        // The client's result channel is fresh too.
        assert_ne!(a.online.output.sealed, b.online.output.sealed);
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
    let info = h.info.clone();
    let (pending, query) = h.0.client.prepare::<u128, _>(&info, &[0.1, 0.2, 0.3], OutputMode::Label, &mut h.0.rng).unwrap();
    // Run the phases by hand so the response can be altered in flight.
    let s1 = h.s1();
    let (prepared, session, offline) =
        preprocess(&s1, &mut h.0.s2, query.mode, &query.seed, Duration::ZERO, &mut h.0.rng).unwrap();
    let mut resp = online(prepared, session, query.masked_input).unwrap().response;
    resp.sealed[3] ^= 0x40;
    let err = pending.finish(resp).unwrap_err();
    assert_eq!(err, ProtocolError::Crypto(CryptoError::SealedResultRejected));
    // The seed was consumed: replaying the same SessionStart is refused.
    assert!(matches!(h.s2.start_session::<u128>(&offline.session_start, Duration::ZERO), Err(ProtocolError::ReplayedSeed)));
}

fn is_bad<T>(r: tandem_core::Result<T>) -> bool {
    matches!(
        r,
        Err(ProtocolError::OutOfOrder { .. }
            | ProtocolError::LengthMismatch { .. }
            | ProtocolError::OutOfRange { .. }
            | ProtocolError::PeerMisbehaved(_))
    )
}

/// Every message out of its place is refused with a typed error, at both
/// servers and in both phases, and the session still completes afterwards.
#[test]
fn out_of_order_messages_are_typed_errors() {
    use tandem_core::{ActivationValues, MaskedRound};
    use tandem_paillier::{InputMasks, RhoMasks, SessionReady};
    let mut h = Harness::new(&tiny_model(), test_key_1024()).unwrap();
    let info = h.info.clone();
    let x = [0.0, 0.5, -0.25];
    let (_unused, query) = h.0.client.prepare::<u128, _>(&info, &x, OutputMode::Label, &mut h.0.rng).unwrap();
    let s1 = h.s1();
    let (mut pre, start) = s1.start_preprocessing(query.mode, &query.seed, &mut h.rng).unwrap();
    assert!(is_bad(pre.on_rho_masks(RhoMasks { enc_rho: vec![] })), "ρ before [r]");
    // (An online message before S2's preprocessing is complete cannot be
    // expressed: S2's online session exists only once the output round is in.)
    let (mut s2, first) = h.s2.start_session::<u128>(&start, Duration::ZERO).unwrap();
    let PreprocessingReply::InputMasks(masks) = first else { panic!("S2 answers the start with [r]") };
    let mut short = masks.clone();
    short.enc_r.pop();
    assert!(is_bad(pre.on_input_masks(short)), "short [r]");
    let PreprocessingStep::Round(round) = pre.on_input_masks(masks).unwrap() else {
        panic!("a hidden layer comes first")
    };
    assert!(is_bad(pre.on_input_masks(InputMasks { enc_r: vec![] })), "[r] twice");
    let rho = s2.on_blinded_round(&round).unwrap();
    let mut short = rho.clone();
    short.enc_rho.pop();
    assert!(is_bad(pre.on_rho_masks(short)), "short [ρ]");
    let PreprocessingStep::Output(out) = pre.on_rho_masks(rho).unwrap() else { panic!("then the output") };
    let (_, mut session) = s2.on_blinded_output(&out).unwrap();
    assert!(is_bad(s2.on_blinded_round(&round)), "hidden round after the output round");
    assert!(is_bad(s2.on_blinded_output(&out)), "output round twice");
    let prepared = pre.on_ready(SessionReady).unwrap();
    assert!(is_bad(session.activate(&MaskedRound { e: vec![0; 3] })), "wrong e count");
    assert!(matches!(
        prepared.start(vec![0; 2]),
        Err(ProtocolError::Model(ModelError::InputLength { expected: 3, got: 2 }))
    ));
    // A failed start consumed that `Prepared`; run the whole session again.
    let (pending, query) = h.0.client.prepare::<u128, _>(&info, &x, OutputMode::Label, &mut h.0.rng).unwrap();
    let (prepared, mut s2) = {
        let (mut pre, start) = s1.start_preprocessing(query.mode, &query.seed, &mut h.rng).unwrap();
        let (mut s2, first) = h.s2.start_session::<u128>(&start, Duration::ZERO).unwrap();
        let PreprocessingReply::InputMasks(masks) = first else { unreachable!() };
        let PreprocessingStep::Round(round) = pre.on_input_masks(masks).unwrap() else { unreachable!() };
        let PreprocessingStep::Output(out) = pre.on_rho_masks(s2.on_blinded_round(&round).unwrap()).unwrap() else {
            unreachable!()
        };
        let (ready, session) = s2.on_blinded_output(&out).unwrap();
        (pre.on_ready(ready).unwrap(), session)
    };
    let (mut q, step) = prepared.start(query.masked_input).unwrap();
    let OnlineStep::Round(r) = step else { panic!("online starts with the hidden layer") };
    let values = s2.activate(&r).unwrap();
    assert!(is_bad(s2.activate(&r)), "a second activation for a one-layer session");
    let mut short = values.clone();
    short.h.pop();
    assert!(is_bad(q.on_values(short)), "short h");
    let OnlineStep::Output(o) = q.on_values(values).unwrap() else { panic!("then the output") };
    assert!(is_bad(q.on_values(ActivationValues { h: vec![] })), "h after the last round");
    let resp = q.on_output(s2.finish(&o).unwrap()).unwrap();
    assert_eq!(pending.finish(resp).unwrap(), h.reference(&x, OutputMode::Label));
}

/// The full-size check: a 2048-bit key, exact in every mode.
#[test]
fn end_to_end_at_2048_bits() {
    let sk = tandem_paillier::SecretKey::generate(2048).unwrap();
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// Tickets (docs/PROTOCOL.md §4.0): several sessions are preprocessed
    /// before any input exists, then used in a shuffled order, each in its
    /// own mode; every result equals the reference. This is the flow a
    /// client with a pool of tickets produces.
    #[test]
    fn tickets_used_out_of_order_equal_reference(
        seed in any::<u64>(),
        hidden in prop::collection::vec(1usize..6, 1..3),
        acts in act_strategy(),
        outputs in 1usize..5,
        count in 1usize..4,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut dims = vec![4];
        dims.extend(&hidden);
        dims.push(outputs);
        let m = random_mlp(&mut rng, &dims, &acts, 1.0, OutputMode::Label);
        let mut h = Harness::new(&m, test_key_1024()).unwrap();
        let s1 = h.s1();
        let modes = h.model.modes();
        let mut tickets = Vec::new();
        for _ in 0..count {
            let mode = modes[rng.gen_range(0..modes.len())];
            tickets.push(issue_ticket(&h.0.client, &h.0.info, &s1, &mut h.0.s2, mode, &mut h.0.rng).unwrap());
        }
        while !tickets.is_empty() {
            let t = tickets.swap_remove(rng.gen_range(0..tickets.len()));
            let (x, mode) = (random_input(&mut rng, &m), t.ticket.mode);
            prop_assert_eq!(t.query(&x).unwrap(), h.reference(&x, mode), "mode {}", mode);
        }
    }
}

/// A ticket's seed cannot be used with another ticket: the client checks
/// the model and mode, and the session id ties the sealed result to it.
#[test]
fn a_ticket_answers_only_its_own_session() {
    let mut h = Harness::new(&tiny_model(), test_key_1024()).unwrap();
    let s1 = h.s1();
    let x = [0.1, -0.4, 0.3];
    let mut issue = |mode| {
        let t = issue_ticket(&h.0.client, &h.0.info, &s1, &mut h.0.s2, mode, &mut h.0.rng).unwrap();
        (t.pending, t.ticket, t.prepared, t.session)
    };
    let (pa, ta, prep_a, sess_a) = issue(OutputMode::Label);
    let (pb, tb, _prep_b, _sess_b) = issue(OutputMode::Probabilities);
    // The seed of ticket A with ticket B's (other-mode) confirmation.
    let err = h
        .0
        .client
        .request_ticket::<u128, _>(&h.0.info, OutputMode::Label, &mut h.0.rng)
        .unwrap()
        .0
        .query(&tb, &x)
        .err()
        .unwrap();
    assert!(err.to_string().contains("probabilities mode"), "{err}");
    // B's seed opening A's answer: refused (wrong session id / wrong key).
    let (qa, query_a) = pa.query(&ta, &x).unwrap();
    let resp = online(prep_a, sess_a, query_a.masked_input).unwrap().response;
    let (qb, _) = pb.query(&tb, &x).unwrap();
    assert!(qb.finish(resp.clone()).is_err());
    assert_eq!(qa.finish(resp).unwrap(), h.reference(&x, OutputMode::Label));
}

/// The ticket path the gRPC shells take, in-process: both servers reserve,
/// file and take through the core's `ExpiringStore`, and S1 lets only the
/// ticket's owner spend it, on its model and mode. A refused ticket stays
/// usable; an expired one is gone from both servers.
#[test]
fn tickets_go_through_the_shells_stores_and_checks() {
    use std::time::Duration;
    use tandem_core::TicketRefusal;
    let mut h = Harness::new(&tiny_model(), test_key_1024()).unwrap();
    let s1 = h.s1();
    let engine = h.s2.engine().clone();
    let x = [0.1, -0.4, 0.3];
    let alice: Option<std::sync::Arc<str>> = Some("alice".into());
    let tandem_core::InProcess { info, s2, client, rng, tickets_128: desk, .. } = &mut h.0;
    let (pending, ticket) =
        desk.issue(client, info, &s1, s2, OutputMode::Label, alice.clone(), Duration::ZERO, rng).unwrap();
    assert_eq!(desk.s1.len(Duration::ZERO), 1);
    assert_eq!(desk.s2.len(Duration::ZERO), 1);
    // Bob cannot spend Alice's ticket, and trying does not burn it.
    let err = desk
        .s1
        .take(&ticket.session_id, Duration::ZERO, |(t, _)| t.admits(&info.id, None, Some("bob")))
        .err()
        .unwrap();
    assert_eq!(err, tandem_core::Taken::Refused(TicketRefusal::OtherOwner));
    assert_eq!(desk.s1.len(Duration::ZERO), 1, "a refused ticket stays");
    let got = desk.query(&*engine, &s1, pending, &ticket, &x, Some("alice"), Duration::from_secs(1)).unwrap();
    let xi = h.model.quantize_input(&x).unwrap();
    assert_eq!(got, h.model.reference(&xi, OutputMode::Label).unwrap());

    // A ticket left past its TTL is gone from both servers.
    let tandem_core::InProcess { info, s2, client, rng, tickets_128: desk, .. } = &mut h.0;
    let ttl = desk.s1.ttl();
    let (pending, ticket) = desk.issue(client, info, &s1, s2, OutputMode::Label, None, Duration::ZERO, rng).unwrap();
    let err = desk.query(&*engine, &s1, pending, &ticket, &x, None, ttl).err().unwrap();
    assert_eq!(err, ProtocolError::UnknownSession);
    assert_eq!(desk.s2.len(ttl), 0, "S2's half expired too");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// Seed sessions (PROTOCOL §4.1a): every query of a session, in every
    /// mode, equals the integer reference bit for bit, exactly as one-shot
    /// queries do; the queries of one session carry no ciphertext and get
    /// distinct seeds (distinct masked inputs for the same input).
    #[test]
    fn queries_in_a_seed_session_are_exact(
        seed in any::<u64>(),
        hidden in prop::collection::vec(1usize..6, 1..3),
        acts in act_strategy(),
        outputs in 1usize..5,
        count in 1usize..5,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut dims = vec![4];
        dims.extend(&hidden);
        dims.push(outputs);
        let m = random_mlp(&mut rng, &dims, &acts, 1.0, OutputMode::Label);
        let mut h = Harness::new(&m, test_key_1024()).unwrap();
        let s1 = h.s1();
        let modes = h.model.modes();
        let mut session = h.open_seed_session().unwrap();
        let x = random_input(&mut rng, &m);
        let mut masked = Vec::new();
        for i in 0..count {
            let mode = modes[rng.gen_range(0..modes.len())];
            let tandem_core::InProcess { info, s2, client, rng: r, now, .. } = &mut h.0;
            let (out, t) = tandem_core::run_query_in_session(client, &mut session, info, &s1, s2, &x, mode, *now, r).unwrap();
            prop_assert_eq!(out, h.reference(&x, mode), "mode {}", mode);
            prop_assert_eq!(&t.query.seed, &tandem_core::SeedSource::Session { id: session.id(), counter: i as u64 });
            masked.push(t.query.masked_input);
        }
        masked.sort();
        masked.dedup();
        prop_assert_eq!(masked.len(), count, "every query of a session has its own mask");
    }
}

/// What S2 refuses in a seed session, each before any work and with its
/// own error: a counter served before (also out of order), a replayed
/// opening, a counter beyond the session, an expired session, and any
/// session after a restart (a new S2 holds none). Every refusal leaves the
/// session usable.
#[test]
fn seed_sessions_serve_each_counter_once_and_end() {
    use tandem_core::{SeedSessionLimits, SeedSource};
    let mut h = Harness::new(&tiny_model(), test_key_1024()).unwrap();
    let limits = SeedSessionLimits { max_sessions: 2, queries_per_session: 3, lifetime: Duration::from_secs(60) };
    let s2 = std::mem::replace(
        &mut h.0.s2,
        ActivationServer::new(Arc::new(PaillierEngine), tandem::paillier_keys(test_key_1024(), &mut OsRng), &mut OsRng),
    );
    h.0.s2 = s2.with_seed_session_limits(limits);
    let s1 = h.s1();
    let x = [0.1, -0.4, 0.3];
    // The opening, relayed as S1 relays it, then replayed.
    let (pending, open) = h.0.client.open_session(&mut h.0.rng).unwrap();
    let relayed = tandem_core::seed_session::relay_open_session(h.0.client.public_key(), &open, &mut h.0.rng).unwrap();
    assert_ne!(relayed.enc_secret, open.enc_secret, "S1 rerandomizes the secret");
    let opened = h.0.s2.open_session_in_process(&relayed, Duration::ZERO).unwrap();
    assert_eq!((opened.max_queries, opened.expires_in_seconds), (3, 60));
    assert_eq!(h.0.s2.open_session_in_process(&open, Duration::ZERO), Err(ProtocolError::ReplayedSeed));
    let mut session = pending.opened(&opened);
    // Counter 2 first, then 0: out of order is fine.
    let mut skipped = session.split_one().unwrap();
    let mut second = session.split_one().unwrap();
    let start = |h: &mut Harness<PaillierEngine>, counter| {
        let (_, start) = s1
            .start_preprocessing(OutputMode::Label, &SeedSource::Session { id: opened.id, counter }, &mut h.0.rng)
            .unwrap();
        start
    };
    let third = start(&mut h, 2);
    assert!(h.0.s2.start_session::<u128>(&third, Duration::ZERO).is_ok());
    assert!(matches!(h.0.s2.start_session::<u128>(&third, Duration::ZERO), Err(ProtocolError::ReplayedSeed)));
    let run = |h: &mut Harness<PaillierEngine>, s: &mut tandem_core::SeedSession, now| {
        let tandem_core::InProcess { info, s2, client, rng, .. } = &mut h.0;
        tandem_core::run_query_in_session(client, s, info, &s1, s2, &x, OutputMode::Label, now, rng).map(|r| r.0)
    };
    assert_eq!(run(&mut h, &mut skipped, Duration::ZERO).unwrap(), h.reference(&x, OutputMode::Label));
    let beyond = start(&mut h, 3);
    assert!(matches!(h.0.s2.start_session::<u128>(&beyond, Duration::ZERO), Err(ProtocolError::OutOfRange { .. })));
    // Counter 1 after the lifetime: the session is gone.
    let err = run(&mut h, &mut second, Duration::from_secs(60)).err().unwrap();
    assert_eq!(err, ProtocolError::UnknownSeedSession);
    // A fresh session on a restarted S2 (new epoch): the old one is unknown.
    let mut fresh = h.open_seed_session().unwrap();
    let restarted = ActivationServer::new(Arc::new(PaillierEngine), tandem::paillier_keys(test_key_1024(), &mut OsRng), &mut OsRng);
    let before = std::mem::replace(&mut h.0.s2, restarted);
    assert!(matches!(run(&mut h, &mut fresh, Duration::ZERO), Err(ProtocolError::UnknownSeedSession)));
    h.0.s2 = before;
    assert_eq!(run(&mut h, &mut fresh, Duration::ZERO).unwrap(), h.reference(&x, OutputMode::Label));
}
