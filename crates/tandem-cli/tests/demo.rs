//! The bundled demo model and the demo itself (with a small test key).

use tandem_cli::demo::{run, Bundled, DemoOptions};
use tandem_cli::demo_model;
use tandem_model::{OutputMode, QuantConfig, QuantizedModel};

static MODEL: &[u8] = include_bytes!("../../../models/demo/demo.tandem");
static SAMPLE: &[u8] = include_bytes!("../../../models/demo/sample.json");

#[test]
fn bundled_model_fits_and_classifies_its_sample() {
    let m = tandem_model::format::from_bytes(MODEL).unwrap();
    let q = QuantizedModel::new(&m, QuantConfig::default()).unwrap();
    assert_eq!(q.ring_bits, 128);
    let x = tandem_client::input::parse_json(std::str::from_utf8(SAMPLE).unwrap()).unwrap();
    assert_eq!(x.len(), demo_model::SIDE * demo_model::SIDE);
    let label = q.reference(&q.quantize_input(&x).unwrap(), OutputMode::Label).unwrap();
    assert_eq!(label, tandem_model::Output::Label(1));
    assert_eq!(q.float_output(&x, OutputMode::Label), vec![1.0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_in_every_mode_plain_and_tls() {
    for tls in [false, true] {
        let opts = DemoOptions { key_bits: 1024, model: None, input: None, mode: None, tls };
        run(opts, Bundled { model: MODEL, sample: SAMPLE }).await.unwrap();
    }
}
