import { type ChildProcess, spawn } from "node:child_process";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { serve } from "@hono/node-server";
import {
  AdminStats,
  BackupsOverview,
  CpOrgPoolList,
  CreatedOrg,
  DeletedOrg,
  OrgList,
  ReconcileReport,
  TenantOperationAccepted,
} from "@molecule/contracts";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../../test-support/net.ts";
import { REPO_ROOT } from "../../../test-support/process.ts";
import { controlPlaneOpenApi, createApp, createOperationRunner } from "./app.ts";
import { TOKEN_FLAG_WARNING } from "./cli/command.ts";
import { runCli } from "./cli.ts";
import { cpOrgs, cpWorkspaces } from "./db/schema.ts";
import { FAKE_TENANT_IMAGE } from "./tenants/fake.ts";
import {
  ADMIN_TOKEN,
  createTestControlPlane,
  realClock,
  type TestControlPlane,
  workspaceSpec,
} from "./testing.ts";

const ENTRY = fileURLToPath(new URL("./cli.ts", import.meta.url));
const REQUEST_ID = /req_[0-9a-f]{16}/;

interface CpProcess {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<number | null>;
}

/** `molecule-cp …args` as its own process (node + tsx, as the bin link runs it) with exactly `env` and PATH. */
function spawnCp(args: string[], env: Record<string, string>): CpProcess {
  const child = spawn(process.execPath, ["--import", "tsx", ENTRY, ...args], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    out += chunk;
  });
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    err += chunk;
  });
  const exited = new Promise<number | null>((resolve) => child.once("close", (code) => resolve(code)));
  return { child, stdout: () => out, stderr: () => err, exited };
}

async function until(what: string, check: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

// Each test starts several CLI processes (node + tsx); a loaded machine starts them slowly.
describe("molecule-cp against a control plane over HTTP", { timeout: 180_000 }, () => {
  let cp: TestControlPlane;
  let runner: ReturnType<typeof createOperationRunner>;
  let server: ReturnType<typeof serve>;
  let url = "";
  /** Everything every process printed, checked at the end for the admin token. */
  const printed: string[] = [];

  beforeAll(async () => {
    cp = await createTestControlPlane({ clock: realClock });
    runner = createOperationRunner(cp.deps, "cli-test-runner", 20);
    const app = createApp(cp.deps, { onOperationQueued: () => runner.wake() });
    runner.start();
    server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" });
    await new Promise<void>((resolve) => server.once("listening", () => resolve()));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await runner.stop();
    await cp.close();
    expect(printed.length).toBeGreaterThan(0);
    for (const text of printed) expect(text).not.toContain(ADMIN_TOKEN);
  });

  /** Runs the CLI to its exit with CP_URL and the admin token in its environment (unless `env` overrides them). */
  async function cpcli(args: string[], env: Record<string, string> = {}) {
    const run = spawnCp(args, { CP_URL: url, CP_ADMIN_API_TOKEN: ADMIN_TOKEN, ...env });
    const code = await run.exited;
    printed.push(run.stdout(), run.stderr());
    return { code, stdout: run.stdout(), stderr: run.stderr() };
  }

  it("creates an org, lists it as a table and as JSON, and shows it", async () => {
    const created = await cpcli(["orgs", "create", "cli-acme", "--name", "Acme Corp", "--canary"]);
    expect(created).toMatchObject({ code: 0, stderr: "" });
    const [row] = await cp.deps.db.select().from(cpOrgs).where(eq(cpOrgs.slug, "cli-acme"));
    expect(row).toMatchObject({ name: "Acme Corp", isCanary: true });
    expect(created.stdout).toMatch(new RegExp(`^created\\s+cli-acme \\(${row?.id}\\)$`, "m"));
    expect(created.stdout).toMatch(/^tenant admin token\s+mat_\S+$/m);
    expect(created.stdout).toContain("shown this once");

    const table = await cpcli(["orgs", "list"]);
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^SLUG\s+NAME\s+STATUS\s+CANARY\s+TENANT URL\s+IMAGE\s+CREATED\s+ID$/);
    const line = lines.find((l) => l.startsWith("cli-acme "));
    expect(line).toMatch(/^cli-acme\s+Acme Corp\s+(provisioning|ready)\s+yes\s+/);
    expect(line).toContain(row?.id);
    // The columns line up: every row's status starts where the header's does.
    const statusAt = lines[0]?.indexOf("STATUS");
    for (const l of lines.slice(1)) expect(l.slice(statusAt).trimStart()).toBe(l.slice(statusAt));

    const listed = await cpcli(["orgs", "list", "--json"]);
    expect(listed.code).toBe(0);
    const orgs = OrgList.parse(JSON.parse(listed.stdout)).orgs;
    expect(orgs.find((org) => org.slug === "cli-acme")).toMatchObject({ id: row?.id, is_canary: true });

    const shown = await cpcli(["orgs", "show", "cli-acme"]);
    expect(shown.code).toBe(0);
    expect(shown.stdout).toMatch(/^name\s+Acme Corp$/m);
    expect(shown.stdout).toMatch(
      /^operation op_\S+ provision_tenant (pending|running|succeeded), \d+ attempt\(s\)$/m,
    );
  });

  it("orgs pools prints an org's warm pool members per pool, and JSON that the contracts read", async () => {
    const org = await cp.createOrg("cli-pools");
    const empty = await cpcli(["orgs", "pools", "cli-pools"]);
    expect(empty).toMatchObject({ code: 0, stdout: "no pool members\n" });
    for (const id of ["ws_01jcpclipool00000000000001", "ws_01jcpclipool00000000000002"]) {
      const member = { ...workspaceSpec(id), pool: "echo-t2" };
      expect((await cp.tenant(org, "POST", "/cp/workspaces/provision", { body: member })).status).toBe(202);
    }
    await until("both members running", async () => {
      const rows = await cp.deps.db.select().from(cpWorkspaces).where(eq(cpWorkspaces.orgId, org.orgId));
      return rows.length === 2 && rows.every((row) => row.state === "running");
    });
    const shown = await cpcli(["orgs", "pools", "cli-pools"]);
    expect(shown.code).toBe(0);
    const lines = shown.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^POOL\s+UNCLAIMED\s+CLAIMED\s+UNCLAIMED BY STATE$/);
    expect(lines[1]).toMatch(/^echo-t2\s+2\s+0\s+running 2$/);
    const listed = await cpcli(["orgs", "pools", "cli-pools", "--json"]);
    expect(CpOrgPoolList.parse(JSON.parse(listed.stdout))).toMatchObject({
      org_id: org.orgId,
      pools: [{ pool: "echo-t2", unclaimed: 2, claimed: 0 }],
    });
    const missing = await cpcli(["orgs", "pools", "cli-nobody"]);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toContain("cli-nobody");
  });

  it("create --json prints the answer, credentials included, for scripts", async () => {
    const created = await cpcli(["orgs", "create", "cli-json", "--name", "Json", "--json"]);
    expect(created.code).toBe(0);
    const answer = CreatedOrg.parse(JSON.parse(created.stdout));
    expect(answer.org.slug).toBe("cli-json");
    expect(answer.tenant_credential).toMatch(/^mct_/);
    expect(answer.tenant_admin_token).toMatch(/^mat_/);
  });

  it(
    "a refused call exits 1 with the server's code, message and request id, and changes nothing",
    { timeout: 180_000 },
    async () => {
      const before = await cp.rowCounts();
      const missing = await cpcli(["orgs", "show", "cli-nobody"]);
      expect(missing.code).toBe(1);
      expect(missing.stdout).toBe("");
      expect(missing.stderr).toMatch(
        /^molecule-cp: not_found: no org with slug "cli-nobody" \(HTTP 404, request req_[0-9a-f]{16}\)\n$/,
      );

      const badSlug = await cpcli(["orgs", "create", "Not A Slug", "--name", "x"]);
      expect(badSlug.code).toBe(1);
      expect(badSlug.stderr).toMatch(
        /^molecule-cp: bad_request: .*slug.*\(HTTP 400, request req_[0-9a-f]{16}\)\n$/,
      );

      const wrongConfirm = await cpcli(["orgs", "delete", "cli-acme", "--confirm", "cli-other"]);
      expect(wrongConfirm.code).toBe(1);
      expect(wrongConfirm.stderr).toContain(`bad_request: confirm must repeat the org's slug ("cli-acme")`);
      expect(await cp.rowCounts()).toEqual(before);
    },
  );

  it(
    "flags win over the environment; a flag token works with a warning and is never printed",
    { timeout: 180_000 },
    async () => {
      const deadUrl = `http://127.0.0.1:${await freePort()}`;
      const flagToken = "not-the-admin-token-0123456789";

      // --url over CP_URL.
      const byFlag = await cpcli(["orgs", "list", "--url", url], { CP_URL: deadUrl });
      expect(byFlag).toMatchObject({ code: 0, stderr: "" });
      expect(byFlag.stdout).toMatch(/^SLUG/);

      // CP_URL alone: nothing listens there.
      const unreachable = await cpcli(["orgs", "list"], { CP_URL: deadUrl });
      expect(unreachable.code).toBe(1);
      expect(unreachable.stderr).toBe(
        `molecule-cp: cannot reach the control plane at ${deadUrl}: ECONNREFUSED\n`,
      );

      // --token over CP_ADMIN_API_TOKEN: the wrong flag token is used (401) and appears nowhere.
      const wrongFlag = await cpcli(["stats", "--token", flagToken]);
      expect(wrongFlag.code).toBe(1);
      expect(wrongFlag.stderr).toMatch(
        new RegExp(
          `^molecule-cp: ${TOKEN_FLAG_WARNING}\\nmolecule-cp: unauthorized: an admin bearer token is required \\(HTTP 401, request ${REQUEST_ID.source}\\)\\n$`,
        ),
      );
      expect(wrongFlag.stdout + wrongFlag.stderr).not.toContain(flagToken);

      // The right token by flag, a wrong one in the environment: the flag's is used.
      const rightFlag = await cpcli(["stats", "--json", "--token", ADMIN_TOKEN], {
        CP_ADMIN_API_TOKEN: flagToken,
      });
      expect(rightFlag.code).toBe(0);
      expect(rightFlag.stderr).toBe(`molecule-cp: ${TOKEN_FLAG_WARNING}\n`);
      AdminStats.parse(JSON.parse(rightFlag.stdout));

      // Neither: bad usage, before any request.
      const none = await cpcli(["orgs", "list"], { CP_ADMIN_API_TOKEN: "" });
      expect(none).toMatchObject({ code: 2, stdout: "" });
      expect(none.stderr).toBe("molecule-cp: no admin token: set CP_ADMIN_API_TOKEN or pass --token\n");
    },
  );

  it("openapi prints the control plane's OpenAPI document", async () => {
    const printed = await cpcli(["openapi"]);
    expect(printed).toMatchObject({ code: 0, stderr: "" });
    expect(JSON.parse(printed.stdout)).toEqual(JSON.parse(JSON.stringify(controlPlaneOpenApi())));
  });

  it("stats and reconcile print tables, and JSON that the contracts read", async () => {
    const stats = await cpcli(["stats"]);
    expect(stats.code).toBe(0);
    expect(stats.stdout).toMatch(/^hung operations\s+0$/m);
    expect(stats.stdout).toMatch(/^OPERATIONS\s+/m);
    expect(stats.stdout).toMatch(/^provision_tenant\s+\d+/m);

    const reconcile = await cpcli(["reconcile"]);
    expect(reconcile.code).toBe(0);
    expect(reconcile.stdout).toMatch(/^orphans\s+0$/m);
    expect(reconcile.stdout).toMatch(/^replica\s+\S+$/m);
    expect(reconcile.stdout).toMatch(/^deleted\s+0 \(RECONCILE_DELETE_ORPHANS is off\)$/m);

    const report = await cpcli(["reconcile", "--json"]);
    expect(report.code).toBe(0);
    expect(ReconcileReport.parse(JSON.parse(report.stdout))).toMatchObject({
      orphans: 0,
      deleteOrphans: false,
    });
    // The pass just run is the stats' last reconcile.
    const after = AdminStats.parse(JSON.parse((await cpcli(["stats", "--json"])).stdout));
    expect(after.lastReconcile?.at).toBe(JSON.parse(report.stdout).at);
    const again = await cpcli(["stats"]);
    expect(again.stdout).toMatch(
      new RegExp(`^last reconcile\\s+\\S+ by ${after.lastReconcile?.replica} \\(`, "m"),
    );
  });

  it(
    "backups: a table with stale and failed tenants flagged, --json, and --check failing on them",
    { timeout: 180_000 },
    async () => {
      const good = await cp.createOrg("cli-backup-good");
      const bad = await cp.createOrg("cli-backup-bad");
      await cp.createOrg("cli-backup-never");
      const finished = new Date();
      const started = new Date(finished.getTime() - 5_000);
      const report = (slug: string, outcome: "succeeded" | "failed") => ({
        slug,
        outcome,
        location: `s3://molecule-backups/tenants/${slug}/${started.getTime()}.dump`,
        format: "pg_dump_custom",
        size_bytes: outcome === "succeeded" ? 4096 : null,
        sha256: outcome === "succeeded" ? "ab".repeat(32) : null,
        started_at: started.toISOString(),
        finished_at: finished.toISOString(),
        ...(outcome === "failed" ? { error: "pg_dump: connection refused" } : {}),
      });
      for (const [who, outcome] of [
        [good, "succeeded"],
        [bad, "failed"],
      ] as const) {
        const sent = await cp.tenant(who, "POST", "/cp/tenants/backup-report", {
          body: report(who.slug, outcome),
        });
        expect(sent.status, sent.text).toBe(204);
      }

      const shown = await cpcli(["backups"]);
      expect(shown.code).toBe(0);
      const lines = shown.stdout.split("\n");
      expect(lines[0]).toMatch(
        /^SLUG\s+ORG STATUS\s+LAST\s+OUTCOME\s+LAST GOOD\s+SIZE\s+FLAGS\s+LOCATION \/ ERROR$/,
      );
      const row = (slug: string) => lines.find((l) => l.startsWith(`${slug} `)) ?? "";
      expect(row("cli-backup-good")).toMatch(
        /\ssucceeded\s+\S+\s+4\.0 KiB\s+-\s+s3:\/\/molecule-backups\/tenants\/cli-backup-good\/\d+\.dump$/,
      );
      expect(row("cli-backup-bad")).toMatch(/\sfailed\s+-\s+-\s+STALE,FAILED\s+pg_dump: connection refused$/);
      // An org that never reported is stale, with nothing to restore.
      expect(row("cli-backup-never")).toMatch(/\sprovisioning\s+-\s+-\s+-\s+-\s+STALE\s+-$/);
      const view = BackupsOverview.parse(JSON.parse((await cpcli(["backups", "--json"])).stdout));
      expect(shown.stdout).toContain(
        `${view.summary.tenants} tenant(s), ${view.summary.stale} stale (no good backup within 36 h 0 min), 1 failed\n`,
      );
      expect(view.tenants.find((t) => t.slug === "cli-backup-good")).toMatchObject({
        stale: false,
        failed: false,
      });

      // For monitoring: stale or failed tenants make --check exit 1, after the same table.
      const checked = await cpcli(["backups", "--check"]);
      expect(checked.code).toBe(1);
      expect(checked.stdout).toBe(shown.stdout);
    },
  );

  it(
    "create --wait prints the tenant's boot as it happens and exits 0 once it is ready",
    { timeout: 180_000 },
    async () => {
      const run = spawnCp(["orgs", "create", "cli-boot", "--name", "Boot", "--wait"], {
        CP_URL: url,
        CP_ADMIN_API_TOKEN: ADMIN_TOKEN,
      });
      // The tenant the runner provisioned reports its boot, signed with the credential it was given.
      let credential = "";
      await until("the tenant to be provisioned", () => {
        credential = cp.tenants.tenants().find((t) => t.slug === "cli-boot")?.env.CP_TENANT_TOKEN ?? "";
        return credential !== "";
      });
      const orgId = cp.tenants.tenants().find((t) => t.slug === "cli-boot")?.orgId ?? "";
      const identity = { orgId, slug: "cli-boot", credential };
      await until("the CLI to be waiting", () => run.stdout().includes("waiting for the tenant of cli-boot"));
      for (const stage of ["container_started", "migrated"]) {
        expect(
          (await cp.tenant(identity, "POST", "/cp/tenants/boot-event", { body: { stage } })).status,
        ).toBe(204);
        await until(`the ${stage} line`, () => new RegExp(`tenant ${stage}\\n`).test(run.stdout()));
      }
      // The lines came one by one, while the org was still provisioning.
      expect(run.stdout()).not.toContain("is ready");
      await cp.tenant(identity, "POST", "/cp/tenants/boot-event", { body: { stage: "ready" } });
      expect(await run.exited).toBe(0);
      printed.push(run.stdout(), run.stderr());
      const lines = run.stdout().split("\n");
      const started = lines.findIndex((l) => l.endsWith("tenant container_started"));
      expect(started).toBeGreaterThan(lines.findIndex((l) => l.startsWith("waiting for")));
      expect(lines.findIndex((l) => l.endsWith("tenant migrated"))).toBeGreaterThan(started);
      expect(run.stdout()).toMatch(/tenant ready\norg cli-boot is ready\n$/);
    },
  );

  it(
    "tenants stop, start and redeploy: the operation followed to its end with --wait",
    { timeout: 180_000 },
    async () => {
      const org = await cp.createOrg("cli-ops");
      await until("the tenant to be provisioned", () => cp.tenants.inspect(org.orgId)?.running === true);
      const bootEvent = async (body: Record<string, string>) => {
        const sent = await cp.tenant(org, "POST", "/cp/tenants/boot-event", { body });
        expect(sent.status, sent.text).toBe(204);
      };
      await bootEvent({ stage: "ready", image: FAKE_TENANT_IMAGE });

      const stopped = await cpcli(["tenants", "stop", "cli-ops", "--wait"]);
      expect(stopped, stopped.stderr).toMatchObject({ code: 0, stderr: "" });
      expect(stopped.stdout).toMatch(/^tenant of cli-ops: stop_tenant op_\S+ \((pending|running)\)\n/);
      expect(stopped.stdout).toMatch(
        /^ {2}stop_tenant step tenant_stopped \(\d+ (ms|s)\): fake-tenant-\d+$/m,
      );
      expect(stopped.stdout).toMatch(/stop_tenant succeeded; org cli-ops is stopped\n$/);
      expect(cp.tenants.inspect(org.orgId)?.running).toBe(false);

      // A stopped tenant is not redeployed: the server's conflict, exit 1.
      const refused = await cpcli(["tenants", "redeploy", "cli-ops"]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(
        /^molecule-cp: conflict: the tenant of "cli-ops" is stopped: start it before a redeploy \(HTTP 409, request req_[0-9a-f]{16}\)\n$/,
      );

      // start --wait goes on until the tenant reports ready, and prints that boot event (not the older ones).
      const starting = spawnCp(["tenants", "start", "cli-ops", "--wait"], {
        CP_URL: url,
        CP_ADMIN_API_TOKEN: ADMIN_TOKEN,
      });
      await until("the tenant to be started", () => cp.tenants.inspect(org.orgId)?.running === true);
      await until("the start step line", () =>
        starting.stdout().includes("start_tenant step tenant_started"),
      );
      expect(starting.stdout()).not.toContain("start_tenant succeeded");
      await bootEvent({ stage: "ready", image: FAKE_TENANT_IMAGE });
      expect(await starting.exited).toBe(0);
      printed.push(starting.stdout(), starting.stderr());
      expect(starting.stdout().match(/tenant ready on /g)).toHaveLength(1);
      expect(starting.stdout()).toMatch(
        /tenant ready on molecule\/tenant-platform:fake\n {2}start_tenant step tenant_ready \(\d+ (ms|s)\)\nstart_tenant succeeded; org cli-ops is ready\n$/,
      );

      // redeploy --image --wait --json: progress on stderr, the final org and operation on stdout.
      const image = "registry.example.com/molecule/tenant-platform:2.0.0";
      const redeploying = spawnCp(["tenants", "redeploy", "cli-ops", "--image", image, "--wait", "--json"], {
        CP_URL: url,
        CP_ADMIN_API_TOKEN: ADMIN_TOKEN,
      });
      await until("the tenant to be recreated", () => cp.tenants.inspect(org.orgId)?.redeploys === 1);
      await until("the recreate step line", () => redeploying.stderr().includes("step tenant_recreated"));
      await bootEvent({ stage: "ready", image });
      expect(await redeploying.exited).toBe(0);
      printed.push(redeploying.stdout(), redeploying.stderr());
      const answer = TenantOperationAccepted.parse(JSON.parse(redeploying.stdout()));
      expect(answer.operation).toMatchObject({ kind: "redeploy_tenant", status: "succeeded" });
      expect(answer.org).toMatchObject({ status: "ready", tenant_image: image });
      expect(redeploying.stderr()).toContain(`redeploy_tenant succeeded; org cli-ops is ready`);
      const listed = await cpcli(["orgs", "list"]);
      expect(listed.stdout.split("\n").find((l) => l.startsWith("cli-ops "))).toContain(image);

      const missing = await cpcli(["tenants", "stop", "cli-nobody"]);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toMatch(
        /^molecule-cp: not_found: .*cli-nobody.*\(HTTP 404, request req_[0-9a-f]{16}\)\n$/,
      );
      const badImage = await cpcli(["tenants", "redeploy", "cli-ops", "--image", "not an image"]);
      expect(badImage.code).toBe(1);
      expect(badImage.stderr).toMatch(
        /^molecule-cp: bad_request: .*image.*\(HTTP 400, request req_[0-9a-f]{16}\)\n$/,
      );
    },
  );

  it(
    "delete --wait follows the delete to its end; --json prints the final org and operation",
    { timeout: 180_000 },
    async () => {
      const deleted = await cpcli([
        "orgs",
        "delete",
        "cli-json",
        "--confirm",
        "cli-json",
        "--wait",
        "--json",
      ]);
      expect(deleted.code).toBe(0);
      const answer = DeletedOrg.parse(JSON.parse(deleted.stdout));
      expect(answer.org.status).toBe("deleted");
      expect(answer.operation).toMatchObject({ kind: "destroy_org" });
      // Progress went to stderr, so stdout stays one JSON document.
      expect(deleted.stderr).toContain("org cli-json is deleted");
      const listed = OrgList.parse(JSON.parse((await cpcli(["orgs", "list", "--json"])).stdout));
      expect(listed.orgs.map((org) => org.slug)).not.toContain("cli-json");

      const again = await cpcli(["orgs", "delete", "cli-json", "--confirm", "cli-json"]);
      expect(again).toMatchObject({ code: 0, stdout: "org cli-json is already deleted\n" });
    },
  );
});

describe("molecule-cp usage", () => {
  async function usage(args: string[], env: Record<string, string> = {}) {
    let stdout = "";
    let stderr = "";
    const code = await runCli(args, {
      env: { CP_URL: "http://127.0.0.1:1", CP_ADMIN_API_TOKEN: "t".repeat(20), ...env },
      stdout: (text) => {
        stdout += text;
      },
      stderr: (text) => {
        stderr += text;
      },
      tty: false,
      fetch: () => Promise.reject(new Error("no request is made for bad usage or help")),
    });
    return { code, stdout, stderr };
  }

  it("prints help for the tool, a group and each command", async () => {
    const top = await usage(["--help"]);
    expect(top.code).toBe(0);
    for (const command of [
      "orgs list",
      "orgs create <slug>",
      "orgs delete <slug>",
      "backups",
      "reconcile",
      "stats",
    ]) {
      expect(top.stdout).toContain(`  ${command}`);
    }
    expect((await usage(["orgs", "-h"])).stdout).not.toContain("  stats");
    const create = await usage(["orgs", "create", "--help"]);
    expect(create.stdout).toMatch(/^Usage: molecule-cp orgs create <slug> --name NAME/);
    expect(create.stdout).toContain("--canary");
    expect(create.stdout).toContain("--token TOKEN");
  });

  it("refuses bad usage with one line and exit 2, before any request", async () => {
    const cases: [string[], string, Record<string, string>?][] = [
      [[], "missing command (see --help)"],
      [["orgs"], "orgs needs one of: list, show, pools, set-pool, create, delete (see --help)"],
      [["orgs", "frob"], 'unknown command "orgs frob" (see --help)'],
      [["frob"], 'unknown command "frob" (see --help)'],
      [["orgs", "list", "--frob"], "Unknown option '--frob' (see --help)"],
      // Another command's option.
      [["orgs", "list", "--name", "x"], "Unknown option '--name' (see --help)"],
      [["orgs", "show"], "missing <slug>: molecule-cp orgs show <slug> (see --help)"],
      [["orgs", "show", "a", "b"], 'unexpected argument "b" (see --help)'],
      [["orgs", "create", "acme"], "orgs create needs --name NAME (see --help)"],
      // A flag here, a list there: each command reads its own options.
      [
        ["orgs", "create", "acme", "--canary=yes", "--name", "x"],
        "Option '--canary' does not take an argument",
      ],
      [["fleet", "redeploy", "--canary"], "Option '--canary <value>' argument missing"],
      [["fleet", "redeploy", "--batch", "two"], '--batch must be a whole number, got "two"'],
      [["orgs", "delete", "acme"], "orgs delete needs --confirm acme"],
      [["stats", "--timeout", "0"], "--timeout must be a whole number from 1 to 3600"],
      [["stats"], "no control plane URL: set CP_URL or pass --url", { CP_URL: "" }],
      [["stats", "--url", "ftp://cp"], 'the control plane URL must be http(s), got "ftp://cp"'],
    ];
    for (const [args, message, env] of cases) {
      const result = await usage(args, env);
      expect(result, args.join(" ")).toMatchObject({ code: 2, stdout: "" });
      expect(result.stderr, args.join(" ")).toMatch(/^molecule-cp: [^\n]*\n$/);
      expect(result.stderr, args.join(" ")).toContain(message);
    }
  });
});
