//! `prism`: the Prism server and its tools.
//!
//! - `prism serve [--dev] …` runs signaling and the media plane in one process.
//! - `prism token create --room R --identity I …` mints a join token.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use prism_forwarder::io::DriverKind;
use prism_forwarder::runtime::{Forwarder, ForwarderConfig};
use prism_signaling::auth::{self, KeyStore, VideoGrant, DEV_KEY, DEV_SECRET};
use prism_signaling::server::{self, AppState};

const USAGE: &str = "\
prism: a selective forwarding unit for real-time audio and video

USAGE:
    prism serve [OPTIONS]
    prism token create --room ROOM --identity ID [OPTIONS]

SERVE OPTIONS:
    --dev                  development mode: API key `devkey`, secret `secret`, 127.0.0.1:7880
    --bind ADDR            HTTP/WebSocket listen address (default 127.0.0.1:7880)
    --keys KEY:SECRET,...  API keys (or PRISM_KEYS); required without --dev
    --media-ip IP          address the media sockets bind to (default 127.0.0.1)
    --media-port N         UDP port of core 0; core i uses N+i (default 7882)
    --cores LIST           CPU ids for media cores, e.g. 0,1 (default: every CPU)
    --driver KIND          auto | io_uring | mmsg (default auto)
    --log LEVEL            error | warn | info | debug | trace (default info, or RUST_LOG)

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

fn serve(args: &[String]) -> Result<()> {
    let mut dev = false;
    let mut bind: SocketAddr = "127.0.0.1:7880".parse()?;
    let mut keys = KeyStore::new();
    let mut fwd = ForwarderConfig {
        base_port: 7882,
        ..Default::default()
    };
    let mut log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    if let Ok(k) = std::env::var("PRISM_KEYS") {
        add_keys(&mut keys, &k)?;
    }
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--dev" => dev = true,
            "--bind" => bind = value(args, &mut i, "--bind")?.parse().context("--bind")?,
            "--keys" => add_keys(&mut keys, value(args, &mut i, "--keys")?)?,
            "--media-ip" => fwd.bind_ip = value(args, &mut i, "--media-ip")?.parse()?,
            "--media-port" => fwd.base_port = value(args, &mut i, "--media-port")?.parse()?,
            "--cores" => {
                fwd.cores = value(args, &mut i, "--cores")?
                    .split(',')
                    .map(|c| c.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--cores")?
            }
            "--driver" => {
                fwd.driver = match value(args, &mut i, "--driver")? {
                    "auto" => DriverKind::Auto,
                    "io_uring" | "uring" => DriverKind::IoUring,
                    "mmsg" => DriverKind::Mmsg,
                    other => bail!("unknown driver {other:?}"),
                }
            }
            "--log" => log = value(args, &mut i, "--log")?.to_string(),
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
        i += 1;
    }
    if dev {
        keys.insert(DEV_KEY, DEV_SECRET);
    }
    if keys.is_empty() {
        bail!("no API keys: pass --keys KEY:SECRET (or PRISM_KEYS), or run with --dev");
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(log))
        .init();
    let forwarder = Forwarder::start(fwd).context("starting the media plane")?;
    let media = forwarder.core_addrs();
    let driver = forwarder.driver_name();
    let state = Arc::new(AppState::new(keys, forwarder, dev));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("binding {bind}"))?;
        println!("prism: listening on http://{bind} (media: {media:?}, driver {driver})");
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
            println!("mint others with: prism token create --room demo --identity bob");
        }
        let (tx, rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(server::serve(listener, state, rx));
        shutdown_signal().await;
        println!("prism: shutting down");
        let _ = tx.send(true);
        let _ = server.await;
        Ok::<_, anyhow::Error>(())
    })
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

fn add_keys(keys: &mut KeyStore, spec: &str) -> Result<()> {
    for pair in spec.split(',').filter(|p| !p.is_empty()) {
        let Some((k, s)) = pair.split_once(':') else {
            bail!("keys are KEY:SECRET pairs, got {pair:?}");
        };
        keys.insert(k.trim(), s.trim());
    }
    Ok(())
}
