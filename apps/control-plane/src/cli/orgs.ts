/** `molecule-cp orgs …`: list, show, create and delete orgs through `/cp/orgs`, and show and set an org's warm pools. */
import {
  CpOrgPoolList,
  CreatedOrg,
  DeletedOrg,
  OrgDetail,
  OrgList,
  type OrgView,
  PoolView,
} from "@molecule/contracts";
import { type Command, flag, option, UsageError } from "./command.ts";
import { followOrg, orgPath, progress, suffix } from "./follow.ts";
import { cell, json, keyValues, table } from "./output.ts";

function orgTable(orgs: readonly OrgView[]): string {
  return table(
    [
      { header: "SLUG", value: (org) => org.slug },
      { header: "NAME", value: (org) => org.name },
      { header: "STATUS", value: (org) => org.status },
      { header: "CANARY", value: (org) => org.is_canary },
      { header: "TENANT URL", value: (org) => org.tenant_url },
      { header: "IMAGE", value: (org) => org.tenant_image },
      { header: "CREATED", value: (org) => org.created_at },
      { header: "ID", value: (org) => org.id },
    ],
    orgs,
  );
}

const list: Command = {
  name: ["orgs", "list"],
  summary: "the orgs that are not deleted, oldest first",
  async run(io) {
    const { data, raw } = await io.client.call("GET", "/cp/orgs", OrgList);
    if (io.json) io.stdout(json(raw));
    else io.stdout(data.orgs.length === 0 ? "no orgs\n" : orgTable(data.orgs));
    return 0;
  },
};

const show: Command = {
  name: ["orgs", "show"],
  synopsis: "<slug>",
  summary: "one org: its tenant's boot events and its latest operation",
  args: ["slug"],
  async run(io, input) {
    const { data, raw } = await io.client.call("GET", orgPath(input.args[0] ?? ""), OrgDetail);
    if (io.json) {
      io.stdout(json(raw));
      return 0;
    }
    const { org, provision_status: status, operation } = data;
    io.stdout(
      keyValues([
        ["slug", org.slug],
        ["name", org.name],
        ["id", org.id],
        ["status", org.status],
        ["canary", org.is_canary],
        ["tenant url", org.tenant_url],
        ["tenant image", org.tenant_image],
        ["created", org.created_at],
        ["updated", org.updated_at],
        ["last error", status?.last_error],
      ]),
    );
    if (status && status.events.length > 0) {
      io.stdout(
        `\n${table(
          [
            { header: "AT", value: (event) => event.at },
            { header: "TENANT BOOT", value: (event) => event.stage },
            { header: "DETAIL", value: (event) => event.detail },
          ],
          status.events,
        )}`,
      );
    }
    if (operation) {
      const error = operation.error && `${operation.error.code}: ${operation.error.message}`;
      io.stdout(
        `\noperation ${cell(operation.id)} ${cell(operation.kind)} ${cell(operation.status)}, ${operation.attempts} attempt(s)${suffix(error)}\n`,
      );
    }
    return 0;
  },
};

const pools: Command = {
  name: ["orgs", "pools"],
  synopsis: "<slug>",
  summary: "the warm pool members the org's tenant had the control plane make, per pool",
  args: ["slug"],
  async run(io, input) {
    const { data, raw } = await io.client.call("GET", `${orgPath(input.args[0] ?? "")}/pools`, CpOrgPoolList);
    if (io.json) io.stdout(json(raw));
    else if (data.pools.length === 0) io.stdout("no pool members\n");
    else
      io.stdout(
        table(
          [
            { header: "POOL", value: (pool) => pool.pool },
            { header: "UNCLAIMED", value: (pool) => pool.unclaimed },
            { header: "CLAIMED", value: (pool) => pool.claimed },
            {
              header: "UNCLAIMED BY STATE",
              value: (pool) =>
                Object.entries(pool.members)
                  .map(([state, n]) => `${state} ${n}`)
                  .join(", "),
            },
          ],
          data.pools,
        ),
      );
    return 0;
  },
};

/** A whole number from an option, or a UsageError naming it. */
function wholeNumber(input: Parameters<Command["run"]>[1], name: string): number {
  const text = option(input, name);
  if (text === undefined || !/^\d+$/.test(text)) {
    throw new UsageError(`orgs set-pool needs --${name} N, a whole number (see --help)`);
  }
  return Number(text);
}

const setPool: Command = {
  name: ["orgs", "set-pool"],
  synopsis: "<slug> --runtime RUNTIME --tier N --size N",
  summary: "sets the target size of one of the org's warm pools on its tenant (size 0 drains it)",
  details: `  --runtime RUNTIME  the pool's runtime (one the tenant runs)
  --tier N           the pool's tier
  --size N           how many ready members the tenant keeps (0 drains the pool)`,
  args: ["slug"],
  options: { runtime: { type: "string" }, tier: { type: "string" }, size: { type: "string" } },
  async run(io, input) {
    const runtime = option(input, "runtime");
    if (runtime === undefined) throw new UsageError("orgs set-pool needs --runtime RUNTIME (see --help)");
    const body = { runtime, tier: wholeNumber(input, "tier"), size: wholeNumber(input, "size") };
    const { data, raw } = await io.client.call(
      "PUT",
      `${orgPath(input.args[0] ?? "")}/pools`,
      PoolView,
      body,
    );
    if (io.json) io.stdout(json(raw));
    else
      io.stdout(
        `pool ${cell(data.runtime)} tier ${data.tier}: size ${data.size}, ready ${data.ready}, starting ${data.starting}, claimed ${data.claimed}\n`,
      );
    return 0;
  },
};

const create: Command = {
  name: ["orgs", "create"],
  synopsis: "<slug> --name NAME [--canary] [--wait]",
  summary: "an org and its tenant; prints the tenant's admin token once",
  details: `  --name NAME      the org's display name
  --canary         its tenant runs the canary image
  --wait           follow the tenant's boot until it is ready (exit 0) or failed (exit 1)`,
  args: ["slug"],
  options: { name: { type: "string" }, canary: { type: "boolean" }, wait: { type: "boolean" } },
  async run(io, input) {
    const slug = input.args[0] ?? "";
    const name = option(input, "name");
    if (name === undefined) throw new UsageError("orgs create needs --name NAME (see --help)");
    const body = { slug, name, ...(flag(input, "canary") ? { is_canary: true } : {}) };
    const created = await io.client.call("POST", "/cp/orgs", CreatedOrg, body);
    if (!io.json) {
      io.stdout(
        keyValues([
          ["created", `${created.data.org.slug} (${created.data.org.id})`],
          ["status", created.data.org.status],
          ["canary", created.data.org.is_canary],
          ["tenant admin token", created.data.tenant_admin_token],
        ]),
      );
      io.stdout("The tenant admin token is shown this once: give it to the org's administrator.\n");
    }
    let org = created.data.org;
    if (flag(input, "wait")) {
      progress(io, `waiting for the tenant of ${slug} …`);
      const final = await followOrg(io, slug, (detail) => detail.org.status !== "provisioning");
      org = final.data.org;
      const error = org.status === "failed" ? final.data.provision_status?.last_error : null;
      progress(io, `org ${slug} is ${org.status}${suffix(error)}`);
    }
    if (io.json) io.stdout(json({ ...(created.raw as object), org }));
    return org.status === "failed" ? 1 : 0;
  },
};

const remove: Command = {
  name: ["orgs", "delete"],
  synopsis: "<slug> --confirm <slug> [--wait]",
  summary: "an org, its tenant and every workspace it runs",
  details: `  --confirm SLUG   the org's slug again: deleting removes its tenant and every workspace
  --wait           follow the delete until it finishes (exit 1 if it fails)`,
  args: ["slug"],
  options: { confirm: { type: "string" }, wait: { type: "boolean" } },
  async run(io, input) {
    const slug = input.args[0] ?? "";
    const confirm = option(input, "confirm");
    if (confirm === undefined) {
      throw new UsageError(`orgs delete needs --confirm ${slug}: it removes the tenant and every workspace`);
    }
    const deleted = await io.client.call("DELETE", orgPath(slug), DeletedOrg, { confirm });
    let { org, operation } = deleted.data;
    if (!io.json) {
      io.stdout(
        operation
          ? `org ${cell(org.slug)} is ${cell(org.status)}: operation ${cell(operation.id)} (${cell(operation.status)})\n`
          : `org ${cell(org.slug)} is already deleted\n`,
      );
    }
    if (flag(input, "wait") && operation) {
      const started = operation.id;
      const final = await followOrg(
        io,
        slug,
        (detail) =>
          detail.org.status === "deleted" ||
          (detail.operation?.id === started && detail.operation.status === "failed"),
      );
      org = final.data.org;
      operation = final.data.operation ?? operation;
      const error = operation.error && `${operation.error.code}: ${operation.error.message}`;
      progress(io, `org ${slug} is ${org.status}${suffix(error)}`);
    }
    if (io.json) io.stdout(json({ ...(deleted.raw as object), org, operation }));
    // Waiting ends when the org is deleted or its delete failed.
    return flag(input, "wait") && org.status !== "deleted" ? 1 : 0;
  },
};

export const ORG_COMMANDS: readonly Command[] = [list, show, pools, setPool, create, remove];
