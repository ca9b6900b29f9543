//! The control socket end to end: a fake forwarder behind `control::channel`, served over a
//! Unix socket and over TCP (with and without a shared secret), driven by
//! `SocketControlClient`s and by hostile raw connections.
//!
//! What must hold: every request gets its own answer even when clients reuse request ids;
//! unsolicited events reach every client; a wrong secret, garbage or an oversized frame
//! closes only the offending connection; a non-loopback bind without a secret is refused.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use prism_forwarder::control::socket::{
    serve, ControlListen, ControlSocketHandle, SocketControlClient,
};
use prism_forwarder::control::{
    channel, command, error_event, event, ok_event, ControlError, ControlServer, Event,
};
use prism_proto::control::{CreateRoom, GetStats, KeyframeNeeded, RoomCreated};

const T: Duration = Duration::from_secs(5);

fn create_room(room_id: u64) -> command::Body {
    command::Body::CreateRoom(CreateRoom {
        room_id,
        pin_core: false,
        core: 0,
    })
}

fn keyframe_needed(track_id: u64) -> Event {
    Event {
        request_id: 0,
        body: Some(event::Body::KeyframeNeeded(KeyframeNeeded {
            track_id,
            spatial: 1,
            ssrc: 1234,
        })),
    }
}

fn room_of(ev: &Event) -> u64 {
    match &ev.body {
        Some(event::Body::RoomCreated(RoomCreated { room_id, .. })) => *room_id,
        other => panic!("expected RoomCreated, got {other:?}"),
    }
}

/// Answers CreateRoom with RoomCreated, GetStats with Ok, anything else with Error.
fn spawn_fake_forwarder(server: ControlServer) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        while let Ok(cmd) = server.recv_timeout(Duration::from_millis(20)) {
            let Some(cmd) = cmd else { continue };
            let ev = match cmd.body {
                Some(command::Body::CreateRoom(c)) => Event {
                    request_id: cmd.request_id,
                    body: Some(event::Body::RoomCreated(RoomCreated {
                        room_id: c.room_id,
                        core: 3,
                        ..Default::default()
                    })),
                },
                Some(command::Body::GetStats(_)) => ok_event(cmd.request_id),
                _ => error_event(cmd.request_id, "unsupported"),
            };
            if server.send_event(ev).is_err() {
                return;
            }
        }
    })
}

struct Setup {
    handle: ControlSocketHandle,
    /// Injects unsolicited events as a core would.
    events: crossbeam_channel::Sender<Event>,
    fake: Option<thread::JoinHandle<()>>,
}

impl Setup {
    fn start(listen: ControlListen) -> Self {
        let (client, server) = channel(64);
        let events = server.events_sender();
        let fake = spawn_fake_forwarder(server);
        let handle = serve(listen, client).expect("serve");
        Setup {
            handle,
            events,
            fake: Some(fake),
        }
    }

    fn addr(&self) -> ControlListen {
        self.handle.local_addr().clone()
    }

    fn wait_connections(&self, n: usize) {
        let deadline = Instant::now() + T;
        while self.handle.connections() != n {
            assert!(
                Instant::now() < deadline,
                "expected {n} connections, have {}",
                self.handle.connections()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn stop(mut self) {
        let fake = self.fake.take();
        self.handle.shutdown();
        // The server dropped its client: the fake forwarder sees the disconnect and ends.
        drop(self.events);
        if let Some(f) = fake {
            f.join().unwrap();
        }
    }
}

fn unix_path() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "prism-ctl-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

fn loopback() -> ControlListen {
    ControlListen::Tcp {
        addr: "127.0.0.1:0".parse().unwrap(),
        secret: None,
    }
}

fn loopback_with_secret(secret: &str) -> ControlListen {
    ControlListen::Tcp {
        addr: "127.0.0.1:0".parse().unwrap(),
        secret: Some(secret.into()),
    }
}

/// Requests, answers and an unsolicited event over one server.
fn exercise(setup: &Setup, secret: Option<&str>) {
    let mut c = SocketControlClient::connect(&setup.addr(), secret).unwrap();
    for room in [7, 8, 9] {
        let ev = c.request(create_room(room), T).unwrap();
        assert_eq!(room_of(&ev), room);
    }
    let ev = c.request(command::Body::GetStats(GetStats {}), T).unwrap();
    assert!(matches!(ev.body, Some(event::Body::Ok(_))), "{ev:?}");
    let ev = c
        .request(
            command::Body::CloseRoom(prism_proto::control::CloseRoom { room_id: 7 }),
            T,
        )
        .unwrap();
    assert!(matches!(ev.body, Some(event::Body::Error(_))), "{ev:?}");

    setup.events.send(keyframe_needed(42)).unwrap();
    let ev = c.next_event(T).unwrap();
    assert_eq!(ev, keyframe_needed(42));
}

#[test]
fn unix_socket_requests_get_answers() {
    let path = unix_path();
    let setup = Setup::start(ControlListen::Unix(path.clone()));
    assert!(path.exists());
    exercise(&setup, None);
    setup.stop();
    assert!(!path.exists(), "shutdown removes the socket file");
}

#[test]
fn tcp_loopback_requests_get_answers() {
    let setup = Setup::start(loopback());
    exercise(&setup, None);
    setup.stop();
}

#[test]
fn tcp_with_secret_requests_get_answers() {
    let setup = Setup::start(loopback_with_secret("s3cret"));
    exercise(&setup, Some("s3cret"));
    setup.stop();
}

#[test]
fn answers_route_to_their_own_client_even_with_equal_request_ids() {
    let setup = Setup::start(ControlListen::Unix(unix_path()));
    let addr = setup.addr();
    // Both clients number their requests 1, 2, 3 …: only the server's rewrite tells them
    // apart.
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let addr = addr.clone();
            thread::spawn(move || {
                let mut c = SocketControlClient::connect(&addr, None).unwrap();
                for i in 0..200 {
                    let room = w * 1_000_000 + i;
                    let ev = c.request(create_room(room), T).unwrap();
                    assert_eq!(ev.request_id, i + 1);
                    assert_eq!(room_of(&ev), room);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    setup.stop();
}

#[test]
fn unsolicited_events_reach_every_client() {
    let setup = Setup::start(loopback());
    let mut a = SocketControlClient::connect(&setup.addr(), None).unwrap();
    let mut b = SocketControlClient::connect(&setup.addr(), None).unwrap();
    setup.wait_connections(2);
    setup.events.send(keyframe_needed(1)).unwrap();
    setup.events.send(keyframe_needed(2)).unwrap();
    // A request in between must not swallow the unsolicited events.
    assert_eq!(room_of(&a.request(create_room(5), T).unwrap()), 5);
    for c in [&mut a, &mut b] {
        assert_eq!(c.next_event(T).unwrap(), keyframe_needed(1));
        assert_eq!(c.next_event(T).unwrap(), keyframe_needed(2));
        assert!(matches!(
            c.next_event(Duration::from_millis(50)),
            Err(ControlError::Timeout)
        ));
    }
    setup.stop();
}

#[test]
fn wrong_or_missing_secret_is_refused() {
    let setup = Setup::start(loopback_with_secret("right-secret"));
    let addr = setup.addr();

    for secret in [
        Some("wrong-secret"),
        Some("right-secre"),
        Some("right-secretX"),
        None,
    ] {
        let mut c = SocketControlClient::connect(&addr, secret).unwrap();
        match c.request(create_room(1), T) {
            Err(ControlError::Disconnected | ControlError::Io(_)) => {}
            other => panic!("secret {secret:?}: expected a closed connection, got {other:?}"),
        }
    }
    // Refused clients never counted as connections, and the right secret still works.
    let mut ok = SocketControlClient::connect(&addr, Some("right-secret")).unwrap();
    assert_eq!(room_of(&ok.request(create_room(2), T).unwrap()), 2);
    setup.wait_connections(1);
    setup.stop();
}

#[test]
fn oversized_secret_frame_is_refused() {
    let setup = Setup::start(loopback_with_secret("abc"));
    let ControlListen::Tcp { addr, .. } = setup.addr() else {
        unreachable!()
    };
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert_closed(&mut raw);
    setup.stop();
}

/// Reads until EOF or reset: the server must close the connection without an answer.
fn assert_closed(stream: &mut impl Read) {
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("server answered {n} bytes instead of closing"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn raw_unix(setup: &Setup) -> UnixStream {
    let ControlListen::Unix(path) = setup.addr() else {
        unreachable!()
    };
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s
}

#[test]
fn garbage_frame_disconnects_only_that_client() {
    let setup = Setup::start(ControlListen::Unix(unix_path()));
    let mut good = SocketControlClient::connect(&setup.addr(), None).unwrap();
    assert_eq!(room_of(&good.request(create_room(1), T).unwrap()), 1);

    let mut bad = raw_unix(&setup);
    // A well-framed body that is not a Command.
    let body = [0xffu8; 12];
    bad.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    bad.write_all(&body).unwrap();
    assert_closed(&mut bad);

    setup.wait_connections(1);
    assert_eq!(room_of(&good.request(create_room(2), T).unwrap()), 2);
    setup.stop();
}

#[test]
fn oversized_length_disconnects_only_that_client() {
    let setup = Setup::start(loopback());
    let ControlListen::Tcp { addr, .. } = setup.addr() else {
        unreachable!()
    };
    let mut good = SocketControlClient::connect(&setup.addr(), None).unwrap();
    assert_eq!(room_of(&good.request(create_room(1), T).unwrap()), 1);

    let mut bad = TcpStream::connect(addr).unwrap();
    bad.set_read_timeout(Some(T)).unwrap();
    // 4 GiB announced; the server must not try to allocate or wait for it.
    bad.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert_closed(&mut bad);

    setup.wait_connections(1);
    assert_eq!(room_of(&good.request(create_room(2), T).unwrap()), 2);
    setup.events.send(keyframe_needed(9)).unwrap();
    assert_eq!(good.next_event(T).unwrap(), keyframe_needed(9));
    setup.stop();
}

#[test]
fn truncated_frame_then_close_disconnects_only_that_client() {
    let setup = Setup::start(ControlListen::Unix(unix_path()));
    let mut good = SocketControlClient::connect(&setup.addr(), None).unwrap();
    let mut bad = raw_unix(&setup);
    bad.write_all(&[0, 0, 0, 100, 1, 2, 3]).unwrap();
    bad.shutdown(std::net::Shutdown::Write).unwrap();
    assert_closed(&mut bad);
    assert_eq!(room_of(&good.request(create_room(3), T).unwrap()), 3);
    setup.stop();
}

#[test]
fn non_loopback_bind_without_secret_is_refused() {
    let (client, _server) = channel(4);
    for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.1:0"] {
        let addr: SocketAddr = addr.parse().unwrap();
        let err = serve(ControlListen::Tcp { addr, secret: None }, client.clone()).unwrap_err();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::InvalidInput,
            "{addr}: {err}"
        );
        assert!(err.to_string().contains("secret"), "{err}");
    }
    // An empty secret is no secret.
    let err = serve(
        ControlListen::Tcp {
            addr: "0.0.0.0:0".parse().unwrap(),
            secret: Some(String::new()),
        },
        client.clone(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn non_loopback_bind_with_secret_is_allowed() {
    let listen = ControlListen::Tcp {
        addr: "0.0.0.0:0".parse().unwrap(),
        secret: Some("shared".into()),
    };
    let setup = Setup::start(listen);
    let ControlListen::Tcp { addr, .. } = setup.addr() else {
        unreachable!()
    };
    let target = ControlListen::Tcp {
        addr: SocketAddr::from(([127, 0, 0, 1], addr.port())),
        secret: None,
    };
    let mut c = SocketControlClient::connect(&target, Some("shared")).unwrap();
    assert_eq!(room_of(&c.request(create_room(4), T).unwrap()), 4);
    setup.stop();
}

#[test]
fn second_server_on_a_live_unix_socket_is_refused_and_stale_file_is_replaced() {
    let path = unix_path();
    let setup = Setup::start(ControlListen::Unix(path.clone()));
    let (client, _server) = channel(4);
    let err = serve(ControlListen::Unix(path.clone()), client.clone()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    setup.stop();

    // A socket file nobody listens on (a crashed server) is taken over.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let setup = Setup::start(ControlListen::Unix(path.clone()));
    let mut c = SocketControlClient::connect(&setup.addr(), None).unwrap();
    assert_eq!(room_of(&c.request(create_room(6), T).unwrap()), 6);
    setup.stop();
    assert!(!path.exists());
}

#[test]
fn shutdown_closes_open_connections() {
    let setup = Setup::start(loopback());
    let mut c = SocketControlClient::connect(&setup.addr(), None).unwrap();
    assert_eq!(room_of(&c.request(create_room(1), T).unwrap()), 1);
    setup.stop();
    assert!(matches!(
        c.next_event(T),
        Err(ControlError::Disconnected | ControlError::Io(_))
    ));
}

#[test]
fn in_process_requests_work_beside_the_socket_server() {
    let (client, server) = channel(64);
    let fake = spawn_fake_forwarder(server);
    let handle = serve(loopback(), client.clone()).unwrap();
    let mut remote = SocketControlClient::connect(handle.local_addr(), None).unwrap();
    for room in 0..20 {
        assert_eq!(
            room_of(&client.request(create_room(room), T).unwrap()),
            room
        );
        assert_eq!(
            room_of(&remote.request(create_room(room + 100), T).unwrap()),
            room + 100
        );
    }
    handle.shutdown();
    drop(client);
    fake.join().unwrap();
}
