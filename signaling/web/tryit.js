// The try-it page: join a room through LiveKit's JS SDK (the vendored `livekit-client` UMD
// build, global `LivekitClient`), publish camera and microphone with simulcast, show a tile
// per participant with live figures from the browser's own getStats(), and a chat over
// LiveKit data packets.
//
// `window.prism` exposes the page's state (the Room, the figures, timings), so that the
// browser test and a curious person's console can look inside.
'use strict';

const LK = window.LivekitClient;
const LAYER_NAMES = ['low', 'medium', 'high'];

const app = {
  config: { dev: false },
  room: null,
  tiles: new Map(), // identity → tile
  figures: {}, // identity → latest figures, for tests and the console
  prev: new Map(), // stats key → { t, ...counters }
  showStats: true,
  joinedAt: 0,
  joinClickedAt: 0,
  firstRemoteFrameMs: null,
  messages: [],
  unread: 0,
  statsTimer: null,
  localIdentity: '',
};
window.prism = app;

function randomSuffix() {
  const a = new Uint8Array(3);
  crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(36).padStart(2, '0')).join('').slice(0, 4);
}

async function init() {
  try {
    const r = await fetch('/api/config');
    if (r.ok) app.config = await r.json();
  } catch (_) {
    // Served from elsewhere, or the server is down: treat as a production server.
  }
  const q = new URLSearchParams(location.search);
  $('room').value = q.get('room') || localStorage.getItem('prism.room') || 'demo';
  $('name').value =
    q.get('name') || localStorage.getItem('prism.name') || 'guest-' + randomSuffix();
  $('token-field').hidden = !!app.config.dev;
  $('token').required = !app.config.dev;
  if (q.get('token')) $('token').value = q.get('token');
  if (!window.isSecureContext || !navigator.mediaDevices) {
    // Browsers keep camera and microphone from pages that are not localhost or HTTPS.
    for (const id of ['use-camera', 'use-mic']) {
      $(id).checked = false;
      $(id).disabled = true;
    }
    const e = $('join-error');
    e.textContent =
      'This page is not served over HTTPS, so the browser keeps the camera and microphone ' +
      'from it: you can join to watch and listen.';
    e.hidden = false;
  }
  $('join-form').addEventListener('submit', (e) => {
    e.preventDefault();
    join().catch(showJoinError);
  });
  $('btn-leave').onclick = () => leave();
  $('btn-mic').onclick = () => toggleMic();
  $('btn-cam').onclick = () => toggleCam();
  $('btn-stats').onclick = () => toggleStats();
  $('btn-chat').onclick = () => toggleChat();
  $('chat-close').onclick = () => toggleChat(false);
  $('chat-form').addEventListener('submit', (e) => {
    e.preventDefault();
    sendChat().catch((err) => toast('Message not sent: ' + err.message, 'bad'));
  });
  $('enable-audio').onclick = async () => {
    await app.room?.startAudio();
    $('enable-audio').hidden = true;
  };
  window.addEventListener('beforeunload', () => app.room?.disconnect());
}

function showJoinError(err) {
  console.error(err);
  setConnState('idle', 'Not connected');
  const e = $('join-error');
  e.textContent = err && err.message ? err.message : String(err);
  e.hidden = false;
  $('join-btn').disabled = false;
  $('join-btn').textContent = 'Join';
}

async function fetchToken(room, identity, name) {
  if (!app.config.dev) {
    const t = $('token').value.trim();
    if (!t) throw new Error('A join token is needed to join on this server.');
    return t;
  }
  const r = await fetch('/dev/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ room, identity, name }),
  });
  if (!r.ok) throw new Error('The server refused a token: ' + (await r.text()));
  return (await r.json()).token;
}

function setConnState(state, label) {
  const p = $('conn-state');
  p.dataset.state = state;
  p.textContent = label;
}

async function join() {
  if (window.isSecureContext) $('join-error').hidden = true;
  $('join-btn').disabled = true;
  $('join-btn').textContent = 'Joining…';
  app.joinClickedAt = performance.now();
  app.firstRemoteFrameMs = null;
  const roomName = $('room').value.trim();
  const name = $('name').value.trim();
  localStorage.setItem('prism.room', roomName);
  localStorage.setItem('prism.name', name);
  // Identities must be unique in a room (a second session with the same identity replaces
  // the first), so the display name gets a short random suffix.
  const identity = name.replace(/\s+/g, '-').slice(0, 48) + '-' + randomSuffix();
  const token = await fetchToken(roomName, identity, name);

  const room = new LK.Room({
    // Tiles ask for the layer that fits them; Prism picks it per subscriber.
    adaptiveStream: true,
    dynacast: false,
    videoCaptureDefaults: { resolution: LK.VideoPresets.h720.resolution },
    publishDefaults: {
      simulcast: true,
      videoSimulcastLayers: [LK.VideoPresets.h180, LK.VideoPresets.h360],
    },
  });
  app.room = room;
  wireRoom(room);
  setConnState('connecting', 'Connecting…');
  // `?relay=1` forces every connection through the TURN servers the server hands out
  // (relay-only ICE), to check that they work.
  const relay = new URLSearchParams(location.search).get('relay') === '1';
  await room.connect(
    location.origin,
    token,
    relay ? { rtcConfig: { iceTransportPolicy: 'relay' } } : undefined,
  );
  app.joinedAt = performance.now();
  app.localIdentity = room.localParticipant.identity;
  $('room-title').textContent = roomName;
  $('room-title').hidden = false;
  $('join').hidden = true;
  $('call').hidden = false;
  $('controls').hidden = false;
  ensureTile(room.localParticipant);
  for (const p of room.remoteParticipants.values()) ensureTile(p);
  const wantCam = $('use-camera').checked;
  const wantMic = $('use-mic').checked;
  try {
    if (wantCam) await room.localParticipant.setCameraEnabled(true);
  } catch (e) {
    toast('Camera unavailable: ' + e.message, 'bad');
  }
  try {
    if (wantMic) await room.localParticipant.setMicrophoneEnabled(true);
  } catch (e) {
    toast('Microphone unavailable: ' + e.message, 'bad');
  }
  updateControls();
  // The Join click is a user gesture, so audio may start now.
  room.startAudio().catch(() => {});
  clearInterval(app.statsTimer);
  app.statsTimer = setInterval(() => refreshStats().catch((e) => console.warn(e)), 1000);
}

function wireRoom(room) {
  const E = LK.RoomEvent;
  room
    .on(E.ConnectionStateChanged, (s) => {
      const labels = {
        connected: 'Connected',
        connecting: 'Connecting…',
        reconnecting: 'Reconnecting…',
        signalReconnecting: 'Reconnecting…',
        disconnected: 'Not connected',
      };
      setConnState(s, labels[s] || s);
    })
    .on(E.ParticipantConnected, (p) => {
      ensureTile(p);
      toast((p.name || p.identity) + ' joined');
    })
    .on(E.ParticipantDisconnected, (p) => {
      removeTile(p.identity);
      toast((p.name || p.identity) + ' left');
    })
    .on(E.TrackSubscribed, (track, pub, p) => attachTrack(p, track))
    .on(E.TrackUnsubscribed, (track, pub, p) => {
      track.detach();
      updateTile(p);
    })
    .on(E.LocalTrackPublished, (pub) => {
      if (pub.track) attachTrack(room.localParticipant, pub.track);
      updateControls();
    })
    .on(E.LocalTrackUnpublished, () => updateTile(room.localParticipant))
    .on(E.TrackMuted, (pub, p) => updateTile(p))
    .on(E.TrackUnmuted, (pub, p) => updateTile(p))
    .on(E.ParticipantNameChanged, (n, p) => updateTile(p))
    .on(E.ActiveSpeakersChanged, (speakers) => {
      const ids = new Set(speakers.map((s) => s.identity));
      for (const [id, t] of app.tiles) t.el.classList.toggle('speaking', ids.has(id));
    })
    .on(E.DataReceived, (payload, p, kind, topic) => onData(payload, p, topic))
    .on(E.AudioPlaybackStatusChanged, () => {
      $('enable-audio').hidden = room.canPlaybackAudio;
    })
    .on(E.MediaDevicesError, (e) => toast('Media device error: ' + e.message, 'bad'))
    .on(E.Disconnected, (reason) => onDisconnected(reason));
}

function onDisconnected(reason) {
  clearInterval(app.statsTimer);
  for (const id of [...app.tiles.keys()]) removeTile(id);
  app.figures = {};
  app.prev.clear();
  $('call').hidden = true;
  $('controls').hidden = true;
  $('join').hidden = false;
  $('room-title').hidden = true;
  $('join-btn').disabled = false;
  $('join-btn').textContent = 'Join again';
  $('audio-sink').replaceChildren();
  setConnState('idle', 'Not connected');
  const why = LK.DisconnectReason ? LK.DisconnectReason[reason] : reason;
  if (reason !== undefined && why !== 'CLIENT_INITIATED') {
    const e = $('join-error');
    e.textContent = 'Disconnected by the server' + (why ? ' (' + why + ')' : '') + '.';
    e.hidden = false;
  }
}

async function leave() {
  await app.room?.disconnect();
}

// ---- tiles ----

function ensureTile(p) {
  let t = app.tiles.get(p.identity);
  if (t) return t;
  const isLocal = p === app.room?.localParticipant;
  const video = h('video', { autoplay: true, playsinline: true, muted: true });
  video.muted = true;
  const avatar = h('div', { class: 'avatar' }, initials(p.name || p.identity));
  avatar.style.setProperty('--hue', hue(p.identity));
  const name = h('span', { class: 'name' });
  const mic = h('span', { class: 'mic-off', title: 'Microphone off', hidden: true });
  mic.innerHTML =
    '<svg viewBox="0 0 24 24"><path d="M3.3 2 2 3.3l6 6V12a4 4 0 0 0 6.2 3.3l1.5 1.5A6 6 0 0 1 6 12H4a8 8 0 0 0 7 7.9V22h2v-2.1a8 8 0 0 0 4.1-1.7l3.6 3.5 1.3-1.3ZM16 12V6a4 4 0 0 0-7.7-1.5L16 12.2Z"/></svg>';
  const stats = h('div', { class: 'stats', hidden: !app.showStats });
  const el = h(
    'div',
    { class: 'tile' + (isLocal ? ' local' : ''), dataset: { identity: p.identity } },
    avatar,
    video,
    h('div', { class: 'label' }, mic, name),
    stats,
  );
  t = { el, video, avatar, name, mic, stats, participant: p, isLocal };
  app.tiles.set(p.identity, t);
  const tiles = $('tiles');
  if (isLocal) tiles.prepend(el);
  else tiles.append(el);
  tiles.dataset.count = app.tiles.size;
  updateTile(p);
  return t;
}

function removeTile(identity) {
  const t = app.tiles.get(identity);
  if (!t) return;
  t.el.remove();
  app.tiles.delete(identity);
  delete app.figures[identity];
  $('tiles').dataset.count = app.tiles.size;
}

function attachTrack(p, track) {
  const t = ensureTile(p);
  if (track.kind === 'video') {
    track.attach(t.video);
    t.video.addEventListener(
      'loadeddata',
      () => {
        if (!t.isLocal && app.firstRemoteFrameMs === null) {
          app.firstRemoteFrameMs = performance.now() - app.joinClickedAt;
        }
      },
      { once: true },
    );
  } else if (track.kind === 'audio' && !t.isLocal) {
    $('audio-sink').append(track.attach());
  }
  updateTile(p);
}

function updateTile(p) {
  const t = app.tiles.get(p.identity);
  if (!t) return;
  t.name.textContent = (p.name || p.identity) + (t.isLocal ? ' (you)' : '');
  const cam = p.getTrackPublication(LK.Track.Source.Camera);
  const micPub = p.getTrackPublication(LK.Track.Source.Microphone);
  const videoOn = !!(cam && cam.track && !cam.isMuted);
  t.el.classList.toggle('has-video', videoOn);
  t.mic.hidden = !!(micPub && !micPub.isMuted);
}

// ---- controls ----

function updateControls() {
  const lp = app.room?.localParticipant;
  if (!lp) return;
  const set = (id, on) => {
    $(id).setAttribute('aria-pressed', on ? 'true' : 'false');
    $(id).classList.toggle('off', !on);
  };
  set('btn-mic', lp.isMicrophoneEnabled);
  set('btn-cam', lp.isCameraEnabled);
  set('btn-stats', app.showStats);
  updateTile(lp);
}

async function toggleMic() {
  const lp = app.room.localParticipant;
  await lp.setMicrophoneEnabled(!lp.isMicrophoneEnabled);
  updateControls();
}

async function toggleCam() {
  const lp = app.room.localParticipant;
  await lp.setCameraEnabled(!lp.isCameraEnabled);
  updateControls();
}

function toggleStats() {
  app.showStats = !app.showStats;
  for (const t of app.tiles.values()) t.stats.hidden = !app.showStats;
  updateControls();
}

function toggleChat(open) {
  const chat = $('chat');
  const show = open === undefined ? chat.hidden : open;
  chat.hidden = !show;
  $('btn-chat').setAttribute('aria-pressed', show ? 'true' : 'false');
  if (show) {
    app.unread = 0;
    $('unread').hidden = true;
    $('chat-input').focus();
  }
}

// ---- chat over data packets ----

const encoder = new TextEncoder();
const decoder = new TextDecoder();

async function sendChat() {
  const input = $('chat-input');
  const text = input.value.trim();
  if (!text || !app.room) return;
  await app.room.localParticipant.publishData(encoder.encode(text), {
    reliable: true,
    topic: 'chat',
  });
  input.value = '';
  addMessage(app.room.localParticipant, text, 'chat', true);
}

function onData(payload, p, topic) {
  addMessage(p, decoder.decode(payload), topic || '', false);
}

function addMessage(p, text, topic, mine) {
  const who = p ? p.name || p.identity : 'server';
  app.messages.push({ from: p ? p.identity : '', text, topic, at: Date.now() });
  const list = $('messages');
  list.querySelector('.empty')?.remove();
  const time = new Date().toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  list.append(
    h(
      'li',
      { class: mine ? 'mine' : '' },
      h('div', { class: 'meta' }, mine ? 'You' : who, ' · ', time,
        topic && topic !== 'chat' ? h('span', { class: 'topic' }, topic) : null),
      h('div', { class: 'text' }, text),
    ),
  );
  list.scrollTop = list.scrollHeight;
  if (!mine && $('chat').hidden) {
    app.unread++;
    $('unread').textContent = app.unread > 9 ? '9+' : app.unread;
    $('unread').hidden = false;
    toast(who + ': ' + (text.length > 60 ? text.slice(0, 60) + '…' : text));
  }
}

// ---- figures from getStats() ----

function layerOf(pub, width, height) {
  const layers = pub?.trackInfo?.layers || [];
  if (!layers.length || !width) return null;
  let best = layers[0];
  for (const l of layers) {
    if (Math.abs(l.width - width) + Math.abs(l.height - height) <
        Math.abs(best.width - width) + Math.abs(best.height - height)) best = l;
  }
  const rank = [...layers].sort((a, b) => a.width - b.width).indexOf(best);
  return { index: rank, of: layers.length, name: LAYER_NAMES[best.quality] ?? String(rank) };
}

/** Rate and loss since the previous second, remembered under `key`. */
function delta(key, now, c) {
  const before = app.prev.get(key);
  app.prev.set(key, { t: now, ...c });
  const dt = before ? now - before.t : 0;
  const out = {};
  for (const k of Object.keys(c)) out[k] = rate(c[k], before?.[k], dt);
  return out;
}

async function remoteFigures(p, now) {
  const f = { video: null, audio: null };
  for (const pub of p.trackPublications.values()) {
    const track = pub.track;
    if (!track || !pub.isSubscribed) continue;
    const report = await track.getRTCStatsReport?.();
    if (!report) continue;
    for (const s of report.values()) {
      if (s.type !== 'inbound-rtp') continue;
      const d = delta(p.identity + '/' + s.id, now, {
        bytes: s.bytesReceived || 0,
        lost: s.packetsLost || 0,
        recv: s.packetsReceived || 0,
      });
      const lossDen = d.lost + d.recv;
      const loss = Number.isFinite(lossDen) && lossDen > 0 ? Math.max(0, d.lost) / lossDen : NaN;
      if (s.kind === 'video') {
        const codec = report.get(s.codecId)?.mimeType?.split('/')[1] || '';
        f.video = {
          trackSid: pub.trackSid,
          bitrate: d.bytes * 8,
          width: s.frameWidth || 0,
          height: s.frameHeight || 0,
          fps: s.framesPerSecond || 0,
          framesDecoded: s.framesDecoded || 0,
          bytesReceived: s.bytesReceived || 0,
          packetsLost: s.packetsLost || 0,
          loss,
          jitterMs: (s.jitter || 0) * 1000,
          codec,
          layer: layerOf(pub, s.frameWidth, s.frameHeight),
          nacks: s.nackCount || 0,
        };
      } else if (s.kind === 'audio') {
        f.audio = {
          trackSid: pub.trackSid,
          bitrate: d.bytes * 8,
          bytesReceived: s.bytesReceived || 0,
          samplesReceived: s.totalSamplesReceived || 0,
          packetsLost: s.packetsLost || 0,
          loss,
          jitterMs: (s.jitter || 0) * 1000,
          level: s.audioLevel || 0,
        };
      }
    }
  }
  return f;
}

async function localFigures(lp, now) {
  const f = { layers: [], audio: null };
  const cam = lp.getTrackPublication(LK.Track.Source.Camera)?.track;
  const mic = lp.getTrackPublication(LK.Track.Source.Microphone)?.track;
  if (cam) {
    const report = await cam.getRTCStatsReport();
    const remoteIn = new Map();
    for (const s of report?.values() || []) {
      if (s.type === 'remote-inbound-rtp') remoteIn.set(s.localId, s);
    }
    for (const s of report?.values() || []) {
      if (s.type !== 'outbound-rtp' || s.kind !== 'video') continue;
      const d = delta('local/' + s.id, now, { bytes: s.bytesSent || 0 });
      const r = remoteIn.get(s.id);
      f.layers.push({
        rid: s.rid || '',
        width: s.frameWidth || 0,
        height: s.frameHeight || 0,
        fps: s.framesPerSecond || 0,
        bitrate: d.bytes * 8,
        bytesSent: s.bytesSent || 0,
        limited: s.qualityLimitationReason || 'none',
        loss: r ? r.fractionLost ?? NaN : NaN,
        active: s.active !== false,
      });
    }
    f.layers.sort((a, b) => a.width - b.width);
  }
  if (mic) {
    const report = await mic.getRTCStatsReport();
    for (const s of report?.values() || []) {
      if (s.type !== 'outbound-rtp') continue;
      const d = delta('local/' + s.id, now, { bytes: s.bytesSent || 0 });
      f.audio = { bitrate: d.bytes * 8, bytesSent: s.bytesSent || 0 };
    }
  }
  return f;
}

function row(label, value, cls) {
  return h('div', { class: 'row ' + (cls || '') }, h('dt', {}, label), h('dd', {}, value));
}

function renderFigures(t, f) {
  if (!app.showStats) return;
  const rows = [];
  if (t.isLocal) {
    for (const l of f.layers) {
      if (!l.width && !l.bitrate) continue;
      rows.push(
        row(
          'sending ' + (l.rid || 'video'),
          `${l.width}×${l.height} · ${Math.round(l.fps)} fps · ${fmtBitrate(l.bitrate)}`,
        ),
      );
    }
    const limited = f.layers.find((l) => l.limited !== 'none');
    if (limited) rows.push(row('limited by', limited.limited, 'warn'));
    if (f.audio) rows.push(row('sending audio', fmtBitrate(f.audio.bitrate)));
    if (!rows.length) rows.push(row('sending', 'nothing yet'));
  } else {
    const v = f.video;
    const a = f.audio;
    if (v) {
      rows.push(row('video', `${v.width}×${v.height} · ${Math.round(v.fps)} fps`));
      rows.push(row('bitrate', fmtBitrate(v.bitrate) + (v.codec ? ' · ' + v.codec : '')));
      if (v.layer) {
        rows.push(row('layer', `${v.layer.name} (${v.layer.index + 1} of ${v.layer.of})`));
      }
      rows.push(
        row('loss', fmtPercent(v.loss) + ` · ${v.packetsLost} lost`, v.loss > 0.02 ? 'warn' : ''),
      );
    }
    if (a) {
      rows.push(row('audio', fmtBitrate(a.bitrate) + ' · loss ' + fmtPercent(a.loss),
        a.loss > 0.02 ? 'warn' : ''));
    }
    if (!v && !a) rows.push(row('receiving', 'nothing yet'));
  }
  t.stats.replaceChildren(h('dl', {}, rows));
}

async function refreshStats() {
  const room = app.room;
  if (!room || room.state !== 'connected') return;
  const now = performance.now();
  for (const t of app.tiles.values()) {
    const p = t.participant;
    const f = t.isLocal ? await localFigures(p, now) : await remoteFigures(p, now);
    app.figures[p.identity] = f;
    renderFigures(t, f);
    updateTile(p);
  }
}

init();
