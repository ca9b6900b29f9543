// The status page: polls GET /api/state every second and shows totals, each media core's
// packet rates and each room's participants and tracks. The server sends counters since
// start; rates come from two consecutive snapshots and the server time they carry.
'use strict';

const status = {
  token: sessionStorage.getItem('prism.adminToken') || '',
  prev: null,
  timer: null,
  last: null,
};
window.prismStatus = status;

function setLive(state, label) {
  const p = $('live');
  p.dataset.state = state;
  p.textContent = label;
}

async function poll() {
  const headers = status.token ? { authorization: 'Bearer ' + status.token } : {};
  let r;
  try {
    r = await fetch('/api/state', { headers, cache: 'no-store' });
  } catch (e) {
    setLive('error', 'Server unreachable');
    return;
  }
  if (r.status === 401 || r.status === 403) {
    clearInterval(status.timer);
    status.timer = null;
    $('gate').hidden = false;
    for (const id of ['overview', 'cores-section', 'rooms-section']) $(id).hidden = true;
    if (status.token) {
      $('gate-error').textContent = 'Refused: ' + (await r.text());
      $('gate-error').hidden = false;
    }
    setLive('error', 'Token needed');
    return;
  }
  if (!r.ok) {
    setLive('error', 'Error ' + r.status);
    return;
  }
  const s = await r.json();
  $('gate').hidden = true;
  render(s, status.prev);
  status.prev = s;
  status.last = s;
  setLive('live', 'Live');
}

function start() {
  if (status.timer) return;
  poll();
  status.timer = setInterval(poll, 1000);
}

function coreRates(core, before, dt) {
  const c = core.counters;
  const b = before?.counters;
  return {
    pin: rate(c.packets_in, b?.packets_in, dt),
    pout: rate(c.packets_out, b?.packets_out, dt),
    bin: rate(c.bytes_in, b?.bytes_in, dt) * 8,
    bout: rate(c.bytes_out, b?.bytes_out, dt) * 8,
    drop: rate(c.dropped, b?.dropped, dt),
  };
}

function metric(value, label) {
  return h('div', { class: 'metric' }, h('div', { class: 'v' }, value), h('div', { class: 'k' }, label));
}

function render(s, prev) {
  const dt = prev ? s.now_ms - prev.now_ms : 0;
  let pin = 0, pout = 0, bin = 0, bout = 0;
  const rows = s.cores.map((c) => {
    const r = coreRates(c, prev?.cores.find((x) => x.core === c.core), dt);
    pin += r.pin || 0;
    pout += r.pout || 0;
    bin += r.bin || 0;
    bout += r.bout || 0;
    const k = c.counters;
    return h('tr', {},
      h('td', {}, 'core ' + c.core),
      h('td', {}, (c.advertised || []).join(', ') +
        (c.local && !(c.advertised || []).includes(c.local) ? ' (' + c.local + ')' : '')),
      h('td', {}, c.driver),
      h('td', {}, c.rooms),
      h('td', {}, c.transports),
      h('td', {}, c.tracks),
      h('td', {}, c.down_tracks),
      h('td', {}, fmtRate(r.pin)),
      h('td', {}, fmtRate(r.pout)),
      h('td', {}, fmtBitrate(r.bin)),
      h('td', {}, fmtBitrate(r.bout)),
      h('td', {}, k.nacks_received),
      h('td', {}, k.retransmits),
      h('td', { title: Object.entries(k.drops).map(([n, v]) => n + ': ' + v).join('\n') }, fmtRate(r.drop)),
    );
  });
  $('cores').replaceChildren(...rows);
  $('summary').replaceChildren(
    metric(s.totals.rooms, s.totals.rooms === 1 ? 'room' : 'rooms'),
    metric(s.totals.participants, s.totals.participants === 1 ? 'participant' : 'participants'),
    metric(s.totals.tracks, s.totals.tracks === 1 ? 'published track' : 'published tracks'),
    metric(prev ? fmtRate(pin) : '–', 'packets/s in'),
    metric(prev ? fmtRate(pout) : '–', 'packets/s out'),
    metric(prev ? fmtBitrate(bout) : '–', 'forwarded'),
  );
  const prevParts = new Map();
  for (const r of prev?.rooms || []) for (const p of r.participants) prevParts.set(p.sid, p);
  const rooms = s.rooms.map((room) => renderRoom(room, prevParts, dt, s.now_ms));
  $('rooms').replaceChildren(
    ...(rooms.length ? rooms : [h('div', { class: 'empty-state' }, 'No rooms yet. ',
      h('a', { href: '/' }, 'Join one'), ' to see it here.')]),
  );
  for (const id of ['overview', 'cores-section', 'rooms-section']) $(id).hidden = false;
}

function renderRoom(room, prevParts, dt, now) {
  const n = room.participants.length;
  return h('article', { class: 'room', dataset: { room: room.name } },
    h('header', {},
      h('b', {}, room.name),
      h('span', { class: 'sub' }, n + (n === 1 ? ' participant' : ' participants') +
        ' · open ' + fmtDuration(now - room.created_at_ms)),
      h('a', { href: '/?room=' + encodeURIComponent(room.name) }, 'Join this room →'),
    ),
    room.participants.map((p) => renderPerson(p, prevParts.get(p.sid), dt)),
  );
}

function renderPerson(p, before, dt) {
  const avatar = h('div', { class: 'avatar' }, initials(p.name || p.identity));
  avatar.style.setProperty('--hue', hue(p.identity));
  const chips = p.tracks.map((t) => {
    const layers = t.layers.length > 1
      ? ' · ' + t.layers.length + ' layers up to ' +
        Math.max(...t.layers.map((l) => l.width)) + '×' + Math.max(...t.layers.map((l) => l.height))
      : t.width ? ' · ' + t.width + '×' + t.height : '';
    return h('span', { class: 'chip' + (t.muted ? ' muted' : ''), title: t.sid },
      t.source.replace('_', ' '), ' ', h('i', {}, (t.mime.split('/')[1] || t.kind) + layers));
  });
  const m = p.media;
  const b = before?.media;
  return h('div', { class: 'person', dataset: { identity: p.identity } },
    h('div', { class: 'who' }, avatar,
      h('div', {}, h('b', {}, p.name || p.identity),
        h('small', {}, p.identity + ' · ' + p.state + (p.remote ? ' · ' + p.remote : '')))),
    h('div', {},
      h('div', { class: 'chips' }, chips.length ? chips : h('small', {}, 'publishes nothing')),
      h('small', {}, 'receives ' + p.subscribed.length +
        (p.subscribed.length === 1 ? ' track' : ' tracks'))),
    h('div', { class: 'io' },
      h('div', {}, 'in ', h('b', {}, fmtRate(rate(m.packets_in, b?.packets_in, dt))), ' pkt/s · ',
        fmtBitrate(rate(m.bytes_in, b?.bytes_in, dt) * 8)),
      h('div', {}, 'out ', h('b', {}, fmtRate(rate(m.packets_out, b?.packets_out, dt))), ' pkt/s · ',
        fmtBitrate(rate(m.bytes_out, b?.bytes_out, dt) * 8)),
      h('div', {}, 'NACKs ' + m.nacks_received + ' · resent ' + m.retransmits + ' · dropped ' + m.dropped)),
  );
}

$('gate-form').addEventListener('submit', (e) => {
  e.preventDefault();
  status.token = $('gate-token').value.trim();
  sessionStorage.setItem('prism.adminToken', status.token);
  $('gate-error').hidden = true;
  start();
});

start();
