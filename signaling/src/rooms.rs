//! The in-memory registry of rooms, what is published in them and the sessions attached,
//! shared by every signaling front end (WHIP/WHEP now, the LiveKit protocol next).
//!
//! It maps names to the forwarder's numeric ids and remembers what the media plane was told,
//! so that a viewer arriving later can be given every published track. The forwarder holds
//! the media state; this holds only what signaling needs to answer requests.

use std::collections::HashMap;

use crate::sdp::{CodecParams, MediaKind};

/// A track published in a room.
#[derive(Clone, Debug)]
pub struct PublishedTrack {
    pub track_id: u64,
    pub kind: MediaKind,
    /// The codec as the publisher sends it (its payload type).
    pub codec: CodecParams,
    /// The session that publishes it.
    pub session: String,
    pub stream_id: String,
}

/// A WHIP or WHEP session: one WebRTC transport.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    pub transport_id: u64,
    pub identity: String,
    pub publisher: bool,
}

#[derive(Debug, Default)]
pub struct Room {
    pub id: u64,
    pub name: String,
    pub tracks: Vec<PublishedTrack>,
    pub sessions: HashMap<String, Session>,
}

/// Every room of this node.
#[derive(Debug, Default)]
pub struct Rooms {
    rooms: HashMap<String, Room>,
}

impl Rooms {
    /// A fresh id for a forwarder object (room, transport, track, down track).
    pub fn next_id(&self) -> u64 {
        crate::media::next_id()
    }

    pub fn get(&self, name: &str) -> Option<&Room> {
        self.rooms.get(name)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Room> {
        self.rooms.get_mut(name)
    }

    /// The room called `name`, and whether it was just created.
    pub fn get_or_insert(&mut self, name: &str) -> (&mut Room, bool) {
        let mut created = false;
        if !self.rooms.contains_key(name) {
            let id = self.next_id();
            self.rooms.insert(
                name.to_string(),
                Room {
                    id,
                    name: name.to_string(),
                    ..Default::default()
                },
            );
            created = true;
        }
        let room = self.rooms.get_mut(name).expect("inserted above");
        (room, created)
    }

    pub fn remove(&mut self, name: &str) -> Option<Room> {
        self.rooms.remove(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Room> {
        self.rooms.values()
    }
}
