//! `prism`: the Prism server and its tools.
//!
//! - `prism serve [--dev] [--config prism.yaml] …` (or `prism` with the same flags, as
//!   `livekit-server` takes them) runs signaling and the media plane in one process; see
//!   `serve.rs`.
//! - `prism token create --room R --identity I …` mints a join token.
//!
//! The flags are LiveKit server's where they mean the same, with the same environment
//! variables, so a deployment written for `livekit-server` (a container's environment, a
//! systemd unit's command line) runs Prism unchanged.

mod serve;
mod turn;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use prism_signaling::auth::{self, KeyStore, VideoGrant, DEV_KEY, DEV_SECRET};

#[derive(Parser, Debug)]
#[command(
    name = "prism",
    version,
    about = "Prism: a selective forwarding unit for real-time audio and video, speaking \
             LiveKit's protocol",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand, `prism` serves (as `livekit-server` does).
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server: signaling, the server API and the media plane in one process.
    Serve(Box<ServeArgs>),
    /// Access tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Mint a join token and print it.
    Create(TokenArgs),
}

/// `prism serve`'s flags; each overrides the configuration file.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// Development mode: adds API key `devkey` with secret `secret`, prints a join token.
    #[arg(long)]
    pub dev: bool,
    /// YAML configuration file (LiveKit's `livekit.yaml` works; see prism.example.yaml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The whole configuration as YAML text, typically from the environment of a container.
    #[arg(
        long,
        value_name = "YAML",
        env = "LIVEKIT_CONFIG",
        hide_env_values = true
    )]
    pub config_body: Option<String>,
    /// Accept configuration keys that are neither Prism's nor LiveKit's (with a warning).
    #[arg(long)]
    pub disable_strict_config: bool,
    /// API keys, `key: secret` per line (YAML) or `key:secret,key2:secret2`; replaces the
    /// file's keys. PRISM_KEYS is read too.
    #[arg(
        long,
        value_name = "KEYS",
        env = "LIVEKIT_KEYS",
        hide_env_values = true
    )]
    pub keys: Option<String>,
    /// File of `key: secret` lines; replaces the file's keys.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Address the HTTP/WebSocket server listens on: IP (port from the file, 7880) or
    /// IP:PORT. Repeat for several (default 127.0.0.1:7880).
    #[arg(long, value_name = "ADDR")]
    pub bind: Vec<String>,
    /// Address(es) clients are given for media (ICE candidates) when it is not the bound
    /// one: behind NAT, or with --media-ip 0.0.0.0. Repeat or separate with commas for
    /// several, most preferred first.
    #[arg(long, value_name = "IP", env = "NODE_IP", value_delimiter = ',')]
    pub node_ip: Vec<String>,
    /// UDP port of media core 0 (core i uses PORT+i), or a range FIRST-LAST holding one
    /// port per core (default 7882).
    #[arg(long, alias = "media-port", value_name = "PORT", env = "UDP_PORT")]
    pub udp_port: Option<String>,
    /// TCP port of the RTMP ingress listener (default 1935; 0 picks a free port).
    #[arg(long, value_name = "PORT")]
    pub rtmp_port: Option<u16>,
    /// TCP port for ICE over TCP, the fallback of clients whose networks block UDP
    /// (default 7881; 0: off).
    #[arg(long, value_name = "PORT")]
    pub tcp_port: Option<u16>,
    /// Address the media sockets bind to (default 127.0.0.1).
    #[arg(long, value_name = "IP")]
    pub media_ip: Option<String>,
    /// CPU ids for media cores, e.g. 0,1 (default: every CPU).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub cores: Option<Vec<usize>>,
    /// I/O driver: auto, io_uring, mmsg or af_xdp (default auto; af_xdp needs
    /// --interface and --media-ip set to that interface's IPv4 address).
    #[arg(long, value_name = "KIND")]
    pub driver: Option<String>,
    /// The interface the af_xdp driver attaches to (core i serves its queue
    /// --xdp-first-queue + i).
    #[arg(long, value_name = "IF")]
    pub interface: Option<String>,
    /// The receive queue the first media core serves with af_xdp (default 0).
    #[arg(long, value_name = "N")]
    pub xdp_first_queue: Option<u32>,
    /// How af_xdp sockets bind: copy (default), zerocopy, or auto (zero-copy where the
    /// NIC's driver has it, else copy).
    #[arg(long, value_name = "MODE")]
    pub xdp_bind: Option<String>,
    /// Redis `host:port`: several nodes share rooms through it (docs/cluster.md); wins
    /// over the file's `redis.address`.
    #[arg(long, value_name = "HOST:PORT", env = "REDIS_HOST")]
    pub redis_host: Option<String>,
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "REDIS_PASSWORD",
        hide_env_values = true
    )]
    pub redis_password: Option<String>,
    /// Certificate (PEM) of the embedded TURN server's TLS listener.
    #[arg(long, value_name = "FILE", env = "LIVEKIT_TURN_CERT")]
    pub turn_cert: Option<PathBuf>,
    /// Private key (PEM) of the embedded TURN server's TLS listener.
    #[arg(long, value_name = "FILE", env = "LIVEKIT_TURN_KEY")]
    pub turn_key: Option<PathBuf>,
    /// Region of this node: in a cluster, new rooms go to nodes of the ingress's region
    /// first.
    #[arg(long, value_name = "REGION", env = "LIVEKIT_REGION")]
    pub region: Option<String>,
    /// error, warn, info, debug, trace, or a tracing filter (default: RUST_LOG, else the
    /// file's, else info).
    #[arg(long, alias = "log", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format.
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
}

/// `prism token create`'s flags.
#[derive(Args, Debug)]
struct TokenArgs {
    /// Room the token joins.
    #[arg(long)]
    room: String,
    /// Participant identity.
    #[arg(long)]
    identity: String,
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    #[arg(long, default_value = DEV_KEY, env = "LIVEKIT_API_KEY")]
    api_key: String,
    #[arg(long, default_value = DEV_SECRET, env = "LIVEKIT_API_SECRET", hide_env_values = true)]
    api_secret: String,
    /// Validity, seconds.
    #[arg(long, default_value_t = 21_600)]
    ttl: u64,
    /// canPublish = false.
    #[arg(long)]
    no_publish: bool,
    /// canSubscribe = false.
    #[arg(long)]
    no_subscribe: bool,
    /// canPublishData = false.
    #[arg(long)]
    no_publish_data: bool,
    /// roomAdmin for the room, with roomCreate and roomList.
    #[arg(long)]
    admin: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Serve(args)) => serve::run(*args),
        Some(Command::Token {
            command: TokenCommand::Create(t),
        }) => token(t),
        None => serve::run(cli.serve),
    }
}

fn token(a: TokenArgs) -> Result<()> {
    let mut grant = VideoGrant::default();
    if a.no_publish {
        grant.can_publish = Some(false);
    }
    if a.no_subscribe {
        grant.can_subscribe = Some(false);
    }
    if a.no_publish_data {
        grant.can_publish_data = Some(false);
    }
    if a.admin {
        grant.room_admin = true;
        grant.room_create = true;
        grant.room_list = true;
    }
    let mut t = auth::join_token(
        &a.api_key,
        &a.api_secret,
        &a.room,
        &a.identity,
        a.ttl,
        grant,
    );
    if let Some(n) = a.name {
        // Re-sign with the display name.
        let mut c =
            KeyStore::from_pairs([(a.api_key.clone(), a.api_secret.clone())]).verify_now(&t)?;
        c.name = n;
        t = auth::sign(&c, &a.api_secret);
    }
    println!("{t}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
