//! The security fixes of SECURITY.md's "Review findings" section, each with
//! a test that fails on the code before the fix: in-process where the
//! property is about the protocol's values, through the real servers where
//! it is about what a caller of the public API sees. 1024-bit keys.

mod common;

use common::*;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_core::OsRng;
use std::sync::Arc;
use tandem::{test_key_1024, test_key_1024_owned, Harness};
use std::time::Duration;
use tandem_core::{ActivationServer, ActivationValues, EncryptedSeed, OnlineStep, OutputResponse, ProtocolError, SeedSource};
use tandem_model::testing::{random_input, random_mlp};
use tandem_model::{ActivationKind, OutputMode, KAPPA};
use tandem_paillier::bigint_traits::*;
use tandem_paillier::packing::{unpack, PackingParams};
use tandem_paillier::{
    BigInt, Ciphertext, CryptoError, InputMasks, PaillierEngine, PreprocessingReply, PreprocessingStep, RhoMasks, Ring,
    SeedSecret, SessionReady,
};

/// What S2 decrypts from a packed round: `C_p = t_j·g_j + μ_j` per position.
fn decrypt_slots(packing: &PackingParams, packed: &[Ciphertext], count: usize) -> Vec<BigInt> {
    let sk = test_key_1024();
    let n = packing.slots_per_ciphertext as usize;
    packed
        .iter()
        .enumerate()
        .flat_map(|(i, c)| unpack(packing, &sk.decrypt_raw(c), (count - i * n).min(n)).unwrap())
        .collect()
}

fn signed(v: u128) -> i128 {
    v as i128
}

fn gcd(a: u128, b: u128) -> u128 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Issue 14 item 3: in multi-class `label` mode S2 sees
/// `v_p = m·(n·z_j + n−1−j) + β`. With one `m` for every position the gcd
/// of the differences was `m` (a multiple of it), which gave S2 the exact
/// logit differences and every position's class up to a cyclic shift. With
/// `η_p ∈ [0, m)` the differences share no large divisor, while the label
/// stays exact.
#[test]
fn label_mode_values_share_no_common_scale() {
    let mut rng = StdRng::seed_from_u64(1403);
    let model = random_mlp(&mut rng, &[6, 8, 10], &[ActivationKind::Relu], 1.0, OutputMode::Label);
    let mut h = Harness::new(&model, test_key_1024()).unwrap();
    for _ in 0..8 {
        let x = random_input(&mut rng, &model);
        let t = h.transcript_128(&x, OutputMode::Label).unwrap();
        let Some(PreprocessingStep::Output(out)) = t.preprocessing.to_s2.last() else {
            panic!("the output round comes last")
        };
        let Some(OnlineStep::Output(masked)) = t.online.to_s2.last() else { panic!("the output round comes last") };
        let c: Vec<u128> = decrypt_slots(&out.packing, &out.packed, out.count as usize)
            .iter()
            .map(tandem_paillier::convert::ring_from_gmp::<u128>)
            .collect();
        let v: Vec<i128> = masked.e.iter().zip(&c).map(|(e, c)| signed(e.sub(*c))).collect();
        let g = v[1..].iter().fold(0u128, |g, &vp| gcd(g, (vp - v[0]).unsigned_abs()));
        assert!(
            g < 1 << (tandem_core::online::LABEL_M_MIN_BITS - 1),
            "S2's label values share the divisor {g}: the scale m is exposed"
        );
        let mut sorted = v.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), v.len(), "label values must stay distinct");
        // And the label is still the reference's, bit for bit.
        assert_eq!(h.infer(&x, OutputMode::Label).unwrap(), h.reference(&x, OutputMode::Label));
    }
}

/// Issue 14 item 11: every mask `μ_j` of a layer has the layer-wide width,
/// so the size of S2's decrypted `C_p = t_j·g_j + μ_j` says nothing about
/// the neuron (`|t_j|`, the norm of its row). A width that followed the
/// neuron would make some `C_p` tens of bits shorter: `t_j` alone spans
/// 1 to 32 bits. The chance that a uniform mask is 24 bits short is 2^-24.
#[test]
fn mask_widths_depend_on_the_layer_not_the_neuron() {
    let mut rng = StdRng::seed_from_u64(1411);
    let model = random_mlp(&mut rng, &[8, 32, 24, 3], &[ActivationKind::Relu], 1.0, OutputMode::Probabilities);
    let mut h = Harness::new(&model, test_key_1024()).unwrap();
    let mut checked = 0;
    for _ in 0..4 {
        let x = random_input(&mut rng, &model);
        let t = h.transcript_128(&x, OutputMode::Probabilities).unwrap();
        for step in &t.preprocessing.to_s2 {
            let (packing, packed, count) = match step {
                PreprocessingStep::Round(r) => (r.packing, &r.packed, r.count as usize),
                PreprocessingStep::Output(o) => (o.packing, &o.packed, o.count as usize),
            };
            let width = (packing.offset_bits + KAPPA) as usize;
            for c in decrypt_slots(&packing, packed, count) {
                let bits = c.abs().bit_length();
                assert!(
                    bits + 24 >= width && bits <= width + 1,
                    "a decrypted slot has {bits} bits; the layer-wide mask has {width}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 4 * (32 + 24 + 3));
}

/// Issue 14 items 1 and 9: a `[secret]` is turned into a seed under an
/// epoch. An activation server that restarted (a new log, same key) refuses
/// the old epoch before it decrypts anything, so a recorded session can
/// never be served again; and a tampered ciphertext is not refused at all.
#[test]
fn restarts_refuse_old_seeds_and_tampering_is_not_an_error() {
    let mut rng = StdRng::seed_from_u64(1409);
    let model = random_mlp(&mut rng, &[5, 6, 3], &[ActivationKind::Relu], 1.0, OutputMode::Label);
    let mut h = Harness::new(&model, test_key_1024()).unwrap();
    let x = random_input(&mut rng, &model);
    let t = h.transcript_128(&x, OutputMode::Label).unwrap();
    let start = t.preprocessing.session_start.clone();
    // The same server refuses the replay.
    assert!(matches!(h.s2.start_session::<u128>(&start, Duration::ZERO), Err(ProtocolError::ReplayedSeed)));
    // A restarted server: another epoch, refused before decryption.
    let keys = tandem::paillier_keys(&test_key_1024_owned(), &mut OsRng);
    let mut restarted = ActivationServer::new(Arc::new(PaillierEngine), keys, &mut OsRng);
    let SeedSource::Encrypted { epoch: old_epoch, .. } = &start.seed else { panic!("a one-shot query's start") };
    assert_ne!(restarted.seed_epoch(), *old_epoch);
    assert!(matches!(restarted.start_session::<u128>(&start, Duration::ZERO), Err(ProtocolError::UnknownEpoch)));
    // Tampering (`[s]·Enc(−t)`, or a ciphertext of 2^300) opens a session
    // like any other ciphertext: there is no answer that depends on the
    // plaintext. The masks it yields belong to an unrelated seed.
    let pk = test_key_1024().public();
    let mut valid = start.clone();
    let secret = SeedSecret::random(&mut OsRng);
    let valid_ct = pk.encrypt(&BigInt::from_bytes(secret.plaintext_be()), &mut OsRng);
    valid.seed = SeedSource::Encrypted {
        enc_seed: EncryptedSeed(pk.ciphertext_to_bytes(&valid_ct)),
        epoch: restarted.seed_epoch(),
    };
    let masks = match restarted.start_session::<u128>(&valid, Duration::ZERO).expect("a fresh seed").1 {
        PreprocessingReply::InputMasks(m) => m,
        other => panic!("S2 answers the start with [r], not {other:?}"),
    };
    for enc_seed in [
        pk.add_plain(&valid_ct, &-(BigInt::one() << 255)),
        pk.ciphertext_from_bytes(&{
            let mut b = vec![0u8; pk.ciphertext_bytes()];
            let v = (BigInt::one() << 300).to_bytes();
            let len = b.len();
            b[len - v.len()..].copy_from_slice(&v);
            b
        })
        .unwrap(),
    ] {
        let enc_seed = EncryptedSeed(pk.ciphertext_to_bytes(&enc_seed));
        let seed = SeedSource::Encrypted { enc_seed, epoch: restarted.seed_epoch() };
        let tampered = tandem_core::SessionStart { seed, session_id: [5; 16], ..valid.clone() };
        let PreprocessingReply::InputMasks(m) =
            restarted.start_session::<u128>(&tampered, Duration::ZERO).expect("no refusal after decryption").1
        else {
            panic!("S2 answers the start with [r]")
        };
        assert_eq!(m.enc_r.len(), masks.enc_r.len());
        let sk = test_key_1024();
        assert_ne!(sk.decrypt(&m.enc_r[0]), sk.decrypt(&masks.enc_r[0]), "an unrelated seed, an unrelated mask");
    }
}

fn random_ciphertext(rng: &mut StdRng) -> Ciphertext {
    // Well-formed (a unit below N²) but of an arbitrary plaintext of any
    // width: what a hostile S2 could send.
    let pk = test_key_1024().public();
    let bits = rng.gen_range(1..pk.bits() as usize);
    let mut b = vec![0u8; bits.div_ceil(8)];
    rng.fill(&mut b[..]);
    pk.encrypt(&BigInt::from_bytes(&b), &mut OsRng)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Issue 14 item 11: S2's replies are checked for shape only; their
    /// values are S2's to choose. A hostile S2 that sends well-formed
    /// ciphertexts of arbitrary plaintexts and arbitrary ring values gets no
    /// panic out of S1, and its sealed garbage does not open at the client.
    #[test]
    fn hostile_but_well_formed_s2_replies(seed in any::<u64>(), mode_i in 0usize..3) {
        let mut rng = StdRng::seed_from_u64(seed);
        let model = random_mlp(&mut rng, &[4, 5, 5, 3], &[ActivationKind::Relu, ActivationKind::Sigmoid], 1.0, OutputMode::Label);
        let mut h = Harness::new(&model, test_key_1024()).unwrap();
        let mode = [OutputMode::Label, OutputMode::Probabilities, OutputMode::Logits][mode_i];
        let x = random_input(&mut rng, &model);
        let (pending, query) = h.0.client.prepare::<u128, _>(&h.0.info, &x, mode, &mut h.0.rng).unwrap();
        let s1 = h.s1();
        let (mut pre, _) = s1.start_preprocessing(mode, &query.seed, &mut h.rng).unwrap();
        let mut step = pre.on_input_masks(InputMasks { enc_r: (0..4).map(|_| random_ciphertext(&mut rng)).collect() }).unwrap();
        while let PreprocessingStep::Round(r) = step {
            let enc_rho = (0..r.count).map(|_| random_ciphertext(&mut rng)).collect();
            step = pre.on_rho_masks(RhoMasks { enc_rho }).unwrap();
        }
        let prepared = pre.on_ready(SessionReady).unwrap();
        let (mut q, mut step) = prepared.start(query.masked_input).unwrap();
        while let OnlineStep::Round(r) = step {
            let h = (0..r.e.len()).map(|_| u128::random(&mut rng)).collect();
            step = q.on_values(ActivationValues { h }).unwrap();
        }
        let mut sealed = vec![0u8; rng.gen_range(0..64)];
        rng.fill(&mut sealed[..]);
        let resp = q.on_output(OutputResponse { sealed }).unwrap();
        prop_assert_eq!(pending.finish(resp).unwrap_err(), ProtocolError::Crypto(CryptoError::SealedResultRejected));
    }
}

/// Issue 14 item 1, through the public API: a ciphertext of 2^300 (which
/// used to decrypt to a value ≥ 2^256 and be refused with INVALID_ARGUMENT)
/// and a fresh valid `[secret]` get the same answer: OK, with responses of
/// the same shape. Only the client holding the valid secret can open its
/// result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_seed_and_a_valid_one_get_indistinguishable_answers() {
    use tandem_grpc::v1::model_service_client::ModelServiceClient;
    let mut rng = StdRng::seed_from_u64(1401);
    let model = random_mlp(&mut rng, &[6, 8, 5], &[ActivationKind::Relu], 1.0, OutputMode::Label);
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    tandem_model::format::save(&model, &models.join("m.tandem")).unwrap();
    let s2 = activation_server(dir.path(), &dir.path().join("key.json"), &[], "127.0.0.1:0");
    let s1 = model_server(dir.path(), &models, &s2.url(), &[]);
    let mut opts = tandem_client::ClientOptions::new(s1.url());
    opts.insecure = true;
    let mut c = tandem_client::TandemClient::connect(&opts).await.unwrap();
    let remote = c.model("m").await.unwrap();
    let mut raw = ModelServiceClient::connect(s1.url()).await.unwrap();
    let pk = remote.key.clone();
    let x = random_input(&mut rng, &model);

    let mut answers = Vec::new();
    // Two different tampered ciphertexts (the same one twice would be a
    // replay of its plaintext, refused as any replay is).
    for (i, tamper) in [false, true, false, true].into_iter().enumerate() {
        let client = tandem_core::Client::new(pk.clone(), remote.epoch);
        let (pending, q) = client.prepare::<u128, _>(&remote.info, &x, OutputMode::Label, &mut OsRng).unwrap();
        let mut req = tandem_grpc::query_request_to_proto(&q, &remote.info.masking().unwrap()).unwrap();
        if tamper {
            let v = (BigInt::one() << (300 + i)).to_bytes();
            req.enc_seed.iter_mut().for_each(|b| *b = 0);
            let len = req.enc_seed.len();
            req.enc_seed[len - v.len()..].copy_from_slice(&v);
        }
        let resp = raw.infer(req).await.map(|r| r.into_inner());
        let resp = resp.unwrap_or_else(|s| panic!("tamper = {tamper}: {:?} {}", s.code(), s.message()));
        // The answer says which mode it was computed in.
        assert_eq!(resp.mode, tandem_grpc::v1::OutputMode::Label as i32);
        let opened = pending.finish(tandem_grpc::query_response_from_proto::<u128>(&resp).unwrap());
        if tamper {
            assert_eq!(opened.unwrap_err(), ProtocolError::Crypto(CryptoError::SealedResultRejected));
        } else {
            assert_eq!(
                opened.unwrap(),
                tandem_model::QuantizedModel::new(&model, Default::default())
                    .and_then(|q| q.reference(&q.quantize_input(&x).unwrap(), OutputMode::Label))
                    .unwrap()
            );
        }
        let aux_len = match resp.aux.as_ref().unwrap() {
            tandem_grpc::v1::infer_response::Aux::Permutation(p) => p.index.len(),
            other => panic!("label mode answers with a permutation, not {other:?}"),
        };
        answers.push((resp.sealed.len(), resp.session_id.len(), aux_len));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "answers differ in shape: {answers:?}");
}
