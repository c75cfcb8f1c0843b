// Goal: a real browser speaks MQTT to ringmq over WebSocket. Debian's chromium, driven by
// playwright-core through executablePath (nothing downloads a browser), loads page.html, whose
// MQTT.js (the browser bundle of npm `mqtt`) connects over ws:// and wss://, subscribes at QoS 2
// and publishes at QoS 0, 1 and 2; mosquitto_sub and mosquitto_pub are the native TCP side, both
// ways. A screenshot of the page with the received messages is kept in artifacts/.
//
// Usage: node browser_test.mjs TCP_PORT WS_URL WSS_URL (scripts/browser.sh starts the broker).
// Prints one line per check; exits 1 with what failed. Every wait is bounded.

import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const [tcpPort, wsUrl, wssUrl] = process.argv.slice(2);
const WAIT_MS = 20_000;
const NAMES = ["ws", "wss"];
const QOS = [0, 1, 2];

if (!tcpPort || !wsUrl || !wssUrl) {
  console.error("usage: node browser_test.mjs TCP_PORT WS_URL WSS_URL");
  process.exit(2);
}

const children = [];
let context;
let server;
let profile;

function ok(what) {
  console.log(`browser: ok   ${what}`);
}

async function finish(status, message) {
  if (message) console.error(`browser: FAIL ${message}`);
  for (const child of children) child.kill("SIGKILL");
  await context?.close().catch(() => {});
  server?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  process.exit(status);
}

const overall = setTimeout(() => finish(1, "the whole test ran over 60 s"), 60_000);

async function waitFor(predicate, what, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await predicate()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await finish(1, `timed out after ${timeoutMs / 1000} s waiting for ${what}`);
}

// The test page and MQTT.js's browser bundle, on an OS-chosen loopback port.
const bundle = readFileSync(join(here, "node_modules/mqtt/dist/mqtt.min.js"));
const page = readFileSync(join(here, "page.html"));
server = createServer((request, response) => {
  const path = new URL(request.url, "http://localhost").pathname;
  if (path === "/mqtt.min.js") {
    response.writeHead(200, { "content-type": "text/javascript" }).end(bundle);
  } else if (path === "/") {
    response.writeHead(200, { "content-type": "text/html" }).end(page);
  } else {
    response.writeHead(404).end();
  }
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const pageUrl = `http://127.0.0.1:${server.address().port}/?ws=${encodeURIComponent(wsUrl)}&wss=${encodeURIComponent(wssUrl)}`;

// The native side: mosquitto_sub for what the browser publishes, subscribed before the page loads.
const received = [];
// Line-buffered, so that the SUBACK line (-d) shows while it runs.
const sub = spawn("stdbuf", [
  "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", tcpPort, "-t", "browser/out/#", "-q", "2", "-d",
  "-F", "MSG|%t|%q|%p",
]);
children.push(sub);
let subOutput = "";
sub.stdout.on("data", (data) => {
  subOutput += data;
  for (const line of subOutput.split("\n").slice(0, -1)) {
    if (line.startsWith("MSG|") && !received.includes(line)) received.push(line);
  }
});
sub.on("error", (error) => finish(1, `mosquitto_sub: ${error.message}`));
await waitFor(() => subOutput.includes("received SUBACK"), "mosquitto_sub's SUBACK");
ok("mosquitto_sub subscribed to browser/out/# at QoS 2 over TCP");

profile = mkdtempSync(join(tmpdir(), "ringmq-chromium-"));
context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    // The broker's certificate is from a test CA: trusted by this throwaway profile only.
    "--ignore-certificate-errors",
  ],
  ignoreHTTPSErrors: true,
  viewport: { width: 1000, height: 700 },
});
const browserPage = context.pages()[0] ?? (await context.newPage());
browserPage.on("pageerror", (error) => console.error(`browser: page error: ${error.message}`));
await browserPage.goto(pageUrl);
ok(`chromium ${context.browser()?.version() ?? ""} loaded the page with MQTT.js`);

const results = () => browserPage.evaluate(() => window.results);
await waitFor(async () => {
  const state = await results();
  if (state.errors.length) await finish(1, `the page reports: ${state.errors.join("; ")}`);
  return NAMES.every((name) => state.ready[name]);
}, "the page to connect and subscribe over ws:// and wss://");
ok(`MQTT.js connected and subscribed over ${wsUrl} and ${wssUrl}`);

// Native to browser: one message at each QoS to each of the browser's connections.
for (const name of NAMES) {
  for (const qos of QOS) {
    const status = await new Promise((resolve) => {
      const pub = spawn("mosquitto_pub", [
        "-h", "127.0.0.1", "-p", tcpPort, "-t", `browser/in/${name}/q${qos}`, "-q", String(qos),
        "-m", `from mosquitto_pub at QoS ${qos}`,
      ]);
      pub.on("exit", resolve);
      pub.on("error", () => resolve(-1));
    });
    if (status !== 0) await finish(1, `mosquitto_pub to browser/in/${name}/q${qos} exited with ${status}`);
  }
}
await waitFor(async () => (await results()).received.length >= NAMES.length * QOS.length,
  "the browser to receive 6 messages from mosquitto_pub");
const got = (await results()).received
  .map((m) => `${m.via}|${m.topic}|${m.qos}|${m.payload}`)
  .sort();
const expected = NAMES.flatMap((name) =>
  QOS.map((qos) => `${name}|browser/in/${name}/q${qos}|${qos}|from mosquitto_pub at QoS ${qos}`));
if (JSON.stringify(got) !== JSON.stringify(expected.sort())) {
  await finish(1, `the browser received\n${got.join("\n")}\nexpected\n${expected.join("\n")}`);
}
ok("the browser received mosquitto_pub's messages at QoS 0, 1 and 2 over ws:// and wss://");

// Browser to native.
await waitFor(async () => {
  const state = await results();
  return NAMES.every((name) => state.published[name]);
}, "the browser's publishes to be acknowledged");
await waitFor(() => received.length >= NAMES.length * QOS.length,
  "mosquitto_sub to receive the browser's 6 messages");
const expectedOut = NAMES.flatMap((name) =>
  QOS.map((qos) => `MSG|browser/out/${name}/q${qos}|${qos}|from ${name} at QoS ${qos}`)).sort();
if (JSON.stringify([...received].sort()) !== JSON.stringify(expectedOut)) {
  await finish(1, `mosquitto_sub received\n${received.join("\n")}\nexpected\n${expectedOut.join("\n")}`);
}
ok("mosquitto_sub received the browser's messages at QoS 0, 1 and 2 from ws:// and wss://");

const artifacts = join(here, "artifacts");
mkdirSync(artifacts, { recursive: true });
const screenshot = join(artifacts, "browser.png");
await browserPage.screenshot({ path: screenshot, fullPage: true });
ok(`screenshot of the page: ${screenshot}`);
clearTimeout(overall);
await finish(0);
