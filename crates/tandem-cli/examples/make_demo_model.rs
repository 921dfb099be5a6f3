//! Regenerates models/demo/demo.tandem and models/demo/sample.json:
//! `cargo run -p tandem-cli --example make_demo_model` (deterministic).

use rand::SeedableRng;
use std::path::PathBuf;
use tandem_cli::demo_model;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/demo");
    std::fs::create_dir_all(&dir)?;
    let (model, acc) = demo_model::train(20_240_601);
    println!("trained {}: test accuracy {:.1}%", model.name, acc * 100.0);
    tandem_model::format::save(&model, &dir.join("demo.tandem"))?;
    // A sample of class 1 (vertical stroke) from its own seed.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let label = 1;
    let x: Vec<f64> = demo_model::sample(&mut rng, label).iter().map(|v| (v * 1000.0).round() / 1000.0).collect();
    let sample = serde_json::json!({ "input": x, "label": label, "shape": [demo_model::SIDE, demo_model::SIDE] });
    std::fs::write(dir.join("sample.json"), serde_json::to_string(&sample)? + "\n")?;
    println!("wrote {}", dir.display());
    Ok(())
}
