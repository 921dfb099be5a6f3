//! PROTOCOL §9 conformance for the lattice engine: private inference
//! equals the integer reference bit for bit with every layer on RLWE and OT
//! (§4.2c), and with only the first layer on RLWE when S1 has no OT setup
//! (§4.2b) (test parameters: N = 1024, insecure, the production q and noise
//! analysis); the engine refuses what is out of order or malformed.

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tandem::{test_key_1024, Harness};
use tandem_core::engine::PreprocessingEngine;
use tandem_core::{ProtocolError, SeedSource};
use tandem_lattice_engine::{LatticeEngine, LatticeReply, LatticeStep};
use tandem_model::testing::{random_cnn, random_input, random_mlp};
use tandem_model::{ActivationKind, OutputMode, QuantConfig};

const ACTS: [ActivationKind; 3] = [ActivationKind::Relu, ActivationKind::Sigmoid, ActivationKind::Tanh];

fn check_all_modes(h: &mut Harness<LatticeEngine>, x: &[f64]) -> Result<(), TestCaseError> {
    for mode in h.model.modes() {
        let want = h.reference(x, mode);
        let got = h.infer(x, mode).map_err(|e| TestCaseError::fail(format!("{mode}: {e}")))?;
        prop_assert_eq!(&got, &want, "mode {}", mode);
        let got = h.infer_with_ticket(x, mode).map_err(|e| TestCaseError::fail(format!("{mode} on a ticket: {e}")))?;
        prop_assert_eq!(got, want, "mode {} on a ticket", mode);
    }
    Ok(())
}

/// Every layer on RLWE and OT (§4.2c): no Paillier between the servers.
fn on_lattice(h: &Harness<LatticeEngine>) -> bool {
    h.s1_128.as_ref().is_some_and(|s1| s1.all_layers_on_lattice().is_ok())
}

fn why_not(h: &Harness<LatticeEngine>) -> Option<String> {
    h.s1_128.as_ref().and_then(|s| s.all_layers_on_lattice().err().map(str::to_string))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// Dense networks, 1–3 hidden layers, any mix of activations, 1–6
    /// outputs, k = 128: the first layer runs on RLWE, every mode is exact.
    #[test]
    fn lattice_dense_equals_reference(
        seed in any::<u64>(),
        hidden in prop::collection::vec(1usize..7, 1..4),
        acts in prop::collection::vec(prop::sample::select(ACTS.to_vec()), 1..3),
        inputs in 1usize..7,
        outputs in 1usize..7,
        scale in prop::sample::select(vec![0.25f32, 1.0, 4.0]),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut dims = vec![inputs];
        dims.extend(&hidden);
        dims.push(outputs);
        let m = random_mlp(&mut rng, &dims, &acts, scale, OutputMode::Label);
        let mut h = Harness::lattice(&m, test_key_1024()).unwrap();
        prop_assert!(on_lattice(&h), "{:?}", why_not(&h));
        let x = random_input(&mut rng, &m);
        check_all_modes(&mut h, &x)?;
    }

    /// Conv2d → activation → AvgPool2d → Dense: the convolution (a sparse
    /// first layer) on RLWE.
    #[test]
    fn lattice_conv_equals_reference(
        seed in any::<u64>(),
        act in prop::sample::select(ACTS.to_vec()),
        outputs in 1usize..4,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let m = random_cnn(&mut rng, act, outputs, OutputMode::Label);
        let mut h = Harness::lattice(&m, test_key_1024()).unwrap();
        prop_assert!(on_lattice(&h), "{:?}", why_not(&h));
        let x = random_input(&mut rng, &m);
        check_all_modes(&mut h, &x)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// MaxPool (PROTOCOL §4.9) on the lattice engine: the kept operands of
    /// the first round may be the RLWE layer's own outputs (`[D] = [g]` with
    /// `g = s − μ'`), so the pool's rounds must carry them exactly too.
    #[test]
    fn lattice_maxpool_equals_reference(
        seed in any::<u64>(),
        act in 0u8..3,
        outputs in 1usize..4,
    ) {
        use tandem_model::testing::{random_maxpool_cnn, PoolAct};
        let act = match act {
            0 => PoolAct::Before(ActivationKind::Relu),
            1 => PoolAct::After(ActivationKind::Relu),
            _ => PoolAct::None,
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let m = random_maxpool_cnn(&mut rng, act, outputs, OutputMode::Label);
        let mut h = Harness::lattice(&m, test_key_1024()).unwrap();
        prop_assert!(on_lattice(&h), "{:?}", why_not(&h));
        let x = random_input(&mut rng, &m);
        check_all_modes(&mut h, &x)?;
    }
}

/// A model in the 256-bit ring cannot take its first product from the
/// 2^128 plaintext space: the engine runs it on Paillier, says why, and
/// stays exact.
#[test]
fn lattice_engine_runs_k256_models_on_paillier_exactly() {
    let mut rng = StdRng::seed_from_u64(5);
    let m = random_mlp(&mut rng, &[3, 4, 2], &[ActivationKind::Relu], 1.0, OutputMode::Label);
    let mut h = Harness::lattice_with_config(&m, test_key_1024(), QuantConfig::default(), Some(256)).unwrap();
    let why = h.s1_256.as_ref().unwrap().first_layer_on_lattice().unwrap_err().to_string();
    assert!(why.contains("k = 256"), "{why}");
    let x = random_input(&mut rng, &m);
    for mode in h.model.modes() {
        assert_eq!(h.infer(&x, mode).unwrap(), h.reference(&x, mode), "{mode}");
    }
}

/// Queries in a seed session run on the lattice engine too.
#[test]
fn lattice_seed_session_queries_are_exact() {
    let mut rng = StdRng::seed_from_u64(9);
    let m = random_mlp(&mut rng, &[5, 6, 3], &[ActivationKind::Relu], 1.0, OutputMode::Label);
    let mut h = Harness::lattice(&m, test_key_1024()).unwrap();
    let mut session = h.open_seed_session().unwrap();
    for _ in 0..3 {
        let x = random_input(&mut rng, &m);
        let got = h.infer_in_session(&mut session, &x, OutputMode::Label).unwrap();
        assert_eq!(got, h.reference(&x, OutputMode::Label));
    }
}

/// Without an OT setup S1 runs only the first layer on RLWE and the rest
/// on Paillier (§4.2b): still exact in every mode.
#[test]
fn lattice_first_layer_only_without_ot_setup_is_exact() {
    use tandem_lattice_engine::LatticeModel;
    let mut rng = StdRng::seed_from_u64(13);
    let m = random_mlp(&mut rng, &[5, 6, 4, 3], &[ActivationKind::Relu, ActivationKind::Sigmoid], 1.0, OutputMode::Label);
    let mut h = Harness::lattice(&m, test_key_1024()).unwrap();
    let keys = h.s2.keys().clone();
    let ctx = h.s2.engine().context().clone();
    let p = keys.paillier();
    let s1 = LatticeModel::new(&ctx, h.model.clone(), p.public_key().clone(), keys.lattice_public_key().clone(), p.pool().clone())
        .unwrap();
    assert!(s1.first_layer_on_lattice().is_ok());
    assert!(s1.all_layers_on_lattice().unwrap_err().contains("no OT setup"));
    h.0.s1_128 = Some(s1);
    let x = random_input(&mut rng, &m);
    check_all_modes(&mut h, &x).unwrap();
}

/// S1 refuses replies out of order or of the wrong count, S2 refuses
/// steps it did not expect or of the wrong count: typed errors, never a
/// panic.
#[test]
fn lattice_messages_out_of_order_are_typed_errors() {
    use tandem_lattice_engine::{FullStep, Next};
    let mut rng = StdRng::seed_from_u64(11);
    let m = random_mlp(&mut rng, &[5, 6, 3], &[ActivationKind::Relu], 1.0, OutputMode::Label);
    let x = random_input(&mut rng, &m);
    let mut h = Harness::lattice(&m, test_key_1024()).unwrap();
    let tandem_core::InProcess { s1_128, s2, client, info, rng, .. } = &mut h.0;
    let engine = s2.engine().clone();
    let s1 = s1_128.as_ref().unwrap();

    let bad = SeedSource::Encrypted { enc_seed: tandem_core::EncryptedSeed(vec![1; 8]), epoch: s2.seed_epoch() };
    assert!(engine.s1_start(s1, OutputMode::Label, &bad, rng).is_err(), "a malformed [secret] is refused");

    let (_, req) = client.prepare::<u128, _>(info, &x, OutputMode::Label, rng).unwrap();
    let (mut prep, start) = engine.s1_start(s1, OutputMode::Label, &req.seed, rng).unwrap();
    assert_eq!(start.first_layer_outputs, 6, "S1 tells S2 the first layer's width");
    assert!(start.ot_setup.is_some(), "S1 names its OT setup");
    let err = engine.s1_step(&mut prep, LatticeReply::Products(vec![])).err().unwrap();
    assert!(matches!(err, ProtocolError::OutOfOrder { .. }), "{err}");
    let err = engine.s1_step(&mut prep, LatticeReply::FullReady).err().unwrap();
    assert!(matches!(err, ProtocolError::OutOfOrder { .. }), "{err}");
    let err = engine.s1_step(&mut prep, LatticeReply::Inputs(vec![])).err().unwrap();
    assert!(err.to_string().contains("input ciphertexts"), "{err}");

    // S2 refuses an OT setup it does not hold (the gRPC shell checks this
    // before it decrypts the seed, like the RLWE key's fingerprint).
    let (_, req2) = client.prepare::<u128, _>(info, &x, OutputMode::Label, rng).unwrap();
    let (_, mut unknown) = engine.s1_start(s1, OutputMode::Label, &req2.seed, rng).unwrap();
    unknown.ot_setup = Some([0xab; 16]);
    let err = s2.start_session::<u128>(&unknown, std::time::Duration::ZERO).err().unwrap();
    assert!(matches!(err, ProtocolError::UnknownOtSetup), "{err}");

    let (mut pre, first) = s2.start_session::<u128>(&start, std::time::Duration::ZERO).unwrap();
    assert!(matches!(first, LatticeReply::Inputs(ref c) if !c.is_empty()), "{first:?}");
    let err = engine.s2_step(&mut pre, LatticeStep::Products(vec![])).err().unwrap();
    assert!(matches!(err, ProtocolError::OutOfOrder { .. }), "{err}");
    let step = FullStep { ole: None, x: vec![], products: vec![], next: Some(Next::Linear { outputs: 3 }) };
    let err = engine.s2_step(&mut pre, LatticeStep::Full(step)).err().unwrap();
    assert!(matches!(err, ProtocolError::OutOfOrder { .. }), "a step before the OT request: {err}");
    let LatticeReply::Inputs(cts) = first else { unreachable!() };
    let LatticeStep::Full(good) = (match engine.s1_step(&mut prep, LatticeReply::Inputs(cts)).unwrap() {
        tandem_core::engine::S1Step::Send(m) => m,
        _ => panic!("S1 answers the inputs"),
    }) else {
        panic!("a full-lattice step")
    };
    // The query's one OT request covers every per-neuron product: 6 ReLU
    // neurons at OTS_PER_RELU each and the 3 outputs' multiplier (the OT
    // count PROTOCOL §4.2c and BENCHMARKS quote).
    use tandem_lattice_engine::{output_bits, OTS_PER_RELU};
    let ots = good.ole.as_ref().expect("the first step carries the OT request").ots;
    assert_eq!(ots, 6 * OTS_PER_RELU + 3 * output_bits(OutputMode::Label, 3));
    let mut short = good.clone();
    short.products.pop();
    let err = engine.s2_step(&mut pre, LatticeStep::Full(short)).err().unwrap();
    assert!(err.to_string().contains("output ciphertexts"), "{err}");
    let mut extra_x = good.clone();
    extra_x.ole = None;
    extra_x.x = vec![1];
    let err = engine.s2_step(&mut pre, LatticeStep::Full(extra_x)).err().unwrap();
    assert!(matches!(err, ProtocolError::LengthMismatch { .. }), "X values before any round: {err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// The wire forms of the RLWE messages: a valid message round-trips;
    /// a flipped byte, a truncation, an extra or a missing ciphertext is a
    /// typed error (or, for a flip that keeps every residue in range, a
    /// different valid ciphertext), never a panic.
    #[test]
    fn hostile_rlwe_bytes_are_typed_errors(
        seed in any::<u64>(),
        flip_at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        cut in any::<prop::sample::Index>(),
    ) {
        use tandem_grpc::v1 as pb;
        use tandem_lattice_engine::tandem_lattice::{encrypt_vector, linear_layer_plain, SecretKey};
        let engine = tandem::test_lattice_engine();
        let ctx = engine.context().clone();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let sk = SecretKey::generate(&ctx, &mut rng);
        let pk = sk.public_key(&mut rng);
        let layout = tandem_lattice_engine::tandem_lattice::Layout::new(&ctx, 9, 4).unwrap();
        let r: Vec<u128> = (0..9).map(|i| i * 0x1234_5678_9abc_def0 + seed as u128).collect();
        let cts = encrypt_vector(&sk, &layout, &r, &mut rng).unwrap();
        let w: Vec<i64> = (0..36).map(|i| (i as i64 * 37 + seed as i64 % 1000) % 4001 - 2000).collect();
        let out = linear_layer_plain(&pk, &w, 4, 9, &cts, &[1, 2, 3, 4], &mut rng).unwrap();

        let inputs = tandem_grpc::lattice_inputs_to_proto(&ctx, &cts);
        prop_assert!(tandem_grpc::lattice_inputs_from_proto(&ctx, &layout, &inputs).unwrap() == cts);
        let products = tandem_grpc::lattice_products_to_proto(&ctx, &out);
        prop_assert!(tandem_grpc::lattice_products_from_proto(&ctx, &layout, &products).unwrap() == out);

        let mut flipped = inputs.clone();
        let b = &mut flipped.ciphertexts[0];
        let i = flip_at.index(b.len());
        b[i] ^= flip;
        // A flip in the 32-byte seed gives another valid ciphertext; one in
        // the residues may push one out of range or into the padding.
        let _ = tandem_grpc::lattice_inputs_from_proto(&ctx, &layout, &flipped);
        let mut short = products.clone();
        let len = short.ciphertexts[0].len();
        short.ciphertexts[0].truncate(cut.index(len));
        prop_assert!(tandem_grpc::lattice_products_from_proto(&ctx, &layout, &short).is_err());
        let mut extra = inputs.clone();
        extra.ciphertexts.push(extra.ciphertexts[0].clone());
        let err = tandem_grpc::lattice_inputs_from_proto(&ctx, &layout, &extra).unwrap_err();
        prop_assert!(err.to_string().contains("lattice_inputs.ciphertexts"), "{}", err);
        let none = pb::LatticeProducts { ciphertexts: vec![] };
        prop_assert!(tandem_grpc::lattice_products_from_proto(&ctx, &layout, &none).is_err());
        let garbage = pb::LatticeInputs { ciphertexts: vec![vec![0xff; len]] };
        prop_assert!(tandem_grpc::lattice_inputs_from_proto(&ctx, &layout, &garbage).is_err());
    }
}
