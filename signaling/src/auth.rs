//! Join and API tokens: HS256 JSON Web Tokens with LiveKit's claims, so that tokens minted
//! by LiveKit's server SDKs (or `prism token create`) work unchanged.
//!
//! Verification follows LiveKit's server:
//! - the API key is the `iss` claim, and its secret comes from the [`KeyStore`];
//! - only HS256 is accepted;
//! - `exp` is required, and `exp` and `nbf` get one minute of leeway;
//! - the identity is `sub`, or `jti` when `sub` is empty.
//!
//! Grant defaults follow LiveKit's too: `canPublish` and `canSubscribe` default to true
//! when absent, and `canPublishData` to the value of `canPublish`. Errors are typed so
//! that every front end maps them to the same HTTP status and text.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 60;

/// Why a token was refused. [`AuthError::status`] gives the HTTP status and the text
/// LiveKit's server answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// No token at all, or no `video` grant.
    NoPermissions,
    /// Not a JWT, not HS256, bad JSON, or a signature mismatch.
    InvalidToken(&'static str),
    /// `iss` names no key this server knows.
    UnknownKey,
    /// `exp` is in the past (beyond the leeway) or missing.
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// The grant does not allow this (e.g. `roomJoin` is false).
    NotAllowed(&'static str),
    /// The identity is empty.
    NoIdentity,
    /// The grant names no room.
    NoRoom,
}

impl AuthError {
    /// HTTP status and body text, as LiveKit's server answers.
    pub fn status(&self) -> (u16, String) {
        match self {
            AuthError::NoPermissions => (401, "no permissions to access the room".into()),
            AuthError::InvalidToken(why) => (401, format!("invalid authorization token: {why}")),
            AuthError::UnknownKey => (401, "invalid API key".into()),
            AuthError::Expired => (401, "invalid authorization token: token has expired".into()),
            AuthError::NotYetValid => (
                401,
                "invalid authorization token: token is not valid yet".into(),
            ),
            AuthError::NotAllowed(what) => (401, format!("permission denied: {what}")),
            AuthError::NoIdentity => (400, "identity cannot be empty".into()),
            AuthError::NoRoom => (400, "no room name".into()),
        }
    }
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.status().1)
    }
}

impl std::error::Error for AuthError {}

/// The `video` grant. Optional booleans are `None` when the token leaves them out, which
/// matters for the defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VideoGrant {
    #[serde(skip_serializing_if = "is_false")]
    pub room_create: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub room_list: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub room_record: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub room_admin: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub room_join: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub room: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_subscribe: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_publish_data: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub can_publish_sources: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_update_own_metadata: Option<bool>,
    #[serde(skip_serializing_if = "is_false")]
    pub hidden: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub recorder: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub agent: bool,
    /// LiveKit's `ingressAdmin`: the Ingress API (create, list, update, delete).
    #[serde(skip_serializing_if = "is_false")]
    pub ingress_admin: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl VideoGrant {
    pub fn can_publish(&self) -> bool {
        self.can_publish.unwrap_or(true)
    }

    pub fn can_subscribe(&self) -> bool {
        self.can_subscribe.unwrap_or(true)
    }

    pub fn can_publish_data(&self) -> bool {
        self.can_publish_data.unwrap_or_else(|| self.can_publish())
    }

    pub fn can_update_own_metadata(&self) -> bool {
        self.can_update_own_metadata.unwrap_or(false)
    }

    /// Whether a track from `source` ("camera", "microphone", "screen_share",
    /// "screen_share_audio") may be published.
    pub fn can_publish_source(&self, source: &str) -> bool {
        self.can_publish()
            && (self.can_publish_sources.is_empty()
                || self.can_publish_sources.iter().any(|s| s == source))
    }
}

/// The claims Prism reads. Unknown claims are ignored, and kept when re-serialized.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Claims {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub iss: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sub: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoGrant>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub metadata: String,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub attributes: HashMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(flatten)]
    pub other: HashMap<String, serde_json::Value>,
}

impl Claims {
    /// The participant identity: `sub`, or `jti` when `sub` is empty.
    pub fn identity(&self) -> &str {
        if self.sub.is_empty() {
            &self.jti
        } else {
            &self.sub
        }
    }

    /// The video grant, or [`AuthError::NoPermissions`] if there is none.
    pub fn grant(&self) -> Result<&VideoGrant, AuthError> {
        self.video.as_ref().ok_or(AuthError::NoPermissions)
    }

    /// Checks that these claims may join a room: `roomJoin`, a room name and an identity.
    /// Returns the room name.
    pub fn ensure_join(&self) -> Result<&str, AuthError> {
        let g = self.grant()?;
        if !g.room_join {
            return Err(AuthError::NotAllowed("roomJoin is not granted"));
        }
        if g.room.is_empty() {
            return Err(AuthError::NoRoom);
        }
        if self.identity().is_empty() {
            return Err(AuthError::NoIdentity);
        }
        Ok(&g.room)
    }

    /// Checks `roomAdmin` for `room`.
    pub fn ensure_admin(&self, room: &str) -> Result<(), AuthError> {
        let g = self.grant()?;
        if g.room_admin && g.room == room {
            Ok(())
        } else {
            Err(AuthError::NotAllowed(
                "roomAdmin for this room is not granted",
            ))
        }
    }

    /// Checks `ingressAdmin` (the Ingress API, any room, as in LiveKit).
    pub fn ensure_ingress_admin(&self) -> Result<(), AuthError> {
        if self.grant()?.ingress_admin {
            Ok(())
        } else {
            Err(AuthError::NotAllowed("ingressAdmin is not granted"))
        }
    }

    pub fn ensure_create(&self) -> Result<(), AuthError> {
        if self.grant()?.room_create {
            Ok(())
        } else {
            Err(AuthError::NotAllowed("roomCreate is not granted"))
        }
    }

    /// The agents the token's `roomConfig` asks to dispatch (LiveKit's
    /// `RoomConfiguration.agents`, in protobuf's JSON: `agentName` or `agent_name`). A
    /// malformed `roomConfig` asks for none.
    pub fn room_config_agents(&self) -> Vec<RoomConfigAgent> {
        let Some(config) = self.other.get("roomConfig") else {
            return Vec::new();
        };
        serde_json::from_value::<RoomConfig>(config.clone())
            .map(|c| c.agents)
            .unwrap_or_default()
    }

    /// The token's `roomConfig.egress` (LiveKit's `RoomConfiguration.egress`, a
    /// `RoomEgress` in protobuf's JSON), unread: `egress::auto` reads it.
    pub fn room_config_egress(&self) -> Option<&serde_json::Value> {
        self.other
            .get("roomConfig")?
            .get("egress")
            .filter(|v| !v.is_null())
    }

    /// `roomRecord`: LiveKit's grant for the Egress service.
    pub fn ensure_record(&self) -> Result<(), AuthError> {
        if self.grant()?.room_record {
            Ok(())
        } else {
            Err(AuthError::NotAllowed("roomRecord is not granted"))
        }
    }

    pub fn ensure_list(&self) -> Result<(), AuthError> {
        if self.grant()?.room_list {
            Ok(())
        } else {
            Err(AuthError::NotAllowed("roomList is not granted"))
        }
    }
}

/// A token's `roomConfig`: only what Prism acts on.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RoomConfig {
    agents: Vec<RoomConfigAgent>,
}

/// One agent of a token's `roomConfig.agents`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RoomConfigAgent {
    #[serde(alias = "agent_name", rename = "agentName")]
    pub agent_name: String,
    pub metadata: String,
    pub attributes: HashMap<String, String>,
}

/// API keys and their secrets.
#[derive(Clone, Default)]
pub struct KeyStore {
    keys: HashMap<String, String>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("KeyStore")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// LiveKit's development key pair, accepted by `prism serve --dev`.
pub const DEV_KEY: &str = "devkey";
pub const DEV_SECRET: &str = "secret";

impl KeyStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding the given (key, secret) pairs.
    pub fn from_pairs<K: Into<String>, S: Into<String>>(
        pairs: impl IntoIterator<Item = (K, S)>,
    ) -> Self {
        let mut k = Self::new();
        for (key, secret) in pairs {
            k.insert(key, secret);
        }
        k
    }

    /// The development key pair only.
    pub fn dev() -> Self {
        let mut k = Self::new();
        k.insert(DEV_KEY, DEV_SECRET);
        k
    }

    pub fn insert(&mut self, key: impl Into<String>, secret: impl Into<String>) {
        self.keys.insert(key.into(), secret.into());
    }

    pub fn secret(&self, key: &str) -> Option<&str> {
        self.keys.get(key).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies `token` at unix time `now` (seconds) and returns its claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::InvalidToken("not a JWT"));
        };
        let header: Header = decode_json(h)?;
        if header.alg != "HS256" {
            return Err(AuthError::InvalidToken("only HS256 is accepted"));
        }
        let claims: Claims = decode_json(p)?;
        let secret = self.secret(&claims.iss).ok_or(AuthError::UnknownKey)?;
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| AuthError::InvalidToken("bad signature encoding"))?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .map_err(|_| AuthError::InvalidToken("bad key"))?;
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&sig)
            .map_err(|_| AuthError::InvalidToken("signature mismatch"))?;
        match claims.exp {
            None => return Err(AuthError::Expired),
            Some(exp) if exp.saturating_add(LEEWAY_SECS) < now => return Err(AuthError::Expired),
            _ => {}
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_SECS))
        {
            return Err(AuthError::NotYetValid);
        }
        Ok(claims)
    }

    /// Verifies `token` against the current time.
    pub fn verify_now(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify(token, unix_now())
    }
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    alg: String,
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| AuthError::InvalidToken("bad base64"))?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::InvalidToken("bad JSON"))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Signs `claims` with `secret` (HS256). `claims.iss` should be the API key.
pub fn sign(claims: &Claims, secret: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(header.as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{payload}.{sig}")
}

/// A join token for `identity` in `room`, valid for `ttl_secs`, with the given grant
/// (its `room_join` and `room` are set for you).
pub fn join_token(
    key: &str,
    secret: &str,
    room: &str,
    identity: &str,
    ttl_secs: u64,
    mut grant: VideoGrant,
) -> String {
    let now = unix_now();
    grant.room_join = true;
    grant.room = room.to_string();
    let claims = Claims {
        iss: key.to_string(),
        sub: identity.to_string(),
        nbf: Some(now),
        exp: Some(now + ttl_secs),
        name: identity.to_string(),
        video: Some(grant),
        ..Default::default()
    };
    sign(&claims, secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn claims() -> Claims {
        Claims {
            iss: DEV_KEY.into(),
            sub: "alice".into(),
            nbf: Some(NOW - 10),
            exp: Some(NOW + 600),
            video: Some(VideoGrant {
                room_join: true,
                room: "r1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn room_config_agents_are_read_in_both_json_name_styles() {
        let mut c = claims();
        assert!(c.room_config_agents().is_empty());
        c.other.insert(
            "roomConfig".into(),
            serde_json::json!({"name": "r1", "agents": [
                {"agentName": "echo", "metadata": "m"},
                {"agent_name": "other"}
            ]}),
        );
        let secret = DEV_SECRET;
        let token = sign(&c, secret);
        let back = KeyStore::dev().verify(&token, NOW).unwrap();
        let agents = back.room_config_agents();
        assert_eq!(agents.len(), 2);
        assert_eq!(
            (agents[0].agent_name.as_str(), agents[0].metadata.as_str()),
            ("echo", "m")
        );
        assert_eq!(agents[1].agent_name, "other");
        // A malformed roomConfig asks for nothing rather than refusing the token.
        c.other
            .insert("roomConfig".into(), serde_json::json!({"agents": 3}));
        assert!(c.room_config_agents().is_empty());
    }

    #[test]
    fn round_trip_and_defaults() {
        let t = sign(&claims(), DEV_SECRET);
        let c = KeyStore::dev().verify(&t, NOW).unwrap();
        assert_eq!(c.identity(), "alice");
        assert_eq!(c.ensure_join().unwrap(), "r1");
        let g = c.grant().unwrap();
        assert!(g.can_publish() && g.can_subscribe() && g.can_publish_data());
        assert!(!g.can_update_own_metadata());
        assert!(g.can_publish_source("camera"));
    }

    #[test]
    fn livekit_sdk_token_verifies() {
        // Shape of a token from LiveKit's Python SDK (claims with camelCase grant keys,
        // canPublish false, canPublishData unset → follows canPublish).
        let payload = r#"{"sub":"bob","iss":"devkey","nbf":1799999990,"exp":1800021600,
            "video":{"roomJoin":true,"room":"r1","canPublish":false,"canSubscribe":true},
            "name":"Bob","metadata":"","attributes":{},"sha256":"","roomConfig":null}"#;
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let p = URL_SAFE_NO_PAD.encode(payload.replace(['\n', ' '], "").as_bytes());
        let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").unwrap();
        mac.update(format!("{h}.{p}").as_bytes());
        let s = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let c = KeyStore::dev()
            .verify(&format!("{h}.{p}.{s}"), NOW)
            .unwrap();
        let g = c.grant().unwrap();
        assert!(!g.can_publish() && !g.can_publish_data() && g.can_subscribe());
        assert_eq!(c.name, "Bob");
        assert!(c.other.contains_key("sha256"));
    }

    #[test]
    fn refusals_map_to_livekit_statuses() {
        let ks = KeyStore::dev();
        let good = claims();
        let cases: Vec<(String, u16)> = vec![
            ("garbage".into(), 401),
            (sign(&good, "wrong secret"), 401),
            (
                sign(
                    &Claims {
                        iss: "other".into(),
                        ..good.clone()
                    },
                    DEV_SECRET,
                ),
                401,
            ),
            (
                sign(
                    &Claims {
                        exp: Some(NOW - 61),
                        ..good.clone()
                    },
                    DEV_SECRET,
                ),
                401,
            ),
            (
                sign(
                    &Claims {
                        exp: None,
                        ..good.clone()
                    },
                    DEV_SECRET,
                ),
                401,
            ),
            (
                sign(
                    &Claims {
                        nbf: Some(NOW + 61),
                        ..good.clone()
                    },
                    DEV_SECRET,
                ),
                401,
            ),
        ];
        for (t, status) in cases {
            assert_eq!(ks.verify(&t, NOW).unwrap_err().status().0, status, "{t}");
        }
        // Within the leeway.
        assert!(ks
            .verify(
                &sign(
                    &Claims {
                        exp: Some(NOW - 59),
                        ..good.clone()
                    },
                    DEV_SECRET
                ),
                NOW
            )
            .is_ok());
        // Join checks.
        let no_join = Claims {
            video: Some(VideoGrant {
                room: "r1".into(),
                ..Default::default()
            }),
            ..good.clone()
        };
        assert_eq!(no_join.ensure_join().unwrap_err().status().0, 401);
        let no_room = Claims {
            video: Some(VideoGrant {
                room_join: true,
                ..Default::default()
            }),
            ..good.clone()
        };
        assert_eq!(no_room.ensure_join().unwrap_err(), AuthError::NoRoom);
        let no_id = Claims {
            sub: String::new(),
            ..good.clone()
        };
        assert_eq!(no_id.ensure_join().unwrap_err(), AuthError::NoIdentity);
        let no_video = Claims {
            video: None,
            ..good
        };
        assert_eq!(
            no_video.ensure_join().unwrap_err(),
            AuthError::NoPermissions
        );
        // Not HS256.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"iss":"devkey"}"#)
        );
        assert!(matches!(
            ks.verify(&none, NOW),
            Err(AuthError::InvalidToken(_))
        ));
    }

    #[test]
    fn join_token_helper_grants_the_room() {
        let t = join_token(DEV_KEY, DEV_SECRET, "room", "me", 60, VideoGrant::default());
        let c = KeyStore::dev().verify_now(&t).unwrap();
        assert_eq!(c.ensure_join().unwrap(), "room");
        assert_eq!(c.identity(), "me");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,300}") {
            let _ = KeyStore::dev().verify(&s, NOW);
        }
    }
}
