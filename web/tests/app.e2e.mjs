// The web app in a real browser: Debian's Chromium, headless, driven by Playwright, against the
// server tests/web_app.rs starts with the fake model scripted for each chat (by its first
// message). Each step is one behaviour a person relies on; the first that fails ends the run
// with its reason, and the Rust test fails with it. Screenshots of the main screens go to
// $SCREENSHOTS.
//
// Environment: BASE_URL, NAME and PASSWORD (a member), ADMIN_NAME and ADMIN_PASSWORD, SCREENSHOTS,
// and the texts the script answers with (STORY, AGAIN).

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

async function signIn(name, password) {
  await page.getByLabel("Name").fill(name);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("button", { name: "Sign out" }).waitFor();
}

async function signOut() {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("button", { name: "Sign in" }).waitFor();
}

/** What the API answers the page's own session (its cookie, and its CSRF token if it changes something). */
async function fetchAsPage(method, path) {
  return page.evaluate(
    async ([method, path]) => {
      const session = await (await fetch("/api/v1/auth/session")).json();
      const response = await fetch(path, {
        method,
        headers: { "content-type": "application/json", "x-csrf-token": session.csrf_token },
        body: method === "GET" ? undefined : JSON.stringify({ policy: "forbid (principal, action, resource);" }),
      });
      return { status: response.status, body: await response.json() };
    },
    [method, path],
  );
}

await step("a wrong password is refused with the server's reason, the right one signs in", async () => {
  await page.goto(base);
  await page.getByLabel("Name").fill(process.env.NAME);
  await page.getByLabel("Password").fill("not the password");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "the name or the password is wrong" }).waitFor();
  await page.screenshot({ path: `${screenshots}/sign-in.png` });
  await signIn(process.env.NAME, process.env.PASSWORD);
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

await step("a file the agent writes shows in the workspace panel's git diff", async () => {
  await startChat("GIT: start a project and take notes");
  await waitUntilWaiting();
  const toggle = page.getByRole("button", { name: "Workspace" });
  if ((await toggle.getAttribute("aria-pressed")) !== "true") await toggle.click();
  const panel = page.getByRole("complementary", { name: "Workspace" });
  await panel.getByRole("status").filter({ hasText: "ready" }).waitFor({ timeout: 30_000 });
  const diff = panel.getByLabel("diff of notes.txt");
  await diff.waitFor({ timeout: 30_000 });
  assert.match(await diff.innerText(), /\+hello from the agent/);
  assert.match(await panel.locator(".changed-files").innerText(), /notes\.txt/);
  await page.screenshot({ path: `${screenshots}/workspace-diff.png` });
});

await step("the workspace's desktop opens watch-only in noVNC, and take-over is explicit", async () => {
  const panel = page.getByRole("complementary", { name: "Workspace" });
  await panel.getByRole("button", { name: "Desktop" }).click();
  const desktop = panel.getByRole("region", { name: "Desktop" });
  await desktop.getByRole("status").filter({ hasText: "Watching" }).waitFor({ timeout: 30_000 });
  await desktop.locator(".screen canvas").waitFor();
  const size = await desktop.locator(".screen canvas").evaluate((canvas) => [canvas.width, canvas.height]);
  assert.ok(size[0] >= 640 && size[1] >= 400, `the desktop's framebuffer is drawn: ${size}`);
  page.once("dialog", (dialog) => dialog.accept());
  await desktop.getByRole("button", { name: "Take over" }).click();
  await desktop.getByRole("status").filter({ hasText: "You are in control" }).waitFor({ timeout: 30_000 });
  await page.screenshot({ path: `${screenshots}/desktop.png` });
  await desktop.getByRole("button", { name: "Give back control" }).click();
  await desktop.getByRole("status").filter({ hasText: "Watching" }).waitFor({ timeout: 30_000 });
  await panel.getByRole("button", { name: "Changes" }).click();
});

await step("a member makes an API token, sees it once, and revokes it", async () => {
  await page.getByRole("link", { name: "Settings and tokens" }).click();
  const tokens = page.getByRole("region", { name: "API tokens" });
  await tokens.getByLabel("What it is for").fill("deploy script");
  await tokens.getByRole("button", { name: "Create token" }).click();
  const shown = (await tokens.locator(".made-token code").innerText()).trim();
  const whoami = await page.evaluate(
    async (token) => (await fetch("/api/v1/chats", { headers: { authorization: `Bearer ${token}` }, credentials: "omit" })).status,
    shown,
  );
  assert.equal(whoami, 200, "the new token works for scripts");
  await tokens.getByRole("button", { name: "Revoke deploy script" }).click();
  await tokens.getByRole("listitem").filter({ hasText: "deploy script" }).waitFor({ state: "detached" });
  const after = await page.evaluate(
    async (token) => (await fetch("/api/v1/chats", { headers: { authorization: `Bearer ${token}` }, credentials: "omit" })).status,
    shown,
  );
  assert.equal(after, 401, "a revoked token no longer works");
});

await step("a member sees no admin pages, and the admin APIs answer 403", async () => {
  const nav = page.getByRole("navigation", { name: "Chats" });
  assert.equal(await nav.getByRole("link", { name: "Administration" }).count(), 0, "no admin link for a member");
  await page.goto(`${base}/admin/policy`);
  await page.getByRole("alert").filter({ hasText: "Administration is for admins" }).waitFor();
  assert.equal(await page.getByLabel("Policy (Cedar)").count(), 0, "no policy editor");
  for (const [method, path] of [
    ["GET", "/api/v1/policy"],
    ["PUT", "/api/v1/policy"],
    ["POST", "/api/v1/policy/explain"],
    ["GET", "/api/v1/providers"],
    ["GET", "/api/v1/policy/audit"],
  ]) {
    const { status, body } = await fetchAsPage(method, path);
    assert.equal(status, 403, `${method} ${path}: ${JSON.stringify(body)}`);
    assert.ok(body.error?.message, `${method} ${path} says why`);
  }
  await signOut();
});

await step("an admin's invalid policy is refused with the problem at its line; a valid one is saved", async () => {
  await signIn(process.env.ADMIN_NAME, process.env.ADMIN_PASSWORD);
  await page.getByRole("link", { name: "Administration" }).click();
  const editor = page.getByLabel("Policy (Cedar)");
  await editor.waitFor();
  const inForce = await editor.inputValue();
  assert.match(inForce, /root-chats-use-every-tool-but-computer/, "the default policy is shown");
  const broken = ['@id("broken")', 'permit (principal, action == Action::"see_tool", resource)', "when { principal.kind == };"].join("\n");
  await editor.fill(broken);
  await page.getByRole("button", { name: "Save" }).click();
  const problems = page.getByRole("alert").filter({ hasText: "Not saved" });
  await problems.waitFor();
  assert.match(await problems.innerText(), /Line 3, column \d+/, "the problem is placed at its line");
  assert.equal(await page.locator(".code-editor .gutter .bad").innerText(), "3", "the line is marked in the editor");
  await page.screenshot({ path: `${screenshots}/policy-problem.png` });

  const hidden = [
    inForce.trimEnd(),
    "",
    '@id("subagents-do-not-read-files")',
    'forbid (principal, action == Action::"see_tool", resource)',
    'when { principal.kind == "subagent" && resource.name == "read_file" };',
    "",
  ].join("\n");
  await editor.fill(hidden);
  await page.getByRole("button", { name: "Save" }).click();
  await page.getByRole("status").filter({ hasText: "Saved as version 1" }).waitFor();
  assert.equal(await page.locator(".problems").count(), 0, "the problems are gone");
});

await step("explain shows the tool hidden for subagents and the rule that hid it", async () => {
  const explain = page.getByRole("region", { name: "Explain" });
  await explain.getByLabel("Kind of chat").selectOption("subagent");
  await explain.getByRole("button", { name: "Explain" }).click();
  const row = explain.locator('tr[data-tool="read_file"]');
  await row.waitFor();
  const cells = await row.locator("td").allInnerTexts();
  assert.match(cells[2], /^no\b.*subagents-do-not-read-files/s, `read_file hidden by the new rule: ${cells}`);
  const rootRow = explain.locator('tr[data-tool="write_file"] td').nth(2);
  assert.match(await rootRow.innerText(), /^yes/, "other tools stay visible");
  await page.screenshot({ path: `${screenshots}/policy-explain.png`, fullPage: true });
});

await step("the versions list the saved policy, and the built-in default is one click from restore", async () => {
  const versions = page.getByRole("region", { name: "Policy versions" });
  await versions.getByRole("button", { name: "Compare version 0" }).click();
  const diff = versions.getByLabel("Differences");
  await diff.waitFor();
  assert.match(await diff.locator(".added").first().innerText(), /subagents-do-not-read-files/);
  await versions.getByRole("button", { name: "Restore version 0" }).click();
  await page.locator(".admin-policy header").filter({ hasText: "version 2" }).waitFor();
  assert.doesNotMatch(await page.getByLabel("Policy (Cedar)").inputValue(), /subagents-do-not-read-files/);
});

await step("the other admin screens show the server's state", async () => {
  const sections = page.getByRole("navigation", { name: "Administration sections" });
  await sections.getByRole("link", { name: "Providers and models" }).click();
  await page.getByRole("table", { name: "Models" }).getByRole("cell", { name: /test-model/ }).first().waitFor();
  await page.screenshot({ path: `${screenshots}/admin-models.png` });
  await sections.getByRole("link", { name: "Users" }).click();
  const addUser = page.getByRole("form", { name: "Add a user" });
  await addUser.getByLabel("Name").fill("carol");
  await addUser.getByLabel("Password").fill("carol's own passphrase");
  await addUser.getByRole("button", { name: "Add user" }).click();
  const carol = page.getByRole("table", { name: "Users" }).getByRole("row").filter({ hasText: "carol" });
  await carol.waitFor();
  assert.match(await carol.innerText(), /member/);
  await sections.getByRole("link", { name: "Plugins" }).click();
  await page.getByRole("region", { name: "plugin files" }).waitFor();
  await sections.getByRole("link", { name: "Templates" }).click();
  await page.getByRole("table", { name: "Templates" }).getByRole("cell", { name: "starter", exact: true }).waitFor();
  await sections.getByRole("link", { name: "Audit log" }).click();
  await page.getByRole("heading", { name: "Audit log" }).waitFor();
});

await step("the theme switch picks dark and light over the system's, and a reload keeps it", async () => {
  const theme = () => page.evaluate(() => document.documentElement.dataset.theme);
  const system = await page.evaluate(() => (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));
  assert.equal(await theme(), system, "the system's theme at first");
  await page.getByRole("button", { name: /^Theme: system/ }).click();
  assert.equal(await theme(), "light");
  await page.getByRole("button", { name: /^Theme: light/ }).click();
  assert.equal(await theme(), "dark");
  await page.reload();
  await page.getByRole("button", { name: /^Theme: dark/ }).waitFor();
  assert.equal(await theme(), "dark", "the choice outlives a reload");
  await page.getByRole("heading", { name: "Audit log" }).waitFor();
  await page.screenshot({ path: `${screenshots}/admin-dark.png` });
  await page.getByRole("button", { name: /^Theme: dark/ }).click();
});

await step("a call the policy holds for approval waits in the chat until the person approves it", async () => {
  await page.getByRole("link", { name: "Administration" }).click();
  const editor = page.getByLabel("Policy (Cedar)");
  await editor.waitFor();
  const inForce = await editor.inputValue();
  const held = [
    inForce.trimEnd(),
    "",
    '@id("approve-template-listings")',
    'permit (principal, action == Action::"require_approval", resource)',
    'when { resource.name == "list_templates" };',
    "",
  ].join("\n");
  await editor.fill(held);
  await page.getByRole("button", { name: "Save" }).click();
  await page.getByRole("status").filter({ hasText: /Saved as version/ }).waitFor();
  await startChat("APPROVE: which templates are there");
  const waiting = page.getByRole("region", { name: "Tool calls waiting for your approval" });
  await waiting.waitFor({ timeout: 30_000 });
  const asked = await waiting.innerText();
  assert.match(asked, /list_templates/);
  assert.match(asked, /approve-template-listings/, "the rule that asked is shown");
  await page.screenshot({ path: `${screenshots}/approval.png` });
  await waiting.getByRole("button", { name: "Approve", exact: true }).click();
  const card = page.getByRole("region", { name: "tool list_templates" });
  await card.locator(".output").waitFor({ timeout: 30_000 });
  assert.match(await card.locator(".output").innerText(), /blank/, "approved, the call ran");
  await waitUntilWaiting();
  assert.equal(await waiting.count(), 0, "nothing waits any more");
});

await step("signing out ends the session", async () => {
  await signOut();
  await page.reload();
  await page.getByRole("button", { name: "Sign in" }).waitFor();
});

assert.deepEqual(consoleErrors, [], "no script errors in the page");
await browser.close();
console.log("all steps passed");
