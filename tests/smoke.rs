use rand::SeedableRng;
use tandem::{test_key_1024, Harness};
use tandem_model::testing::{random_input, random_mlp};
use tandem_model::{ActivationKind, OutputMode};

#[test]
fn smoke() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let m = random_mlp(&mut rng, &[4, 5, 3], &[ActivationKind::Relu], 1.0, OutputMode::Label);
    let mut h = Harness::new(&m, test_key_1024()).unwrap();
    let x = random_input(&mut rng, &m);
    for mode in [OutputMode::Logits, OutputMode::Probabilities, OutputMode::Label] {
        let got = h.infer(&x, mode).unwrap();
        assert_eq!(got, h.reference(&x, mode), "{mode}");
    }
}
