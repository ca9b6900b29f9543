//! RoomService `PerformRpc` reaches a method a participant registered: a LiveKit Python SDK
//! participant (`tests/interop/lk_rpc.py`) registers `echo` and `fail`, and `livekit-api`'s
//! Twirp client calls them through Prism.
//!
//! What passing proves: the participant's answer comes back as the response payload; its
//! `RpcError` comes back as a Twirp `internal` error (500, as LiveKit maps application
//! errors) whose message carries its code, message and data; a destination that is not in
//! the room is `not_found`.

mod common;

use common::*;

#[test]
fn perform_rpc_returns_the_participants_answer_and_its_error() {
    let _g = serial();
    let Some(py) = python("livekit.rtc, livekit.api") else {
        return;
    };
    let server = Server::start();
    let url = ws_url(&server);
    let o = client(&py, "rpc", "lk_rpc.py", &["--url", &url]).finish();
    assert!(o.ok(), "{o}");
    let s = &o.summary;
    assert_eq!(s["answer"], "tnega olleh", "{o}");
    assert_eq!(s["error_status"], 500, "{o}");
    assert_eq!(s["error_code"], "internal", "{o}");
    let msg = s["error_message"].as_str().unwrap_or("");
    assert!(
        msg.contains("2001") && msg.contains("the answer is no") && msg.contains("some data"),
        "{o}"
    );
    assert_eq!(s["missing_status"], 404, "{o}");
}
