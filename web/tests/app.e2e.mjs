// The web app in a real browser: Debian's Chromium, headless, driven by Playwright, against the
// server tests/web_app.rs starts with the fake model scripted for each chat (by its first
// message). Each step is one behaviour a person relies on; the first that fails ends the run
// with its reason, and the Rust test fails with it. Screenshots of the main screens go to
// $SCREENSHOTS.
//
// Environment: BASE_URL, NAME, PASSWORD, SCREENSHOTS, and the texts the script answers with
// (STORY, AGAIN).

import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";

const base = process.env.BASE_URL;
const screenshots = process.env.SCREENSHOTS;
mkdirSync(screenshots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  // This machine's network is closed: Chromium's own background connections only fail.
  args: ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
page.setDefaultTimeout(15_000);
const consoleErrors = [];
page.on("pageerror", (error) => consoleErrors.push(String(error)));

async function step(name, run) {
  const started = Date.now();
  try {
    await run();
    console.log(`ok: ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    await page.screenshot({ path: `${screenshots}/failed.png` }).catch(() => {});
    console.error(`FAILED: ${name}: ${error?.stack ?? error}`);
    await browser.close();
    process.exit(1);
  }
}

const composer = () => page.getByRole("textbox", { name: "Message" });
const answers = () => page.locator("article.message.assistant:not(.live)");
const status = () => page.locator(".chat-header .status");

async function startChat(text) {
  await page.getByRole("button", { name: "New chat" }).click();
  await composer().fill(text);
  await composer().press("Enter");
  await page.waitForURL(/\/chats\/[^/]+$/);
}

async function waitUntilWaiting() {
  await page.waitForFunction(() => document.querySelector(".chat-header .status")?.textContent === "waiting", null, {
    timeout: 30_000,
  });
}

await step("a wrong password is refused with the server's reason, the right one signs in", async () => {
  await page.goto(base);
  await page.getByLabel("Name").fill(process.env.NAME);
  await page.getByLabel("Password").fill("not the password");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "the name or the password is wrong" }).waitFor();
  await page.screenshot({ path: `${screenshots}/sign-in.png` });
  await page.getByLabel("Password").fill(process.env.PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await composer().waitFor();
});

await step("a message streams its answer; a reload mid-stream shows the whole answer exactly once", async () => {
  await startChat("STORY: tell me a story");
  // Part of the answer has arrived, not all of it.
  await page.locator("article.message.live").filter({ hasText: "Once" }).waitFor();
  await page.reload();
  await waitUntilWaiting();
  await answers().first().waitFor();
  assert.equal(await answers().count(), 1, "one answer");
  const shown = (await answers().first().locator(".markdown").innerText()).trim();
  assert.equal(shown, process.env.STORY, "the whole answer, once");
  await page.screenshot({ path: `${screenshots}/chat.png` });
});

await step("the chat is in the sidebar, titled, and opens again from there", async () => {
  const link = page.getByRole("navigation", { name: "Chats" }).getByRole("link").first();
  await link.waitFor();
  const href = await link.getAttribute("href");
  assert.match(href, /^\/chats\//);
});

await step("editing a sent message runs the chat again from it", async () => {
  await page.getByRole("button", { name: "Edit this message" }).click();
  await page.getByRole("textbox", { name: "Edit your message" }).fill("STORY: tell it again");
  await page.getByRole("button", { name: "Save and run again" }).click();
  await page.locator("article.message.user").filter({ hasText: "tell it again" }).waitFor();
  await answers().filter({ hasText: process.env.AGAIN }).waitFor({ timeout: 30_000 });
  await waitUntilWaiting();
  assert.equal(await answers().count(), 1, "the first answer went with the edit");
  assert.equal(await page.locator("article.message.user").count(), 1);
});

await step("messages sent during a turn are queued; one promoted runs first", async () => {
  await startChat("QUEUE: a long answer");
  await page.locator("article.message.live").waitFor();
  const queue = page.getByRole("region", { name: "Queued messages" });
  await composer().fill("first queued");
  await composer().press("Enter");
  await queue.getByRole("listitem").first().waitFor();
  await composer().fill("second queued");
  await composer().press("Enter");
  await queue.getByRole("listitem").nth(1).waitFor();
  await page.screenshot({ path: `${screenshots}/queue.png` });
  await queue.getByRole("listitem").filter({ hasText: "second queued" }).getByRole("button", { name: "Send now" }).click();
  await page.locator("article.message.user").filter({ hasText: "second queued" }).waitFor({ timeout: 30_000 });
  await page.locator("article.message.user").filter({ hasText: "first queued" }).waitFor({ timeout: 30_000 });
  await waitUntilWaiting();
  const order = await page.locator("article.message.user").allInnerTexts();
  const second = order.findIndex((t) => t.includes("second queued"));
  const first = order.findIndex((t) => t.includes("first queued"));
  assert.ok(second >= 0 && first > second, `the promoted message ran first: ${JSON.stringify(order)}`);
});

await step("interrupt stops the turn and keeps what was streamed", async () => {
  await startChat("INTERRUPT: a long answer");
  await page.locator("article.message.live").filter({ hasText: "Slowly" }).waitFor();
  await composer().press("Escape");
  await waitUntilWaiting();
  const kept = await answers().last().innerText();
  assert.match(kept, /Slowly/, "the streamed part was stored");
  assert.doesNotMatch(kept, /THE END/, "the turn stopped before its end");
});

await step("a tool call is shown with its result", async () => {
  await startChat("TOOL: which templates are there");
  const card = page.getByRole("region", { name: "tool list_templates" });
  await card.locator(".output").waitFor({ timeout: 30_000 });
  assert.match(await card.locator(".output").innerText(), /blank/);
  await waitUntilWaiting();
  await page.screenshot({ path: `${screenshots}/tool-call.png` });
});

await step("a subagent is a card that opens the child chat", async () => {
  await startChat("AGENT: have a helper do it");
  const open = page.getByRole("link", { name: "Open the agent's chat" });
  await open.waitFor({ timeout: 30_000 });
  await open.click();
  await answers().filter({ hasText: "the helper's report" }).waitFor({ timeout: 30_000 });
});

await step("signing out ends the session", async () => {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("button", { name: "Sign in" }).waitFor();
  await page.reload();
  await page.getByRole("button", { name: "Sign in" }).waitFor();
});

assert.deepEqual(consoleErrors, [], "no script errors in the page");
await browser.close();
console.log("all steps passed");
