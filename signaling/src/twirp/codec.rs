//! Request and response bodies in Twirp's two encodings: binary protobuf (LiveKit's Python,
//! Rust and Go SDKs) and protobuf's canonical JSON mapping (the Node SDK, curl).
//!
//! JSON goes through reflection rather than serde derives on the generated types: the
//! descriptor set compiled with the `.proto` files (`prism_proto::DESCRIPTORS`) drives
//! `prost-reflect`, which implements the mapping exactly (int64 as strings, enums by name,
//! bytes as base64, both field-name styles accepted). The JSON is turned into a dynamic
//! message, then into the prost type by re-encoding, so the handlers only ever see prost
//! types.
//!
//! The choices follow LiveKit's Twirp server (Go `protojson`): unknown fields are ignored
//! on input; output uses the `.proto` field names and emits every field, defaults included.

use std::sync::OnceLock;

use prost::Message;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions,
};

use super::{Code, TwirpError};

/// How a request body is encoded; the response uses the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Protobuf,
    Json,
}

impl Codec {
    /// The codec for a `Content-Type` value, parameters (`;charset=…`) ignored.
    pub fn from_content_type(value: &str) -> Option<Self> {
        let mime = value.split(';').next().unwrap_or("").trim();
        if mime.eq_ignore_ascii_case("application/protobuf") {
            Some(Codec::Protobuf)
        } else if mime.eq_ignore_ascii_case("application/json") {
            Some(Codec::Json)
        } else {
            None
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Protobuf => "application/protobuf",
            Codec::Json => "application/json",
        }
    }
}

/// The descriptors of every compiled `.proto` file, decoded once.
pub fn pool() -> Result<&'static DescriptorPool, TwirpError> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(prism_proto::DESCRIPTORS).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| TwirpError::internal(format!("descriptor set: {e}")))
}

/// Decodes a request body of message type `desc` into `T`.
pub fn decode<T: Message + Default>(
    codec: Codec,
    desc: &MessageDescriptor,
    body: &[u8],
) -> Result<T, TwirpError> {
    match codec {
        Codec::Protobuf => T::decode(body).map_err(|e| {
            TwirpError::new(
                Code::Malformed,
                format!("the protobuf request could not be decoded: {e}"),
            )
        }),
        Codec::Json => {
            let msg = json_to_dynamic(desc, body).map_err(|e| {
                TwirpError::new(
                    Code::Malformed,
                    format!("the json request could not be decoded: {e}"),
                )
            })?;
            msg.transcode_to::<T>()
                .map_err(|e| TwirpError::internal(format!("JSON request transcoding: {e}")))
        }
    }
}

/// Encodes a response of message type `desc`.
pub fn encode<T: Message>(
    codec: Codec,
    desc: &MessageDescriptor,
    msg: &T,
) -> Result<Vec<u8>, TwirpError> {
    match codec {
        Codec::Protobuf => Ok(msg.encode_to_vec()),
        Codec::Json => {
            let mut dynamic = DynamicMessage::new(desc.clone());
            dynamic
                .transcode_from(msg)
                .map_err(|e| TwirpError::internal(format!("JSON response transcoding: {e}")))?;
            dynamic_to_json(&dynamic)
                .map_err(|e| TwirpError::internal(format!("JSON response: {e}")))
        }
    }
}

/// Parses protobuf JSON: either field-name style, unknown fields ignored, nothing after the
/// object.
pub fn json_to_dynamic(
    desc: &MessageDescriptor,
    body: &[u8],
) -> Result<DynamicMessage, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let msg = DynamicMessage::deserialize_with_options(desc.clone(), &mut de, &options)?;
    de.end()?;
    Ok(msg)
}

/// Writes protobuf JSON as LiveKit's server does: proto field names, defaults emitted.
pub fn dynamic_to_json(msg: &DynamicMessage) -> Result<Vec<u8>, serde_json::Error> {
    let mut ser = serde_json::Serializer::new(Vec::new());
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false);
    msg.serialize_with_options(&mut ser, &options)?;
    Ok(ser.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_proto::livekit as lk;

    fn desc(name: &str) -> MessageDescriptor {
        pool().unwrap().get_message_by_name(name).unwrap()
    }

    fn from_json<T: Message + Default>(name: &str, json: &str) -> Result<T, TwirpError> {
        decode(Codec::Json, &desc(name), json.as_bytes())
    }

    fn to_json<T: Message>(name: &str, msg: &T) -> serde_json::Value {
        let bytes = encode(Codec::Json, &desc(name), msg).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn content_types_ignore_parameters_and_case() {
        assert_eq!(
            Codec::from_content_type("application/json;charset=UTF-8"),
            Some(Codec::Json)
        );
        assert_eq!(
            Codec::from_content_type("Application/Protobuf ; charset=binary"),
            Some(Codec::Protobuf)
        );
        assert_eq!(Codec::from_content_type("text/plain"), None);
        assert_eq!(Codec::from_content_type(""), None);
    }

    #[test]
    fn both_field_name_styles_are_accepted() {
        // Node's server SDK writes lowerCamelCase; curl users often write the proto names.
        let camel: lk::CreateRoomRequest = from_json(
            "livekit.CreateRoomRequest",
            r#"{"name":"r","emptyTimeout":30,"maxParticipants":4,"departureTimeout":5}"#,
        )
        .unwrap();
        let snake: lk::CreateRoomRequest = from_json(
            "livekit.CreateRoomRequest",
            r#"{"name":"r","empty_timeout":30,"max_participants":4,"departure_timeout":5}"#,
        )
        .unwrap();
        assert_eq!(camel, snake);
        assert_eq!(camel.empty_timeout, 30);
        assert_eq!(camel.max_participants, 4);
        assert_eq!(camel.departure_timeout, 5);
    }

    #[test]
    fn unknown_fields_are_ignored_and_garbage_is_malformed() {
        let r: lk::DeleteRoomRequest = from_json(
            "livekit.DeleteRoomRequest",
            r#"{"room":"x","futureField":{"a":[1,2]}}"#,
        )
        .unwrap();
        assert_eq!(r.room, "x");
        for bad in [
            "",
            "{",
            "[]",
            r#"{"room":5}"#,
            r#"{"room":"x"} trailing"#,
            "\u{0}",
        ] {
            let e =
                from_json::<lk::DeleteRoomRequest>("livekit.DeleteRoomRequest", bad).unwrap_err();
            assert_eq!(e.code, Code::Malformed, "{bad:?}: {e:?}");
        }
    }

    #[test]
    fn bytes_enums_and_optionals_follow_the_json_mapping() {
        // "aGk=" is base64 for "hi"; kind by name; topic is proto3 `optional`.
        let r: lk::SendDataRequest = from_json(
            "livekit.SendDataRequest",
            r#"{"room":"r","data":"aGk=","kind":"LOSSY","topic":"t",
                "destinationIdentities":["bob"],"nonce":"AAECAwQFBgcICQoLDA0ODw=="}"#,
        )
        .unwrap();
        assert_eq!(r.data, b"hi");
        assert_eq!(r.kind, lk::data_packet::Kind::Lossy as i32);
        assert_eq!(r.topic.as_deref(), Some("t"));
        assert_eq!(r.destination_identities, ["bob"]);
        assert_eq!(r.nonce, (0u8..16).collect::<Vec<_>>());
        // Enums by number too.
        let r: lk::SendDataRequest =
            from_json("livekit.SendDataRequest", r#"{"room":"r","kind":1}"#).unwrap();
        assert_eq!(r.kind, 1);
        assert_eq!(r.topic, None);
    }

    #[test]
    fn maps_and_nested_messages_decode() {
        let r: lk::UpdateParticipantRequest = from_json(
            "livekit.UpdateParticipantRequest",
            r#"{"room":"r","identity":"a","attributes":{"k":"v"},
                "permission":{"canPublish":true,"can_subscribe":true,
                              "canPublishSources":["CAMERA","MICROPHONE"]}}"#,
        )
        .unwrap();
        assert_eq!(r.attributes.get("k").map(String::as_str), Some("v"));
        let p = r.permission.unwrap();
        assert!(p.can_publish && p.can_subscribe && !p.can_publish_data);
        assert_eq!(
            p.can_publish_sources,
            [
                lk::TrackSource::Camera as i32,
                lk::TrackSource::Microphone as i32
            ]
        );
    }

    #[test]
    fn responses_use_proto_names_and_emit_defaults() {
        let room = lk::Room {
            sid: "RM_x".into(),
            name: "r".into(),
            creation_time: 1_700_000_000,
            num_participants: 0,
            ..Default::default()
        };
        let v = to_json("livekit.Room", &room);
        assert_eq!(v["sid"], "RM_x");
        // Defaults are present, under their proto names.
        assert_eq!(v["num_participants"], 0);
        assert_eq!(v["metadata"], "");
        assert!(v.get("numParticipants").is_none());
        // int64 is a string in protobuf JSON.
        assert_eq!(v["creation_time"], "1700000000");

        let p = lk::ParticipantInfo {
            identity: "a".into(),
            state: lk::participant_info::State::Active as i32,
            ..Default::default()
        };
        let v = to_json(
            "livekit.ListParticipantsResponse",
            &lk::ListParticipantsResponse {
                participants: vec![p],
            },
        );
        assert_eq!(v["participants"][0]["identity"], "a");
        assert_eq!(v["participants"][0]["state"], "ACTIVE");
        assert_eq!(v["participants"][0]["tracks"], serde_json::json!([]));
        let empty = to_json("livekit.DeleteRoomResponse", &lk::DeleteRoomResponse {});
        assert_eq!(empty, serde_json::json!({}));
    }

    #[test]
    fn json_round_trips_through_protobuf() {
        let req = lk::MuteRoomTrackRequest {
            room: "r".into(),
            identity: "a".into(),
            track_sid: "TR_1".into(),
            muted: true,
        };
        let d = desc("livekit.MuteRoomTrackRequest");
        let json = encode(Codec::Json, &d, &req).unwrap();
        let back: lk::MuteRoomTrackRequest = decode(Codec::Json, &d, &json).unwrap();
        assert_eq!(back, req);
        let bin = encode(Codec::Protobuf, &d, &req).unwrap();
        let back: lk::MuteRoomTrackRequest = decode(Codec::Protobuf, &d, &bin).unwrap();
        assert_eq!(back, req);
        let e = decode::<lk::MuteRoomTrackRequest>(Codec::Protobuf, &d, &[0xff, 0xff]).unwrap_err();
        assert_eq!(e.code, Code::Malformed);
    }
}
