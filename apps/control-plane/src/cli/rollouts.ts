/**
 * Workspace image rollouts: `molecule-cp fleet redeploy|list|status|cancel` and `molecule-cp tenants redeploy-workspaces`.
 * A started rollout is followed until it ends (`GET /cp/admin/rollouts/:id`, polled): one line per tenant as it
 * changes, or, when stdout is a terminal, one progress bar redrawn in place; then the per-tenant results.
 */
import { RolloutAccepted, RolloutList, type RolloutTenant, type RolloutView } from "@molecule/contracts";
import { type Command, type CommandIo, flag, type Invocation, option, wholeNumber } from "./command.ts";
import { progress, suffix } from "./follow.ts";
import { cell, duration, json, table } from "./output.ts";

const rolloutPath = (id: string) => `/cp/admin/rollouts/${encodeURIComponent(id)}`;
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const TENANT_DONE = new Set(["succeeded", "failed", "skipped"]);

function counts(tenant: RolloutTenant): string {
  const by = new Map<string, number>();
  for (const workspace of tenant.workspaces) by.set(workspace.outcome, (by.get(workspace.outcome) ?? 0) + 1);
  return [...by].map(([outcome, n]) => `${n} ${outcome}`).join(", ");
}

export function rolloutTable(view: RolloutView): string {
  return table(
    [
      { header: "PHASE", value: (t: RolloutTenant) => t.phase },
      { header: "TENANT", value: (t) => t.slug },
      { header: "STATUS", value: (t) => t.status },
      { header: "WORKSPACES", value: (t) => counts(t) || "none" },
      { header: "ERROR", value: (t) => t.error },
    ],
    view.tenants,
  );
}

/** Prints how a rollout advances: a line per change, or a bar redrawn on a terminal. */
export interface ProgressView {
  update(view: RolloutView): void;
  /** Ends the bar's line, if one was drawn. */
  close(): void;
}

/** A line for each tenant whose status changed and each step that finished since the last view. */
export function lineProgress(write: (line: string) => void): ProgressView {
  const tenants = new Map<string, string>();
  let steps = 0;
  return {
    update(view) {
      for (const step of view.steps.slice(steps)) {
        write(`  step ${cell(step.name)} (${duration(step.duration_ms)})${suffix(step.detail)}`);
      }
      steps = view.steps.length;
      for (const tenant of view.tenants) {
        if (tenants.get(tenant.slug) === tenant.status) continue;
        tenants.set(tenant.slug, tenant.status);
        if (tenant.status === "pending") continue;
        const detail = TENANT_DONE.has(tenant.status) ? counts(tenant) : "";
        write(
          `  ${cell(tenant.phase).padEnd(8)} ${cell(tenant.slug)} ${tenant.status}${detail ? ` (${detail})` : ""}${suffix(tenant.error)}`,
        );
      }
    },
    close() {},
  };
}

/** One line redrawn in place: `[#####---------------] 3/12 tenants  running: acme, globex`. */
export function barProgress(write: (text: string) => void, width = 24): ProgressView {
  let drawn = false;
  return {
    update(view) {
      const total = view.tenants.length;
      const done = view.tenants.filter((t) => TENANT_DONE.has(t.status)).length;
      const filled = total === 0 ? width : Math.round((done / total) * width);
      const running = view.tenants.filter((t) => t.status === "running").map((t) => cell(t.slug));
      const failed = view.tenants.filter((t) => t.status === "failed").length;
      const step = view.steps.at(-1);
      const now =
        running.length > 0 ? `running: ${running.join(", ")}` : step ? cell(step.name) : cell(view.status);
      write(
        `\r\x1b[2K[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${done}/${total} tenants${failed ? `, ${failed} failed` : ""}  ${now}`,
      );
      drawn = true;
    },
    close() {
      if (drawn) write("\n");
      drawn = false;
    },
  };
}

/**
 * Follows the rollout to its end; returns the last answer. No limit of its own: a fleet with a long soak can take
 * hours, and the control plane ends every rollout itself (its attempts have a deadline).
 */
async function followRollout(io: CommandIo, id: string): Promise<{ data: RolloutView; raw: unknown }> {
  // On a terminal (and not in --json mode) a bar; else lines, on stderr in --json mode.
  const view = io.tty && !io.json ? barProgress(io.stdout) : lineProgress((line) => progress(io, line));
  try {
    for (;;) {
      const answer = await io.client.call("GET", rolloutPath(id), RolloutAccepted);
      view.update(answer.data.rollout);
      if (FINISHED.has(answer.data.rollout.status)) return { data: answer.data.rollout, raw: answer.raw };
      await io.sleep(io.pollIntervalMs);
    }
  } finally {
    view.close();
  }
}

function summary(view: RolloutView): string {
  const took =
    view.created_at && view.finished_at
      ? ` in ${duration(Date.parse(view.finished_at) - Date.parse(view.created_at))}`
      : "";
  const error = view.error && `${view.error.code}: ${view.error.message}`;
  return `rollout ${cell(view.id)} ${view.status}${took}${suffix(error)}\n`;
}

/** Starts a rollout (or asks for its plan) and, unless `--detach`, follows it to its end. */
async function startRollout(io: CommandIo, input: Invocation, path: string, body: unknown): Promise<number> {
  const { data, raw } = await io.client.call("POST", path, RolloutAccepted, body);
  const rollout = data.rollout;
  if (rollout.dry_run || rollout.id === null) {
    if (io.json) io.stdout(json(raw));
    else {
      io.stdout(
        `dry run: nothing was changed; the rollout would take ${rollout.tenants.length} tenant(s) in this order\n\n`,
      );
      io.stdout(rolloutTable(rollout));
    }
    return 0;
  }
  if (flag(input, "detach")) {
    if (io.json) io.stdout(json(raw));
    else
      io.stdout(
        `rollout ${cell(rollout.id)} ${cell(rollout.status)}: molecule-cp fleet status ${cell(rollout.id)}\n`,
      );
    return 0;
  }
  progress(
    io,
    `rollout ${cell(rollout.id)} ${cell(rollout.status)}; interrupting this command stops watching, not the rollout (molecule-cp fleet cancel ${cell(rollout.id)})`,
  );
  const final = await followRollout(io, rollout.id);
  if (io.json) io.stdout(json(final.raw));
  else {
    io.stdout(`\n${rolloutTable(final.data)}\n`);
    io.stdout(summary(final.data));
  }
  return final.data.status === "succeeded" ? 0 : 1;
}

function slugList(raw: string | undefined): string[] {
  if (raw === undefined) return [];
  return raw
    .split(",")
    .map((slug) => slug.trim())
    .filter(Boolean);
}

const DETACH_HELP = "  --detach         print the rollout's id and return at once instead of following it";

const fleetRedeploy: Command = {
  name: ["fleet", "redeploy"],
  synopsis: "[--canary SLUG,…] [--batch N] [--soak S] [--dry-run] [--detach]",
  summary:
    "rebuilds every tenant's workspaces on the current image: canaries first, a soak, then the rest in batches",
  details: `  --canary SLUG,…  tenants redeployed first; every one of their workspaces must stay online through the soak
  --batch N        how many of the other tenants are redeployed side by side (default: the control plane's)
  --soak S         seconds the canaries are watched before the rest begin (default: the control plane's)
  --dry-run        print the plan; nothing is changed
${DETACH_HELP}

Follows the rollout until it ends: a line per tenant as it advances (a progress bar on a terminal), then
each tenant's result. The first failure stops the rollout; exit 1 unless it succeeded.`,
  options: {
    canary: { type: "string" },
    batch: { type: "string" },
    soak: { type: "string" },
    "dry-run": { type: "boolean" },
    detach: { type: "boolean" },
  },
  run(io, input) {
    const batch = option(input, "batch");
    const soak = option(input, "soak");
    const body = {
      canary_slugs: slugList(option(input, "canary")),
      // Whole numbers here; their bounds are the control plane's to check (a 400 names them).
      ...(batch === undefined
        ? {}
        : { batch_size: wholeNumber("--batch", batch, 0, 0, Number.MAX_SAFE_INTEGER) }),
      ...(soak === undefined
        ? {}
        : { soak_seconds: wholeNumber("--soak", soak, 0, 0, Number.MAX_SAFE_INTEGER) }),
      dry_run: flag(input, "dry-run"),
    };
    return startRollout(io, input, "/cp/admin/tenants/workspaces/redeploy-fleet", body);
  },
};

const tenantRedeploy: Command = {
  name: ["tenants", "redeploy-workspaces"],
  synopsis: "<slug> [--dry-run] [--detach]",
  summary:
    "rebuilds every workspace of the org's tenant on the current image, one at a time, keeping their volumes",
  details: `  --dry-run        print the plan; nothing is changed
${DETACH_HELP}`,
  args: ["slug"],
  options: { "dry-run": { type: "boolean" }, detach: { type: "boolean" } },
  run(io, input) {
    const slug = input.args[0] ?? "";
    return startRollout(io, input, `/cp/admin/tenants/${encodeURIComponent(slug)}/workspaces/redeploy`, {
      dry_run: flag(input, "dry-run"),
    });
  },
};

const fleetList: Command = {
  name: ["fleet", "list"],
  summary: "the latest rollouts, newest first",
  async run(io) {
    const { data, raw } = await io.client.call("GET", "/cp/admin/rollouts", RolloutList);
    if (io.json) io.stdout(json(raw));
    else if (data.rollouts.length === 0) io.stdout("no rollouts\n");
    else
      io.stdout(
        table(
          [
            { header: "ID", value: (r: RolloutView) => r.id },
            { header: "SCOPE", value: (r) => r.scope },
            { header: "STATUS", value: (r) => r.status },
            { header: "TENANTS", value: (r) => r.tenants.length },
            { header: "CANARIES", value: (r) => r.canary_slugs.join(",") },
            { header: "CREATED", value: (r) => r.created_at },
            { header: "FINISHED", value: (r) => r.finished_at },
          ],
          data.rollouts,
        ),
      );
    return 0;
  },
};

const fleetStatus: Command = {
  name: ["fleet", "status"],
  synopsis: "<id>",
  summary: "one rollout: each tenant's status and workspaces, and how it ended",
  args: ["id"],
  async run(io, input) {
    const { data, raw } = await io.client.call("GET", rolloutPath(input.args[0] ?? ""), RolloutAccepted);
    if (io.json) io.stdout(json(raw));
    else io.stdout(`${rolloutTable(data.rollout)}\n${summary(data.rollout)}`);
    return 0;
  },
};

const fleetCancel: Command = {
  name: ["fleet", "cancel"],
  synopsis: "<id>",
  summary:
    "stops a rollout before its next workspace, phase or soak check; what it redeployed stays redeployed",
  args: ["id"],
  async run(io, input) {
    const id = input.args[0] ?? "";
    const { data, raw } = await io.client.call("POST", `${rolloutPath(id)}/cancel`, RolloutAccepted);
    if (io.json) io.stdout(json(raw));
    else io.stdout(`rollout ${cell(data.rollout.id)} ${cell(data.rollout.status)}, cancel requested\n`);
    return 0;
  },
};

export const ROLLOUT_COMMANDS: readonly Command[] = [
  tenantRedeploy,
  fleetRedeploy,
  fleetList,
  fleetStatus,
  fleetCancel,
];
