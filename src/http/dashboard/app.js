// midge's dashboard: an MQTT client in the page (MQTT.js, the global `mqtt`) that logs in with
// the viewer's credentials over MQTT-over-WebSocket on the listener that served the page.
// It subscribes to `#` (the topic tree), `$SYS/#` (the broker's figures, rates and bridges) and
// the administration API's response topic (the client list), so it shows exactly what the
// broker's ACL lets this login read.
//
// Everything that came over MQTT is put in the page as text (textContent, attribute values),
// never parsed as HTML. The topic tree stays responsive with hundreds of thousands of topics:
// a message only updates the tree's data; the DOM is updated at most ten times a second, in an
// animation frame, and only for rows on screen; a level is expanded on demand and shows at most
// CHILDREN_SHOWN rows until asked for more.
(() => {
  'use strict';

  const API = '$CONTROL/midge/v1';
  const API_RESPONSE = API + '/response';
  const CLIENTS_EVERY_MS = 5000;
  const CLIENTS_SHOWN = 500;
  const GONE_SHOWN_MS = 600000;
  const CHILDREN_SHOWN = 100;
  const PREVIEW_BYTES = 160;
  const DETAIL_BYTES = 65536;
  const RENDER_EVERY_MS = 100;
  const CHART_SECONDS = 600;
  const SEEN_EVERY_MS = 5000;

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const decoder = new TextDecoder('utf-8');
  const collator = new Intl.Collator(undefined, { numeric: true });

  // ---- One login: the client and everything it learnt. ----

  let client = null;
  let generation = 0;
  let timers = [];
  let state = null;

  function freshState(clientId) {
    return {
      clientId,
      root: new TopicNode('', null),
      selected: null,
      clients: new Map(),
      clientsAsked: 0,
      clientsAnswered: 0,
      clientsNote: '',
      clientsTotal: 0,
      sys: new Map(),
      bridges: new Map(),
      samples: [],
      lastTick: null,
      seen: [],
      seenCount: 0,
      sysSeen: false,
    };
  }

  function setStatus(text, kind) {
    const s = $('status');
    s.textContent = text;
    s.className = 'status ' + kind;
  }

  function connect(username, password) {
    stop();
    const mine = ++generation;
    const clientId = 'midge-dashboard-' + Math.random().toString(16).slice(2, 10);
    const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    const url = scheme + location.host + '/mqtt';
    state = freshState(clientId);
    $('login-error').textContent = '';
    $('connect').disabled = true;
    setStatus('connecting', 'off');
    let accepted = false;
    let refusal = '';
    const c = mqtt.connect(url, {
      protocolVersion: 5,
      clientId,
      username: username === '' ? undefined : username,
      password: password === '' ? undefined : password,
      clean: true,
      keepalive: 30,
      connectTimeout: 10000,
      // No retry with credentials the broker refused; after a first login, retry every 3 s.
      reconnectPeriod: 0,
      resubscribe: false,
    });
    client = c;
    c.on('connect', () => {
      if (mine !== generation) return;
      if (!accepted) {
        accepted = true;
        c.options.reconnectPeriod = 3000;
        showBoard();
      }
      setStatus('connected' + (username ? ' as ' + username : ' anonymously'), 'on');
      subscribe(c, mine);
    });
    c.on('message', (topic, payload, packet) => {
      if (mine === generation) onMessage(topic, payload, packet);
    });
    c.on('error', (err) => {
      if (mine !== generation) return;
      refusal = err && err.message ? err.message : String(err);
      if (!accepted) {
        c.end(true);
        loginFailed(refusal);
      }
    });
    c.on('close', () => {
      if (mine !== generation) return;
      if (!accepted) {
        loginFailed(refusal || 'The broker closed the connection.');
      } else {
        setStatus('connection lost, reconnecting', 'bad');
      }
    });
  }

  function loginFailed(why) {
    $('login-error').textContent = 'Refused: ' + why;
    $('connect').disabled = false;
    setStatus('not connected', 'off');
  }

  function subscribe(c, mine) {
    const filters = {
      '#': { qos: 0, rap: true },
      '$SYS/#': { qos: 0, rap: true },
      [API_RESPONSE]: { qos: 0 },
    };
    c.subscribe(filters, (err) => {
      if (mine === generation && err) {
        setStatus('subscription refused: ' + err.message, 'bad');
      }
    });
    askClients();
  }

  function showBoard() {
    $('login').hidden = true;
    $('board').hidden = false;
    $('logout').hidden = false;
    $('connect').disabled = false;
    $('broker').textContent = location.host;
    const mine = generation;
    timers.push(setInterval(() => mine === generation && askClients(), CLIENTS_EVERY_MS));
    timers.push(setInterval(() => mine === generation && countSeen(), SEEN_EVERY_MS));
    timers.push(
      setTimeout(() => {
        if (mine === generation && !state.sysSeen) {
          state.ratesNote = true;
          schedule();
        }
      }, 15000),
    );
    resetBoard();
  }

  function resetBoard() {
    structDirty.clear();
    valueDirty.clear();
    $('tree').replaceChildren();
    state.root.open = true;
    state.root.kids = $('tree');
    $('detail').replaceChildren(el('p', 'muted', 'Select a topic to see its last message.'));
    $('clients').tBodies[0].replaceChildren();
    $('bridges').replaceChildren();
    $('figures').replaceChildren();
    $('clients-note').textContent = '';
    schedule();
  }

  function stop() {
    generation++;
    timers.forEach((t) => clearInterval(t));
    timers = [];
    if (client) client.end(true);
    client = null;
  }

  function logout() {
    stop();
    state = null;
    $('board').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    $('password').value = '';
    setStatus('not connected', 'off');
  }

  // ---- Messages. ----

  function onMessage(topic, payload, packet) {
    state.seenCount++;
    if (topic === API_RESPONSE) {
      onApiResponse(payload);
      return;
    }
    if (topic.startsWith('$SYS/')) onSys(topic, payload);
    addToTree(topic, payload, packet);
  }

  // ---- The client list, from the administration API. ----

  function askClients() {
    if (!client || !client.connected) return;
    const mine = generation;
    const correlationData = state.clientId + '-' + ++state.clientsAsked;
    const request = {
      commands: [{ command: 'listClients', count: CLIENTS_SHOWN, correlationData }],
    };
    client.publish(API, JSON.stringify(request), { qos: 1 }, (err) => {
      if (mine !== generation || !err) return;
      state.clientsNote =
        err.code === 135
          ? 'This login may not list clients: the broker grants the administration API ' +
            '(writing ' + API + ', reading ' + API_RESPONSE + ') only by an explicit ACL rule.'
          : 'The client list was refused: ' + err.message;
      schedule();
    });
    // Two requests without an answer and without a refusal: the answers cannot reach us.
    if (state.clientsAsked - state.clientsAnswered > 2 && !state.clientsNote) {
      state.clientsNote =
        'No answer from ' + API + ': this login may not read ' + API_RESPONSE + '.';
      schedule();
    }
  }

  function onApiResponse(payload) {
    let answer;
    try {
      answer = JSON.parse(decoder.decode(payload));
    } catch (e) {
      return;
    }
    const prefix = state.clientId + '-';
    for (const r of (answer && answer.responses) || []) {
      if (typeof r.correlationData !== 'string' || !r.correlationData.startsWith(prefix)) {
        continue;
      }
      state.clientsAnswered = Number(r.correlationData.slice(prefix.length)) || 0;
      if (r.error) {
        state.clientsNote = 'The client list failed: ' + r.error;
      } else if (r.data && Array.isArray(r.data.clients)) {
        state.clientsNote = '';
        mergeClients(r.data.clients, r.data.totalCount);
      }
      schedule();
    }
  }

  function mergeClients(list, total) {
    const now = Date.now();
    const online = new Set();
    for (const c of list) {
      if (!c || typeof c.clientid !== 'string') continue;
      online.add(c.clientid);
      state.clients.set(c.clientid, { info: c, online: true, since: now });
    }
    // Clients that left stay listed as gone for ten minutes.
    for (const [id, entry] of state.clients) {
      if (!online.has(id) && entry.online) {
        entry.online = false;
        entry.since = now;
      } else if (!entry.online && now - entry.since > GONE_SHOWN_MS) {
        state.clients.delete(id);
      }
    }
    state.clientsTotal = typeof total === 'number' ? total : online.size;
    state.clientsDirty = true;
  }

  const PROTOCOLS = { 3: '3.1', 4: '3.1.1', 5: '5' };

  function paintClients() {
    const body = $('clients').tBodies[0];
    const rows = [];
    const entries = [...state.clients.entries()].sort(
      (a, b) => b[1].online - a[1].online || collator.compare(a[0], b[0]),
    );
    let offline = 0;
    for (const [id, entry] of entries) {
      if (!entry.online) offline++;
      if (rows.length >= CLIENTS_SHOWN) continue;
      const c = entry.info;
      const tr = el('tr', entry.online ? 'online' : 'offline');
      tr.dataset.clientid = id;
      const dot = el('td');
      dot.append(el('span', 'dot'));
      dot.title = entry.online ? 'online' : 'offline';
      const since = entry.online
        ? c.connectedAt
          ? new Date(c.connectedAt * 1000).toLocaleString()
          : ''
        : 'offline since ' + new Date(entry.since).toLocaleTimeString();
      tr.append(
        dot,
        el('td', '', id),
        el('td', '', c.username == null ? '—' : String(c.username)),
        el('td', '', c.address === undefined ? '' : c.address + ':' + c.port),
        el('td', '', PROTOCOLS[c.protocolVersion] || String(c.protocolVersion ?? '')),
        el('td', '', since),
        el('td', '', Array.isArray(c.subscriptions) ? String(c.subscriptions.length) : ''),
        el('td', '', c.queuedMessages === undefined ? '' : String(c.queuedMessages)),
      );
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    const more = state.clientsTotal > CLIENTS_SHOWN ? ` (first ${CLIENTS_SHOWN} shown)` : '';
    $('clients-count').textContent =
      `${state.clientsTotal} online` + (offline ? `, ${offline} gone` : '') + more;
  }

  // ---- $SYS: figures, rates, bridges. ----

  const FIGURES = [
    ['version', 'Version'],
    ['uptime', 'Uptime'],
    ['clients/connected', 'Clients connected'],
    ['subscriptions/count', 'Subscriptions'],
    ['retained messages/count', 'Retained messages'],
    ['publish/messages/received', 'PUBLISH received'],
    ['publish/messages/sent', 'PUBLISH sent'],
    ['publish/messages/dropped', 'PUBLISH dropped'],
  ];
  const IN = '$SYS/broker/publish/messages/received';
  const OUT = '$SYS/broker/publish/messages/sent';

  function onSys(topic, payload) {
    const value = decoder.decode(payload);
    state.sysSeen = true;
    state.sys.set(topic, value);
    const bridge = /^\$SYS\/broker\/connection\/(.+)\/state$/.exec(topic);
    if (bridge) {
      state.bridges.set(bridge[1], value === '1');
    }
    if (topic === '$SYS/broker/uptime') {
      // The other figures of this update follow the uptime: sample once they are in.
      const mine = generation;
      setTimeout(() => mine === generation && sampleRates(), 300);
    }
    state.sysDirty = true;
  }

  function sampleRates() {
    const uptime = parseFloat(state.sys.get('$SYS/broker/uptime'));
    const received = Number(state.sys.get(IN));
    const sent = Number(state.sys.get(OUT));
    if (!Number.isFinite(uptime) || !Number.isFinite(received) || !Number.isFinite(sent)) return;
    const last = state.lastTick;
    state.lastTick = { uptime, received, sent };
    if (!last || uptime <= last.uptime || received < last.received) return;
    const dt = uptime - last.uptime;
    state.samples.push({
      t: Date.now(),
      in: (received - last.received) / dt,
      out: (sent - last.sent) / dt,
    });
    trim(state.samples);
    schedule();
  }

  function countSeen() {
    state.seen.push({ t: Date.now(), seen: state.seenCount / (SEEN_EVERY_MS / 1000) });
    state.seenCount = 0;
    trim(state.seen);
    schedule();
  }

  function trim(list) {
    const oldest = Date.now() - CHART_SECONDS * 1000;
    while (list.length && list[0].t < oldest) list.shift();
  }

  function paintSys() {
    const dl = $('figures');
    const items = [];
    for (const [key, label] of FIGURES) {
      const v = state.sys.get('$SYS/broker/' + key);
      if (v === undefined) continue;
      items.push(el('dt', '', label), el('dd', '', v));
    }
    dl.replaceChildren(...items);
    const names = [...state.bridges.keys()].sort(collator.compare);
    const list = names.map((name) => {
      const up = state.bridges.get(name);
      const li = el('li');
      li.dataset.bridge = name;
      li.append(el('span', up ? 'up' : 'down', up ? 'up ' : 'down '), document.createTextNode(name));
      return li;
    });
    if (!list.length) {
      list.push(el('li', 'muted', state.sysSeen ? 'No bridges.' : 'No $SYS figures readable.'));
    }
    $('bridges').replaceChildren(...list);
  }

  const SVG = 'http://www.w3.org/2000/svg';
  const W = 600;
  const H = 150;
  const PAD = 24;

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function paintChart() {
    const now = Date.now();
    const from = now - CHART_SECONDS * 1000;
    const series = [
      ['in', state.samples, (s) => s.in],
      ['out', state.samples, (s) => s.out],
      ['seen', state.seen, (s) => s.seen],
    ];
    let max = 1;
    for (const [, list, get] of series) for (const s of list) max = Math.max(max, get(s));
    max = niceCeiling(max);
    const x = (t) => PAD + ((t - from) / (CHART_SECONDS * 1000)) * (W - PAD);
    const y = (v) => H - 14 - (v / max) * (H - 24);
    const parts = [];
    for (const f of [0, 0.5, 1]) {
      parts.push(svg('line', { class: 'grid', x1: PAD, x2: W, y1: y(max * f), y2: y(max * f) }));
      parts.push(svg('text', { class: 'axis', x: 0, y: y(max * f) + 4 }, formatRate(max * f)));
    }
    parts.push(svg('text', { class: 'axis', x: PAD, y: H - 1 }, '−10 min'));
    parts.push(svg('text', { class: 'axis', x: W - 24, y: H - 1 }, 'now'));
    for (const [cls, list, get] of series) {
      if (list.length < 1) continue;
      const points = list.map((s) => `${x(s.t).toFixed(1)},${y(get(s)).toFixed(1)}`);
      parts.push(svg('polyline', { class: cls, points: points.join(' ') }));
      const last = list[list.length - 1];
      parts.push(svg('circle', { class: cls, cx: x(last.t), cy: y(get(last)), r: 2.5 }));
    }
    $('chart').replaceChildren(...parts);
    const legend = [];
    if (state.samples.length || state.sysSeen) {
      legend.push(el('span', 'in', '— received by the broker'), el('span', 'out', '— sent by the broker'));
    }
    legend.push(el('span', 'seen', '-- received by this page'));
    if (state.ratesNote && !state.sysSeen) {
      legend.push(el('span', 'muted', '(this login reads no $SYS figures)'));
    }
    $('rates-legend').replaceChildren(...legend);
    const latest = state.samples[state.samples.length - 1];
    $('rates-now').textContent = latest
      ? `${formatRate(latest.in)} in, ${formatRate(latest.out)} out`
      : '';
  }

  function niceCeiling(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function formatRate(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(1) + 'M';
    if (v >= 1e3) return (v / 1e3).toFixed(1) + 'k';
    return v >= 10 || v === 0 ? v.toFixed(0) : v.toFixed(1);
  }

  // ---- The topic tree. ----

  // A topic level. `topics`: levels at or below it that hold a message; `messages`: messages
  // received at or below it. `elem`, `row`, `kids` exist once the level was on screen.
  function TopicNode(name, parent) {
    this.name = name;
    this.parent = parent;
    this.children = new Map();
    // The children in order, once on screen; `added`: children not yet sorted in.
    this.sorted = null;
    this.added = [];
    this.key = null;
    this.msg = null;
    this.topics = 0;
    this.messages = 0;
    this.open = false;
    this.shown = CHILDREN_SHOWN;
    this.elem = null;
    this.row = null;
    this.kids = null;
  }

  TopicNode.prototype.topic = function () {
    const levels = [];
    for (let n = this; n.parent; n = n.parent) levels.push(n.name);
    return levels.reverse().join('/');
  };

  const rowNode = new WeakMap();
  const moreNode = new WeakMap();
  const structDirty = new Set();
  const valueDirty = new Set();
  let detailDirty = false;
  let frame = 0;
  let lastRender = 0;

  function addToTree(topic, payload, packet) {
    const chain = [state.root];
    let node = state.root;
    for (const level of topic.split('/')) {
      let next = node.children.get(level);
      if (!next) {
        next = new TopicNode(level, node);
        node.children.set(level, next);
        if (node.sorted) node.added.push(next);
        changedChildren(node);
      }
      node = next;
      chain.push(node);
    }
    const had = node.msg !== null;
    // A retained message with no payload deletes the retained message [MQTT-3.3.1-10].
    if (packet.retain && payload.length === 0) {
      node.msg = null;
      if (had) for (const n of chain) n.topics--;
    } else {
      node.msg = {
        bytes: new Uint8Array(payload),
        retained: packet.retain,
        qos: packet.qos,
        at: Date.now(),
      };
      if (!had) for (const n of chain) n.topics++;
    }
    for (const n of chain) {
      n.messages++;
      if (n.row) valueDirty.add(n);
    }
    if (node === state.selected) detailDirty = true;
    if (!node.msg) prune(node);
    schedule();
  }

  function changedChildren(node) {
    if (node.kids) structDirty.add(node);
  }

  // Levels with neither a message nor levels below them go.
  function prune(node) {
    while (node.parent && !node.msg && node.children.size === 0) {
      const parent = node.parent;
      parent.children.delete(node.name);
      parent.sorted = null;
      parent.added = [];
      changedChildren(parent);
      if (node === state.selected) {
        state.selected = null;
        detailDirty = true;
      }
      node = parent;
    }
  }

  // Levels in natural order (sensor2 before sensor10): digit runs compare as numbers.
  function keyOf(n) {
    if (n.key === null) n.key = n.name.replace(/\d+/g, (d) => d.padStart(20, '0'));
    return n.key;
  }

  function byKey(a, b) {
    const x = keyOf(a);
    const y = keyOf(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }

  // The children in order: sorted whole once, then new ones merged in, so that a level
  // growing by thousands of topics a second costs little per frame.
  function sortedChildren(n) {
    if (!n.sorted) {
      n.sorted = [...n.children.values()].sort(byKey);
      n.added = [];
    } else if (n.added.length) {
      const added = n.added.sort(byKey);
      const merged = new Array(n.sorted.length + added.length);
      let i = 0;
      let j = 0;
      for (let k = 0; k < merged.length; k++) {
        merged[k] =
          j >= added.length || (i < n.sorted.length && byKey(n.sorted[i], added[j]) <= 0)
            ? n.sorted[i++]
            : added[j++];
      }
      n.sorted = merged;
      n.added = [];
    }
    return n.sorted;
  }

  function schedule() {
    if (!frame) frame = requestAnimationFrame(render);
  }

  function render(now) {
    frame = 0;
    if (!state) return;
    if (now - lastRender < RENDER_EVERY_MS) {
      frame = requestAnimationFrame(render);
      return;
    }
    lastRender = now;
    for (const n of structDirty) {
      if (n.open && n.kids && n.kids.isConnected) fillKids(n);
    }
    structDirty.clear();
    for (const n of valueDirty) {
      if (n.row && n.row.isConnected) paintRow(n);
    }
    valueDirty.clear();
    if (detailDirty) paintDetail();
    detailDirty = false;
    const r = state.root;
    $('topics-count').textContent = `${plural(r.topics, 'topic')}, ${plural(r.messages, 'message')}`;
    if (state.clientsDirty || state.clientsNote !== $('clients-note').textContent) {
      state.clientsDirty = false;
      $('clients-note').textContent = state.clientsNote;
      paintClients();
    }
    if (state.sysDirty) {
      state.sysDirty = false;
      paintSys();
    }
    paintChart();
  }

  function ensureElem(n) {
    if (n.elem) return n.elem;
    const wrap = el('div', 'node');
    const row = el('div', 'row');
    row.setAttribute('role', 'treeitem');
    row.dataset.topic = n.topic();
    const parts = {
      twisty: el('span', 'twisty'),
      value: el('span', 'value'),
      badge: el('span', 'badge', 'retained'),
      count: el('span', 'count'),
    };
    const name = n.name === '' ? el('span', 'name empty', '(empty)') : el('span', 'name', n.name);
    row.append(parts.twisty, name, parts.value, parts.badge, parts.count);
    wrap.append(row);
    n.elem = wrap;
    n.row = row;
    n.parts = parts;
    rowNode.set(row, n);
    return wrap;
  }

  function paintRow(n) {
    const p = n.parts;
    const branch = n.children.size > 0;
    p.twisty.textContent = branch ? (n.open ? '▾' : '▸') : '';
    if (branch) n.row.setAttribute('aria-expanded', String(n.open));
    else n.row.removeAttribute('aria-expanded');
    p.value.textContent = n.msg ? '= ' + preview(n.msg.bytes) : '';
    p.badge.hidden = !(n.msg && n.msg.retained);
    p.count.textContent = branch
      ? `(${plural(n.topics, 'topic')}, ${plural(n.messages, 'message')})`
      : '';
    n.row.classList.toggle('selected', n === state.selected);
  }

  function fillKids(n) {
    const sorted = sortedChildren(n);
    const shown = Math.min(n.shown, sorted.length);
    const items = [];
    for (let i = 0; i < shown; i++) {
      const child = sorted[i];
      items.push(ensureElem(child));
      paintRow(child);
      if (child.open && child.kids) fillKids(child);
    }
    const rest = sorted.length - shown;
    if (rest > 0) {
      const more = el('button', 'link more', `show ${Math.min(rest, CHILDREN_SHOWN)} more of ${rest}`);
      more.type = 'button';
      moreNode.set(more, n);
      items.push(more);
    }
    n.kids.replaceChildren(...items);
  }

  function toggle(n) {
    n.open = !n.open;
    if (n.open) {
      if (!n.kids) {
        n.kids = el('div', 'kids');
        n.kids.setAttribute('role', 'group');
        n.elem.append(n.kids);
      }
      n.kids.hidden = false;
      fillKids(n);
    } else if (n.kids) {
      n.kids.hidden = true;
    }
    paintRow(n);
  }

  function select(n) {
    const old = state.selected;
    state.selected = n;
    if (old && old.row) paintRow(old);
    paintRow(n);
    paintDetail();
  }

  function plural(n, word) {
    return `${n} ${word}${n === 1 ? '' : 's'}`;
  }

  function preview(bytes) {
    if (bytes.length === 0) return '(empty)';
    const head = bytes.subarray(0, PREVIEW_BYTES);
    if (isBinary(head)) return `<${bytes.length} bytes> ${hex(bytes.subarray(0, 16))}…`;
    const text = decoder.decode(head).replace(/\s+/g, ' ');
    return bytes.length > PREVIEW_BYTES ? text + '…' : text;
  }

  function isBinary(bytes) {
    for (const b of bytes) if (b < 9 || (b > 13 && b < 32) || b === 127) return true;
    return false;
  }

  function hex(bytes) {
    return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(' ');
  }

  function paintDetail() {
    const d = $('detail');
    const n = state.selected;
    if (!n) {
      d.replaceChildren(el('p', 'muted', 'Select a topic to see its last message.'));
      return;
    }
    const items = [el('h3', '', n.topic() || '(empty)')];
    if (!n.msg) {
      items.push(el('p', 'muted', `No message on this topic; ${plural(n.topics, 'topic')} below it.`));
      d.replaceChildren(...items);
      return;
    }
    const m = n.msg;
    const dl = el('dl');
    for (const [k, v] of [
      ['Retained', m.retained ? 'yes' : 'no'],
      ['QoS', String(m.qos)],
      ['Received', new Date(m.at).toLocaleString()],
      ['Size', `${m.bytes.length} bytes`],
      ['Messages', String(n.messages)],
    ]) {
      dl.append(el('dt', '', k), el('dd', '', v));
    }
    items.push(dl, el('pre', 'payload', payloadText(m.bytes)));
    d.replaceChildren(...items);
  }

  function payloadText(bytes) {
    const head = bytes.subarray(0, DETAIL_BYTES);
    if (isBinary(head.subarray(0, 512))) {
      return hex(head.subarray(0, 4096)) + (bytes.length > 4096 ? ' …' : '');
    }
    let text = decoder.decode(head);
    if (bytes.length <= DETAIL_BYTES && /^\s*[[{]/.test(text)) {
      try {
        text = JSON.stringify(JSON.parse(text), null, 2);
      } catch (e) {
        // Not JSON after all: shown as it came.
      }
    }
    return bytes.length > DETAIL_BYTES ? text + `\n… (${bytes.length} bytes in all)` : text;
  }

  // ---- Wiring. ----

  $('login').addEventListener('submit', (e) => {
    e.preventDefault();
    connect($('username').value, $('password').value);
  });
  $('logout').addEventListener('click', logout);
  $('tree').addEventListener('click', (e) => {
    if (!state) return;
    const more = e.target.closest('button.more');
    if (more && moreNode.has(more)) {
      const n = moreNode.get(more);
      n.shown += CHILDREN_SHOWN;
      fillKids(n);
      return;
    }
    const row = e.target.closest('.row');
    const n = row && rowNode.get(row);
    if (!n) return;
    if (n.children.size) toggle(n);
    select(n);
  });
})();
