//! Compiles the vendored `proto/onnx-ml.proto` with protox (pure Rust, no
//! system `protoc`) and generates prost types for it.

fn main() {
    let proto = "proto/onnx-ml.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"]).expect("vendored onnx-ml.proto compiles");
    prost_build::Config::new().compile_fds(fds).expect("prost-build generates the ONNX types");
}
