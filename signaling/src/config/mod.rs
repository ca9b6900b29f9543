//! `prism serve --config prism.yaml`: the server's settings in a YAML file.
//!
//! The layout is LiveKit's: where Prism has a setting LiveKit has, it has LiveKit's name
//! and meaning (`port`, `keys`, `key_file`, `rtc.udp_port`, `rtc.node_ip`, `turn.*`, …),
//! so an operator's `livekit.yaml` starts Prism as it is. LiveKit keys Prism does not
//! implement are accepted with a warning each; keys that are nobody's are refused
//! ([`keys`] says which is which). Prism's own settings (`rtc.ip`, `rtc.cores`,
//! `rtc.driver`, `rtc.interface`, `rtc.xdp_first_queue`, `rtc.xdp_bind`) sit beside
//! LiveKit's.
//!
//! Precedence, lowest first: the file (or `--config-body` / `LIVEKIT_CONFIG`), then the
//! environment, then command-line flags. See `prism.example.yaml` at the repository root
//! for Prism's keys.

mod keys;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

/// The whole file. Every field is optional; what is absent keeps its default.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP and WebSocket port (7880).
    pub port: Option<u16>,
    /// Address the HTTP server listens on (127.0.0.1).
    pub bind_address: Option<IpAddr>,
    /// LiveKit's form: every address the HTTP server listens on.
    pub bind_addresses: Vec<IpAddr>,
    /// API key → secret.
    pub keys: BTreeMap<String, String>,
    /// A file of `key: secret` lines, read in place of `keys` (LiveKit's `key_file`).
    pub key_file: Option<PathBuf>,
    /// LiveKit's older spelling of `logging.level`.
    pub log_level: Option<String>,
    /// LiveKit's `development: true`: as `--dev`.
    pub development: Option<bool>,
    pub rtc: RtcConfig,
    pub logging: LoggingConfig,
    pub room: RoomConfig,
    pub recording: RecordingConfig,
    pub turn: TurnConfig,
    pub ingress: IngressConfig,
    /// Several nodes sharing rooms: LiveKit's `redis:` section (see `docs/cluster.md`).
    pub redis: RedisConfig,
    /// Prism's own cluster settings, beside LiveKit's `redis:`.
    pub cluster: ClusterConfig,
    /// What the file said that Prism ignored, one line each, for the caller to log once
    /// logging is up.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// The media plane.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtcConfig {
    /// Address the media sockets bind to (127.0.0.1); also the one clients are given,
    /// unless `node_ip` or `use_external_ip` says otherwise.
    pub ip: Option<IpAddr>,
    /// The address clients are given for media (ICE candidates, WHIP/WHEP answers) when
    /// it is not `ip`: the public address of a host behind NAT, or the host's address
    /// when `ip` is `0.0.0.0` (LiveKit's `rtc.node_ip`). A list gives several, in order of
    /// preference.
    #[serde(deserialize_with = "one_or_many")]
    pub node_ip: Vec<IpAddr>,
    /// UDP port of core 0, core *i* using `udp_port + i` (7882); or LiveKit's range form
    /// `"7882-7892"`, which must hold one port per core.
    pub udp_port: Option<PortSpec>,
    /// ICE over TCP (RFC 6544 passive candidates, RFC 4571 framing) on this port.
    pub tcp_port: Option<u16>,
    /// A port range instead of `udp_port`: the cores take ports from its start, and it
    /// must hold one port per core.
    pub port_range_start: Option<u16>,
    pub port_range_end: Option<u16>,
    /// Ask `stun_servers` which address this host has on the internet, and advertise
    /// that (LiveKit's `rtc.use_external_ip`).
    pub use_external_ip: Option<bool>,
    /// With `use_external_ip`: advertise the bound (internal) address too, after the
    /// external one.
    pub advertise_internal_ip: Option<bool>,
    /// STUN servers, `host:port` (port 3478 if absent): used by `use_external_ip`, and
    /// handed to clients.
    pub stun_servers: Vec<String>,
    /// TURN servers handed to clients in the JoinResponse.
    pub turn_servers: Vec<TurnServer>,
    /// Prism is always ICE-lite; `false` is accepted with a warning.
    pub use_ice_lite: Option<bool>,
    /// Packets kept per video layer for retransmissions (1024).
    pub packet_buffer_size_video: Option<usize>,
    /// Packets kept per audio track for retransmissions (128).
    pub packet_buffer_size_audio: Option<usize>,
    /// CPU ids for the media cores (default: every CPU).
    pub cores: Option<Vec<usize>>,
    /// `auto`, `io_uring`, `mmsg` or `af_xdp`.
    pub driver: Option<String>,
    /// The interface of the `af_xdp` driver.
    pub interface: Option<String>,
    /// The receive queue the first media core serves with `af_xdp` (0).
    pub xdp_first_queue: Option<u32>,
    /// `copy`, `zerocopy` or `auto`: how `af_xdp` sockets bind (`copy`).
    pub xdp_bind: Option<String>,
}

/// `rtc.udp_port`: one port, or LiveKit's `"first-last"` range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub first: u16,
    pub last: u16,
}

impl std::str::FromStr for PortSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("a port or a range such as 7882-7892, not {s:?}");
        let (a, b) = match s.trim().split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (s.trim(), s.trim()),
        };
        let first: u16 = a.parse().map_err(|_| bad())?;
        let last: u16 = b.parse().map_err(|_| bad())?;
        if first == 0 && last != 0 || first > last {
            return Err(bad());
        }
        Ok(Self { first, last })
    }
}

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Port(u16),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Port(p) => Ok(PortSpec { first: p, last: p }),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(IpAddr),
        Many(Vec<IpAddr>),
    }
    Ok(match Option::<Raw>::deserialize(d)? {
        None => Vec::new(),
        Some(Raw::One(ip)) => vec![ip],
        Some(Raw::Many(v)) => v,
    })
}

/// An external TURN server for clients (`rtc.turn_servers`), LiveKit's shape.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnServer {
    pub host: String,
    pub port: u16,
    /// `udp`, `tcp` or `tls`.
    pub protocol: String,
    /// Long-term credentials, handed to every client as they are.
    pub username: String,
    pub credential: String,
    /// A shared secret (coturn's `static-auth-secret`): each client gets its own
    /// time-limited credentials (TURN REST API). Wins over `secret_file`.
    pub secret: String,
    /// A file holding the shared secret.
    pub secret_file: Option<PathBuf>,
    /// Validity of generated credentials, seconds (14400; capped at 86400).
    pub ttl: i64,
}

/// The embedded TURN server (`turn:`), LiveKit's shape.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    pub enabled: bool,
    /// The name clients use in `turns:` URLs; must match the certificate.
    pub domain: Option<String>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// TURN over TLS (5349; 443 behind firewalls that allow only HTTPS).
    pub tls_port: Option<u16>,
    /// TURN over UDP (3478).
    pub udp_port: Option<u16>,
    pub relay_range_start: Option<u16>,
    pub relay_range_end: Option<u16>,
    /// TLS is terminated by a load balancer in front: plain TCP on `tls_port`.
    pub external_tls: bool,
    /// Validity of the credentials handed to clients, seconds (300).
    pub ttl_seconds: Option<i64>,
    /// Allocations one participant's credentials may hold at once (12).
    pub per_user_relay_allocation_limit: Option<i64>,
    /// Restricted peers (loopback, private, link-local) that may still be relayed to.
    pub allow_restricted_peer_cidrs: Vec<String>,
    /// Peers never relayed to.
    pub deny_peer_cidrs: Vec<String>,
    /// Addresses the TURN listeners bind to (default: the media address).
    pub bind_addresses: Vec<IpAddr>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a `tracing` filter such as
    /// `info,prism_signaling=debug`.
    pub level: Option<String>,
    /// One JSON object per line instead of text.
    pub json: Option<bool>,
}

/// RTMP ingress (the Ingress API's encoders).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngressConfig {
    /// TCP port of the RTMP listener (1935, as LiveKit's ingress; 0 picks a free one).
    pub rtmp_port: Option<u16>,
    /// The URL given to encoders in `IngressInfo.url` for RTMP (LiveKit's key; default
    /// `rtmp://<bind address>:<rtmp_port>/live`).
    pub rtmp_base_url: Option<String>,
    /// The base of WHIP ingress URLs, the room name appended (LiveKit's key; default
    /// `http://<bind>/whip`, Prism's WHIP endpoint).
    pub whip_base_url: Option<String>,
}

/// Room defaults, for rooms whose creator does not say.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomConfig {
    /// Seconds a room nobody joined stays open (300).
    pub empty_timeout: Option<u32>,
    /// Seconds a room stays open after its last participant left (20).
    pub departure_timeout: Option<u32>,
    /// Whether the API may unmute a participant's track (false).
    pub enable_remote_unmute: Option<bool>,
    /// Participants a room holds at most, 0 for no limit (0).
    pub max_participants: Option<u32>,
}

/// Recording (the Egress service).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingConfig {
    /// Where recordings with a relative file path go (`./recordings`).
    pub directory: Option<PathBuf>,
}

/// LiveKit's `redis:` section. Any of `address`, `sentinel_addresses` or
/// `cluster_addresses` switches cluster mode on, as in LiveKit.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `host:port` of a standalone Redis.
    pub address: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Database number (standalone and Sentinel).
    pub db: Option<i64>,
    /// TLS to Redis (and to Sentinel's master).
    pub use_tls: Option<bool>,
    /// With `sentinel_addresses`: the monitored master's name.
    pub sentinel_master_name: Option<String>,
    pub sentinel_addresses: Vec<String>,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
    /// Redis Cluster: seed nodes, `host:port`.
    pub cluster_addresses: Vec<String>,
}

impl RedisConfig {
    /// Whether any address is given (cluster mode on).
    pub fn enabled(&self) -> bool {
        self.address
            .as_deref()
            .is_some_and(|a| !a.trim().is_empty())
            || !self.sentinel_addresses.is_empty()
            || !self.cluster_addresses.is_empty()
    }
}

/// Prism's cluster settings (`cluster:`); only read when `redis:` is on.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The secret node-to-node requests are signed with; default: derived from the API
    /// keys (nodes sharing keys share it).
    pub secret: Option<String>,
    /// `host:port` other nodes reach this node's HTTP server at (default: the first
    /// listen address, or the advertised IP with its port when that is unspecified).
    pub internal_address: Option<String>,
    /// Packets per second (in + out) this node takes before it counts as full (placement
    /// prefers headroom): default 200000 per media core.
    pub capacity_pps: Option<u64>,
    /// The region this node is in (placement prefers the ingress's region).
    pub region: Option<String>,
    /// Seconds a draining node (SIGTERM) lets its rooms run before it moves them to
    /// other nodes (default 600).
    pub drain_timeout: Option<u64>,
    /// Where other nodes send relayed media to this node (rooms spanning nodes); the port
    /// is each core's. Default: the first `rtc.node_ip`.
    pub relay_ip: Option<String>,
    /// SRTP on relays between nodes (default on); off only on a trusted private link.
    pub relay_srtp: Option<bool>,
    /// Whether a client's media terminates on the node it reached when another node owns
    /// the room, relayed between the two (default on); off: on the owner, as in LiveKit.
    pub span_rooms: Option<bool>,
}

/// Why a configuration was refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    Io(String, std::io::Error),
    Yaml(String),
    Invalid(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Io(path, e) => write!(f, "reading {path}: {e}"),
            ConfigError::Yaml(e) => write!(f, "bad YAML: {e}"),
            ConfigError::Invalid(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses a YAML document strictly (an empty one is the default configuration).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::parse_with(text, true)
    }

    /// Parses a YAML document. LiveKit keys Prism does not implement become warnings;
    /// keys that are nobody's are errors when `strict`, warnings otherwise.
    pub fn parse_with(text: &str, strict: bool) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut tree: serde_norway::Value =
            serde_norway::from_str(text).map_err(|e| ConfigError::Yaml(e.to_string()))?;
        if tree.is_null() {
            return Ok(Self::default());
        }
        if !tree.is_mapping() {
            return Err(ConfigError::Yaml(
                "the configuration must be a mapping of keys to values".into(),
            ));
        }
        let sifted = keys::sift(&mut tree, strict);
        if !sifted.unknown.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "unknown configuration key{} {} (neither Prism's nor LiveKit's; \
                 --disable-strict-config turns this into a warning)",
                if sifted.unknown.len() > 1 { "s" } else { "" },
                sifted
                    .unknown
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let mut c: Config =
            serde_norway::from_value(tree).map_err(|e| ConfigError::Yaml(e.to_string()))?;
        c.warnings = sifted.warnings;
        c.validate()?;
        Ok(c)
    }

    pub fn load(path: &Path, strict: bool) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Io(path.display().to_string(), e))?;
        Self::parse_with(&text, strict).map_err(|e| match e {
            ConfigError::Yaml(m) => ConfigError::Yaml(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        for (k, s) in &self.keys {
            if k.is_empty() || s.is_empty() {
                return Err(ConfigError::Invalid(
                    "keys: every API key needs a non-empty secret".into(),
                ));
            }
        }
        let r = &mut self.rtc;
        if r.udp_port.is_some() && r.port_range_start.is_some() {
            // LiveKit's rule: the range wins and udp_port is not used.
            self.warnings.push(
                "config key `rtc.udp_port` is ignored because `rtc.port_range_start` is set \
                 (as in LiveKit)"
                    .into(),
            );
            r.udp_port = None;
        }
        if r.use_ice_lite == Some(false) {
            self.warnings.push(
                "config key `rtc.use_ice_lite: false` is ignored: Prism is always an ICE-lite \
                 server"
                    .into(),
            );
        }
        for (what, n) in [
            ("packet_buffer_size_video", r.packet_buffer_size_video),
            ("packet_buffer_size_audio", r.packet_buffer_size_audio),
        ] {
            if n.is_some_and(|n| !(16..=1 << 16).contains(&n)) {
                return Err(ConfigError::Invalid(format!(
                    "rtc: {what} must be between 16 and 65536 packets"
                )));
            }
        }
        for t in &r.turn_servers {
            if t.host.is_empty() || t.port == 0 {
                return Err(ConfigError::Invalid(
                    "rtc.turn_servers: every server needs a host and a port".into(),
                ));
            }
            if !matches!(t.protocol.as_str(), "udp" | "tcp" | "tls" | "") {
                return Err(ConfigError::Invalid(format!(
                    "rtc.turn_servers: protocol is udp, tcp or tls, not {:?}",
                    t.protocol
                )));
            }
        }
        match (r.port_range_start, r.port_range_end) {
            (Some(a), Some(b)) if a > b => Err(ConfigError::Invalid(format!(
                "rtc: port_range_start {a} is above port_range_end {b}"
            ))),
            (Some(_), None) | (None, Some(_)) => Err(ConfigError::Invalid(
                "rtc: port_range_start and port_range_end go together".into(),
            )),
            _ => Ok(()),
        }
    }

    /// The UDP ports available to the media cores: `udp_port` (one port, or a range),
    /// or `port_range_start`-`port_range_end`. `None` when the file does not say.
    pub fn media_ports(&self) -> Option<PortSpec> {
        let r = &self.rtc;
        if let (Some(first), Some(last)) = (r.port_range_start, r.port_range_end) {
            return Some(PortSpec { first, last });
        }
        r.udp_port
    }

    /// The UDP port of core 0 for `cores` media cores. `None` when the file does not say.
    pub fn media_base_port(&self, cores: usize) -> Result<Option<u16>, ConfigError> {
        let r = &self.rtc;
        if let (Some(first), Some(last)) = (r.port_range_start, r.port_range_end) {
            // An explicit range is a range even when it holds one port.
            return PortSpec::range_base(first, last, cores)
                .map(Some)
                .map_err(ConfigError::Invalid);
        }
        r.udp_port
            .map(|p| p.base_for(cores).map_err(ConfigError::Invalid))
            .transpose()
    }
}

impl PortSpec {
    /// The first port, checking that the range holds one port per core (a single port
    /// stands for `port`, `port + 1`, … as Prism always used it).
    pub fn base_for(&self, cores: usize) -> Result<u16, String> {
        if self.first == self.last {
            return Ok(self.first);
        }
        Self::range_base(self.first, self.last, cores)
    }

    fn range_base(first: u16, last: u16, cores: usize) -> Result<u16, String> {
        let have = usize::from(last.saturating_sub(first)) + 1;
        if first != 0 && have < cores {
            return Err(format!(
                "rtc: the port range {first}-{last} holds {have} ports, but {cores} media \
                 cores need one each"
            ));
        }
        Ok(first)
    }
}

/// Reads LiveKit's `key_file`: `key: secret` lines (YAML).
pub fn read_key_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Io(path.display().to_string(), e))?;
    let keys = parse_keys(&text)?;
    if keys.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "key file {} holds no `key: secret` line",
            path.display()
        )));
    }
    Ok(keys)
}

/// Keys from the environment, LiveKit's way (`LIVEKIT_KEYS="key: secret"`, a YAML map, so
/// several keys go on several lines or in `{k1: s1, k2: s2}`) or Prism's
/// (`PRISM_KEYS="key:secret,key2:secret2"`). Either form is accepted in either variable.
pub fn parse_keys(spec: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    if let Ok(map) = serde_norway::from_str::<BTreeMap<String, String>>(spec) {
        if map.iter().all(|(k, s)| !k.is_empty() && !s.is_empty()) && !map.is_empty() {
            return Ok(map);
        }
    }
    let mut keys = BTreeMap::new();
    for pair in spec
        .split([',', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let Some((k, s)) = pair.split_once(':') else {
            return Err(ConfigError::Invalid(format!(
                "keys are `KEY: SECRET` pairs, got {pair:?}"
            )));
        };
        let (k, s) = (k.trim(), s.trim());
        if k.is_empty() || s.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "keys are `KEY: SECRET` pairs, got {pair:?}"
            )));
        }
        keys.insert(k.to_owned(), s.to_owned());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses() {
        let text = include_str!("../../../prism.example.yaml");
        let c = Config::parse(text).unwrap();
        assert_eq!(c.port, Some(7880));
        assert!(!c.keys.is_empty());
        assert_eq!(c.room.empty_timeout, Some(300));
        assert_eq!(c.logging.level.as_deref(), Some("info"));
        assert_eq!(
            c.recording.directory.as_deref(),
            Some(std::path::Path::new("recordings"))
        );
    }

    #[test]
    fn every_key_is_read() {
        let c = Config::parse(
            "port: 9000\nbind_address: 0.0.0.0\nkeys:\n  k1: s1\n  k2: s2\n\
             rtc:\n  ip: 10.0.0.5\n  port_range_start: 50000\n  port_range_end: 50003\n  \
             cores: [0, 1]\n  driver: mmsg\n  xdp_first_queue: 2\n  xdp_bind: auto\n\
             logging:\n  level: debug\n  json: true\n\
             room:\n  empty_timeout: 60\n  departure_timeout: 5\n  enable_remote_unmute: true\n",
        )
        .unwrap();
        assert_eq!(c.port, Some(9000));
        assert_eq!(c.bind_address, Some("0.0.0.0".parse().unwrap()));
        assert_eq!(c.keys.len(), 2);
        assert_eq!(c.rtc.ip, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(c.rtc.cores, Some(vec![0, 1]));
        assert_eq!(c.rtc.driver.as_deref(), Some("mmsg"));
        assert_eq!(c.rtc.xdp_first_queue, Some(2));
        assert_eq!(c.rtc.xdp_bind.as_deref(), Some("auto"));
        assert_eq!(c.logging.json, Some(true));
        assert_eq!(c.room.departure_timeout, Some(5));
        assert_eq!(c.room.enable_remote_unmute, Some(true));
        assert_eq!(c.media_base_port(4).unwrap(), Some(50000));
        assert!(c.media_base_port(5).is_err(), "4 ports for 5 cores");
    }

    #[test]
    fn empty_and_partial_files_keep_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(Config::parse("# nothing\n").unwrap(), Config::default());
        let c = Config::parse("room:\n  empty_timeout: 10\n").unwrap();
        assert_eq!(c.room.empty_timeout, Some(10));
        assert_eq!(c.room.departure_timeout, None);
        assert_eq!(c.media_base_port(2).unwrap(), None);
    }

    #[test]
    fn mistakes_are_refused_with_a_reason() {
        let cases = [
            "prot: 7880\n",  // misspelt key
            "port: 70000\n", // out of range
            "port: [1]\n",   // wrong type
            "rtc:\n  port_range_start: 5\n  port_range_end: 4\n",
            "rtc:\n  port_range_start: 5\n",
            "keys:\n  k: ''\n",
            "bind_address: not-an-ip\n",
            "room: {empty_timeout: -1}\n",
            ": : :\n",
        ];
        for text in cases {
            let e = Config::parse(text).unwrap_err();
            assert!(!e.to_string().is_empty(), "{text:?}");
        }
        let e = Config::parse("prot: 7880\n").unwrap_err().to_string();
        assert!(e.contains("prot"), "names the bad key: {e}");
    }

    #[test]
    fn livekit_forms_are_read() {
        let c = Config::parse(
            "rtc:\n  udp_port: 7882-7892\n  node_ip: [203.0.113.7, 10.0.0.5]\n  \
             turn_servers:\n    - host: turn.example.com\n      port: 443\n      \
             protocol: tls\n      secret: s\n      ttl: 600\n\
             turn:\n  enabled: true\n  udp_port: 3478\n  tls_port: 5349\n\
             bind_addresses: [127.0.0.1]\nkey_file: /nonexistent\n",
        )
        .unwrap();
        let ports = c.media_ports().unwrap();
        assert_eq!((ports.first, ports.last), (7882, 7892));
        assert_eq!(c.media_base_port(11).unwrap(), Some(7882));
        assert!(c.media_base_port(12).is_err());
        assert_eq!(c.rtc.node_ip.len(), 2);
        assert_eq!(c.rtc.turn_servers[0].protocol, "tls");
        assert!(c.turn.enabled);
        let one = Config::parse("rtc:\n  node_ip: 203.0.113.7\n  udp_port: 9000\n").unwrap();
        assert_eq!(
            one.rtc.node_ip,
            vec!["203.0.113.7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(one.media_base_port(4).unwrap(), Some(9000));
        for bad in ["9-1", "a-b", "70000", "1-2-3"] {
            assert!(bad.parse::<PortSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_port_range_wins_over_udp_port_with_a_warning() {
        let c = Config::parse(
            "rtc:\n  udp_port: 1\n  port_range_start: 2\n  port_range_end: 3\n  \
             use_ice_lite: false\n",
        )
        .unwrap();
        assert_eq!(c.media_base_port(2).unwrap(), Some(2));
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    }

    #[test]
    fn every_key_prism_lists_is_a_field() {
        for path in keys::PRISM {
            let mut doc = String::new();
            for (depth, part) in path.split('.').enumerate() {
                doc.push_str(&"  ".repeat(depth));
                doc.push_str(part);
                doc.push_str(":\n");
            }
            if let Err(e) = Config::parse(&doc) {
                assert!(!e.to_string().contains("unknown"), "{path}: {e}");
            }
        }
    }

    #[test]
    fn keys_from_the_environment() {
        let one = parse_keys("key: secret").unwrap();
        assert_eq!(one.get("key").map(String::as_str), Some("secret"));
        let two = parse_keys("k1: s1\nk2: s2").unwrap();
        assert_eq!(two.len(), 2);
        let flow = parse_keys("{k1: s1, k2: s2}").unwrap();
        assert_eq!(flow, two);
        let prism = parse_keys("k1:s1,k2:s2").unwrap();
        assert_eq!(prism, two);
        assert!(parse_keys("nocolon").is_err());
        assert!(parse_keys("k:").is_err());
        assert!(parse_keys("").unwrap().is_empty());
    }
}
