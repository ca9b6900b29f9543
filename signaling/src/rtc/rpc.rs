//! RoomService `PerformRpc`: the server calls a method a participant registered, as
//! LiveKit's server does it. The room sends the participant an `RpcRequest` data packet
//! whose sender identity is the request id (there is no real caller), and the SDK answers
//! with an `RpcAck`, then an `RpcResponse`, both addressed to that identity. The room
//! takes those two packets out of the data relay (nobody else would get them anyway) and
//! hands them to the waiting API call.
//!
//! Timeouts are LiveKit's: the ack must come within [`ACK_TIMEOUT`] (else "connection
//! timeout"), the response within the request's timeout (else "response timeout"). They
//! run in the API call's task; the room only keeps the waiters, and drops one when its
//! caller gave up.

use std::time::Duration;

use prism_proto::livekit as lk;
use prost::Message as _;
use tokio::sync::oneshot;

use super::data::RELIABLE_LABEL;
use super::error::RtcError;
use super::ids::{Identity, RoomName};
use super::room::Room;
use super::RoomManager;

/// How long a participant has to acknowledge a request (LiveKit's
/// `DataChannelRpcMaxRoundTripLatency`).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// The response timeout when the request names none.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request payload (LiveKit's `DataChannelRpcMaxPayloadBytes`).
pub const MAX_PAYLOAD: usize = 15 * 1024;

/// LiveKit's built-in RPC error codes.
pub mod code {
    pub const APPLICATION_ERROR: u32 = 1500;
    pub const CONNECTION_TIMEOUT: u32 = 1501;
    pub const RESPONSE_TIMEOUT: u32 = 1502;
    pub const RECIPIENT_DISCONNECTED: u32 = 1503;
    pub const UNSUPPORTED_METHOD: u32 = 1400;
    pub const RECIPIENT_NOT_FOUND: u32 = 1401;
    pub const REQUEST_PAYLOAD_TOO_LARGE: u32 = 1402;
}

/// An RPC that did not return a payload: the participant's error, or one of LiveKit's
/// built-in ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcFailure {
    pub code: u32,
    pub message: String,
    pub data: String,
}

impl RpcFailure {
    pub fn builtin(code: u32) -> Self {
        let message = match code {
            code::CONNECTION_TIMEOUT => "Connection timeout",
            code::RESPONSE_TIMEOUT => "Response timeout",
            code::RECIPIENT_DISCONNECTED => "Recipient disconnected",
            code::UNSUPPORTED_METHOD => "Method not supported at destination",
            code::RECIPIENT_NOT_FOUND => "Recipient not found",
            code::REQUEST_PAYLOAD_TOO_LARGE => "Request payload too large",
            _ => "Application error in method handler",
        };
        Self {
            code,
            message: message.into(),
            data: String::new(),
        }
    }
}

impl std::fmt::Display for RpcFailure {
    /// As LiveKit's server words it (`RpcError <code>: <message>[: <data>]`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RpcError {}: {}", self.code, self.message)?;
        if !self.data.is_empty() {
            write!(f, ": {}", self.data)?;
        }
        Ok(())
    }
}

impl std::error::Error for RpcFailure {}

/// Why PerformRpc failed: the room model's refusal, or the call's own failure.
#[derive(Debug)]
#[non_exhaustive]
pub enum PerformRpcError {
    Room(RtcError),
    Rpc(RpcFailure),
}

impl From<RtcError> for PerformRpcError {
    fn from(e: RtcError) -> Self {
        Self::Room(e)
    }
}

/// A PerformRpc call waiting in its room.
#[derive(Debug)]
pub(crate) struct RpcWaiter {
    destination: Identity,
    ack: Option<oneshot::Sender<()>>,
    response: Option<oneshot::Sender<Result<String, RpcFailure>>>,
}

struct Sent {
    id: String,
    ack: oneshot::Receiver<()>,
    response: oneshot::Receiver<Result<String, RpcFailure>>,
}

impl Room {
    /// Sends the request to `req.destination_identity`; the answers come back through the
    /// returned receivers.
    fn api_perform_rpc(
        &mut self,
        req: &lk::PerformRpcRequest,
        timeout: Duration,
    ) -> Result<Sent, RtcError> {
        let dest = self
            .by_identity(&req.destination_identity)
            .ok_or(RtcError::ParticipantNotFound)?;
        if !dest.has_signal() {
            return Err(RtcError::FailedPrecondition(
                "the participant has no data channel (WHIP/WHEP)",
            ));
        }
        let destination = dest.identity.clone();
        let id = uuid_like();
        let packet = lk::DataPacket {
            kind: lk::data_packet::Kind::Reliable as i32,
            participant_identity: id.clone(),
            value: Some(lk::data_packet::Value::RpcRequest(lk::RpcRequest {
                id: id.clone(),
                method: req.method.clone(),
                payload: req.payload.clone(),
                response_timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
                version: 1,
                ..Default::default()
            })),
            ..Default::default()
        };
        let sent = self.deliver_data(
            None,
            &[destination.to_string()],
            RELIABLE_LABEL,
            &packet.encode_to_vec(),
        );
        if sent == 0 {
            return Err(RtcError::FailedPrecondition(
                "the participant's data channel is not open yet",
            ));
        }
        let (ack_tx, ack) = oneshot::channel();
        let (resp_tx, response) = oneshot::channel();
        self.rpc_pending.insert(
            id.clone(),
            RpcWaiter {
                destination,
                ack: Some(ack_tx),
                response: Some(resp_tx),
            },
        );
        Ok(Sent { id, ack, response })
    }

    /// A data packet from `sender`: if it answers a pending PerformRpc, it is consumed
    /// here (true) instead of relayed.
    pub(crate) fn take_rpc_reply(&mut self, sender: &Identity, dp: &lk::DataPacket) -> bool {
        use lk::data_packet::Value;
        let id = match &dp.value {
            Some(Value::RpcAck(a)) => &a.request_id,
            Some(Value::RpcResponse(r)) => &r.request_id,
            _ => return false,
        };
        let Some(w) = self.rpc_pending.get_mut(id.as_str()) else {
            return false;
        };
        if &w.destination != sender {
            return false;
        }
        match &dp.value {
            Some(Value::RpcAck(_)) => {
                if let Some(tx) = w.ack.take() {
                    let _ = tx.send(());
                }
            }
            Some(Value::RpcResponse(r)) => {
                let result = match &r.value {
                    Some(lk::rpc_response::Value::Payload(p)) => Ok(p.clone()),
                    Some(lk::rpc_response::Value::Error(e)) => Err(RpcFailure {
                        code: e.code,
                        message: e.message.clone(),
                        data: e.data.clone(),
                    }),
                    // Compressed payloads are only sent to callers that announce support.
                    Some(lk::rpc_response::Value::CompressedPayload(_)) | None => Ok(String::new()),
                };
                if let Some(mut w) = self.rpc_pending.remove(id) {
                    if let Some(tx) = w.response.take() {
                        let _ = tx.send(result);
                    }
                }
            }
            _ => {}
        }
        true
    }
}

impl Room {
    /// The participant left: calls waiting on it fail at once ("recipient disconnected").
    pub(crate) fn fail_rpcs_to(&mut self, identity: &Identity) {
        if self.rpc_pending.is_empty() {
            return;
        }
        let gone: Vec<String> = self
            .rpc_pending
            .iter()
            .filter(|(_, w)| &w.destination == identity)
            .map(|(k, _)| k.clone())
            .collect();
        for id in gone {
            if let Some(w) = self.rpc_pending.remove(&id).and_then(|w| w.response) {
                let _ = w.send(Err(RpcFailure::builtin(code::RECIPIENT_DISCONNECTED)));
            }
        }
    }
}

/// A random request id in UUID form (SDKs treat it as an opaque string).
fn uuid_like() -> String {
    let h = crate::media::random_alnum(32).to_ascii_lowercase();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

impl RoomManager {
    /// RoomService PerformRpc: the participant's answer, or its error.
    pub async fn perform_rpc(
        &self,
        room: &RoomName,
        req: lk::PerformRpcRequest,
    ) -> Result<String, PerformRpcError> {
        if req.payload.len() > MAX_PAYLOAD {
            return Err(PerformRpcError::Rpc(RpcFailure::builtin(
                code::REQUEST_PAYLOAD_TOO_LARGE,
            )));
        }
        let timeout = if req.response_timeout_ms == 0 {
            DEFAULT_RESPONSE_TIMEOUT
        } else {
            Duration::from_millis(u64::from(req.response_timeout_ms))
        };
        let start = tokio::time::Instant::now();
        let Sent { id, ack, response } = self
            .with_room(room, move |r| r.api_perform_rpc(&req, timeout))
            .await?;
        let result = wait(ack, response, start, timeout).await;
        if result.is_err() {
            // The participant may still answer: the room forgets the call.
            let _ = self
                .with_room(room, move |r| {
                    r.rpc_pending.remove(&id);
                    Ok(())
                })
                .await;
        }
        result.map_err(PerformRpcError::Rpc)
    }
}

async fn wait(
    ack: oneshot::Receiver<()>,
    response: oneshot::Receiver<Result<String, RpcFailure>>,
    start: tokio::time::Instant,
    timeout: Duration,
) -> Result<String, RpcFailure> {
    let gone = || RpcFailure::builtin(code::RECIPIENT_DISCONNECTED);
    let mut response = response;
    // A response may come without a separate ack: it acknowledges too.
    tokio::select! {
        a = tokio::time::timeout_at(start + ACK_TIMEOUT, ack) => match a {
            Ok(Ok(())) => {}
            // The waiter was dropped with its room, or answered at once.
            Ok(Err(_)) => {}
            Err(_) => return Err(RpcFailure::builtin(code::CONNECTION_TIMEOUT)),
        },
        r = &mut response => return r.unwrap_or_else(|_| Err(gone())),
    }
    match tokio::time::timeout_at(start + timeout, response).await {
        Ok(r) => r.unwrap_or_else(|_| Err(gone())),
        Err(_) => Err(RpcFailure::builtin(code::RESPONSE_TIMEOUT)),
    }
}
