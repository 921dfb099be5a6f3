use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tandem_grpc::server::tune_allocator();
    let cfg = tandem_model_server::Config::parse();
    tandem_grpc::server::init_logging(cfg.common.log_json);
    match tandem_model_server::run(cfg).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("model-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
