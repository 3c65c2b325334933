// The web app's benchmarks in Debian's Chromium (see host/examples/web_bench.rs, which starts
// the server and makes the chats). Prints its figures, the last line as JSON.
//
// Environment: BASE_URL, NAME, PASSWORD, HISTORY_CHAT (a chat of MESSAGES messages), PARTS
// (the streamed answer's parts), LOADS (page loads measured).

import { chromium } from "playwright-core";
import { gzipSync } from "node:zlib";

const base = process.env.BASE_URL;
const history = process.env.HISTORY_CHAT;
const expected = Number(process.env.MESSAGES);
const loads = Number(process.env.LOADS ?? 5);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
page.setDefaultTimeout(60_000);

// In every page: long tasks, frame times, and the moment the chat shows N messages.
await page.addInitScript(
  ({ history, expected }) => {
  window.__bench = { longTasks: [], frames: [], shownAt: null };
  // Messages the chat view has: those drawn, and those it holds back until asked (a long chat
  // draws its latest messages first).
  const received = () =>
    document.querySelectorAll(".messages article.message").length +
    Number(document.querySelector(".messages .earlier")?.dataset.hidden ?? 0);
  window.__received = received;
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) window.__bench.longTasks.push(entry.duration);
  }).observe({ type: "longtask", buffered: true });
  let last = performance.now();
  const frame = (now) => {
    window.__bench.frames.push(now - last);
    last = now;
    // A fresh load of the long chat: the first frame that has every message.
    if (
      window.__bench.shownAt === null &&
      location.pathname === `/chats/${history}` &&
      received() >= expected
    )
      window.__bench.shownAt = now;
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
  },
  { history, expected },
);

/** Resolves (in the page) at the first frame painted with `count` messages in the chat view. */
const waitForMessages = (count) =>
  page.evaluate(
    (count) =>
      new Promise((resolve) => {
        const check = () => {
          if (window.__received() >= count) {
            // The frame after the DOM has them is the one that shows them.
            requestAnimationFrame(() => resolve(performance.now()));
          } else requestAnimationFrame(check);
        };
        check();
      }),
    count,
  );

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return Math.round(sorted[Math.floor(sorted.length / 2)] * 10) / 10;
};

await page.goto(base);
await page.getByLabel("Name").fill(process.env.NAME);
await page.getByLabel("Password").fill(process.env.PASSWORD);
await page.getByRole("button", { name: "Sign in" }).click();
await page.getByRole("textbox", { name: "Message" }).waitFor();

// (1) A fresh load of the chat's address: navigation start to the frame showing every message.
const fresh = [];
for (let i = 0; i < loads + 1; i++) {
  await page.goto(`${base}/chats/${history}`);
  await page.waitForFunction(() => window.__bench.shownAt !== null);
  const at = await page.evaluate(() => window.__bench.shownAt);
  if (i > 0) fresh.push(at); // the first load fills the browser's cache
}
console.log(`fresh load of a chat of ${expected} messages: median ${median(fresh)} ms (${fresh.map(Math.round).join(", ")})`);

// (2) Switching to it from the new-chat screen, as a click in the sidebar does.
const switched = [];
for (let i = 0; i < loads; i++) {
  await page.getByRole("button", { name: "New chat" }).click();
  await page.waitForFunction(() => window.__received() === 0);
  const started = await page.evaluate(() => performance.now());
  await page.locator(`a[href="/chats/${history}"]`).click();
  switched.push((await waitForMessages(expected)) - started);
}
console.log(`switch to it from another screen: median ${median(switched)} ms (${switched.map(Math.round).join(", ")})`);

// (3) A long answer streaming at its rate: long tasks and slow frames while it streams.
await page.getByRole("button", { name: "New chat" }).click();
await page.evaluate(() => {
  window.__bench.longTasks = [];
  window.__bench.frames = [];
});
const streamStarted = Date.now();
await page.getByRole("textbox", { name: "Message" }).fill("STREAM: a long answer");
await page.getByRole("textbox", { name: "Message" }).press("Enter");
await page.locator("article.message.live").waitFor();
await page.waitForFunction(() => document.querySelector(".chat-header .status")?.textContent === "waiting", null, {
  timeout: 120_000,
});
const streamSeconds = (Date.now() - streamStarted) / 1000;
const { longTasks, frames } = await page.evaluate(() => window.__bench);
const words = (await page.locator("article.message.assistant .markdown").last().innerText()).split(/\s+/).filter(Boolean).length;
const slowFrames = frames.filter((f) => f > 50);
console.log(
  `a ${process.env.PARTS}-part answer over ${streamSeconds.toFixed(1)} s: ${longTasks.length} long tasks (max ${Math.round(Math.max(0, ...longTasks))} ms), ${slowFrames.length} of ${frames.length} frames over 50 ms; ${words} words shown`,
);

// (4) The bundle: what the chat screens load, and what is loaded only on demand.
const html = await (await fetch(`${base}/`)).text();
const linked = [...html.matchAll(/(?:src|href)="\/(assets\/[^"]+)"/g)].map((m) => m[1]);
const gzipped = async (path) => gzipSync(Buffer.from(await (await fetch(`${base}/${path}`)).arrayBuffer())).length;
let initial = 0;
const onDemand = {};
for (const path of linked) initial += await gzipped(path);
for (const path of linked.filter((p) => p.endsWith(".js"))) {
  const code = await (await fetch(`${base}/${path}`)).text();
  for (const [, chunk] of code.matchAll(/"(?:\.\/|\/)?(?:assets\/)?([A-Za-z0-9_-]+-[A-Za-z0-9_-]{8}\.js)"/g)) {
    if (!linked.includes(`assets/${chunk}`)) onDemand[chunk] = await gzipped(`assets/${chunk}`);
  }
}
const kib = (bytes) => Math.round((bytes / 1024) * 10) / 10;
console.log(
  `bundle (gzip): chat screens ${kib(initial)} KiB; on demand: ${Object.entries(onDemand)
    .map(([name, size]) => `${name} ${kib(size)} KiB`)
    .join(", ")}`,
);

await browser.close();
console.log(
  JSON.stringify({
    messages: expected,
    first_paint_fresh_load_ms: median(fresh),
    first_paint_switch_ms: median(switched),
    stream_parts: Number(process.env.PARTS),
    stream_seconds: Math.round(streamSeconds * 10) / 10,
    stream_long_tasks: longTasks.length,
    stream_longest_task_ms: Math.round(Math.max(0, ...longTasks)),
    stream_frames_over_50ms: slowFrames.length,
    stream_frames: frames.length,
    stream_words_shown: words,
    bundle_chat_gzip_kib: kib(initial),
    bundle_on_demand_gzip_kib: Object.fromEntries(Object.entries(onDemand).map(([name, size]) => [name, kib(size)])),
  }),
);
