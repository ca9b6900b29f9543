//! `prism serve --config prism.yaml`: the server's settings in a YAML file.
//!
//! The layout borrows LiveKit's names where Prism has the same setting (`port`, `keys`,
//! `rtc.udp_port`, `rtc.port_range_start`/`end`, `logging.level`, `room.empty_timeout`,
//! `room.departure_timeout`, `room.enable_remote_unmute`), so a LiveKit operator finds
//! them where they expect; Prism's own (`rtc.cores`, `rtc.driver`) sit beside them.
//! Unknown keys are errors: a misspelt setting would otherwise be silently ignored.
//!
//! Precedence, lowest first: the file, then the environment (`LIVEKIT_KEYS` or
//! `PRISM_KEYS` replace the file's keys), then command-line flags. See
//! `prism.example.yaml` at the repository root for every key.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

/// The whole file. Every field is optional; what is absent keeps its default.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP and WebSocket port (7880).
    pub port: Option<u16>,
    /// Address the HTTP server listens on (127.0.0.1).
    pub bind_address: Option<IpAddr>,
    /// API key → secret.
    pub keys: BTreeMap<String, String>,
    pub rtc: RtcConfig,
    pub logging: LoggingConfig,
    pub room: RoomConfig,
}

/// The media plane.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtcConfig {
    /// Address the media sockets bind to (127.0.0.1); also the one clients are given,
    /// unless `node_ip` says otherwise.
    pub ip: Option<IpAddr>,
    /// The address clients are given for media (ICE candidates, WHIP/WHEP answers) when
    /// it is not `ip`: the public address of a host behind NAT, or the host's address
    /// when `ip` is `0.0.0.0` (LiveKit's `rtc.node_ip`).
    pub node_ip: Option<IpAddr>,
    /// UDP port of core 0; core *i* uses `udp_port + i` (7882).
    pub udp_port: Option<u16>,
    /// A port range instead of `udp_port`: the cores take ports from its start, and it
    /// must hold one port per core.
    pub port_range_start: Option<u16>,
    pub port_range_end: Option<u16>,
    /// TCP port for ICE over TCP, for clients whose networks block UDP (7881; 0: off).
    pub tcp_port: Option<u16>,
    /// CPU ids for the media cores (default: every CPU).
    pub cores: Option<Vec<usize>>,
    /// `auto`, `io_uring` or `mmsg`.
    pub driver: Option<String>,
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
    /// Parses a YAML document (an empty one is the default configuration).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let c: Config =
            serde_norway::from_str(text).map_err(|e| ConfigError::Yaml(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Io(path.display().to_string(), e))?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Yaml(m) => ConfigError::Yaml(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (k, s) in &self.keys {
            if k.is_empty() || s.is_empty() {
                return Err(ConfigError::Invalid(
                    "keys: every API key needs a non-empty secret".into(),
                ));
            }
        }
        let r = &self.rtc;
        if r.udp_port.is_some() && r.port_range_start.is_some() {
            return Err(ConfigError::Invalid(
                "rtc: give udp_port or port_range_start/port_range_end, not both".into(),
            ));
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

    /// The UDP port of core 0 for `cores` media cores: `udp_port`, or the start of the
    /// port range, which must hold them all. `None` when the file does not say.
    pub fn media_base_port(&self, cores: usize) -> Result<Option<u16>, ConfigError> {
        let r = &self.rtc;
        if let (Some(start), Some(end)) = (r.port_range_start, r.port_range_end) {
            let have = usize::from(end - start) + 1;
            if have < cores {
                return Err(ConfigError::Invalid(format!(
                    "rtc: the port range {start}-{end} holds {have} ports, but {cores} media \
                     cores need one each"
                )));
            }
            return Ok(Some(start));
        }
        Ok(r.udp_port)
    }
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
        let text = include_str!("../../prism.example.yaml");
        let c = Config::parse(text).unwrap();
        assert_eq!(c.port, Some(7880));
        assert!(!c.keys.is_empty());
        assert_eq!(c.room.empty_timeout, Some(300));
        assert_eq!(c.logging.level.as_deref(), Some("info"));
    }

    #[test]
    fn every_key_is_read() {
        let c = Config::parse(
            "port: 9000\nbind_address: 0.0.0.0\nkeys:\n  k1: s1\n  k2: s2\n\
             rtc:\n  ip: 10.0.0.5\n  port_range_start: 50000\n  port_range_end: 50003\n  \
             cores: [0, 1]\n  driver: mmsg\n\
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
            "rtc:\n  udp_port: 1\n  port_range_start: 2\n  port_range_end: 3\n",
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
