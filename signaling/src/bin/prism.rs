//! `prism`: the Prism server and its tools.
//!
//! - `prism serve [--dev] [--config prism.yaml] …` runs signaling and the media plane in
//!   one process. Settings come from the YAML file, then the environment (keys), then
//!   flags. On SIGINT or SIGTERM it stops accepting connections, tells every LiveKit
//!   participant to leave (`SERVER_SHUTDOWN`), and exits once the leaves are written.
//! - `prism token create --room R --identity I …` mints a join token.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use prism_forwarder::io::DriverKind;
use prism_forwarder::runtime::{Forwarder, ForwarderConfig};
use prism_signaling::auth::{self, KeyStore, VideoGrant, DEV_KEY, DEV_SECRET};
use prism_signaling::config::{parse_keys, Config};
use prism_signaling::rtc::RoomDefaults;
use prism_signaling::server::{self, AppState, ServeOptions};
use prism_signaling::twirp::room_service::RoomServiceOptions;

/// How long sessions get, after the hub told everyone to leave, to write it out.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

const USAGE: &str = "\
prism: a selective forwarding unit for real-time audio and video

USAGE:
    prism serve [OPTIONS]
    prism token create --room ROOM --identity ID [OPTIONS]

SERVE OPTIONS (each overrides the config file):
    --config FILE          YAML settings (see prism.example.yaml)
    --dev                  development mode: adds API key `devkey`, secret `secret`
    --bind ADDR            HTTP/WebSocket listen address (default 127.0.0.1:7880)
    --keys KEY:SECRET,...  API keys, replacing the file's and LIVEKIT_KEYS / PRISM_KEYS;
                           some key is required without --dev
    --media-ip IP          address the media sockets bind to (default 127.0.0.1)
    --node-ip IP           address clients are given for media (ICE candidates) when it
                           is not the bound one: behind NAT, or with --media-ip 0.0.0.0
    --media-port N         UDP port of core 0; core i uses N+i (default 7882)
    --tcp-port N           TCP port for ICE over TCP, the fallback of clients whose
                           networks block UDP (default 7881; 0: off)
    --cores LIST           CPU ids for media cores, e.g. 0,1 (default: every CPU)
    --driver KIND          auto | io_uring | mmsg (default auto)
    --log-level LEVEL      error | warn | info | debug | trace, or a tracing filter
                           (default: RUST_LOG, else the file's, else info)
    --log-format FORMAT    text | json (default text)

ENVIRONMENT:
    LIVEKIT_KEYS, PRISM_KEYS   API keys, `key: secret` (YAML) or `key:secret,key2:secret2`
    NODE_IP                    as --node-ip (the flag wins, then this, then the file)

TOKEN OPTIONS:
    --api-key KEY          (default devkey)      --api-secret SECRET (default secret)
    --ttl SECONDS          validity (default 21600, 6 h)
    --name NAME            display name
    --no-publish           canPublish = false    --no-subscribe  canSubscribe = false
    --no-publish-data      canPublishData = false
    --admin                roomAdmin for the room, with roomCreate and roomList
";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("token") if args.get(1).map(String::as_str) == Some("create") => token(&args[2..]),
        Some("-h" | "--help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

fn value<'a>(args: &'a [String], i: &mut usize, flag: &str) -> Result<&'a str> {
    *i += 1;
    args.get(*i)
        .map(String::as_str)
        .with_context(|| format!("{flag} needs a value"))
}

fn token(args: &[String]) -> Result<()> {
    let (mut room, mut identity, mut name) = (None, None, None);
    let (mut key, mut secret, mut ttl) = (DEV_KEY.to_string(), DEV_SECRET.to_string(), 21_600u64);
    let mut grant = VideoGrant::default();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--room" => room = Some(value(args, &mut i, "--room")?.to_string()),
            "--identity" => identity = Some(value(args, &mut i, "--identity")?.to_string()),
            "--name" => name = Some(value(args, &mut i, "--name")?.to_string()),
            "--api-key" => key = value(args, &mut i, "--api-key")?.to_string(),
            "--api-secret" => secret = value(args, &mut i, "--api-secret")?.to_string(),
            "--ttl" => ttl = value(args, &mut i, "--ttl")?.parse().context("--ttl")?,
            "--no-publish" => grant.can_publish = Some(false),
            "--no-subscribe" => grant.can_subscribe = Some(false),
            "--no-publish-data" => grant.can_publish_data = Some(false),
            "--admin" => {
                grant.room_admin = true;
                grant.room_create = true;
                grant.room_list = true;
            }
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
        i += 1;
    }
    let room = room.context("--room is required")?;
    let identity = identity.context("--identity is required")?;
    let mut t = auth::join_token(&key, &secret, &room, &identity, ttl, grant);
    if let Some(n) = name {
        // Re-sign with the display name.
        let mut c = KeyStore::from_pairs([(key.clone(), secret.clone())]).verify_now(&t)?;
        c.name = n;
        t = auth::sign(&c, &secret);
    }
    println!("{t}");
    Ok(())
}

/// Command-line flags of `prism serve`; each overrides the config file.
#[derive(Default)]
struct ServeFlags {
    dev: bool,
    config: Option<PathBuf>,
    bind: Option<SocketAddr>,
    keys: Option<String>,
    media_ip: Option<IpAddr>,
    node_ip: Option<IpAddr>,
    media_port: Option<u16>,
    tcp_port: Option<u16>,
    cores: Option<Vec<usize>>,
    driver: Option<String>,
    log_level: Option<String>,
    log_json: Option<bool>,
}

fn serve_flags(args: &[String]) -> Result<ServeFlags> {
    let mut f = ServeFlags::default();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--dev" => f.dev = true,
            "--config" => f.config = Some(value(args, &mut i, "--config")?.into()),
            "--bind" => f.bind = Some(value(args, &mut i, "--bind")?.parse().context("--bind")?),
            "--keys" => f.keys = Some(value(args, &mut i, "--keys")?.to_string()),
            "--media-ip" => {
                f.media_ip = Some(
                    value(args, &mut i, "--media-ip")?
                        .parse()
                        .context("--media-ip")?,
                )
            }
            "--node-ip" => {
                f.node_ip = Some(
                    value(args, &mut i, "--node-ip")?
                        .parse()
                        .context("--node-ip")?,
                )
            }
            "--media-port" => {
                f.media_port = Some(
                    value(args, &mut i, "--media-port")?
                        .parse()
                        .context("--media-port")?,
                )
            }
            "--tcp-port" => {
                f.tcp_port = Some(
                    value(args, &mut i, "--tcp-port")?
                        .parse()
                        .context("--tcp-port")?,
                )
            }
            "--cores" => {
                f.cores = Some(
                    value(args, &mut i, "--cores")?
                        .split(',')
                        .map(|c| c.trim().parse::<usize>())
                        .collect::<Result<_, _>>()
                        .context("--cores")?,
                )
            }
            "--driver" => f.driver = Some(value(args, &mut i, "--driver")?.to_string()),
            "--log-level" | "--log" => {
                f.log_level = Some(value(args, &mut i, "--log-level")?.to_string())
            }
            "--log-format" => {
                f.log_json = Some(match value(args, &mut i, "--log-format")? {
                    "json" => true,
                    "text" => false,
                    other => bail!("--log-format is text or json, not {other:?}"),
                })
            }
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
        i += 1;
    }
    Ok(f)
}

fn driver_kind(name: &str) -> Result<DriverKind> {
    Ok(match name {
        "auto" => DriverKind::Auto,
        "io_uring" | "uring" => DriverKind::IoUring,
        "mmsg" => DriverKind::Mmsg,
        other => bail!("unknown driver {other:?} (auto, io_uring or mmsg)"),
    })
}

fn serve(args: &[String]) -> Result<()> {
    let flags = serve_flags(args)?;
    let file = match &flags.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };

    // Keys: the file's, replaced by the environment's, replaced by --keys; --dev adds
    // LiveKit's development pair to whatever is there.
    let mut key_map = file.keys.clone();
    for var in ["LIVEKIT_KEYS", "PRISM_KEYS"] {
        if let Ok(spec) = std::env::var(var) {
            if !spec.trim().is_empty() {
                key_map = parse_keys(&spec).with_context(|| var.to_string())?;
            }
        }
    }
    if let Some(spec) = &flags.keys {
        key_map = parse_keys(spec).context("--keys")?;
    }
    let mut keys = KeyStore::from_pairs(key_map.clone());
    if flags.dev {
        keys.insert(DEV_KEY, DEV_SECRET);
    }
    if keys.is_empty() {
        bail!(
            "no API keys: set `keys` in the config file, LIVEKIT_KEYS or PRISM_KEYS, pass \
             --keys KEY:SECRET, or run with --dev"
        );
    }

    let bind = flags.bind.unwrap_or_else(|| {
        SocketAddr::new(
            file.bind_address.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            file.port.unwrap_or(7880),
        )
    });
    let mut fwd = ForwarderConfig::default();
    fwd.bind_ip = flags.media_ip.or(file.rtc.ip).unwrap_or(fwd.bind_ip);
    let env_node_ip = match std::env::var("NODE_IP") {
        Ok(v) if !v.trim().is_empty() => Some(
            v.trim()
                .parse::<IpAddr>()
                .with_context(|| format!("NODE_IP {v:?}"))?,
        ),
        _ => None,
    };
    fwd.engine.advertise_ip = flags.node_ip.or(env_node_ip).or(file.rtc.node_ip);
    let fwd_advertise = fwd.engine.advertise_ip;
    fwd.cores = flags
        .cores
        .clone()
        .or(file.rtc.cores.clone())
        .unwrap_or_default();
    if let Some(d) = flags.driver.as_deref().or(file.rtc.driver.as_deref()) {
        fwd.driver = driver_kind(d)?;
    }
    let core_count = if fwd.cores.is_empty() {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        fwd.cores.len()
    };
    fwd.base_port = match flags.media_port {
        Some(p) => p,
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
    let room_defaults = RoomDefaults {
        empty_timeout: file
            .room
            .empty_timeout
            .unwrap_or(RoomDefaults::default().empty_timeout),
        departure_timeout: file
            .room
            .departure_timeout
            .unwrap_or(RoomDefaults::default().departure_timeout),
    };
    let options = ServeOptions {
        room_defaults,
        room_service: RoomServiceOptions {
            enable_remote_unmute: file.room.enable_remote_unmute.unwrap_or(false),
        },
    };

    let level = flags
        .log_level
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .or(file.logging.level.clone())
        .unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .with_context(|| format!("bad log level {level:?}"))?;
    if flags.log_json.or(file.logging.json).unwrap_or(false) {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
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
    let advertise = fwd_advertise;
    let driver = forwarder.driver_name();
    let dev = flags.dev;
    let state = Arc::new(
        AppState::with_options(keys, forwarder, dev, options)
            .context("starting the agent service")?,
    );
    let rooms = state.rooms.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = listen(bind).with_context(|| format!("binding {bind}"))?;
        match advertise {
            Some(ip) => println!(
                "prism: listening on http://{bind} (media: {media:?} advertised as {ip}, driver {driver})"
            ),
            None => println!("prism: listening on http://{bind} (media: {media:?}, driver {driver})"),
        }
        tracing::info!(%bind, ?media, ?ice_tcp, driver, "listening");
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
        let (tx, rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(server::serve(listener, state, rx));
        shutdown_signal().await;
        println!("prism: shutting down");
        tracing::info!("shutting down: telling every LiveKit participant to leave");
        // Stop accepting first, so nobody joins behind the leaves.
        let _ = tx.send(true);
        let _ = server.await;
        rooms.shutdown().await;
        // The sessions' tasks write the leave and close their sockets; give them a moment
        // before the runtime (and with it every task) goes away.
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        Ok::<_, anyhow::Error>(())
    })
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
