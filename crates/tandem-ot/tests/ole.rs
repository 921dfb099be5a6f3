//! End-to-end tests of the setup, the extension and Gilboa's multiplication,
//! and of every error path.

use proptest::prelude::*;
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tandem_ot::*;

fn setup(seed: u64) -> (OtReceiverKey, OtSenderKey) {
    let mut rng1 = ChaCha20Rng::seed_from_u64(seed);
    let mut rng2 = ChaCha20Rng::seed_from_u64(seed ^ 0xdead_beef);
    let (pending, req) = s1_setup_request(&mut rng1);
    let req = SetupRequest::from_bytes(&req.to_bytes()).unwrap();
    let (sk, reply) = s2_setup(&req, &mut rng2).unwrap();
    let reply = SetupReply::from_bytes(&reply.to_bytes()).unwrap();
    let rk = s1_setup_finish(pending, &reply).unwrap();
    assert_eq!(rk.id(), sk.id());
    (rk, sk)
}

fn mask(bits: u32) -> u128 {
    if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

/// Runs one session over the wire encodings; returns (x, y) per batch.
#[allow(clippy::type_complexity)]
fn session(
    rk: &OtReceiverKey,
    sk: &OtSenderKey,
    sid_s1: &[u8; 16],
    sid_s2: &[u8; 16],
    batches: &[ScalarBatch],
    values: &[Vec<u128>],
) -> Vec<(Vec<u128>, Vec<u128>)> {
    let (mut rx, req) = receiver_extend(rk, sid_s1, batches).unwrap();
    let req = OleRequest::from_bytes(&req.to_bytes()).unwrap();
    let mut tx = sender_extend(sk, sid_s2, &req).unwrap();
    let mut out = Vec::new();
    for (b, v) in batches.iter().zip(values) {
        assert!(!rx.is_done());
        let (y, d) = tx.respond(b.bits, v).unwrap();
        let d = Corrections::from_bytes(&d.to_bytes()).unwrap();
        let x = rx.receive(&d).unwrap();
        assert_eq!(x.len(), v.len());
        out.push((x, y));
    }
    assert!(rx.is_done());
    assert_eq!(tx.remaining_ots(), 0);
    out
}

const BITS: [u32; 6] = [1, 2, 33, 34, 64, 128];

fn random_batches(rng: &mut ChaCha20Rng, per: usize) -> (Vec<ScalarBatch>, Vec<Vec<u128>>) {
    let mut batches = Vec::new();
    let mut values = Vec::new();
    for &bits in &BITS {
        // Extremes first: 0 and 2^L - 1, then random scalars below 2^L.
        let mut scalars = vec![0, mask(bits)];
        scalars.extend((0..per).map(|_| rng.gen::<u128>() & mask(bits)));
        let mut v = vec![u128::MAX, rng.gen()];
        v.extend((0..per).map(|_| rng.gen::<u128>()));
        batches.push(ScalarBatch { bits, scalars });
        values.push(v);
    }
    (batches, values)
}

fn check_products(batches: &[ScalarBatch], values: &[Vec<u128>], got: &[(Vec<u128>, Vec<u128>)]) {
    for ((b, v), (x, y)) in batches.iter().zip(values).zip(got) {
        for p in 0..v.len() {
            assert_eq!(x[p].wrapping_add(y[p]), b.scalars[p].wrapping_mul(v[p]), "bits {} scalar {p}", b.bits);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn products_are_shared(seed in any::<u64>(), per in 0usize..12) {
        let (rk, sk) = setup(seed % 4);
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (batches, values) = random_batches(&mut rng, per);
        let sid: [u8; 16] = rng.gen();
        let got = session(&rk, &sk, &sid, &sid, &batches, &values);
        check_products(&batches, &values, &got);
    }
}

#[test]
fn large_session_and_multiple_sessions_per_setup() {
    let (rk, sk) = setup(11);
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    for s in 0..3u8 {
        let bits = 34;
        let scalars: Vec<u128> = (0..600).map(|_| rng.gen::<u128>() & mask(bits)).collect();
        let v: Vec<u128> = (0..600).map(|_| rng.gen()).collect();
        let batches = vec![ScalarBatch { bits, scalars }];
        let got = session(&rk, &sk, &[s; 16], &[s; 16], &batches, std::slice::from_ref(&v));
        check_products(&batches, &[v], &got);
    }
}

#[test]
fn shares_look_uniform_and_sessions_are_unrelated() {
    let (rk, sk) = setup(12);
    let batches = vec![ScalarBatch { bits: 8, scalars: vec![0; 64] }];
    let values = vec![vec![0u128; 64]];
    let a = session(&rk, &sk, &[1; 16], &[1; 16], &batches, &values);
    let b = session(&rk, &sk, &[2; 16], &[2; 16], &batches, &values);
    check_products(&batches, &values, &a);
    check_products(&batches, &values, &b);
    let (ya, yb) = (&a[0].1, &b[0].1);
    // Same inputs, same keys, different sids: no share repeats.
    for p in 0..64 {
        assert_ne!(ya[p], yb[p], "scalar {p}");
        assert_ne!(ya[p], 0);
    }
    // Shares of 0·0 are not trivially structured: about half the bits set.
    let ones: u32 = ya.iter().map(|y| y.count_ones()).sum();
    let n = 64 * 128;
    assert!(ones > n / 2 - n / 10 && ones < n / 2 + n / 10, "{ones} of {n}");
    // Same sid reproduces S1's request exactly (determinism of the PRG),
    // which is exactly why sids must be fresh.
    let (_, r1) = receiver_extend(&rk, &[1; 16], &batches).unwrap();
    let (_, r2) = receiver_extend(&rk, &[1; 16], &batches).unwrap();
    let (_, r3) = receiver_extend(&rk, &[2; 16], &batches).unwrap();
    assert_eq!(r1, r2);
    assert_ne!(r1.u, r3.u);
}

#[test]
fn wrong_sid_or_mismatched_keys_give_wrong_products() {
    let (rk, sk) = setup(13);
    let (_rk2, sk2) = setup(14);
    let scalars: Vec<u128> = (1..=32).collect();
    let v: Vec<u128> = (1..=32).map(|i| i * 1000 + 7).collect();
    let batches = vec![ScalarBatch { bits: 6, scalars }];
    let values = vec![v];
    // Control: matching sid and keys work.
    let ok = session(&rk, &sk, &[9; 16], &[9; 16], &batches, &values);
    check_products(&batches, &values, &ok);
    let wrong = |got: &[(Vec<u128>, Vec<u128>)]| {
        let (x, y) = &got[0];
        (0..32).all(|p| x[p].wrapping_add(y[p]) != batches[0].scalars[p].wrapping_mul(values[0][p]))
    };
    // S2 uses another sid than S1.
    let bad_sid = session(&rk, &sk, &[9; 16], &[10; 16], &batches, &values);
    assert!(wrong(&bad_sid), "a wrong sid must break every product");
    // S2 uses a key from another setup.
    let bad_key = session(&rk, &sk2, &[9; 16], &[9; 16], &batches, &values);
    assert!(wrong(&bad_key), "mismatched keys must break every product");
}

#[test]
fn empty_session_and_empty_batch() {
    let (rk, sk) = setup(15);
    let (mut rx, req) = receiver_extend(&rk, &[0; 16], &[]).unwrap();
    assert_eq!(req.ots, 0);
    assert!(req.u.is_empty());
    assert!(rx.is_done());
    let tx = sender_extend(&sk, &[0; 16], &req).unwrap();
    assert_eq!(tx.remaining_ots(), 0);
    assert!(matches!(rx.receive(&Corrections(vec![])), Err(Error::NoBatchLeft { batches: 0 })));
    let batches = vec![ScalarBatch { bits: 5, scalars: vec![] }, ScalarBatch { bits: 3, scalars: vec![7] }];
    let got = session(&rk, &sk, &[1; 16], &[1; 16], &batches, &[vec![], vec![6]]);
    assert!(got[0].0.is_empty());
    assert_eq!(got[1].0[0].wrapping_add(got[1].1[0]), 42);
}

// ---------------------------------------------------------------- errors

#[test]
fn setup_errors() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    // Truncated request.
    let e = SetupRequest::from_bytes(&[0u8; 31]).unwrap_err();
    assert!(matches!(e, Error::Length { got: 31, expected: 32, .. }), "{e}");
    assert!(e.to_string().contains("expected exactly 32"), "{e}");
    // Invalid point encoding (not canonical: all 0xff).
    let e = s2_setup(&SetupRequest { a_point: [0xff; 32] }, &mut rng).unwrap_err();
    assert!(matches!(e, Error::MalformedPoint { what: "A", .. }), "{e}");
    // The identity as A.
    let e = s2_setup(&SetupRequest { a_point: [0; 32] }, &mut rng).unwrap_err();
    assert!(e.to_string().contains("identity"), "{e}");

    let (pending, req) = s1_setup_request(&mut rng);
    let (_sk, reply) = s2_setup(&req, &mut rng).unwrap();
    // Wrong point counts.
    for n in [0usize, 127, 129] {
        let (p, _) = s1_setup_request(&mut rng);
        let mut r = reply.clone();
        r.b_points.resize(n, reply.b_points[0]);
        let e = s1_setup_finish(p, &r).unwrap_err();
        assert_eq!(e, Error::PointCount { got: n, expected: 128 });
    }
    // Truncated / overlong reply bytes.
    let bytes = reply.to_bytes();
    assert_eq!(bytes.len(), SetupReply::LEN);
    for len in [0, 16, bytes.len() - 1] {
        assert!(matches!(SetupReply::from_bytes(&bytes[..len]), Err(Error::Length { .. })));
    }
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(SetupReply::from_bytes(&long), Err(Error::Length { .. })));
    // Invalid encoding of B_5.
    let mut r = reply.clone();
    r.b_points[5] = [0xff; 32];
    let e = s1_setup_finish(pending, &r).unwrap_err();
    assert!(matches!(e, Error::MalformedPoint { what: "B", index: 5, .. }), "{e}");
}

#[test]
fn extend_errors() {
    let (rk, sk) = setup(2);
    let sid = [0u8; 16];
    // bits 0 and 129.
    for bits in [0u32, 129] {
        let e = receiver_extend(&rk, &sid, &[ScalarBatch { bits, scalars: vec![0] }]).unwrap_err();
        assert_eq!(e, Error::BitsOutOfRange { bits });
        assert!(e.to_string().contains("1..=128"));
    }
    // Scalar >= 2^bits; the message does not show the scalar.
    let e = receiver_extend(
        &rk,
        &sid,
        &[ScalarBatch { bits: 2, scalars: vec![1] }, ScalarBatch { bits: 33, scalars: vec![5, 1 << 33] }],
    )
    .unwrap_err();
    assert_eq!(e, Error::ScalarTooLarge { batch: 1, index: 1, bits: 33 });
    assert!(!e.to_string().contains(&(1u128 << 33).to_string()));
    // Too many OTs in total (without allocating them).
    let big = ScalarBatch { bits: 128, scalars: vec![0; (MAX_OTS as usize / 128) + 1] };
    let e = receiver_extend(&rk, &sid, &[big]).unwrap_err();
    assert!(matches!(e, Error::TooManyOts { max: MAX_OTS, .. }), "{e}");
    let e = sender_extend(&sk, &sid, &OleRequest { ots: MAX_OTS + 1, u: vec![] }).unwrap_err();
    assert!(matches!(e, Error::TooManyOts { .. }), "{e}");
    let mut hdr = (MAX_OTS + 1).to_le_bytes().to_vec();
    hdr.extend_from_slice(&[0; 64]);
    assert!(matches!(OleRequest::from_bytes(&hdr), Err(Error::TooManyOts { .. })));
    // Truncated request.
    let (_, req) = receiver_extend(&rk, &sid, &[ScalarBatch { bits: 10, scalars: vec![1; 20] }]).unwrap();
    assert_eq!(req.u.len(), OleRequest::u_len(200));
    let bytes = req.to_bytes();
    for len in [0usize, 3, 4, bytes.len() - 1] {
        assert!(OleRequest::from_bytes(&bytes[..len]).is_err(), "len {len}");
    }
    let mut short = req.clone();
    short.u.pop();
    let e = sender_extend(&sk, &sid, &short).unwrap_err();
    assert!(matches!(e, Error::Length { .. }), "{e}");
}

#[test]
fn batch_errors() {
    let (rk, sk) = setup(3);
    let sid = [4u8; 16];
    let batches = vec![ScalarBatch { bits: 4, scalars: vec![1, 2, 3] }, ScalarBatch { bits: 2, scalars: vec![3] }];
    let (mut rx, req) = receiver_extend(&rk, &sid, &batches).unwrap();
    assert_eq!(req.ots, 14);
    let mut tx = sender_extend(&sk, &sid, &req).unwrap();
    for bits in [0u32, 129] {
        assert_eq!(tx.respond(bits, &[1]).unwrap_err(), Error::BitsOutOfRange { bits });
    }
    // A batch asked beyond the request's OTs; the state is unchanged.
    let e = tx.respond(4, &[0; 4]).unwrap_err();
    assert_eq!(e, Error::OtsExhausted { needed: 16, remaining: 14, total: 14 });
    assert_eq!(tx.remaining_ots(), 14);
    let (y, d) = tx.respond(4, &[5, 6, 7]).unwrap();
    // Wrong correction count for S1's batch; the state is unchanged.
    let mut short = d.clone();
    short.0.pop();
    let e = rx.receive(&short).unwrap_err();
    assert_eq!(e, Error::CorrectionCount { got: 11, expected: 12, count: 3, bits: 4 });
    let x = rx.receive(&d).unwrap();
    for p in 0..3 {
        assert_eq!(x[p].wrapping_add(y[p]), (p as u128 + 1) * (p as u128 + 5));
    }
    assert_eq!(tx.remaining_ots(), 2);
    assert!(matches!(tx.respond(2, &[1, 1]), Err(Error::OtsExhausted { needed: 4, remaining: 2, .. })));
    let (y, d) = tx.respond(2, &[9]).unwrap();
    assert_eq!(rx.receive(&d).unwrap()[0].wrapping_add(y[0]), 27);
    assert!(rx.is_done());
    assert!(matches!(rx.receive(&d), Err(Error::NoBatchLeft { batches: 2 })));
    assert!(matches!(tx.respond(1, &[1]), Err(Error::OtsExhausted { remaining: 0, .. })));
    // Corrections not a multiple of 16 bytes.
    let e = Corrections::from_bytes(&[0; 17]).unwrap_err();
    assert!(matches!(e, Error::NotMultiple { got: 17, unit: 16, .. }), "{e}");
}

#[test]
fn debug_output_shows_no_secrets() {
    let (rk, sk) = setup(6);
    let secret = 0x1234_5678_9abc_def0_1122_3344_5566_7788u128;
    let batches = vec![ScalarBatch { bits: 128, scalars: vec![secret] }];
    let (rx, req) = receiver_extend(&rk, &[0; 16], &batches).unwrap();
    let mut tx = sender_extend(&sk, &[0; 16], &req).unwrap();
    let (y, d) = tx.respond(128, &[secret]).unwrap();
    let s = format!("{rk:?}{sk:?}{:?}{rx:?}{tx:?}{req:?}{d:?}", batches[0]);
    for n in [secret, y[0], d.0[0]] {
        assert!(!s.contains(&n.to_string()) && !s.contains(&format!("{n:x}")), "{s}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// No panic on any byte input to any parser, or to the functions that
    /// take the parsed messages.
    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..5000), ots in 0u32..300) {
        let _ = SetupRequest::from_bytes(&bytes);
        let _ = SetupReply::from_bytes(&bytes);
        let _ = OleRequest::from_bytes(&bytes);
        let _ = Corrections::from_bytes(&bytes);
        // Valid-length messages with random contents.
        let mut rng = ChaCha20Rng::seed_from_u64(bytes.len() as u64);
        if bytes.len() >= 32 {
            let req = SetupRequest::from_bytes(&bytes[..32]).unwrap();
            let _ = s2_setup(&req, &mut rng);
        }
        let mut reply = vec![0u8; SetupReply::LEN];
        for (i, b) in reply.iter_mut().enumerate() {
            *b = bytes.get(i % bytes.len().max(1)).copied().unwrap_or(0);
        }
        let (p, _) = s1_setup_request(&mut rng);
        let _ = s1_setup_finish(p, &SetupReply::from_bytes(&reply).unwrap());
        let mut msg = ots.to_le_bytes().to_vec();
        msg.extend((0..OleRequest::u_len(ots)).map(|i| bytes.get(i % bytes.len().max(1)).copied().unwrap_or(0)));
        let req = OleRequest::from_bytes(&msg).unwrap();
        let (rk, sk) = setup(1);
        let mut tx = sender_extend(&sk, &[0; 16], &req).unwrap();
        let _ = tx.respond(bytes.first().map_or(1, |&b| u32::from(b)), &[1, 2]);
        let (mut rx, _) = receiver_extend(&rk, &[0; 16], &[ScalarBatch { bits: 3, scalars: vec![1] }]).unwrap();
        let _ = rx.receive(&Corrections::from_bytes(&bytes[..bytes.len() / 16 * 16]).unwrap());
    }
}
