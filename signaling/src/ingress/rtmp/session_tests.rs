//! Whole sessions from byte fixtures, written from the RTMP specification (Adobe, 2012) and
//! what OBS (its librtmp) and FFmpeg (`libavformat/rtmpproto.c`) send:
//! - the handshake: C0 = 3, C1 with a zero version (plain) or with Flash Player 9's
//!   version bytes (9.0.124.2) and a digest, C2 echoing S1;
//! - OBS: Set Chunk Size 4096 right after the handshake, `connect` with `app`, `type`
//!   "nonprivate", `flashVer` "FMLE/3.0 (compatible; FMSc/1.0)", `swfUrl` and `tcUrl`;
//!   `releaseStream`, `FCPublish`, `createStream` without waiting for answers, then
//!   `publish` on stream 1 once `createStream` answered; `@setDataFrame` `onMetaData`,
//!   then the AVC and AAC sequence headers; `FCUnpublish` and `deleteStream` at the end;
//! - FFmpeg: `connect` with `app`, `flashVer` "FMLE/3.0 (compatible; Lavf…)", `tcUrl`,
//!   `fpad`, `capabilities`, `audioCodecs`, `videoCodecs`, `videoFunction`, and the
//!   same command sequence; it announces Window Acknowledgement Size, so it is acked.

use super::*;

fn c1(digest: bool) -> Vec<u8> {
    let mut c = vec![0u8; HANDSHAKE_SIZE];
    c[..4].copy_from_slice(&1234u32.to_be_bytes());
    if digest {
        c[4..8].copy_from_slice(&[9, 0, 124, 2]);
    }
    for (i, b) in c[8..].iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    c
}

fn command(csid: u8, stream: u32, chunk: usize, values: &[Amf]) -> Vec<u8> {
    let mut out = Vec::new();
    chunk::write_message(
        &mut out,
        csid,
        chunk,
        20,
        stream,
        0,
        &amf0::encode_all(values),
    );
    out
}

fn s(v: &str) -> Amf {
    Amf::String(v.into())
}

/// What OBS sends after the handshake, up to `publish`.
fn obs_commands(key: &str) -> Vec<u8> {
    let mut b = Vec::new();
    chunk::write_message(&mut b, 2, 128, 1, 0, 0, &4096u32.to_be_bytes());
    b.extend(command(
        3,
        0,
        4096,
        &[
            s("connect"),
            Amf::Number(1.0),
            Amf::object(&[
                ("app", s("live")),
                ("type", s("nonprivate")),
                ("flashVer", s("FMLE/3.0 (compatible; FMSc/1.0)")),
                ("swfUrl", s("rtmp://127.0.0.1:1935/live")),
                ("tcUrl", s("rtmp://127.0.0.1:1935/live")),
            ]),
        ],
    ));
    b.extend(command(
        3,
        0,
        4096,
        &[s("releaseStream"), Amf::Number(2.0), Amf::Null, s(key)],
    ));
    b.extend(command(
        3,
        0,
        4096,
        &[s("FCPublish"), Amf::Number(3.0), Amf::Null, s(key)],
    ));
    b.extend(command(
        3,
        0,
        4096,
        &[s("createStream"), Amf::Number(4.0), Amf::Null],
    ));
    b.extend(command(
        4,
        1,
        4096,
        &[s("publish"), Amf::Number(5.0), Amf::Null, s(key), s("live")],
    ));
    b
}

fn handshake(sess: &mut Session, digest: bool) -> Vec<u8> {
    let mut hello = vec![3];
    hello.extend(c1(digest));
    sess.receive(&hello).unwrap();
    let out = sess.take_output();
    assert_eq!(out.len(), 1 + 2 * HANDSHAKE_SIZE);
    assert_eq!(out[0], 3);
    // S1's version is zero: digest clients fall back to the plain handshake.
    assert_eq!(&out[5..9], &[0, 0, 0, 0]);
    // S2 echoes C1's time and random bytes.
    let s2 = &out[1 + HANDSHAKE_SIZE..];
    assert_eq!(&s2[..4], &c1(digest)[..4]);
    assert_eq!(&s2[8..], &c1(digest)[8..]);
    assert!(!sess.handshaken());
    // C2 echoes S1.
    sess.receive(&out[1..1 + HANDSHAKE_SIZE]).unwrap();
    assert!(sess.handshaken());
    out
}

/// The server's replies, as messages.
fn replies(bytes: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
    let mut r = ChunkReader::new();
    let mut at = 0;
    let mut out = Vec::new();
    while let Some((used, m)) = r.read_chunk(&bytes[at..]).unwrap() {
        at += used;
        if let Some(m) = m {
            if m.type_id == 1 {
                let size =
                    u32::from_be_bytes([m.payload[0], m.payload[1], m.payload[2], m.payload[3]]);
                r.set_chunk_size(size).unwrap();
            }
            out.push((m.type_id, m.stream_id, m.payload));
        }
    }
    assert_eq!(at, bytes.len());
    out
}

fn commands_of(replies: &[(u8, u32, Vec<u8>)]) -> Vec<Vec<Amf>> {
    replies
        .iter()
        .filter(|(t, _, _)| *t == 20)
        .map(|(_, _, p)| amf0::decode_all(p).unwrap())
        .collect()
}

#[test]
fn an_obs_session_publishes_in_any_byte_split() {
    for digest in [false, true] {
        for split in [1usize, 7, 100, usize::MAX] {
            let mut sess = Session::new(&[0xAB; 1528]);
            handshake(&mut sess, digest);
            let bytes = obs_commands("SECRETKEY");
            for piece in bytes.chunks(split.min(bytes.len())) {
                sess.receive(piece).unwrap();
            }
            let mut events = Vec::new();
            while let Some(e) = sess.poll_event() {
                events.push(e);
            }
            assert_eq!(
                events,
                [
                    Event::Connected {
                        app: "live".into(),
                        tc_url: "rtmp://127.0.0.1:1935/live".into(),
                        flash_ver: "FMLE/3.0 (compatible; FMSc/1.0)".into(),
                    },
                    Event::Publish {
                        app: "live".into(),
                        stream_key: "SECRETKEY".into(),
                    },
                ],
                "split {split}, digest {digest}"
            );
            let r = replies(&sess.take_output());
            // Window Ack Size, Set Peer Bandwidth, Set Chunk Size, then the answers.
            let kinds: Vec<u8> = r.iter().map(|(t, _, _)| *t).collect();
            assert_eq!(kinds, [5, 6, 1, 20, 20, 20, 20]);
            let cmds = commands_of(&r);
            assert_eq!(cmds[0][0], s("_result"));
            assert_eq!(
                cmds[0][3].get("code"),
                Some(&s("NetConnection.Connect.Success"))
            );
            let txns: Vec<f64> = cmds.iter().filter_map(|c| c[1].as_f64()).collect();
            assert_eq!(txns, [1.0, 2.0, 3.0, 4.0]);
            assert_eq!(
                cmds[3][3],
                Amf::Number(1.0),
                "createStream returns stream 1"
            );
            sess.accept_publish();
            assert!(sess.publishing());
            let r = replies(&sess.take_output());
            assert_eq!(r[0].0, 4, "Stream Begin");
            let status = &commands_of(&r)[0];
            assert_eq!(status[0], s("onStatus"));
            assert_eq!(status[3].get("code"), Some(&s("NetStream.Publish.Start")));
            assert_eq!(r[1].1, 1, "onStatus on the publishing stream");
        }
    }
}

#[test]
fn media_metadata_and_unpublish_follow_an_accepted_publish() {
    let mut sess = Session::new(&[]);
    handshake(&mut sess, false);
    sess.receive(&obs_commands("k")).unwrap();
    while sess.poll_event().is_some() {}
    // Media before the publish is accepted is not passed on.
    let mut early = Vec::new();
    chunk::write_message(&mut early, 6, 4096, 9, 1, 0, &[0x17, 0, 0, 0, 0]);
    sess.receive(&early).unwrap();
    assert_eq!(sess.poll_event(), None);
    sess.accept_publish();
    let mut b = Vec::new();
    let meta = amf0::encode_all(&[
        s("@setDataFrame"),
        s("onMetaData"),
        Amf::object(&[
            ("width", Amf::Number(640.0)),
            ("videocodecid", Amf::Number(7.0)),
        ]),
    ]);
    chunk::write_message(&mut b, 4, 4096, 18, 1, 0, &meta);
    chunk::write_message(
        &mut b,
        6,
        4096,
        9,
        1,
        33,
        &[0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41],
    );
    chunk::write_message(&mut b, 4, 4096, 8, 1, 40, &[0xAF, 1, 0x21]);
    b.extend(command(
        3,
        0,
        4096,
        &[s("FCUnpublish"), Amf::Number(6.0), Amf::Null, s("k")],
    ));
    b.extend(command(
        3,
        0,
        4096,
        &[
            s("deleteStream"),
            Amf::Number(7.0),
            Amf::Null,
            Amf::Number(1.0),
        ],
    ));
    sess.receive(&b).unwrap();
    let Some(Event::Metadata(m)) = sess.poll_event() else {
        panic!("no metadata");
    };
    assert_eq!(m.get("width"), Some(&Amf::Number(640.0)));
    assert!(matches!(
        sess.poll_event(),
        Some(Event::Video { timestamp: 33, .. })
    ));
    assert!(matches!(
        sess.poll_event(),
        Some(Event::Audio { timestamp: 40, .. })
    ));
    assert_eq!(sess.poll_event(), Some(Event::Unpublished));
    assert_eq!(sess.poll_event(), None);
}

#[test]
fn a_refused_publish_says_why() {
    let mut sess = Session::new(&[]);
    handshake(&mut sess, false);
    sess.receive(&obs_commands("wrong")).unwrap();
    let _ = sess.take_output();
    sess.reject_publish("no ingress has this stream key");
    let status = &commands_of(&replies(&sess.take_output()))[0];
    assert_eq!(status[3].get("level"), Some(&s("error")));
    assert_eq!(status[3].get("code"), Some(&s("NetStream.Publish.BadName")));
    assert!(!sess.publishing());
}

#[test]
fn ffmpeg_connect_and_window_acknowledgements() {
    let mut sess = Session::new(&[]);
    handshake(&mut sess, true);
    let mut b = Vec::new();
    chunk::write_message(&mut b, 2, 128, 5, 0, 0, &5000u32.to_be_bytes());
    b.extend(command(
        3,
        0,
        128,
        &[
            s("connect"),
            Amf::Number(1.0),
            Amf::object(&[
                ("app", s("live")),
                ("flashVer", s("FMLE/3.0 (compatible; Lavf59.27.100)")),
                ("tcUrl", s("rtmp://127.0.0.1:1935/live")),
                ("fpad", Amf::Bool(false)),
                ("capabilities", Amf::Number(15.0)),
                ("audioCodecs", Amf::Number(4071.0)),
                ("videoCodecs", Amf::Number(252.0)),
                ("videoFunction", Amf::Number(1.0)),
            ]),
        ],
    ));
    sess.receive(&b).unwrap();
    assert!(matches!(sess.poll_event(), Some(Event::Connected { .. })));
    let _ = sess.take_output();
    // 5000 bytes of padding data (an unused message type) trigger one acknowledgement.
    let mut pad = Vec::new();
    chunk::write_message(&mut pad, 7, 128, 22, 1, 0, &[0u8; 5000]);
    sess.receive(&pad).unwrap();
    let r = replies(&sess.take_output());
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, 3, "an Acknowledgement");
}

#[test]
fn garbage_and_truncated_handshakes_are_refused_or_wait() {
    for (bytes, want) in [
        (&b"GET / HTTP/1.1\r\n"[..], "bad_handshake"),
        (&[0x16, 3, 1][..], "bad_handshake"),
        (&[6][..], "bad_handshake"),
    ] {
        let mut sess = Session::new(&[]);
        let e = sess.receive(bytes).unwrap_err();
        assert_eq!(e.reason(), want, "{e}");
        assert!(sess.take_output().is_empty());
    }
    // A truncated C1 waits for more, answering nothing.
    let mut sess = Session::new(&[]);
    let mut hello = vec![3];
    hello.extend(&c1(false)[..700]);
    sess.receive(&hello).unwrap();
    assert!(sess.take_output().is_empty());
    // Garbage after the handshake is a protocol error, not a panic.
    let mut sess = Session::new(&[]);
    handshake(&mut sess, false);
    let e = sess
        .receive(&[0x03, 0, 0, 0, 0, 0, 5, 20, 0, 0, 0, 0, 0x11, 1, 2, 3, 4])
        .unwrap_err();
    assert_eq!(e.reason(), "protocol_error");
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut seed = 0x1234_5678u32;
    for _ in 0..300 {
        let mut sess = Session::new(&[]);
        handshake(&mut sess, false);
        let bytes: Vec<u8> = (0..600)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        let _ = sess.receive(&bytes);
        while sess.poll_event().is_some() {}
    }
}
