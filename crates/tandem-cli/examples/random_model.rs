//! Writes a random MLP as a .tandem file, plus a random input as JSON, for
//! measurements: `cargo run --release -p tandem-cli --example random_model --
//! OUT_DIR 784,128,128,10 relu [seed]` writes OUT_DIR/random.tandem and
//! OUT_DIR/random-input.json.

use rand::SeedableRng;
use tandem_model::testing::{random_input, random_mlp};
use tandem_model::{ActivationKind, OutputMode};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, dims, act, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: random_model OUT_DIR DIMS(e.g. 784,128,128,10) relu|sigmoid|tanh [seed]");
    };
    let dims: Vec<usize> = dims.split(',').map(str::parse).collect::<Result<_, _>>()?;
    let act = match act.as_str() {
        "relu" => ActivationKind::Relu,
        "sigmoid" => ActivationKind::Sigmoid,
        "tanh" => ActivationKind::Tanh,
        other => anyhow::bail!("unknown activation {other}"),
    };
    let seed = rest.first().map(|s| s.parse()).transpose()?.unwrap_or(1u64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mode = if dims.last() == Some(&1) { OutputMode::Sigmoid } else { OutputMode::Label };
    let mut model = random_mlp(&mut rng, &dims, &[act], 1.0 / (dims[0] as f32).sqrt(), mode);
    model.input_range = (0.0, 1.0);
    let x = random_input(&mut rng, &model);
    let dir = std::path::Path::new(out);
    std::fs::create_dir_all(dir)?;
    tandem_model::format::save(&model, &dir.join("random.tandem"))?;
    std::fs::write(dir.join("random-input.json"), serde_json::json!({ "input": x }).to_string())?;
    println!("wrote {}/random.tandem and random-input.json", dir.display());
    Ok(())
}
