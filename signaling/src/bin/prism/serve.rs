//! `prism serve`: where each setting comes from, and the server's life.
//!
//! Settings are read lowest first from the configuration (a file, or the YAML text of
//! `--config-body` / `LIVEKIT_CONFIG`), the environment and the flags. On SIGINT or
//! SIGTERM the server stops accepting connections, tells every LiveKit participant to
//! leave (`SERVER_SHUTDOWN`), and exits once the leaves are written. In a cluster it
//! drains first (`cluster.drain_timeout`: no new rooms, existing rooms run until they end
//! or the deadline, a second signal ends the drain), then hands its rooms and its
//! directory entry off, and the leaves ask clients to reconnect, which brings them to
//! other nodes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use prism_forwarder::io::DriverKind;
use prism_forwarder::runtime::{Forwarder, ForwarderConfig};
use prism_signaling::auth::{self, KeyStore, VideoGrant, DEV_KEY, DEV_SECRET};
use prism_signaling::cluster::drain::DEFAULT_DRAIN_TIMEOUT;
use prism_signaling::cluster::{Cluster, ClusterOptions, DEFAULT_CAPACITY_PER_CORE};
use prism_signaling::config::{parse_keys, read_key_file, Config, PortSpec};
use prism_signaling::external_ip;
use prism_signaling::rtc::RoomDefaults;
use prism_signaling::server::{self, AppState, ServeOptions};
use prism_signaling::twirp::room_service::RoomServiceOptions;

use crate::ServeArgs;

/// How long sessions get, after the hub told everyone to leave, to write it out.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// How long `use_external_ip` waits for each STUN server.
const STUN_WAIT: Duration = Duration::from_secs(3);

fn driver_kind(name: &str) -> Result<DriverKind> {
    name.parse().map_err(anyhow::Error::msg)
}

/// The configuration: `--config-body` (or LIVEKIT_CONFIG) wins over `--config`, as in
/// LiveKit.
fn load_config(flags: &ServeArgs, warnings: &mut Vec<String>) -> Result<Config> {
    let strict = !flags.disable_strict_config;
    let body = flags
        .config_body
        .as_deref()
        .filter(|b| !b.trim().is_empty());
    let mut file = match (body, &flags.config) {
        (Some(body), path) => {
            if let Some(p) = path {
                warnings.push(format!(
                    "--config {} is ignored: the configuration body (--config-body or \
                     LIVEKIT_CONFIG) wins",
                    p.display()
                ));
            }
            Config::parse_with(body, strict).context("the configuration body")?
        }
        (None, Some(path)) => Config::load(path, strict)?,
        (None, None) => Config::default(),
    };
    warnings.append(&mut file.warnings);
    Ok(file)
}

/// The HTTP listen addresses: `--bind` (IP or IP:PORT, repeatable), else the file's
/// `bind_addresses` / `bind_address`, on the file's `port`.
fn listen_addrs(flags: &ServeArgs, file: &Config) -> Result<Vec<SocketAddr>> {
    let port = file.port.unwrap_or(7880);
    let mut out = Vec::new();
    for b in &flags.bind {
        out.push(match b.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => SocketAddr::new(
                b.parse::<IpAddr>()
                    .with_context(|| format!("--bind {b:?}: an IP or IP:PORT"))?,
                port,
            ),
        });
    }
    if out.is_empty() {
        out = file
            .bind_addresses
            .iter()
            .copied()
            .chain(file.bind_address)
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
    }
    if out.is_empty() {
        out.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    Ok(out)
}

/// API keys: the file's, replaced by its key file, by the environment, by the flags; --dev
/// adds LiveKit's development pair to whatever is there.
fn api_keys(
    flags: &ServeArgs,
    file: &Config,
) -> Result<std::collections::BTreeMap<String, String>> {
    let mut key_map = file.keys.clone();
    if let Some(path) = &file.key_file {
        key_map = read_key_file(path)?;
    }
    if let Ok(spec) = std::env::var("PRISM_KEYS") {
        if !spec.trim().is_empty() {
            key_map = parse_keys(&spec).context("PRISM_KEYS")?;
        }
    }
    if let Some(path) = &flags.key_file {
        key_map = read_key_file(path).context("--key-file")?;
    }
    if let Some(spec) = flags.keys.as_deref().filter(|s| !s.trim().is_empty()) {
        key_map = parse_keys(spec).context("--keys (or LIVEKIT_KEYS)")?;
    }
    Ok(key_map)
}

/// The addresses clients are given for media, most preferred first: the external one
/// (`use_external_ip`), else `--node-ip`/NODE_IP, else `rtc.node_ip`; with
/// `advertise_internal_ip`, the bound address after them.
fn candidate_ips(
    flags: &ServeArgs,
    file: &Config,
    bind_ip: IpAddr,
    warnings: &mut Vec<String>,
) -> Result<Vec<IpAddr>> {
    let mut node_ips = Vec::new();
    for v in flags
        .node_ip
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
    {
        node_ips.push(
            v.parse::<IpAddr>()
                .with_context(|| format!("--node-ip / NODE_IP {v:?}"))?,
        );
    }
    if node_ips.is_empty() {
        node_ips = file.rtc.node_ip.clone();
    }
    let mut ips = Vec::new();
    if file.rtc.use_external_ip == Some(true) {
        match external_ip::discover(&file.rtc.stun_servers, bind_ip, STUN_WAIT) {
            Ok(ip) => ips.push(ip),
            Err(e) if !node_ips.is_empty() || !bind_ip.is_unspecified() => warnings.push(format!(
                "rtc.use_external_ip: {e}; advertising {} instead",
                if node_ips.is_empty() {
                    "the bound address".to_owned()
                } else {
                    "rtc.node_ip".to_owned()
                }
            )),
            Err(e) => bail!("rtc.use_external_ip: {e}, and no rtc.node_ip to fall back on"),
        }
    }
    if ips.is_empty() {
        ips = node_ips;
    }
    if file.rtc.advertise_internal_ip == Some(true) && !ips.is_empty() {
        if bind_ip.is_unspecified() {
            warnings.push(
                "rtc.advertise_internal_ip: the media address is 0.0.0.0, set rtc.ip to the \
                 internal address to advertise it"
                    .into(),
            );
        } else {
            ips.push(bind_ip);
        }
    }
    let mut seen = Vec::new();
    ips.retain(|ip| {
        let fresh = !seen.contains(ip);
        seen.push(*ip);
        fresh
    });
    Ok(ips)
}

pub fn run(flags: ServeArgs) -> Result<()> {
    let mut warnings = Vec::new();
    let file = load_config(&flags, &mut warnings)?;
    let key_map = api_keys(&flags, &file)?;
    let dev = flags.dev || file.development == Some(true);
    let mut keys = KeyStore::from_pairs(key_map.clone());
    if dev {
        keys.insert(DEV_KEY, DEV_SECRET);
    }
    if keys.is_empty() {
        bail!(
            "no API keys: set `keys` or `key_file` in the config file, LIVEKIT_KEYS or \
             PRISM_KEYS, pass --keys KEY:SECRET or --key-file FILE, or run with --dev"
        );
    }
    let binds = listen_addrs(&flags, &file)?;

    let mut fwd = ForwarderConfig::default();
    if let Some(ip) = &flags.media_ip {
        fwd.bind_ip = ip.parse().with_context(|| format!("--media-ip {ip:?}"))?;
    } else if let Some(ip) = file.rtc.ip {
        fwd.bind_ip = ip;
    }
    let ips = candidate_ips(&flags, &file, fwd.bind_ip, &mut warnings)?;
    fwd.engine.advertise_ip = ips.first().copied();
    if let Some(n) = file.rtc.packet_buffer_size_video {
        fwd.engine.video_cache = n;
    }
    if let Some(n) = file.rtc.packet_buffer_size_audio {
        fwd.engine.audio_cache = n;
    }
    fwd.cores = flags
        .cores
        .clone()
        .or(file.rtc.cores.clone())
        .unwrap_or_default();
    if let Some(d) = flags.driver.as_deref().or(file.rtc.driver.as_deref()) {
        fwd.driver = driver_kind(d)?;
    }
    if let Some(i) = flags.interface.clone().or(file.rtc.interface.clone()) {
        fwd.xdp = Some((i, prism_forwarder::io::XdpMode::Native));
    }
    if let Some(q) = flags.xdp_first_queue.or(file.rtc.xdp_first_queue) {
        fwd.xdp_first_queue = q;
    }
    if let Some(b) = flags.xdp_bind.as_deref().or(file.rtc.xdp_bind.as_deref()) {
        fwd.xdp_bind = b.parse().map_err(anyhow::Error::msg)?;
    }
    let core_count = if fwd.cores.is_empty() {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        fwd.cores.len()
    };
    fwd.base_port = match &flags.udp_port {
        Some(p) => p
            .parse::<PortSpec>()
            .map_err(anyhow::Error::msg)
            .context("--udp-port (or UDP_PORT)")?
            .base_for(core_count)
            .map_err(anyhow::Error::msg)?,
        None => file.media_base_port(core_count)?.unwrap_or(7882),
    };
    // ICE over TCP on 7881 as LiveKit does, unless configured (0: off). With ephemeral
    // media ports (tests starting many servers) it is ephemeral too.
    let tcp_configured = flags.tcp_port.or(file.rtc.tcp_port);
    fwd.tcp_port = match tcp_configured {
        Some(0) => None,
        Some(p) => Some(p),
        None if fwd.base_port == 0 => Some(0),
        None => Some(7881),
    };
    let mut redis = file.redis.clone();
    if let Some(h) = flags.redis_host.as_deref().filter(|h| !h.trim().is_empty()) {
        redis.address = Some(h.trim().to_owned());
    }
    if let Some(p) = flags.redis_password.as_deref().filter(|p| !p.is_empty()) {
        redis.password = Some(p.to_owned());
    }
    if redis.enabled() && file.cluster.secret.is_none() && key_map.is_empty() {
        warnings.push(
            "cluster: no API keys but the development pair, and no cluster.secret: \
             node-to-node requests are signed with a key anyone can derive"
                .into(),
        );
    }
    let mut turn = file.turn.clone();
    if flags.turn_cert.is_some() {
        turn.cert_file = flags.turn_cert.clone();
    }
    if flags.turn_key.is_some() {
        turn.key_file = flags.turn_key.clone();
    }
    let api_secret = key_map.values().next().map_or(DEV_SECRET, String::as_str);
    let turn = crate::turn::setup(&file, &turn, fwd.bind_ip, &ips, api_secret, &mut warnings)?;
    fwd.turn = turn.front;
    let defaults = RoomDefaults::default();
    let relay_ip: Option<IpAddr> = match &file.cluster.relay_ip {
        Some(s) => Some(
            s.parse()
                .with_context(|| format!("cluster.relay_ip {s:?}: an IP address"))?,
        ),
        None => ips.first().copied().filter(|ip| !ip.is_unspecified()),
    };
    let room_defaults = RoomDefaults {
        relay_ip,
        relay_srtp: file.cluster.relay_srtp.unwrap_or(true),
        empty_timeout: file.room.empty_timeout.unwrap_or(defaults.empty_timeout),
        departure_timeout: file
            .room
            .departure_timeout
            .unwrap_or(defaults.departure_timeout),
        max_participants: file
            .room
            .max_participants
            .unwrap_or(defaults.max_participants),
        candidate_ips: ips.clone().into(),
        ice_servers: Arc::new(turn.ice_servers),
        // Set by `AppState`, which makes the node's recordings.
        egresses: None,
    };
    let options = ServeOptions {
        room_defaults,
        room_service: RoomServiceOptions {
            enable_remote_unmute: file.room.enable_remote_unmute.unwrap_or(false),
        },
        recording_directory: std::env::var_os("PRISM_RECORDING_DIR")
            .map(Into::into)
            .or(file.recording.directory.clone()),
    };

    let level = flags
        .log_level
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .or(file.logging.level.clone())
        .or(file.log_level.clone())
        .unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .with_context(|| format!("bad log level {level:?}"))?;
    let json = match flags.log_format.as_deref() {
        Some(f) => f == "json",
        None => file.logging.json.unwrap_or(false),
    };
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    for (k, s) in &key_map {
        if s.len() < 32 {
            tracing::warn!(key = %k, "API secret shorter than 32 characters: use a longer one");
        }
    }

    let forwarder = match Forwarder::start(fwd.clone()) {
        // The default TCP port taken (another server on this host): run without ICE-TCP
        // rather than not at all; a configured port must be had.
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tcp_configured.is_none() => {
            tracing::warn!(
                port = ?fwd.tcp_port,
                "ICE over TCP is off: its port is in use (set rtc.tcp_port or --tcp-port)"
            );
            fwd.tcp_port = None;
            Forwarder::start(fwd)
        }
        r => r,
    }
    .context("starting the media plane")?;
    let media = forwarder.core_addrs();
    let ice_tcp = forwarder.tcp_addr();
    let driver = forwarder.driver_name();
    if let Some(t) = forwarder.turn() {
        println!(
            "prism: TURN on udp {} and tls {}",
            t.udp_addr().map_or("-".into(), |a| a.to_string()),
            t.stream_addr().map_or("-".into(), |a| a.to_string())
        );
    }
    let mut state = AppState::with_options(keys, forwarder, dev, options)
        .context("starting the agent service")?;
    if redis.enabled() {
        let http = internal_address(&file, &binds, &ips)?;
        let opts = ClusterOptions {
            secret: cluster_secret(&file, &key_map),
            http,
            media: media.iter().map(ToString::to_string).collect(),
            media_ips: ips.clone(),
            relay_ip: relay_ip.unwrap_or(http.ip()),
            span_rooms: file.cluster.span_rooms.unwrap_or(true),
            capacity_pps: file
                .cluster
                .capacity_pps
                .unwrap_or(DEFAULT_CAPACITY_PER_CORE * media.len().max(1) as u64),
            region: flags
                .region
                .clone()
                .or(file.cluster.region.clone())
                .unwrap_or_default(),
            redis,
        };
        let c = Cluster::new(opts).map_err(anyhow::Error::msg)?;
        println!("prism: cluster node {} (Redis)", c.id);
        // A room moving to this node keeps the sid it has in the directory.
        let sids = c.clone();
        state
            .rooms
            .set_room_sids(Arc::new(move |name| sids.room_sid(name.as_str())));
        state.cluster = Some(c);
    }
    let drain_timeout = file
        .cluster
        .drain_timeout
        .map_or(DEFAULT_DRAIN_TIMEOUT, Duration::from_secs);
    let state = Arc::new(state);
    let rooms = state.rooms.clone();
    let rtmp_port = flags.rtmp_port.or(file.ingress.rtmp_port);
    let ingress_cfg = file.ingress.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut listeners = Vec::new();
        for &b in &binds {
            listeners.push(listen(b).with_context(|| format!("binding {b}"))?);
        }
        let bind = binds[0];
        // RTMP ingress: a port asked for must be free; the default (1935) is skipped with
        // a warning when something else holds it.
        let rtmp_addr = std::net::SocketAddr::new(bind.ip(), rtmp_port.unwrap_or(1935));
        let rtmp = match listen(rtmp_addr) {
            Ok(l) => Some(l),
            Err(e) if rtmp_port.is_none() => {
                tracing::warn!(addr = %rtmp_addr, error = %e, "RTMP ingress not started: the default port is taken (set ingress.rtmp_port or --rtmp-port)");
                None
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("binding RTMP {rtmp_addr}"))),
        };
        let rtmp_local = rtmp.as_ref().and_then(|l| l.local_addr().ok());
        if let Some(a) = rtmp_local {
            let host = if a.ip().is_unspecified() {
                ips.first().copied().unwrap_or(IpAddr::from([127, 0, 0, 1]))
            } else {
                a.ip()
            };
            let host_port = std::net::SocketAddr::new(host, a.port());
            let rtmp_url = ingress_cfg
                .rtmp_base_url
                .clone()
                .unwrap_or_else(|| format!("rtmp://{host_port}/live"));
            let whip_url = ingress_cfg
                .whip_base_url
                .clone()
                .unwrap_or_else(|| format!("http://{bind}/whip"));
            state.ingresses.set_urls(&rtmp_url, &whip_url);
            println!("prism: rtmp ingress on {a} ({rtmp_url})");
        }
        let shown: Vec<String> = binds.iter().map(|b| format!("http://{b}")).collect();
        if ips.is_empty() {
            println!(
                "prism: listening on {} (media: {media:?}, driver {driver})",
                shown.join(", ")
            );
        } else {
            let adv: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
            println!(
                "prism: listening on {} (media: {media:?} advertised as {}, driver {driver})",
                shown.join(", "),
                adv.join(", ")
            );
        }
        tracing::info!(?binds, ?media, ?ice_tcp, driver, "listening");
        if dev {
            let t = auth::join_token(
                DEV_KEY,
                DEV_SECRET,
                "demo",
                "alice",
                21_600,
                VideoGrant::default(),
            );
            println!("development mode: API key `{DEV_KEY}`, secret `{DEV_SECRET}`");
            println!("a join token for room `demo` as `alice`, valid 6 h:\n\n  {t}\n");
            println!("next:");
            println!("  - try it in a browser: http://{bind}/ (two tabs talk to each other)");
            println!("  - LiveKit SDKs: connect to ws://{bind} with the token above");
            println!("  - WHIP/WHEP: POST an SDP offer to http://{bind}/whip/demo or /whep/demo");
            println!("  - mint more tokens: prism token create --room demo --identity bob");
        }
        if let Some(c) = &state.cluster {
            c.start(state.rooms.clone());
        }
        let (tx, rx) = tokio::sync::watch::channel(false);
        let rtmp_task = rtmp.map(|l| {
            tokio::spawn(prism_signaling::ingress::server::serve(
                l,
                state.rooms.clone(),
                state.ingresses.clone(),
                rx.clone(),
            ))
        });
        let servers: Vec<_> = listeners
            .into_iter()
            .map(|l| tokio::spawn(server::serve(l, state.clone(), rx.clone())))
            .collect();
        shutdown_signal().await;
        if let Some(c) = &state.cluster {
            // Draining: rooms here run on (and take joins) until they end or the deadline.
            println!(
                "prism: draining: no new rooms here; rooms still open in {} s move to other \
                 nodes (a second signal moves them now)",
                drain_timeout.as_secs()
            );
            let end = c.drain_until(&rooms, drain_timeout, shutdown_signal()).await;
            println!("prism: drain over: {end}");
            tracing::info!(%end, "drain over");
        }
        println!("prism: shutting down");
        tracing::info!("shutting down: telling every LiveKit participant to leave");
        // Stop accepting first, so nobody joins behind the leaves.
        let _ = tx.send(true);
        for s in servers {
            let _ = s.await;
        }
        if let Some(t) = rtmp_task {
            let _ = t.await;
        }
        match &state.cluster {
            Some(c) => {
                // Give the rooms up first, so that the clients told to reconnect land on
                // other nodes, which take the rooms at once.
                c.move_away(&rooms).await;
            }
            None => rooms.shutdown().await,
        }
        // Closing the rooms stopped their recordings; every file is final before exit.
        let egresses = state.egresses.clone();
        let _ = tokio::task::spawn_blocking(move || {
            egresses.wait_idle(std::time::Duration::from_secs(10))
        })
        .await;
        // The sessions' tasks write the leave and close their sockets; give them a moment
        // before the runtime (and with it every task) goes away.
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        Ok::<_, anyhow::Error>(())
    })
}

/// The secret node-to-node requests are signed with: `cluster.secret`, else one derived
/// from the API keys, so that nodes sharing keys share it without more configuration.
fn cluster_secret(file: &Config, keys: &std::collections::BTreeMap<String, String>) -> Vec<u8> {
    use sha2::Digest as _;
    if let Some(s) = file.cluster.secret.as_deref().filter(|s| !s.is_empty()) {
        return s.as_bytes().to_vec();
    }
    let mut h = sha2::Sha256::new();
    h.update(b"prism cluster secret\n");
    if keys.is_empty() {
        h.update(format!("{DEV_KEY}:{DEV_SECRET}\n").as_bytes());
    }
    for (k, s) in keys {
        h.update(format!("{k}:{s}\n").as_bytes());
    }
    h.finalize().to_vec()
}

/// Where other nodes reach this one: `cluster.internal_address`, else the first listen
/// address (with the advertised IP in place of an unspecified one).
fn internal_address(file: &Config, binds: &[SocketAddr], ips: &[IpAddr]) -> Result<SocketAddr> {
    if let Some(a) = &file.cluster.internal_address {
        return a
            .parse()
            .with_context(|| format!("cluster.internal_address {a:?}: an IP:PORT"));
    }
    let b = binds[0];
    if !b.ip().is_unspecified() {
        return Ok(b);
    }
    match ips.first() {
        Some(ip) => Ok(SocketAddr::new(*ip, b.port())),
        None => bail!(
            "cluster: listening on {b} gives other nodes no address: set \
             cluster.internal_address (or rtc.node_ip)"
        ),
    }
}

/// Pending connections the kernel holds for the HTTP listener. Many clients connect at
/// once when a meeting starts (or a server restarts and every SDK reconnects): with
/// tokio's default of 128 the rest are dropped and retried a second later.
const LISTEN_BACKLOG: u32 = 1024;

fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
