import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { resourceName } from "@molecule/provisioner-core";
import Dockerode from "dockerode";
import { type Browser, type BrowserContext, chromium, type Locator, type Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createDockerTestPlatform, removeDeployment } from "../test-support/docker-platform.ts";
import { ADMIN_TOKEN, type TestPlatform } from "../test-support/platform.ts";
import { REPO_ROOT } from "../test-support/process.ts";
import { waitFor } from "../test-support/wait.ts";

/**
 * The canvas in a real browser (Debian's chromium driven by playwright-core) against a real tenant platform on
 * real PostgreSQL and the real Docker engine: sign in, create a workspace and watch it come online, create an
 * external one and read its connection snippets, see API errors, delete through the confirmation dialog.
 */

const CHROMIUM = "/usr/bin/chromium";
const IN_CI = process.env.CI === "true";
const HAVE_CHROMIUM = existsSync(CHROMIUM);
const ARTIFACTS = join(REPO_ROOT, "artifacts/canvas");
const ONLINE_TIMEOUT_MS = 120_000;

if (!HAVE_CHROMIUM && !IN_CI) {
  console.warn(
    `canvas browser test skipped: ${CHROMIUM} is missing (apt-get install -y chromium); under CI this fails`,
  );
}

const docker = new Dockerode();
const deployment = `e2e-${randomBytes(4).toString("hex")}`;
let platform: TestPlatform;
let baseUrl: string;
let browser: Browser;
let context: BrowserContext;
let page: Page;
const pageErrors: string[] = [];
const consoleErrors: string[] = [];
const requestedUrls: string[] = [];
const eventStreamRequests: { lastEventId: string | undefined }[] = [];

async function screenshot(name: string): Promise<string> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`canvas screenshot: ${path}`);
  return path;
}

/** Polls a locator's text until it matches (the page updates itself from the event stream). */
async function textBecomes(locator: Locator, expected: string | RegExp, timeout = 30_000) {
  await expect
    .poll(
      async () => ((await locator.count()) > 0 ? ((await locator.first().textContent()) ?? "").trim() : ""),
      {
        timeout,
        interval: 200,
      },
    )
    .toMatch(expected instanceof RegExp ? expected : new RegExp(`^${expected}$`));
}

/** What the test reads of a form field's constraint validation (the DOM's types are not in this project's lib). */
interface ValidatedInput {
  validity: { valid: boolean };
}

function fleetRow(name: string): Locator {
  return page.getByTestId("workspace-row").filter({ has: page.getByRole("link", { name, exact: true }) });
}

describe.skipIf(!HAVE_CHROMIUM && !IN_CI)("the canvas in a real browser", () => {
  beforeAll(async () => {
    if (!HAVE_CHROMIUM) {
      throw new Error(
        `CI=true and ${CHROMIUM} is missing: install it (apt-get install -y chromium; .ci/run does)`,
      );
    }
    platform = await createDockerTestPlatform({ docker, deployment });
    baseUrl = await platform.listen();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-first-run",
      ],
    });
    context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: baseUrl });
    page = await context.newPage();
    page.on("pageerror", (error) => pageErrors.push(error.message));
    page.on("console", (message) => {
      if (message.type() === "error") consoleErrors.push(message.text());
    });
    page.on("request", (request) => {
      requestedUrls.push(request.url());
      if (new URL(request.url()).pathname === "/events") {
        eventStreamRequests.push({ lastEventId: request.headers()["last-event-id"] });
      }
    });
  });

  afterEach(async (test) => {
    if (test.task.result?.state === "fail" && page) {
      await screenshot(`failed-${test.task.name.replace(/[^a-z0-9]+/gi, "-").slice(0, 60)}`).catch(() => {});
    }
  });

  afterAll(async () => {
    await browser?.close();
    if (platform) await platform.close();
    await removeDeployment(docker, deployment);
  });

  it("is served with a strict Content-Security-Policy, and the API behind it stays protected", async () => {
    const index = await fetch(`${baseUrl}/`);
    expect(index.status).toBe(200);
    expect(index.headers.get("content-type")).toBe("text/html; charset=utf-8");
    const csp = index.headers.get("content-security-policy") ?? "";
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("connect-src 'self'");
    expect(csp).not.toContain("unsafe-inline");
    const script = await fetch(`${baseUrl}/canvas/main.js`);
    expect(script.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect((await fetch(`${baseUrl}/canvas/canvas.css`)).headers.get("content-type")).toBe(
      "text/css; charset=utf-8",
    );
    const missing = await fetch(`${baseUrl}/canvas/secrets.js`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe("not_found");
    expect((await fetch(`${baseUrl}/workspaces`)).status).toBe(401);
    expect((await fetch(`${baseUrl}/events`)).status).toBe(401);
  });

  it("refuses a wrong token with a clear message and signs in with the admin token", async () => {
    await page.goto(`${baseUrl}/`);
    await page.getByLabel("Admin token").fill("not-the-admin-token");
    await page.getByRole("button", { name: "Sign in" }).click();
    await textBecomes(page.getByRole("alert"), /not accepted.*admin token/i);
    expect(await page.evaluate('sessionStorage.getItem("molecule.adminToken")')).toBeNull();
    await screenshot("login-refused");

    await page.getByLabel("Admin token").fill(ADMIN_TOKEN);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: /^Workspaces/ }).waitFor();
    await textBecomes(page.getByTestId("stream-state"), "Live");
    expect(await page.evaluate('sessionStorage.getItem("molecule.adminToken")')).toBe(ADMIN_TOKEN);
    expect(page.url()).not.toContain(ADMIN_TOKEN);

    // A reload keeps the session (sessionStorage), without asking again.
    await page.reload();
    await page.getByRole("heading", { name: /^Workspaces/ }).waitFor();
  });

  let dockerId = "";

  it("creates a workspace from the form and watches it reach online, live", async () => {
    await page.getByRole("link", { name: "New workspace" }).first().click();
    await page.getByLabel("Name").fill("canvas-docker");
    expect(await page.getByLabel("Runtime").inputValue()).toBe("echo");
    await page.getByLabel("Tier").selectOption("2");
    await page.getByRole("button", { name: "Create workspace" }).click();

    await page.waitForURL(/#\/workspaces\/ws_/);
    dockerId = decodeURIComponent(page.url().split("#/workspaces/")[1] ?? "");
    expect(dockerId).toMatch(/^ws_/);
    await page.getByRole("heading", { name: /canvas-docker/ }).waitFor();
    const status = page.getByTestId("workspace-status");
    await textBecomes(status, "online", ONLINE_TIMEOUT_MS);
    expect((await platform.call("GET", `/workspaces/${dockerId}`)).body.status).toBe("online");

    // The create operation with its recorded steps, and the events that got it here.
    const operation = page.getByTestId("operation").filter({ hasText: "provision" });
    await textBecomes(operation.locator(".op-status"), "succeeded");
    expect(await operation.getByRole("row").count()).toBeGreaterThan(2);
    const log = page.getByRole("log", { name: "Recent events" });
    await textBecomes(log.locator('li[data-type="workspace.heartbeat"]'), /heartbeat ok/);
    expect(await log.locator('li[data-type="workspace.status"]').allTextContents()).toContainEqual(
      expect.stringContaining("online"),
    );
    await screenshot("workspace-online");

    // The fleet shows it online, with a heartbeat age that keeps moving as heartbeats arrive.
    await page.getByRole("link", { name: "← Workspaces" }).click();
    const row = fleetRow("canvas-docker");
    await textBecomes(row.getByTestId("workspace-status"), "online");
    expect(await row.getByRole("cell").allTextContents()).toEqual([
      "echo",
      "docker",
      "2",
      "online",
      expect.any(String),
    ]);
    await textBecomes(row.locator("time"), /ago|just now/);
  }, 180_000);

  it("shows an API error with the platform's message", async () => {
    await page.goto(`${baseUrl}/#/workspaces/${dockerId}`);
    await textBecomes(page.getByTestId("workspace-status"), "online");
    await page.getByRole("button", { name: "Start", exact: true }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByRole("button", { name: "Start workspace" }).click();
    const alert = page.getByRole("alert");
    await textBecomes(
      alert,
      /Start failed: cannot start a workspace that is online \(invalid_transition, request req_[0-9a-f]+\)/,
    );
    await screenshot("api-error");
  });

  it("creates an external workspace: REMOTE badge and its connection snippets, shown once", async () => {
    await page.goto(`${baseUrl}/#/new`);
    await page.getByLabel("Name").fill("canvas-remote");
    await page.getByLabel(/External/).check();
    expect(await page.getByLabel("Runtime").isHidden()).toBe(true);
    await page.getByRole("button", { name: "Create workspace" }).click();

    const connection = page.getByTestId("connection");
    await connection.waitFor();
    await textBecomes(connection.getByRole("alert"), /shown only this once and will not be shown again/);
    expect(await connection.getByText("REMOTE", { exact: true }).count()).toBe(1);
    const token = (
      await connection.locator("dt:text-is('Registration token (one-time)') + dd").textContent()
    )?.trim();
    expect(token).toBeTruthy();
    const snippets = connection.getByTestId("snippet");
    const labels = await Promise.all(
      Array.from({ length: await snippets.count() }, (_, index) =>
        snippets.nth(index).getAttribute("data-snippet"),
      ),
    );
    expect(labels).toEqual(expect.arrayContaining(["curl", "Python", "TypeScript"]));
    const curl = (await connection.getByLabel("curl snippet", { exact: true }).textContent()) ?? "";
    expect(curl).toContain(String(token));
    expect(curl).toContain(`${baseUrl}/registry/register`);
    await connection.getByRole("button", { name: "Copy the curl snippet" }).click();
    await textBecomes(snippets.filter({ hasText: "curl" }).getByRole("status"), "Copied");
    expect(await page.evaluate("navigator.clipboard.readText()")).toBe(curl);
    await screenshot("external-connection");

    const created = (await platform.call("GET", "/workspaces")).body.workspaces.find(
      (workspace: { name: string }) => workspace.name === "canvas-remote",
    );
    expect(created.runtime).toBe("external");

    // The fleet marks it REMOTE; the snippets are nowhere to be found again.
    await page.getByRole("link", { name: "Done" }).click();
    const row = fleetRow("canvas-remote");
    await row.waitFor();
    expect(await row.getByText("REMOTE", { exact: true }).count()).toBe(1);
    await textBecomes(row.getByTestId("workspace-status"), "awaiting agent");
    expect(await fleetRow("canvas-docker").getByText("REMOTE", { exact: true }).count()).toBe(0);
    await page.goto(`${baseUrl}/#/workspaces/${created.id}`);
    await textBecomes(page.getByTestId("workspace-status"), "awaiting agent");
    expect(await page.getByText(String(token)).count()).toBe(0);
    expect(await page.getByRole("button", { name: "Stop", exact: true }).isHidden()).toBe(true);
    await page.goto(`${baseUrl}/#/`);
    await row.waitFor();
    await screenshot("fleet");
  });

  it("reconnects the event stream with Last-Event-ID and shows what it missed; heartbeat ages tick", async () => {
    await page.goto(`${baseUrl}/#/`);
    const row = fleetRow("canvas-remote");
    await textBecomes(row.getByRole("cell").last(), "never");
    await textBecomes(page.getByTestId("stream-state"), "Live");
    const streamRequests = eventStreamRequests.length;

    // Every open stream ends (as when a proxy drops it); an event published in the same tick, before the page can be
    // back, is only reachable by replay.
    const remoteId = (await row.getAttribute("data-workspace-id")) ?? "";
    await waitFor("the page's stream to be subscribed", async () =>
      platform.deps.events.subscriberCount > 0 ? true : undefined,
    );
    platform.dropConnections();
    const beat = new Date(Date.now() - 5 * 60_000).toISOString();
    platform.deps.events.publish({
      type: "workspace.heartbeat",
      workspaceId: remoteId,
      data: { at: beat, status: "ok" },
    });
    const missed = { id: platform.deps.events.latestId }; // one process's bus: published at once

    await textBecomes(row.getByRole("cell").last(), /^5 min \d+ s ago$/);
    expect(eventStreamRequests.length).toBeGreaterThan(streamRequests);
    const resumedFrom = Number(eventStreamRequests.at(-1)?.lastEventId);
    expect(resumedFrom).toBeGreaterThan(0);
    expect(resumedFrom).toBeLessThan(missed.id);
    await textBecomes(page.getByTestId("stream-state"), "Live");

    // The age keeps moving without further events.
    const first = await row.getByRole("cell").last().textContent();
    await expect.poll(() => row.getByRole("cell").last().textContent(), { timeout: 10_000 }).not.toBe(first);
  });

  it("creates a workspace with an idle time (the form refuses what the API refuses), shows it suspended with its reason, and wakes it", async () => {
    await page.goto(`${baseUrl}/#/new`);
    await page.getByLabel("Name").fill("canvas-sleeper");
    const idle = page.getByLabel("Suspend when idle (seconds)");
    const create = page.getByRole("button", { name: "Create workspace" });
    const countBefore = (await platform.call("GET", "/workspaces")).body.workspaces.length;
    // Negative, fractional and over 30 days: the browser refuses them before any request, as the API would.
    for (const refused of ["-1", "1.5", String(30 * 24 * 3600 + 1)]) {
      await idle.fill(refused);
      await create.click();
      expect(
        await idle.evaluate((input) => (input as unknown as ValidatedInput).validity.valid),
        refused,
      ).toBe(false);
      expect(page.url()).toMatch(/#\/new$/);
    }
    expect((await platform.call("GET", "/workspaces")).body.workspaces.length).toBe(countBefore);
    // An external workspace is never suspended by the platform: no idle field for it.
    await page.getByLabel(/External/).check();
    expect(await idle.isHidden()).toBe(true);
    await page.getByLabel(/External/).uncheck();
    await idle.fill("1");
    await create.click();

    await page.waitForURL(/#\/workspaces\/ws_/);
    const sleeperId = decodeURIComponent(page.url().split("#/workspaces/")[1] ?? "");
    expect((await platform.call("GET", `/workspaces/${sleeperId}`)).body.idleSuspendSeconds).toBe(1);
    const status = page.getByTestId("workspace-status");
    await textBecomes(status, "online", ONLINE_TIMEOUT_MS);
    await textBecomes(page.locator("dt:text-is('Suspend when idle') + dd"), "after 1.0 s idle");

    // The idle sweep (run here by hand) suspends it once it has been idle a second.
    await waitFor("the idle sweep to suspend it", async () =>
      (await platform.idle.sweep()).includes(sleeperId) ? true : undefined,
    );
    await textBecomes(status, "suspended", ONLINE_TIMEOUT_MS);
    await textBecomes(page.getByTestId("suspended-note"), /^Suspended \(idle for 1 s\): .*wake it now\.$/);
    await textBecomes(page.locator("dt:text-is('Status reason') + dd"), "idle for 1 s");
    expect(await page.getByRole("button", { name: "Start", exact: true }).isHidden()).toBe(true);
    await screenshot("workspace-suspended");

    await page.getByRole("button", { name: "Wake", exact: true }).click();
    await page
      .getByRole("dialog", { name: /Wake workspace “canvas-sleeper”\?/ })
      .getByRole("button", { name: "Wake workspace" })
      .click();
    await textBecomes(status, "online", ONLINE_TIMEOUT_MS);
    expect(await page.getByTestId("suspended-note").isHidden()).toBe(true);
    const start = page.getByTestId("operation").filter({ hasText: "start" });
    await textBecomes(start.locator(".op-status"), "succeeded");
    await screenshot("workspace-woken");
  }, 180_000);

  it("deletes a workspace only after the confirmation dialog", async () => {
    await page.goto(`${baseUrl}/#/workspaces/${dockerId}`);
    await textBecomes(page.getByTestId("workspace-status"), "online");

    // Cancel first: nothing happens.
    await page.getByRole("button", { name: "Delete", exact: true }).click();
    const dialog = page.getByRole("dialog", { name: /Delete workspace “canvas-docker”\?/ });
    await dialog.waitFor();
    await screenshot("delete-confirmation");
    await dialog.getByRole("button", { name: "Cancel" }).click();
    await dialog.waitFor({ state: "hidden" });
    const operations = (await platform.call("GET", `/workspaces/${dockerId}/operations`)).body.operations;
    expect(operations.map((operation: { kind: string }) => operation.kind)).not.toContain("destroy");

    await page.getByRole("button", { name: "Delete", exact: true }).click();
    await dialog.getByRole("button", { name: "Delete workspace" }).click();
    await textBecomes(page.getByTestId("workspace-status"), "removed", ONLINE_TIMEOUT_MS);
    const destroy = page.getByTestId("operation").filter({ hasText: "destroy" });
    await textBecomes(destroy.locator(".op-status"), "succeeded");
    await waitFor("the container to be gone", async () =>
      (await docker
        .getContainer(resourceName(dockerId))
        .inspect()
        .then(() => false)
        .catch((error: { statusCode?: number }) => error.statusCode === 404))
        ? true
        : undefined,
    );

    await page.getByRole("link", { name: "← Workspaces" }).click();
    await fleetRow("canvas-remote").waitFor();
    await expect.poll(() => fleetRow("canvas-docker").count()).toBe(0);
    await screenshot("after-delete");
  }, 180_000);

  it("shows the warm pools under the fleet, their counts as the pool fills and drains", async () => {
    await page.goto(`${baseUrl}/`);
    await page.getByRole("heading", { name: /^Workspaces/ }).waitFor();
    expect(await page.getByTestId("pools").isHidden()).toBe(true);
    expect(
      (await platform.call("PUT", "/pools", { body: { runtime: "echo", tier: 2, size: 1 } })).status,
    ).toBe(200);
    const row = page.getByTestId("pool-row").filter({ hasText: "echo" });
    await textBecomes(row.getByTestId("pool-size"), "1");
    await textBecomes(row.getByTestId("pool-ready"), "1", ONLINE_TIMEOUT_MS);
    // A pool whose image does not exist: its row says why, and when the pool, backing off, is tried again.
    await platform.call("PUT", "/pools", { body: { runtime: "doesnotexist", tier: 2, size: 1 } });
    const broken = page.getByTestId("pool-row").filter({ hasText: "doesnotexist" });
    await textBecomes(
      broken.getByTestId("pool-error"),
      /^image_unavailable: .*molecule\/workspace-doesnotexist.*\(retried at \d/,
    );
    await screenshot("warm-pools");
    await platform.call("PUT", "/pools", { body: { runtime: "doesnotexist", tier: 2, size: 0 } });
    await platform.call("PUT", "/pools", { body: { runtime: "echo", tier: 2, size: 0 } });
    await textBecomes(row.getByTestId("pool-size"), "0");
    await textBecomes(row.getByTestId("pool-ready"), "0");
  }, 180_000);

  it("loaded nothing from elsewhere, put no token in a URL and raised no script or CSP errors", () => {
    expect(requestedUrls.length).toBeGreaterThan(0);
    expect(requestedUrls.filter((url) => !url.startsWith(`${baseUrl}/`))).toEqual([]);
    expect(requestedUrls.filter((url) => url.includes(ADMIN_TOKEN))).toEqual([]);
    expect(pageErrors).toEqual([]);
    // The refused sign-in, the refused start and the event stream this test dropped mid-response are the only failed
    // loads the page should have seen (the last at most once).
    const dropped = consoleErrors.filter((text) => text.includes("ERR_INCOMPLETE_CHUNKED_ENCODING"));
    expect(dropped.length).toBeLessThanOrEqual(1);
    expect(
      consoleErrors.filter((text) => !/status of (401|409)/.test(text) && !dropped.includes(text)),
    ).toEqual([]);
  });
});
