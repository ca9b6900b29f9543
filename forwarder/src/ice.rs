//! Sans-IO ICE-lite agent (RFC 8445 §2.5, §7.3) with consent freshness (RFC 7675), one per
//! transport.
//!
//! An ICE-lite SFU never sends checks: it has host candidates only, is always the
//! controlled agent, and answers the Binding requests the full agent (the browser) sends.
//! So the agent is small: authenticate each request, answer it, and track which remote
//! address the client nominated and whether it still consents to receive media.
//!
//! Invariants:
//! - `handle_stun` never allocates and never panics: the reply is written into the
//!   caller's buffer, HMAC-SHA1 runs on the stack, and every rejection is a typed
//!   [`IceDrop`] that the engine counts.
//! - Only a request that passes USERNAME and MESSAGE-INTEGRITY (and FINGERPRINT, when
//!   present) changes any state. Unauthenticated requests get no answer at all, so the
//!   agent cannot be used to reflect traffic at a third party.
//! - The selected address changes only on a nominating (USE-CANDIDATE) request, and the
//!   newest nomination wins: a client whose network changed nominates its new path.
//! - Consent is refreshed only by a valid request *from the selected address*.
//! - Time is passed in; nothing here reads the clock.
//!
//! ICE restart: [`IceLite::restart`] installs new local credentials but keeps the old ones
//! (and the selected address) alive, so media keeps flowing while the client checks with
//! the new credentials. The first nomination under the new credentials retires the old
//! ones.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use crate::wire::stun::{BindingResponseRepr, StunMessage};

/// Longest ufrag or password accepted (RFC 8839 §5.4 allows 256 characters).
const MAX_CRED_LEN: usize = 256;
/// Events kept until the engine drains them; older ones are discarded past this.
const EVENT_CAPACITY: usize = 8;

/// Consent and liveness timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IceConfig {
    /// No valid check from the selected address for this long: [`IceState::Disconnected`].
    /// Advisory: media keeps flowing. Chrome refreshes every ~2.5 s; aiortc every 5 s with
    /// ±20 % jitter, so the default sits just above 6 s to avoid flapping on aiortc.
    pub disconnected_after: Duration,
    /// No valid check for this long: consent is lost (RFC 7675 §5.1 uses 30 s) and the
    /// engine must stop sending to the address: [`IceState::Failed`].
    pub failed_after: Duration,
}

impl Default for IceConfig {
    fn default() -> Self {
        Self {
            disconnected_after: Duration::from_millis(6500),
            failed_after: Duration::from_secs(30),
        }
    }
}

/// Connection state as the engine and signaling see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IceState {
    /// No address nominated yet.
    New,
    /// A nominated address with fresh consent.
    Connected,
    /// Nominated, but no check for `disconnected_after`. Keep sending.
    Disconnected,
    /// Consent lost: stop sending. Only [`IceLite::restart`] leaves this state.
    Failed,
}

/// Something the engine forwards to signaling (or acts on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IceEvent {
    /// The state changed.
    State(IceState),
    /// The selected remote address is now this one (first nomination or a switch).
    Selected(SocketAddr),
}

/// Why a datagram was not answered. Each is counted by the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IceDrop {
    /// Not a well-formed STUN message.
    Malformed,
    /// A STUN message, but not a Binding request (responses, indications, other methods).
    NotARequest,
    /// FINGERPRINT present and wrong.
    BadFingerprint,
    /// USERNAME absent, or not `<local ufrag>:<remote ufrag>` for any live credentials.
    UnknownUser,
    /// MESSAGE-INTEGRITY absent or not keyed with the local password.
    BadIntegrity,
    /// The caller's reply buffer cannot hold the response.
    ReplyBufferTooSmall,
}

/// What `handle_stun` did with one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IceOutcome {
    /// Valid check: send `reply[..len]` back to the sender's address.
    Reply {
        len: usize,
        /// The request carried USE-CANDIDATE and the sender is now the selected address.
        nominated: bool,
    },
    /// Not answered, for this reason.
    Dropped(IceDrop),
}

#[derive(Clone, Debug)]
struct Credentials {
    local_ufrag: String,
    local_pwd: String,
    /// Unknown until the remote description is applied; checks can arrive before that (the
    /// server offered, the client answered and started checking), and MESSAGE-INTEGRITY
    /// keyed with our password already authenticates them.
    remote_ufrag: Option<String>,
    remote_pwd: Option<String>,
}

impl Credentials {
    fn accepts(&self, local: &[u8], remote: &[u8]) -> bool {
        local == self.local_ufrag.as_bytes()
            && self
                .remote_ufrag
                .as_ref()
                .is_none_or(|r| r.as_bytes() == remote)
    }
}

/// The ICE-lite agent of one transport.
#[derive(Debug)]
pub struct IceLite {
    config: IceConfig,
    current: Credentials,
    /// The credentials before an ICE restart, until the new ones nominate.
    previous: Option<Credentials>,
    selected: Option<SocketAddr>,
    /// Last valid check from the selected address.
    last_consent: Option<Instant>,
    state: IceState,
    events: VecDeque<IceEvent>,
}

/// HMAC-SHA1 of the concatenated `parts` keyed with `key`.
fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let mut out = [0u8; 20];
    // HMAC accepts keys of any length, so this cannot fail; a zero MAC never verifies.
    let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(key) else {
        return out;
    };
    for p in parts {
        mac.update(p);
    }
    let tag = mac.finalize().into_bytes();
    out.copy_from_slice(&tag[..]);
    out
}

/// Splits the USERNAME of a Binding request into `(local ufrag, remote ufrag)` — local
/// meaning the receiver's, i.e. ours. Lets the engine route a first check from an unknown
/// address to the transport that owns the local ufrag. `None` for anything else.
pub fn username_of(msg: &[u8]) -> Option<(&[u8], &[u8])> {
    let m = StunMessage::new_checked(msg).ok()?;
    if !m.is_binding_request() {
        return None;
    }
    let user = m.username()?;
    // Re-borrow the value from `msg` itself so the result outlives the view.
    let start = (user.as_ptr() as usize).checked_sub(msg.as_ptr() as usize)?;
    let user = msg.get(start..start + user.len())?;
    let colon = user.iter().position(|&b| b == b':')?;
    Some((user.get(..colon)?, user.get(colon + 1..)?))
}

impl IceLite {
    pub fn new(local_ufrag: &str, local_pwd: &str) -> Self {
        Self::with_config(local_ufrag, local_pwd, IceConfig::default())
    }

    pub fn with_config(local_ufrag: &str, local_pwd: &str, config: IceConfig) -> Self {
        Self {
            config,
            current: Credentials {
                local_ufrag: local_ufrag.to_owned(),
                local_pwd: local_pwd.to_owned(),
                remote_ufrag: None,
                remote_pwd: None,
            },
            previous: None,
            selected: None,
            last_consent: None,
            state: IceState::New,
            events: VecDeque::with_capacity(EVENT_CAPACITY),
        }
    }

    /// Applies the remote description's `a=ice-ufrag`/`a=ice-pwd`. After an ICE restart
    /// this is the client's new pair.
    pub fn set_remote_credentials(&mut self, ufrag: &str, pwd: &str) {
        self.current.remote_ufrag = Some(ufrag.to_owned());
        self.current.remote_pwd = Some(pwd.to_owned());
    }

    /// ICE restart (RFC 8445 §9): new local credentials. The selected address and the old
    /// credentials stay valid until a check under the new credentials nominates.
    pub fn restart(&mut self, new_ufrag: &str, new_pwd: &str) {
        let fresh = Credentials {
            local_ufrag: new_ufrag.to_owned(),
            local_pwd: new_pwd.to_owned(),
            remote_ufrag: None,
            remote_pwd: None,
        };
        let old = std::mem::replace(&mut self.current, fresh);
        // A restart from Failed has nothing worth keeping alive.
        self.previous = (self.state != IceState::Failed).then_some(old);
        if self.state == IceState::Failed {
            self.selected = None;
            self.last_consent = None;
            self.set_state(IceState::New);
        }
    }

    pub fn local_ufrag(&self) -> &str {
        &self.current.local_ufrag
    }

    pub fn local_pwd(&self) -> &str {
        &self.current.local_pwd
    }

    pub fn remote_ufrag(&self) -> Option<&str> {
        self.current.remote_ufrag.as_deref()
    }

    pub fn state(&self) -> IceState {
        self.state
    }

    /// Where to send media, while consent holds (`None` when new or failed).
    pub fn selected(&self) -> Option<SocketAddr> {
        match self.state {
            IceState::Connected | IceState::Disconnected => self.selected,
            IceState::New | IceState::Failed => None,
        }
    }

    /// Whether an ICE restart is still waiting for its first nomination.
    pub fn restart_pending(&self) -> bool {
        self.previous.is_some()
    }

    /// Next event for the engine, oldest first.
    pub fn poll_event(&mut self) -> Option<IceEvent> {
        self.events.pop_front()
    }

    fn push_event(&mut self, e: IceEvent) {
        if self.events.len() >= EVENT_CAPACITY {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    fn set_state(&mut self, s: IceState) {
        if self.state != s {
            self.state = s;
            self.push_event(IceEvent::State(s));
        }
    }

    /// Handles one STUN datagram from `from`. On success the Binding success response
    /// (XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT) is in `reply[..len]`.
    pub fn handle_stun(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &[u8],
        reply: &mut [u8],
    ) -> IceOutcome {
        self.handle_stun_mapped(now, from, from, msg, reply)
    }

    /// [`IceLite::handle_stun`], telling the peer its address is `mapped`
    /// (XOR-MAPPED-ADDRESS) rather than `from`: a peer behind a front (ICE over TCP) is
    /// known to the engine by a virtual address, but its real one is what it must hear.
    pub fn handle_stun_mapped(
        &mut self,
        now: Instant,
        from: SocketAddr,
        mapped: SocketAddr,
        msg: &[u8],
        reply: &mut [u8],
    ) -> IceOutcome {
        match self.check(now, from, mapped, msg, reply) {
            Ok(o) => o,
            Err(d) => IceOutcome::Dropped(d),
        }
    }

    fn check(
        &mut self,
        now: Instant,
        from: SocketAddr,
        mapped: SocketAddr,
        msg: &[u8],
        reply: &mut [u8],
    ) -> Result<IceOutcome, IceDrop> {
        let m = StunMessage::new_checked(msg).map_err(|_| IceDrop::Malformed)?;
        if !m.is_binding_request() {
            return Err(IceDrop::NotARequest);
        }
        if m.check_fingerprint() == Some(false) {
            return Err(IceDrop::BadFingerprint);
        }
        let user = m.username().ok_or(IceDrop::UnknownUser)?;
        if user.len() > 2 * MAX_CRED_LEN + 1 {
            return Err(IceDrop::UnknownUser);
        }
        let colon = user
            .iter()
            .position(|&b| b == b':')
            .ok_or(IceDrop::UnknownUser)?;
        let (local, remote) = (&user[..colon], &user[colon + 1..]);
        let under_current = if self.current.accepts(local, remote) {
            true
        } else if self
            .previous
            .as_ref()
            .is_some_and(|p| p.accepts(local, remote))
        {
            false
        } else {
            return Err(IceDrop::UnknownUser);
        };
        let creds = if under_current {
            &self.current
        } else {
            self.previous.as_ref().unwrap_or(&self.current)
        };
        let key = creds.local_pwd.as_bytes();
        if !m.verify_message_integrity(&|head: &[u8; 4], rest: &[u8]| hmac_sha1(key, &[head, rest]))
        {
            return Err(IceDrop::BadIntegrity);
        }
        let response = BindingResponseRepr {
            transaction_id: m.transaction_id(),
            xor_mapped: mapped,
        };
        let len = response
            .emit_with_integrity(reply, &|data: &[u8]| hmac_sha1(key, &[data]))
            .map_err(|_| IceDrop::ReplyBufferTooSmall)?;

        // Authenticated: now the state may move.
        if self.state == IceState::Failed {
            // Consent is lost for these credentials; answering lets the client notice, but
            // only a restart revives the transport.
            return Ok(IceOutcome::Reply {
                len,
                nominated: false,
            });
        }
        let nominated = m.has_use_candidate() && under_current;
        if nominated {
            if self.selected != Some(from) {
                self.selected = Some(from);
                self.push_event(IceEvent::Selected(from));
            }
            self.previous = None;
        }
        if nominated || self.selected == Some(from) {
            self.last_consent = Some(now);
            self.set_state(IceState::Connected);
        }
        Ok(IceOutcome::Reply { len, nominated })
    }

    /// When `handle_timeout` next needs to run, if at all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let last = self.last_consent?;
        match self.state {
            IceState::Connected => Some(last + self.config.disconnected_after),
            IceState::Disconnected => Some(last + self.config.failed_after),
            IceState::New | IceState::Failed => None,
        }
    }

    /// Advances the consent timers to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(last) = self.last_consent else {
            return;
        };
        let idle = now.saturating_duration_since(last);
        if matches!(self.state, IceState::Connected | IceState::Disconnected) {
            if idle >= self.config.failed_after {
                self.set_state(IceState::Failed);
            } else if idle >= self.config.disconnected_after {
                self.set_state(IceState::Disconnected);
            }
        }
    }
}

#[cfg(test)]
mod tests;
