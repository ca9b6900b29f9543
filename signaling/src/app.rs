//! The state every request handler reaches: the key store, the media plane, the rooms and
//! the server's settings. Built once by `prism serve` (or a test) and shared behind an
//! `Arc`.

use prism_forwarder::runtime::Forwarder;

use crate::agent::AgentService;
use crate::auth::KeyStore;
use crate::rtc::{RoomDefaults, RoomManager};

/// Server settings that change what RoomService allows.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoomServiceOptions {
    /// Whether MutePublishedTrack may unmute (LiveKit's `room.enable_remote_unmute`, off by
    /// default: the server can silence someone, never make them heard).
    pub enable_remote_unmute: bool,
}

/// What `prism serve` configures beyond keys and the media plane.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    pub room_defaults: RoomDefaults,
    pub room_service: RoomServiceOptions,
    /// Where recordings go (`recording.directory`); unset: `./recordings`.
    pub recording_directory: Option<std::path::PathBuf>,
}

/// What every request handler can reach.
pub struct AppState {
    pub keys: KeyStore,
    pub forwarder: Forwarder,
    pub rooms: RoomManager,
    /// Agent workers and their jobs (`/agent`, AgentDispatchService).
    pub agents: AgentService,
    /// Ingresses (the Ingress API, RTMP encoders).
    pub ingresses: crate::ingress::Ingresses,
    /// Recordings, running and ended (the Egress service).
    pub egresses: crate::egress::Egresses,
    pub dev: bool,
    pub room_service: RoomServiceOptions,
    /// What clients are given for media, most preferred first (see
    /// [`RoomDefaults::candidate_ips`]); empty: each core's own address.
    pub candidate_ips: std::sync::Arc<[std::net::IpAddr]>,
    /// This node's membership of a cluster (`redis:` configured); `None`: a single node.
    pub cluster: Option<std::sync::Arc<crate::cluster::Cluster>>,
}

impl AppState {
    pub fn new(keys: KeyStore, forwarder: Forwarder, dev: bool) -> std::io::Result<Self> {
        Self::with_options(keys, forwarder, dev, ServeOptions::default())
    }

    /// Fails only if the agent service's thread cannot be started.
    pub fn with_options(
        keys: KeyStore,
        forwarder: Forwarder,
        dev: bool,
        options: ServeOptions,
    ) -> std::io::Result<Self> {
        let candidate_ips = options.room_defaults.candidate_ips.clone();
        let egresses = crate::egress::Egresses::new(
            options
                .recording_directory
                .clone()
                .unwrap_or_else(|| crate::egress::DEFAULT_DIRECTORY.into()),
        );
        let agents = AgentService::start()?;
        let mut room_defaults = options.room_defaults;
        room_defaults.egresses = Some(egresses.clone());
        let rooms = RoomManager::start(
            forwarder.client(),
            room_defaults,
            std::sync::Arc::new(agents.clone()),
        );
        Ok(Self {
            keys,
            forwarder,
            rooms,
            agents,
            ingresses: crate::ingress::Ingresses::new(),
            egresses,
            dev,
            room_service: options.room_service,
            candidate_ips,
            cluster: None,
        })
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("dev", &self.dev).finish()
    }
}
