//! Compiles the .proto files with protox (a protobuf compiler in Rust), so a fresh machine
//! needs no `protoc` binary.

fn main() {
    let files = ["protos/control.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["protos"]).expect("compile .proto files");
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("generate Rust from .proto");
}
