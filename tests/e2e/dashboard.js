// Drives the dashboard in headless Chromium for tests/e2e/dashboard.rs: one JSON command a
// line on standard input, one JSON answer a line on standard output ({"error": ...} when a
// step failed). The page is used as a person would: by typing, clicking and reading text.
//
//   node dashboard.js NODE_MODULES_DIR CHROMIUM
'use strict';

const [modules, chromium] = process.argv.slice(2);
const puppeteer = require(require('path').join(modules, 'puppeteer-core'));
const readline = require('readline');

const WAIT = { timeout: 20000, polling: 100 };
let browser = null;
let page = null;
// Console errors, uncaught exceptions and failed requests of every page opened.
const problems = [];

async function open(url) {
  if (page) await page.close();
  page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warn') problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure().errorText}`));
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });
  const response = await page.goto(url, { waitUntil: 'load' });
  return { status: response.status(), url: page.url(), title: await page.title() };
}

async function login(user, password) {
  await page.$eval('#username', (e) => (e.value = ''));
  await page.$eval('#password', (e) => (e.value = ''));
  await page.type('#username', user);
  await page.type('#password', password);
  await page.click('#connect');
  await page.waitForFunction(
    () => !document.getElementById('board').hidden || document.getElementById('login-error').textContent,
    WAIT,
  );
  return page.evaluate(() => ({
    board: !document.getElementById('board').hidden,
    refusal: document.getElementById('login-error').textContent,
    status: document.getElementById('status').textContent,
  }));
}

// The text of the client list's row for `id` once it shows the client online.
async function client(id) {
  await page.waitForFunction(
    (id) => [...document.querySelectorAll('#clients tr.online')].some((r) => r.dataset.clientid === id),
    WAIT,
    id,
  );
  return page.evaluate(
    (id) => {
      const row = [...document.querySelectorAll('#clients tr')].find((r) => r.dataset.clientid === id);
      return { row: [...row.cells].map((c) => c.textContent), count: document.getElementById('clients-count').textContent };
    },
    id,
  );
}

// Waits until the client list shows `id` as gone.
async function clientGone(id) {
  await page.waitForFunction(
    (id) => [...document.querySelectorAll('#clients tr.offline')].some((r) => r.dataset.clientid === id),
    WAIT,
    id,
  );
  return page.evaluate(() => ({ count: document.getElementById('clients-count').textContent }));
}

async function clientsNote() {
  await page.waitForFunction(() => document.getElementById('clients-note').textContent, WAIT);
  return page.evaluate(() => ({
    note: document.getElementById('clients-note').textContent,
    rows: document.querySelectorAll('#clients tbody tr').length,
  }));
}

function rowOf(topic) {
  return [...document.querySelectorAll('#tree .row')].find((r) => r.dataset.topic === topic);
}

// Opens the levels above `topic` by clicking them, then reads its row.
async function expand(topic) {
  const levels = topic.split('/');
  for (let i = 1; i < levels.length; i++) {
    const above = levels.slice(0, i).join('/');
    const handle = await page.waitForFunction(rowOf, WAIT, above);
    const open = await page.evaluate((r) => r.getAttribute('aria-expanded'), handle);
    if (open !== 'true') await handle.click();
  }
  return readRow(topic);
}

async function readRow(topic) {
  const handle = await page.waitForFunction(rowOf, WAIT, topic);
  return page.evaluate(
    (r) => ({
      value: r.querySelector('.value').textContent,
      retained: !r.querySelector('.badge').hidden,
      count: r.querySelector('.count').textContent,
    }),
    handle,
  );
}

async function waitValue(topic, value) {
  await page.waitForFunction(
    (topic, value) => {
      const r = [...document.querySelectorAll('#tree .row')].find((r) => r.dataset.topic === topic);
      return r && r.querySelector('.value').textContent === '= ' + value;
    },
    WAIT,
    topic,
    value,
  );
  return readRow(topic);
}

// Selects `topic` and reads the detail panel.
async function detail(topic) {
  const handle = await page.waitForFunction(rowOf, WAIT, topic);
  await handle.click();
  return page.evaluate(() => ({
    title: document.querySelector('#detail h3').textContent,
    payload: (document.querySelector('#detail pre') || {}).textContent,
    html: document.querySelector('#detail').innerHTML,
  }));
}

// What the tree shows, after `ms` of quiet: the rows and the topic count.
async function tree(ms) {
  await new Promise((r) => setTimeout(r, ms));
  return page.evaluate(() => ({
    rows: [...document.querySelectorAll('#tree .row')].map((r) => r.dataset.topic),
    count: document.getElementById('topics-count').textContent,
    scripts: document.querySelectorAll('#tree script, #tree img, #detail script, #detail img').length,
  }));
}

// Waits until the tree counts at least `min` topics; then how long the page takes to answer.
async function topics(min) {
  const start = Date.now();
  await page.waitForFunction(
    (min) => parseInt(document.getElementById('topics-count').textContent, 10) >= min,
    { timeout: 120000, polling: 200 },
    min,
  );
  const loaded = Date.now() - start;
  const t = Date.now();
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r())));
  return {
    loadedMs: loaded,
    frameMs: Date.now() - t,
    count: await page.evaluate(() => document.getElementById('topics-count').textContent),
  };
}

// Expands `topic` and counts the rows rendered below it.
async function children(topic) {
  await expand(topic);
  const t = Date.now();
  const handle = await page.waitForFunction(rowOf, WAIT, topic);
  const open = await page.evaluate((r) => r.getAttribute('aria-expanded'), handle);
  if (open !== 'true') await handle.click();
  const ms = Date.now() - t;
  return page.evaluate(
    (topic, ms) => {
      const r = [...document.querySelectorAll('#tree .row')].find((r) => r.dataset.topic === topic);
      const kids = r.parentElement.querySelector('.kids');
      return {
        rows: kids.querySelectorAll(':scope > .node').length,
        more: (kids.querySelector(':scope > button.more') || {}).textContent,
        allRows: document.querySelectorAll('#tree .row').length,
        ms,
      };
    },
    topic,
    ms,
  );
}

// Waits until the bridge `name` shows as `state` (up or down).
async function bridge(name, state) {
  await page.waitForFunction(
    (name, state) =>
      [...document.querySelectorAll('#bridges li')].some(
        (li) => li.dataset.bridge === name && li.firstChild.textContent.trim() === state,
      ),
    WAIT,
    name,
    state,
  );
  return page.evaluate(() => [...document.querySelectorAll('#bridges li')].map((li) => li.textContent));
}

async function chart() {
  await page.waitForFunction(() => document.querySelectorAll('#chart polyline').length > 0, WAIT);
  return page.evaluate(() => ({
    lines: [...document.querySelectorAll('#chart polyline')].map((p) => p.getAttribute('class')),
    now: document.getElementById('rates-now').textContent,
  }));
}

async function logout() {
  await page.click('#logout');
  return page.evaluate(() => ({ login: !document.getElementById('login').hidden }));
}

async function screenshot(path) {
  await page.screenshot({ path, fullPage: true });
  return { path };
}

const steps = {
  open: (c) => open(c.url),
  login: (c) => login(c.user, c.password),
  client: (c) => client(c.id),
  clientGone: (c) => clientGone(c.id),
  clientsNote: () => clientsNote(),
  expand: (c) => expand(c.topic),
  waitValue: (c) => waitValue(c.topic, c.value),
  detail: (c) => detail(c.topic),
  tree: (c) => tree(c.ms),
  topics: (c) => topics(c.min),
  children: (c) => children(c.topic),
  bridge: (c) => bridge(c.name, c.state),
  chart: () => chart(),
  logout: () => logout(),
  screenshot: (c) => screenshot(c.path),
  problems: () => ({ problems: problems.splice(0) }),
};

async function main() {
  browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    // As root Chromium has no sandbox to drop into; the page is ours and local.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  console.log(JSON.stringify({ ready: await browser.version() }));
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    let answer;
    try {
      const command = JSON.parse(line);
      answer = await steps[command.do](command);
    } catch (e) {
      answer = { error: String(e && e.stack ? e.stack : e) };
    }
    console.log(JSON.stringify(answer));
  }
  await browser.close();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
