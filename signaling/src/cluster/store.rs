//! The connection to Redis, whatever its shape: a standalone server, a master found
//! through Sentinel, or a Redis Cluster, configured by LiveKit's `redis:` keys.
//!
//! Every call is bounded by [`CALL_TIMEOUT`], so a Redis that stops answering costs a
//! request a second, never a hang. A connection that failed is dropped and made again on
//! the next call; for Sentinel that means asking the sentinels for the master again, which
//! is how a failover is followed. The cluster client follows slot moves itself.

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::Mutex;

use crate::config::RedisConfig;

/// The longest any one Redis call may take, connecting included.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(1500);

/// Why a Redis call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// Redis did not answer in time, or could not be reached.
    Unreachable(String),
    /// Redis answered with an error (a script error, a wrong type).
    Redis(String),
    /// The configuration does not describe a usable connection.
    Config(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unreachable(e) => write!(f, "Redis is unreachable: {e}"),
            StoreError::Redis(e) => write!(f, "Redis error: {e}"),
            StoreError::Config(e) => write!(f, "redis configuration: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

enum Backend {
    Single(Box<redis::Client>),
    Sentinel(Box<Mutex<redis::sentinel::SentinelClient>>),
    Cluster(Box<redis::cluster::ClusterClient>),
}

/// One live connection of either kind.
#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Redis, reached lazily and reconnected after failures. Cheap to share behind an `Arc`.
pub struct Store {
    backend: Backend,
    conn: Mutex<Option<Conn>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.backend {
            Backend::Single(_) => "standalone",
            Backend::Sentinel(_) => "sentinel",
            Backend::Cluster(_) => "cluster",
        };
        f.debug_struct("Store").field("kind", &kind).finish()
    }
}

fn parse_addr(addr: &str, tls: bool) -> Result<redis::ConnectionAddr, StoreError> {
    let bad = || StoreError::Config(format!("{addr:?} is not host:port"));
    let (host, port) = addr.trim().rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if host.is_empty() {
        return Err(bad());
    }
    Ok(if tls {
        redis::ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        redis::ConnectionAddr::Tcp(host, port)
    })
}

fn settings(user: Option<&str>, password: Option<&str>, db: i64) -> redis::RedisConnectionInfo {
    let mut r = redis::RedisConnectionInfo::default().set_db(db);
    if let Some(u) = user.filter(|u| !u.is_empty()) {
        r = r.set_username(u);
    }
    if let Some(p) = password.filter(|p| !p.is_empty()) {
        r = r.set_password(p);
    }
    r
}

impl Store {
    /// A store for `cfg` (which must be [`RedisConfig::enabled`]). Nothing is connected
    /// yet: the first call connects.
    pub fn new(cfg: &RedisConfig) -> Result<Self, StoreError> {
        let tls = cfg.use_tls.unwrap_or(false);
        let tls_mode = tls.then_some(redis::TlsMode::Secure);
        let db = cfg.db.unwrap_or(0);
        let err = |e: redis::RedisError| StoreError::Config(e.to_string());
        // LiveKit's order: Sentinel, else Cluster, else a standalone address.
        let backend = if !cfg.sentinel_addresses.is_empty() {
            let master = cfg
                .sentinel_master_name
                .clone()
                .filter(|m| !m.is_empty())
                .ok_or_else(|| {
                    StoreError::Config("sentinel_addresses needs sentinel_master_name".to_owned())
                })?;
            let mut sentinels = Vec::new();
            for a in &cfg.sentinel_addresses {
                sentinels.push(parse_addr(a, false)?);
            }
            let mut b = redis::sentinel::SentinelClientBuilder::new(
                sentinels,
                master,
                redis::sentinel::SentinelServerType::Master,
            )
            .map_err(err)?
            .set_client_to_redis_db(db);
            if let Some(u) = cfg.username.as_deref().filter(|u| !u.is_empty()) {
                b = b.set_client_to_redis_username(u);
            }
            if let Some(p) = cfg.password.as_deref().filter(|p| !p.is_empty()) {
                b = b.set_client_to_redis_password(p);
            }
            if let Some(u) = cfg.sentinel_username.as_deref().filter(|u| !u.is_empty()) {
                b = b.set_client_to_sentinel_username(u);
            }
            if let Some(p) = cfg.sentinel_password.as_deref().filter(|p| !p.is_empty()) {
                b = b.set_client_to_sentinel_password(p);
            }
            if let Some(m) = tls_mode {
                b = b.set_client_to_redis_tls_mode(m);
            }
            Backend::Sentinel(Box::new(Mutex::new(b.build().map_err(err)?)))
        } else if !cfg.cluster_addresses.is_empty() {
            let mut nodes = Vec::new();
            for a in &cfg.cluster_addresses {
                nodes.push(
                    redis::IntoConnectionInfo::into_connection_info(parse_addr(a, tls)?)
                        .map_err(err)?,
                );
            }
            let mut b = redis::cluster::ClusterClientBuilder::new(nodes)
                .connection_timeout(CALL_TIMEOUT)
                .response_timeout(CALL_TIMEOUT);
            if let Some(u) = cfg.username.as_deref().filter(|u| !u.is_empty()) {
                b = b.username(u);
            }
            if let Some(p) = cfg.password.as_deref().filter(|p| !p.is_empty()) {
                b = b.password(p);
            }
            if let Some(m) = tls_mode {
                b = b.tls(m);
            }
            Backend::Cluster(Box::new(b.build().map_err(err)?))
        } else {
            let addr = cfg.address.as_deref().unwrap_or_default();
            let info = redis::IntoConnectionInfo::into_connection_info(parse_addr(addr, tls)?)
                .map_err(err)?
                .set_redis_settings(settings(
                    cfg.username.as_deref(),
                    cfg.password.as_deref(),
                    db,
                ));
            Backend::Single(Box::new(redis::Client::open(info).map_err(err)?))
        };
        Ok(Self {
            backend,
            conn: Mutex::new(None),
        })
    }

    async fn connect(&self) -> Result<Conn, redis::RedisError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT));
        Ok(match &self.backend {
            Backend::Single(c) => Conn::Single(
                c.get_multiplexed_async_connection_with_config(&config)
                    .await?,
            ),
            Backend::Sentinel(s) => {
                let client = s.lock().await.async_get_client().await?;
                Conn::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
            Backend::Cluster(c) => Conn::Cluster(c.get_async_connection().await?),
        })
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(CALL_TIMEOUT, self.connect())
            .await
            .map_err(|_| StoreError::Unreachable("connecting timed out".into()))?
            .map_err(|e| StoreError::Unreachable(e.to_string()))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// The error of a call, the connection dropped if it is broken.
    async fn failed(&self, e: redis::RedisError) -> StoreError {
        if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
            *self.conn.lock().await = None;
            StoreError::Unreachable(e.to_string())
        } else {
            StoreError::Redis(e.to_string())
        }
    }

    /// Runs one command.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let mut c = self.conn().await?;
        match tokio::time::timeout(CALL_TIMEOUT, cmd.query_async::<T>(&mut c)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.failed(e).await),
            Err(_) => {
                *self.conn.lock().await = None;
                Err(StoreError::Unreachable("no answer in time".into()))
            }
        }
    }

    /// Runs a Lua script (`EVAL`) over `keys` (all in one Cluster slot) with `args`.
    pub async fn eval<T: redis::FromRedisValue>(
        &self,
        script: &str,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, StoreError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(keys.len());
        for k in keys {
            cmd.arg(*k);
        }
        for a in args {
            cmd.arg(*a);
        }
        self.query(&cmd).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        assert!(parse_addr("127.0.0.1:6379", false).is_ok());
        assert!(parse_addr("[::1]:6379", true).is_ok());
        assert!(parse_addr("redis", false).is_err());
        assert!(parse_addr(":6379", false).is_err());
        assert!(parse_addr("h:port", false).is_err());
    }

    #[test]
    fn every_mode_builds_from_livekit_keys() {
        let single = RedisConfig {
            address: Some("127.0.0.1:6379".into()),
            password: Some("pw".into()),
            db: Some(2),
            ..RedisConfig::default()
        };
        assert!(Store::new(&single).is_ok());
        let cluster = RedisConfig {
            cluster_addresses: vec!["127.0.0.1:7000".into(), "127.0.0.1:7001".into()],
            ..RedisConfig::default()
        };
        assert!(format!("{:?}", Store::new(&cluster).unwrap()).contains("cluster"));
        let sentinel = RedisConfig {
            sentinel_addresses: vec!["127.0.0.1:26379".into()],
            sentinel_master_name: Some("mymaster".into()),
            ..RedisConfig::default()
        };
        assert!(format!("{:?}", Store::new(&sentinel).unwrap()).contains("sentinel"));
        let no_master = RedisConfig {
            sentinel_addresses: vec!["127.0.0.1:26379".into()],
            ..RedisConfig::default()
        };
        assert!(matches!(Store::new(&no_master), Err(StoreError::Config(_))));
    }
}
