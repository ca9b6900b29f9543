// LiveKit's JS SDK (`livekit-client`, as the try-it page serves it) in Debian's Chromium,
// driven by playwright-core, against `prism serve --dev`. Run by
// signaling/tests/browser_livekit.rs; usable by hand:
//
//   node interop.mjs --url http://127.0.0.1:7880 --scenario two-browsers --out /tmp/shots
//
// Scenarios:
// - two-browsers: alice and bob join the same room through the page's own form, each
//   publishing simulcast camera and microphone (Chromium's fake devices). Each must decode
//   the other's video and receive the other's audio (getStats), bob's muted microphone
//   must show on alice's page, alice's chat message must reach bob, the status page must
//   list both, and when alice leaves, bob's page must drop her tile. Screenshots of the page (desktop and phone sizes) and of the status page go
//   to --out.
// - with-python: one browser participant joins a room where LiveKit's Python SDK
//   publishes (started by the Rust test); it must decode the Python participant's video,
//   receive its audio and its data, and see it leave. With --viewer the browser publishes
//   nothing. The selected ICE candidate pairs (UDP or TCP) are reported as `transports`.
// - relay: alice and bob join with relay-only ICE (the page's `?relay=1`: livekit-client's
//   `rtcConfig: { iceTransportPolicy: 'relay' }`), so media can only flow through the TURN
//   servers Prism hands out in the JoinResponse. Each must decode the other's video, and
//   the selected candidate pair of every connection (getStats) must have a local candidate
//   of type `relay`, over --relay-protocol (udp or tls) when given.
//
// CHROMIUM_EXTRA_ARGS (space-separated) adds Chromium flags.
//
// Prints progress on stderr and one JSON line last on stdout: {ok, failures, ...figures}.
// Exits 1 when a check failed. Never waits forever: every wait has a deadline, and the
// whole run has --timeout seconds.

import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]?.startsWith('--') ? '1' : all[i + 1] ?? '1']);
    return acc;
  }, []),
);
const URL_BASE = (args.url || 'http://127.0.0.1:7880').replace(/\/$/, '');
const SCENARIO = args.scenario || 'two-browsers';
const ROOM = args.room || 'browser-' + Math.random().toString(36).slice(2, 8);
const OUT = args.out || '';
const TIMEOUT_S = Number(args.timeout || 120);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const started = Date.now();
const log = (...m) => console.error(`[${((Date.now() - started) / 1000).toFixed(1)}s]`, ...m);
const failures = [];
const result = { scenario: SCENARIO, room: ROOM };
let browser;

function check(ok, what) {
  if (!ok) {
    failures.push(what);
    log('FAILED:', what);
  }
  return ok;
}

function finish(code) {
  result.ok = failures.length === 0 && code === 0;
  result.failures = failures;
  result.elapsed_s = (Date.now() - started) / 1000;
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(result.ok ? 0 : 1);
}

const overall = setTimeout(() => {
  failures.push(`the run took longer than ${TIMEOUT_S} s`);
  browser?.close().catch(() => {});
  finish(1);
}, TIMEOUT_S * 1000);

/** Polls `fn` in the page until it returns a truthy value, or fails after `ms`. */
async function until(page, what, fn, arg, ms = 30000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await page.evaluate(fn, arg);
      if (last) return last;
    } catch (e) {
      last = String(e);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}

// In the page: what the browser's own getStats() says about every track received from
// `identity`, straight from RTCPeerConnection stats and independent of the page's figures.
async function receivedFrom(identity) {
  const room = window.prism.room;
  const out = { video: null, audio: null };
  for (const p of room?.remoteParticipants.values() ?? []) {
    if (identity && p.identity !== identity) continue;
    for (const pub of p.trackPublications.values()) {
      const report = await pub.track?.getRTCStatsReport?.();
      for (const s of report?.values() ?? []) {
        if (s.type !== 'inbound-rtp') continue;
        if (s.kind === 'video') {
          out.video = {
            framesDecoded: s.framesDecoded ?? 0,
            bytesReceived: s.bytesReceived ?? 0,
            frameWidth: s.frameWidth ?? 0,
            frameHeight: s.frameHeight ?? 0,
            packetsLost: s.packetsLost ?? 0,
            packetsReceived: s.packetsReceived ?? 0,
          };
        } else {
          out.audio = {
            bytesReceived: s.bytesReceived ?? 0,
            totalSamplesReceived: s.totalSamplesReceived ?? 0,
            packetsReceived: s.packetsReceived ?? 0,
            packetsLost: s.packetsLost ?? 0,
          };
        }
      }
    }
  }
  return out;
}

// In the page: the simulcast layers the local camera is sending.
async function sentLayers() {
  const lp = window.prism.room?.localParticipant;
  const cam = lp?.getTrackPublication('camera')?.track;
  const report = await cam?.getRTCStatsReport();
  const layers = [];
  for (const s of report?.values() ?? []) {
    if (s.type === 'outbound-rtp' && s.kind === 'video') {
      layers.push({
        rid: s.rid ?? '',
        bytesSent: s.bytesSent ?? 0,
        width: s.frameWidth ?? 0,
        height: s.frameHeight ?? 0,
        limitedBy: s.qualityLimitationReason ?? '',
      });
    }
  }
  return layers.sort((a, b) => a.width - b.width);
}

// In the page: the selected ICE candidate pair of the publisher and subscriber
// connections (from the camera's and a received track's getStats), so a test can tell
// whether media went over UDP or TCP.
async function transportPairs() {
  const room = window.prism.room;
  const reports = [];
  const cam = room?.localParticipant?.getTrackPublication('camera')?.track;
  if (cam) reports.push(['publisher', await cam.getRTCStatsReport()]);
  outer: for (const p of room?.remoteParticipants.values() ?? []) {
    for (const pub of p.trackPublications.values()) {
      const r = await pub.track?.getRTCStatsReport?.();
      if (r) {
        reports.push(['subscriber', r]);
        break outer;
      }
    }
  }
  const cand = (c) => c && { protocol: c.protocol, type: c.candidateType, address: c.address, port: c.port, tcpType: c.tcpType ?? null };
  const out = {};
  for (const [which, report] of reports) {
    if (!report) continue;
    const byId = new Map([...report.values()].map((s) => [s.id, s]));
    let pair = null;
    for (const s of byId.values()) {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId) ?? pair;
    }
    if (!pair) {
      for (const s of byId.values()) if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
    }
    out[which] = pair && {
      local: cand(byId.get(pair.localCandidateId)),
      remote: cand(byId.get(pair.remoteCandidateId)),
      bytesSent: pair.bytesSent ?? 0,
      bytesReceived: pair.bytesReceived ?? 0,
    };
  }
  return out;
}

async function newParticipant(name, viewport) {
  const context = await browser.newContext({
    viewport,
    permissions: ['camera', 'microphone'],
    deviceScaleFactor: 1,
  });
  const page = await context.newPage();
  const consoleLines = [];
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') consoleLines.push(`${m.type()}: ${m.text()}`.slice(0, 300));
  });
  // When the SDK opens each signaling socket: the /rtc/v1 attempt, then /rtc.
  const sockets = [];
  page.on('websocket', (ws) => sockets.push({ path: new URL(ws.url()).pathname, at: Date.now() }));
  page.on('pageerror', (e) => {
    consoleLines.push('pageerror: ' + e.message);
    log(name, 'page error:', e.message);
  });
  const relay = SCENARIO === 'relay' ? '&relay=1' : '';
  await page.goto(`${URL_BASE}/?room=${encodeURIComponent(ROOM)}&name=${encodeURIComponent(name)}${relay}`);
  await page.waitForSelector('#join-form');
  return { name, context, page, consoleLines, sockets };
}

async function join(who) {
  if (args.viewer) {
    // Join without camera and microphone: watch and listen only.
    await who.page.uncheck('#use-camera');
    await who.page.uncheck('#use-mic');
  }
  await who.page.click('#join-btn');
  await until(who.page, `${who.name} to connect`, () => window.prism.room?.state === 'connected' && !!window.prism.localIdentity);
  who.identity = await who.page.evaluate(() => window.prism.localIdentity);
  // Measured in the page, from the Join click to room.connect() resolving.
  who.connectMs = Math.round(await who.page.evaluate(() => window.prism.joinedAt - window.prism.joinClickedAt));
  const v1 = who.sockets.find((w) => w.path.endsWith('/rtc/v1'));
  const v0 = who.sockets.find((w) => w.path.endsWith('/rtc'));
  who.fallbackMs = v1 && v0 ? v0.at - v1.at : null;
  log(who.name, 'connected as', who.identity, 'in', who.connectMs, 'ms');
}

async function waitMediaFrom(who, peer, ms = 40000) {
  const got = await until(
    who.page,
    `${who.name} to decode video and receive audio from ${peer}`,
    async (id) => {
      const r = await (0, eval)('(' + window.__receivedFrom + ')')(id);
      return r.video?.framesDecoded > 0 && r.audio?.bytesReceived > 0 && r.audio?.totalSamplesReceived > 0 ? r : null;
    },
    peer,
    ms,
  );
  return got;
}

// In the page: the selected candidate pair of every connection a track uses, as
// {track, local, protocol, relayProtocol, remote}.
async function selectedPairs() {
  const room = window.prism.room;
  const tracks = [];
  for (const pub of room?.localParticipant.trackPublications.values() ?? []) tracks.push(['sent ' + pub.source, pub.track]);
  for (const p of room?.remoteParticipants.values() ?? []) {
    for (const pub of p.trackPublications.values()) tracks.push(['received ' + pub.source, pub.track]);
  }
  const out = [];
  for (const [name, track] of tracks) {
    const report = await track?.getRTCStatsReport?.();
    if (!report) continue;
    const byId = new Map([...report.values()].map((s) => [s.id, s]));
    for (const s of report.values()) {
      if (s.type !== 'transport' || !s.selectedCandidatePairId) continue;
      const pair = byId.get(s.selectedCandidatePairId);
      const local = byId.get(pair?.localCandidateId);
      const remote = byId.get(pair?.remoteCandidateId);
      out.push({
        track: name,
        local: local?.candidateType ?? '',
        protocol: local?.protocol ?? '',
        relayProtocol: local?.relayProtocol ?? '',
        remote: remote?.candidateType ?? '',
        bytesReceived: pair?.bytesReceived ?? 0,
      });
    }
  }
  return out;
}

async function installHelpers(who) {
  await who.page.evaluate(
    ([a, b, c]) => {
      window.__receivedFrom = a;
      window.__sentLayers = b;
      window.__selectedPairs = c;
    },
    [receivedFrom.toString(), sentLayers.toString(), selectedPairs.toString()],
  );
}

async function relayOnly() {
  const desktop = { width: 640, height: 360 };
  const alice = await newParticipant('alice', desktop);
  const bob = await newParticipant('bob', desktop);
  await Promise.all([join(alice), join(bob)]);
  await installHelpers(alice);
  await installHelpers(bob);
  const [aGot, bGot] = await Promise.all([
    waitMediaFrom(alice, bob.identity, 60000),
    waitMediaFrom(bob, alice.identity, 60000),
  ]);
  result.alice_received = aGot;
  result.bob_received = bGot;
  const want = args['relay-protocol'] || '';
  for (const who of [alice, bob]) {
    const pairs = await inPage(who.page, '__selectedPairs');
    result[`${who.name}_pairs`] = pairs;
    check(pairs.length >= 2, `${who.name}: a selected candidate pair for sending and receiving`);
    for (const p of pairs) {
      check(p.local === 'relay', `${who.name} ${p.track}: local candidate ${p.local}, not relay`);
      if (want) check(p.relayProtocol === want, `${who.name} ${p.track}: relayed over ${p.relayProtocol}, not ${want}`);
    }
  }
  log('relay pairs:', JSON.stringify(result.alice_pairs));
  result.console = alice.consoleLines.slice(-10).concat(bob.consoleLines.slice(-10));
}

const inPage = (page, fnName, arg) =>
  page.evaluate(([n, a]) => (0, eval)('(' + window[n] + ')')(a), [fnName, arg]);

async function screenshot(page, file) {
  if (!OUT) return;
  fs.mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: path.join(OUT, file) });
  log('screenshot', path.join(OUT, file));
}

async function twoBrowsers() {
  const desktop = { width: 1280, height: 720 };
  const alice = await newParticipant('alice', desktop);
  const bob = await newParticipant('bob', desktop);
  await Promise.all([join(alice), join(bob)]);
  await installHelpers(alice);
  await installHelpers(bob);

  // See and hear each other.
  const [aGot, bGot] = await Promise.all([
    waitMediaFrom(alice, bob.identity),
    waitMediaFrom(bob, alice.identity),
  ]);
  result.alice_received = aGot;
  result.bob_received = bGot;
  result.first_frame_ms = {
    alice: await alice.page.evaluate(() => window.prism.firstRemoteFrameMs),
    bob: await bob.page.evaluate(() => window.prism.firstRemoteFrameMs),
  };
  result.connect_ms = { alice: alice.connectMs, bob: bob.connectMs };
  // Time lost trying /rtc/v1 before falling back to /rtc.
  result.v1_fallback_ms = { alice: alice.fallbackMs, bob: bob.fallbackMs };
  log('both decode each other; first remote frame after join click (ms):', result.first_frame_ms);

  // Simulcast: every layer the camera sends must be flowing.
  await new Promise((r) => setTimeout(r, 2500));
  const layers = await inPage(alice.page, '__sentLayers');
  result.alice_layers = layers;
  // Chrome turns the top layer on only when its bandwidth estimate allows it, which needs
  // congestion-control feedback: two layers flowing is what simulcast must show here.
  const flowing = layers.filter((l) => l.bytesSent > 0);
  result.alice_layers_flowing = flowing.length;
  check(layers.length >= 2, `alice negotiates simulcast (got ${layers.length} encoding(s))`);
  check(flowing.length >= 2, `at least two simulcast layers of alice carry bytes (got ${flowing.length})`);
  // Frames keep coming: decoded count grows.
  const later = await inPage(bob.page, '__receivedFrom', alice.identity);
  check(later.video.framesDecoded > bGot.video.framesDecoded, 'bob keeps decoding alice');
  result.bob_received_later = later;

  // The page's own figures are shown on the tiles.
  const tileText = await bob.page.textContent(`.tile[data-identity="${alice.identity}"] .stats`);
  result.bob_tile_stats = tileText;
  check(/\d+×\d+/.test(tileText || '') && /b\/s/.test(tileText || ''), "bob's tile of alice shows resolution and bitrate");

  await screenshot(bob.page, 'try-it.png');

  // Bob mutes his microphone: alice's tile of bob shows it; unmuted, it goes away.
  const micOff = (id) => {
    const el = document.querySelector(`.tile[data-identity="${id}"] .mic-off`);
    return el && !el.hidden;
  };
  await bob.page.click('#btn-mic');
  await until(alice.page, "bob's muted microphone on alice's page", micOff, bob.identity, 10000);
  await bob.page.click('#btn-mic');
  await until(alice.page, "bob's microphone back on alice's page", (id) => {
    const el = document.querySelector(`.tile[data-identity="${id}"] .mic-off`);
    return el && el.hidden;
  }, bob.identity, 10000);
  result.mute_seen = true;

  // Data: alice writes in the chat, bob's page shows it.
  await alice.page.click('#btn-chat');
  await alice.page.fill('#chat-input', 'hello from alice');
  const sentAt = Date.now();
  await alice.page.press('#chat-input', 'Enter');
  const msg = await until(
    bob.page,
    'bob to receive the chat message',
    (from) => window.prism.messages.find((m) => m.text === 'hello from alice' && m.from === from),
    alice.identity,
    15000,
  );
  result.data_ms = Date.now() - sentAt;
  check(msg.topic === 'chat', 'the chat message keeps its topic');
  await bob.page.click('#btn-chat');
  await bob.page.waitForSelector('#messages li:has-text("hello from alice")', { timeout: 5000 });

  // The status page lists both participants with their tracks.
  const statusPage = await bob.context.newPage();
  await statusPage.goto(`${URL_BASE}/status`);
  await until(
    statusPage,
    'the status page to list both participants with rates',
    ([room]) => {
      const el = document.querySelector(`.room[data-room="${CSS.escape(room)}"]`);
      return el && el.querySelectorAll('.person').length === 2 && el.querySelectorAll('.chip').length >= 4 && window.prismStatus.prev;
    },
    [ROOM],
    15000,
  );
  await new Promise((r) => setTimeout(r, 1500));
  const state = await statusPage.evaluate(() => window.prismStatus.last);
  const room = state.rooms.find((r) => r.name === ROOM);
  result.status = {
    participants: room?.participants.length,
    tracks: room?.participants.map((p) => p.tracks.length),
    core_packets_in: state.cores.reduce((a, c) => a + c.counters.packets_in, 0),
  };
  check(result.status.core_packets_in > 0, 'the status API counts packets');
  await screenshot(statusPage, 'status.png');
  await statusPage.close();

  // Phone-sized try-it page, with the chat closed.
  await bob.page.click('#chat-close');
  await bob.page.setViewportSize({ width: 390, height: 844 });
  await new Promise((r) => setTimeout(r, 1500));
  await screenshot(bob.page, 'try-it-phone.png');
  await bob.page.setViewportSize(desktop);

  // Alice leaves: bob's page drops her tile.
  const leftAt = Date.now();
  await alice.page.click('#btn-leave');
  await until(
    bob.page,
    "alice's tile to leave bob's page",
    (id) => !document.querySelector(`.tile[data-identity="${id}"]`) && window.prism.room.remoteParticipants.size === 0,
    alice.identity,
    15000,
  );
  result.leave_seen_ms = Date.now() - leftAt;
  await until(alice.page, "alice's page to return to the join form", () => !document.getElementById('join').hidden);
  result.console = { alice: alice.consoleLines.slice(-10), bob: bob.consoleLines.slice(-10) };
}

async function withPython() {
  const peer = args.peer || 'py';
  const web = await newParticipant('web', { width: 1280, height: 720 });
  await join(web);
  await installHelpers(web);
  const got = await waitMediaFrom(web, peer, 60000);
  result.received = got;
  result.first_frame_ms = await web.page.evaluate(() => window.prism.firstRemoteFrameMs);
  result.transports = await web.page.evaluate(transportPairs);
  log('selected candidate pairs', JSON.stringify(result.transports));
  log('web decodes', peer, got);
  const msg = await until(
    web.page,
    `a data message from ${peer}`,
    (id) => window.prism.messages.find((m) => m.from === id),
    peer,
    20000,
  );
  result.data = msg;
  await screenshot(web.page, 'try-it-python.png');
  // The Python client leaves once it has decoded enough of our video.
  const t0 = Date.now();
  await until(
    web.page,
    `${peer} to leave`,
    (id) => ![...window.prism.room.remoteParticipants.values()].some((p) => p.identity === id) &&
      !document.querySelector(`.tile[data-identity="${id}"]`),
    peer,
    60000,
  );
  result.peer_left_after_ms = Date.now() - t0;
  result.console = web.consoleLines.slice(-10);
}

try {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Playwright gives every launch a fresh, empty profile directory of its own.
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection',
      // The relay scenario's TURN over TLS uses a certificate the test made.
      '--ignore-certificate-errors',
      // e.g. --unsafely-treat-insecure-origin-as-secure=http://10.201.3.1:8000, so that a
      // page served on an address other than localhost may use the camera.
      ...(process.env.CHROMIUM_EXTRA_ARGS || '').split(' ').filter(Boolean),
    ],
  });
  log('chromium', browser.version(), 'room', ROOM);
  if (SCENARIO === 'two-browsers') await twoBrowsers();
  else if (SCENARIO === 'with-python') await withPython();
  else if (SCENARIO === 'relay') await relayOnly();
  else throw new Error('unknown scenario ' + SCENARIO);
  clearTimeout(overall);
  await browser.close();
  finish(0);
} catch (e) {
  failures.push(String(e && e.stack ? e.stack.split('\n').slice(0, 3).join(' | ') : e));
  log('error:', e);
  await browser?.close().catch(() => {});
  finish(1);
}
