//! The model crate end to end: file format round trips, and the integer
//! reference stays close to the float model it quantizes.

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tandem_model::quantize::{eval_f64, float_head};
use tandem_model::testing::{random_cnn, random_input, random_mlp};
use tandem_model::{format, ActivationKind, OutputMode, QuantConfig, QuantizedModel};

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn file_format_round_trips(seed in any::<u64>(), cnn in any::<bool>()) {
        let mut rng = StdRng::seed_from_u64(seed);
        let m = if cnn {
            random_cnn(&mut rng, ActivationKind::Tanh, 3, OutputMode::Probabilities)
        } else {
            random_mlp(&mut rng, &[5, 4, 2], &[ActivationKind::Sigmoid], 1.0, OutputMode::Logits)
        };
        let back = format::from_bytes(&format::to_bytes(&m).unwrap()).unwrap();
        prop_assert_eq!(back, m);
    }

    /// Logits of the integer reference track the float model within the
    /// quantization error; probabilities within 1e-2.
    #[test]
    fn reference_tracks_float(seed in any::<u64>(), act in prop::sample::select(vec![
        ActivationKind::Relu, ActivationKind::Sigmoid, ActivationKind::Tanh])) {
        let mut rng = StdRng::seed_from_u64(seed);
        let m = random_mlp(&mut rng, &[8, 16, 16, 4], &[act], 0.5, OutputMode::Label);
        let q = QuantizedModel::new(&m, QuantConfig::default()).unwrap();
        let x = random_input(&mut rng, &m);
        let xi = q.quantize_input(&x).unwrap();
        let int = q.reference(&xi, OutputMode::Logits).unwrap().to_f64();
        let fl = eval_f64(&m, &x);
        for (a, b) in int.iter().zip(&fl) {
            prop_assert!((a - b).abs() < 2e-2 * (1.0 + b.abs()), "int {a} float {b}");
        }
        let p_int = q.reference(&xi, OutputMode::Probabilities).unwrap().to_f64();
        let p_fl = float_head(&fl, OutputMode::Probabilities);
        for (a, b) in p_int.iter().zip(&p_fl) {
            prop_assert!((a - b).abs() < 1e-2, "int {a} float {b}");
        }
    }
}

#[test]
fn format_refuses_garbage_with_clear_messages() {
    let mut rng = StdRng::seed_from_u64(1);
    let m = random_mlp(&mut rng, &[2, 2], &[ActivationKind::Relu], 1.0, OutputMode::Logits);
    let bytes = format::to_bytes(&m).unwrap();
    let mut wrong_version = bytes.clone();
    wrong_version[8] = 9;
    let e = format::from_bytes(&wrong_version).unwrap_err().to_string();
    assert!(e.contains("version 9") && e.contains("version 1"), "{e}");
    let mut huge_header = bytes.clone();
    huge_header[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = format::from_bytes(&huge_header).unwrap_err().to_string();
    assert!(e.contains("header length"), "{e}");
    let e = format::from_bytes(b"TANDEMMD").unwrap_err().to_string();
    assert!(e.contains("magic"), "{e}");
}

#[test]
fn structural_errors_name_the_layer() {
    let mut rng = StdRng::seed_from_u64(2);
    let mut m = random_mlp(&mut rng, &[3, 4, 2], &[ActivationKind::Relu], 1.0, OutputMode::Label);
    m.layers.push(tandem_model::Layer::Activation(ActivationKind::Relu));
    let e = m.shapes().unwrap_err().to_string();
    assert!(e.contains("last layer must be linear"), "{e}");
    m.layers.pop();
    m.layers.insert(1, tandem_model::Layer::Activation(ActivationKind::Tanh));
    let e = m.shapes().unwrap_err().to_string();
    assert!(e.contains("layer 2 (relu) must follow a linear layer"), "{e}");
}
