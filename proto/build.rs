//! Compiles the .proto files with protox (a protobuf compiler in Rust), so a fresh machine
//! needs no `protoc` binary. The LiveKit subset's descriptor set is kept too: the Twirp
//! server reads it to speak protobuf's JSON mapping without hand-written serde code.

use prost::Message;

fn main() {
    let files = [
        "protos/control.proto",
        "protos/livekit_models.proto",
        "protos/livekit_rtc.proto",
        "protos/livekit_room.proto",
        "protos/livekit_agent.proto",
        "protos/livekit_agent_dispatch.proto",
        "protos/livekit_ingress.proto",
        "protos/livekit_egress.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["protos"]).expect("compile .proto files");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set"));
    std::fs::write(out.join("descriptors.bin"), fds.encode_to_vec())
        .expect("write the descriptor set");
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("generate Rust from .proto");
}
