//! Join tokens minted by the bench itself: HS256 JWTs with LiveKit's claims (`iss` the API
//! key, `sub` the identity, a `video` grant with `roomJoin` and `room`).
//!
//! Minted here rather than borrowed from `prism-signaling`, so that the load generator does
//! not share the code it checks: a test verifies these tokens with the server's verifier.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// `prism serve --dev`'s API key and secret.
pub const DEV_KEY: &str = "devkey";
pub const DEV_SECRET: &str = "secret";

/// A join token for `identity` in `room`, valid from `now` (Unix seconds) for an hour.
pub fn join_token(key: &str, secret: &str, room: &str, identity: &str, now: u64) -> String {
    let video = serde_json::json!({ "roomJoin": true, "room": room });
    token_with_grant(key, secret, identity, video, now)
}

/// A token for `identity` with `video` as its grant (e.g. `roomRecord`, `roomAdmin`),
/// valid from `now` (Unix seconds) for an hour.
pub fn token_with_grant(
    key: &str,
    secret: &str,
    identity: &str,
    video: serde_json::Value,
    now: u64,
) -> String {
    let claims = serde_json::json!({
        "iss": key,
        "sub": identity,
        "name": identity,
        "nbf": now,
        "exp": now + 3600,
        "video": video,
    });
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let sig = URL_SAFE_NO_PAD.encode(hmac_sha256(secret.as_bytes(), signed.as_bytes()));
    format!("{signed}.{sig}")
}

/// A dev-key join token valid now.
pub fn dev_token(room: &str, identity: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    join_token(DEV_KEY, DEV_SECRET, room, identity, now)
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // HMAC takes keys of any length; a zero tag simply fails verification.
    if let Ok(mut m) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        m.update(data);
        out.copy_from_slice(&m.finalize().into_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_signaling::auth::{AuthError, KeyStore};

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn server_accepts_the_bench_token_for_its_room_and_identity() {
        let t = join_token(DEV_KEY, DEV_SECRET, "bench-room", "p-17", NOW);
        let claims = KeyStore::dev().verify(&t, NOW + 10).expect("verifies");
        assert_eq!(claims.identity(), "p-17");
        assert_eq!(claims.ensure_join().unwrap(), "bench-room");
    }

    #[test]
    fn wrong_secret_and_expiry_are_refused() {
        let t = join_token(DEV_KEY, "not-the-secret", "r", "p", NOW);
        assert!(KeyStore::dev().verify(&t, NOW).is_err());
        let t = join_token(DEV_KEY, DEV_SECRET, "r", "p", NOW);
        let late = NOW + 3600 + 61 + 1;
        assert_eq!(KeyStore::dev().verify(&t, late), Err(AuthError::Expired));
    }

    #[test]
    fn hmac_sha256_matches_rfc4231_case_2() {
        let tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
