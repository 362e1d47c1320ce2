/** `molecule-cp tenants stop|start|redeploy <slug>`: an org's tenant through `/cp/admin/tenants/:slug/*`. */
import { TenantOperationAccepted } from "@molecule/contracts";
import { type Command, CommandFailed, type CommandIo, flag, type Invocation, option } from "./command.ts";
import { followOrg, progress, suffix } from "./follow.ts";
import { cell, json } from "./output.ts";

type Action = "stop" | "start" | "redeploy";

/** Posts the action, then (with `--wait`) follows the org until that operation ends; exit 1 if it failed. */
async function tenantAction(
  io: CommandIo,
  input: Invocation,
  action: Action,
  body?: unknown,
): Promise<number> {
  const slug = input.args[0] ?? "";
  const accepted = await io.client.call(
    "POST",
    `/cp/admin/tenants/${encodeURIComponent(slug)}/${action}`,
    TenantOperationAccepted,
    body,
  );
  let { org, operation } = accepted.data;
  if (!io.json) {
    progress(
      io,
      `tenant of ${cell(org.slug)}: ${cell(operation.kind)} ${cell(operation.id)} (${cell(operation.status)})`,
    );
  }
  if (flag(input, "wait")) {
    const started = operation;
    const final = await followOrg(
      io,
      slug,
      (detail) =>
        detail.operation?.id !== started.id ||
        detail.operation.status === "succeeded" ||
        detail.operation.status === "failed",
      started.created_at,
    );
    org = final.data.org;
    if (final.data.operation?.id !== started.id) {
      const next = final.data.operation;
      throw new CommandFailed(
        `org ${slug} moved on to ${next ? `${cell(next.kind)} ${cell(next.id)}` : "no operation"} before ${cell(started.id)} was seen to end; see molecule-cp orgs show ${slug}`,
      );
    }
    operation = final.data.operation;
    const error = operation.error && `${operation.error.code}: ${operation.error.message}`;
    progress(
      io,
      `${cell(operation.kind)} ${cell(operation.status)}; org ${cell(org.slug)} is ${cell(org.status)}${suffix(error)}`,
    );
  }
  if (io.json) io.stdout(json({ ...(accepted.raw as object), org, operation }));
  return operation.status === "failed" ? 1 : 0;
}

const WAIT_HELP = "  --wait           follow the operation until it ends (exit 1 if it fails)";

export const TENANT_COMMANDS: readonly Command[] = [
  {
    name: ["tenants", "stop"],
    synopsis: "<slug> [--wait]",
    summary: "stops the org's tenant (its data and its workspaces are kept)",
    details: WAIT_HELP,
    args: ["slug"],
    options: { wait: { type: "boolean" } },
    run: (io, input) => tenantAction(io, input, "stop"),
  },
  {
    name: ["tenants", "start"],
    synopsis: "<slug> [--wait]",
    summary: "starts the org's tenant again; done once it reports ready",
    details: WAIT_HELP,
    args: ["slug"],
    options: { wait: { type: "boolean" } },
    run: (io, input) => tenantAction(io, input, "start"),
  },
  {
    name: ["tenants", "redeploy"],
    synopsis: "<slug> [--image IMAGE] [--wait]",
    summary:
      "runs the org's tenant on the current tenant image (or IMAGE), keeping its data; done once it reports ready on it",
    details: `  --image IMAGE    this image instead of TENANT_IMAGE (CANARY_TENANT_IMAGE for a canary org)
${WAIT_HELP}`,
    args: ["slug"],
    options: { image: { type: "string" }, wait: { type: "boolean" } },
    run: (io, input) => {
      const image = option(input, "image");
      return tenantAction(io, input, "redeploy", image === undefined ? {} : { image });
    },
  },
];
