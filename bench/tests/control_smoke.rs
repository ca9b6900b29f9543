//! `prism-bench control smoke` against a real `prism serve --dev`: joins in one room and
//! in several, three participants exchanging reliable data over real data channels (ICE,
//! DTLS, SCTP, DCEP), and offers with and without a busy neighbour, all without a failure.
//!
//! `prism` is another package's binary, so it is looked up: `PRISM_BIN`, else in this
//! test's target directory (`cargo test --workspace` builds it; alone, run `cargo build -p
//! prism-signaling` first). Without one the test fails: it must not pass by measuring
//! nothing.

use std::path::PathBuf;
use std::process::Command;

fn prism() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PRISM_BIN") {
        return Some(PathBuf::from(p));
    }
    // target/<profile>/deps/control_smoke-… → target/<profile>/prism, or another profile's.
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let target = profile_dir.parent()?;
    [profile_dir.to_path_buf()]
        .into_iter()
        .chain(["debug", "release", "smoke"].map(|p| target.join(p)))
        .map(|d| d.join("prism"))
        .find(|p| p.exists())
}

#[test]
fn control_smoke_runs_every_scenario_without_failures() {
    let prism =
        prism().expect("no prism binary: cargo build -p prism-signaling first, or set PRISM_BIN");
    let out = std::env::temp_dir().join(format!("ctlbench-smoke-test-{}", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_prism-bench"))
        .args(["control", "smoke", "--no-pin", "--prism"])
        .arg(&prism)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("running prism-bench");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "{text}");
    for scenario in [
        "joins-one-room",
        "joins-many-rooms",
        "relay",
        "offer-idle",
        "offer-busy",
    ] {
        assert!(
            text.contains(&format!("| {scenario} |")),
            "{scenario} missing:\n{text}"
        );
    }
    let json = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.path().extension().is_some_and(|x| x == "json"))
        .expect("a JSON report");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json.path()).unwrap()).unwrap();
    let relay = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["scenario"] == "relay")
        .expect("a relay row");
    // Three participants, three messages each, to the two others.
    assert_eq!(relay["events"], 18, "{relay}");
    assert_eq!(relay["extra"]["unstamped"], 0.0, "{relay}");
    let _ = std::fs::remove_dir_all(&out);
}
