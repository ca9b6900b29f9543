//! Data packets: what a participant sends on its data channels is relayed to the others
//! (or to those it names), with its identity stamped so that nobody can speak for someone
//! else. All recipients of a message are one `SendData` command, sent without waiting: a
//! message to fifty participants costs one queue push, not fifty round trips.

use pb::command::Body as Cmd;
use prism_proto::control as pb;
use prism_proto::livekit as lk;
use prost::Message as _;

use super::ids::{ParticipantSid, TransportId};
use super::node::Counters;
use super::room::Room;

/// Data channel labels the clients open, by `DataPacket.Kind`.
pub const RELIABLE_LABEL: &str = "_reliable";
pub const LOSSY_LABEL: &str = "_lossy";

impl Room {
    /// A data packet from a participant: relayed with the sender's identity stamped, to its
    /// destinations or everyone else.
    pub(crate) fn on_data(&mut self, transport_id: TransportId, label: &str, data: &[u8]) {
        let Some(sender) = self.by_transport(transport_id) else {
            return;
        };
        if !sender.permission.can_publish_data {
            Counters::bump(&self.counters.refused_data, 1);
            return;
        }
        let Ok(dp) = lk::DataPacket::decode(data) else {
            Counters::bump(&self.counters.malformed_data, 1);
            tracing::debug!(participant = %sender.sid, "malformed data packet dropped");
            return;
        };
        if !self.rpc_pending.is_empty() {
            let identity = sender.identity.clone();
            if self.take_rpc_reply(&identity, &dp) {
                return;
            }
        }
        let Some(sender) = self.by_transport(transport_id) else {
            return;
        };
        let mut dests = dp.destination_identities;
        if dests.is_empty() {
            if let Some(lk::data_packet::Value::User(u)) = dp.value {
                dests = u.destination_identities;
            }
        }
        let identity = if sender.permission.hidden {
            ""
        } else {
            sender.identity.as_str()
        };
        let out = stamp_sender(data, identity, sender.sid.as_str());
        let from = sender.sid.clone();
        self.deliver_data(Some(&from), &dests, label, &out);
    }

    /// Sends an encoded data packet to every session in the room but `from`, or only to the
    /// participants whose identity is in `dests` when it is not empty. Returns how many it
    /// was sent to.
    pub(crate) fn deliver_data(
        &mut self,
        from: Option<&ParticipantSid>,
        dests: &[String],
        label: &str,
        packet: &[u8],
    ) -> usize {
        let targets: Vec<(usize, TransportId)> = self
            .participants
            .iter()
            .filter(|q| Some(&q.sid) != from && q.has_signal())
            .filter(|q| dests.is_empty() || dests.iter().any(|d| q.identity == *d.as_str()))
            .filter_map(|q| q.publisher.as_ref().map(|pc| (q.site, pc.transport_id)))
            .collect();
        Counters::bump(&self.counters.data_relayed, targets.len() as u64);
        // One command per site the receivers' transports live on.
        let mut sites: Vec<usize> = targets.iter().map(|(s, _)| *s).collect();
        sites.sort_unstable();
        sites.dedup();
        for site in sites {
            let ids: Vec<u64> = targets
                .iter()
                .filter(|(s, _)| *s == site)
                .map(|(_, t)| t.0)
                .collect();
            if let Some((first, rest)) = ids.split_first() {
                self.command(Cmd::SendData(pb::SendData {
                    room_id: self.site_room(site).0,
                    transport_id: *first,
                    label: label.to_owned(),
                    binary: true,
                    data: packet.to_vec(),
                    also_transport_ids: rest.to_vec(),
                }));
            }
        }
        targets.len()
    }
}

/// Appends the sender's identity (field 4) and sid (field 17) to an encoded `DataPacket`.
/// For singular fields protobuf keeps the last value, so this overrides whatever the sender
/// wrote, and everything Prism does not model travels on untouched.
pub fn stamp_sender(packet: &[u8], identity: &str, sid: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(packet.len() + identity.len() + sid.len() + 8);
    out.extend_from_slice(packet);
    prost::encoding::string::encode(4, &identity.to_owned(), &mut out);
    prost::encoding::string::encode(17, &sid.to_owned(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_packet_keeps_unknown_payloads_and_overrides_sender() {
        // A DataPacket with a chat message (field 9, not modelled) and a forged identity.
        let mut raw = Vec::new();
        prost::encoding::string::encode(4, &"forged".to_owned(), &mut raw);
        prost::encoding::bytes::encode(9, &vec![0x22u8, 0x02, b'h', b'i'], &mut raw);
        let out = stamp_sender(&raw, "alice", "PA_abc");
        let dp = lk::DataPacket::decode(out.as_slice()).unwrap();
        assert_eq!(dp.participant_identity, "alice");
        assert_eq!(dp.participant_sid, "PA_abc");
        assert!(
            out.windows(4).any(|w| w == [0x22, 0x02, b'h', b'i']),
            "unknown field kept"
        );
    }
}
