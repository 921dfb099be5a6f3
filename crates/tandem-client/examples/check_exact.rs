//! One private inference per output mode against running servers, each
//! answer compared bit for bit with the integer reference computed here
//! from the model file. `scripts/cross-check.sh` cross-builds it for aarch64
//! and runs it under qemu-aarch64 against the real servers on loopback, so
//! the edge client is proven exact on ARM, not only built for it.
//!
//! ```text
//! check_exact SERVER_URL MODEL_ID MODEL_FILE INPUT_FILE
//! ```
//!
//! The server must serve `MODEL_FILE` as `MODEL_ID` with the default
//! quantization and allow the modes tried; plaintext gRPC (`http://`) only.

use std::path::Path;
use std::process::ExitCode;
use tandem_client::{ClientOptions, TandemClient};
use tandem_model::{QuantConfig, QuantizedModel};

async fn run(server: &str, id: &str, model_file: &Path, input_file: &Path) -> Result<usize, String> {
    let model = tandem_model::format::load(model_file).map_err(|e| format!("{}: {e}", model_file.display()))?;
    let q = QuantizedModel::new(&model, QuantConfig::default()).map_err(|e| e.to_string())?;
    let x = tandem_client::input::read_input_file(input_file)?;
    let xi = q.quantize_input(&x).map_err(|e| e.to_string())?;
    let mut opts = ClientOptions::new(server);
    opts.insecure = true;
    let mut c = TandemClient::connect(&opts).await.map_err(|e| e.to_string())?;
    let remote = c.model(id).await.map_err(|e| e.to_string())?;
    let mut checked = 0;
    for &mode in &remote.info.modes {
        let got = c.infer(id, &x, Some(mode)).await.map_err(|e| format!("{mode}: {e}"))?;
        let want = q.reference(&xi, mode).map_err(|e| e.to_string())?;
        if got.output != want {
            return Err(format!("{mode}: the private answer {:?} differs from the reference {want:?}", got.output));
        }
        println!("{mode}: private == reference: {:?}", got.output);
        checked += 1;
    }
    Ok(checked)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, server, id, model_file, input_file] = args.as_slice() else {
        eprintln!("usage: check_exact SERVER_URL MODEL_ID MODEL_FILE INPUT_FILE");
        return ExitCode::from(2);
    };
    match run(server, id, Path::new(model_file), Path::new(input_file)).await {
        Ok(0) => {
            eprintln!("check_exact: the server allows no mode on {id}");
            ExitCode::FAILURE
        }
        Ok(n) => {
            println!("check_exact: {n} modes bit-exact on {}", std::env::consts::ARCH);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("check_exact: {e}");
            ExitCode::FAILURE
        }
    }
}
