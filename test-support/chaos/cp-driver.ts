/**
 * The control-plane half of the chaos run: org creates and deletes (admin API), the tenant's `ready` boot event once
 * an org's tenant instance is up, and workspace provision, stop, start and destroy for an org (signed tenant calls,
 * as the org's tenant makes them). The control plane takes workspace calls for an org whose tenant has not booted
 * (its credential is live from the create on), so the run does not wait for tenants to boot: moto runs nothing.
 */
import { type CpWorkspaceSpec, createIdGenerator } from "@molecule/contracts";
import { ProvisionerError } from "@molecule/provisioner-core";
import { signedTenantClient } from "../control-plane.ts";
import { type Answer, NoAnswer, outcomeOf, sendJson, sendUntilAnswered } from "./http.ts";
import type { Ledger } from "./ledger.ts";
import type { SeededRandom } from "./random.ts";

export interface CpWorkspace {
  id: string;
  spec: CpWorkspaceSpec;
  /** A destroy was accepted. */
  destroyed: boolean;
}

export interface CpOrg {
  slug: string;
  id: string;
  credential: string;
  /** A delete was accepted: the org must end deleted, with nothing of it left. */
  deleted: boolean;
  /** The `ready` boot event was accepted. */
  ready: boolean;
  workspaces: Map<string, CpWorkspace>;
}

type Action = "create_org" | "delete_org" | "ready" | "provision" | "stop" | "start" | "destroy";

const ids = createIdGenerator();

export class ControlPlaneDriver {
  readonly orgs = new Map<string, CpOrg>();
  private seq = 0;

  constructor(
    private readonly deps: {
      urls: readonly string[];
      adminToken: string;
      sharedSecret: string;
      ledger: Ledger;
      maxOrgs: number;
      maxWorkspacesPerOrg: number;
      /** The org's latest provision_tenant operation has succeeded (its instance exists). */
      tenantProvisioned(orgId: string): Promise<boolean>;
    },
  ) {}

  liveOrgs(): CpOrg[] {
    return [...this.orgs.values()].filter((org) => !org.deleted);
  }

  async act(rng: SeededRandom): Promise<void> {
    const orgs = this.liveOrgs();
    const workspaces = orgs.flatMap((org) =>
      [...org.workspaces.values()].filter((w) => !w.destroyed).map((workspace) => ({ org, workspace })),
    );
    const roomy = orgs.filter(
      (org) =>
        [...org.workspaces.values()].filter((w) => !w.destroyed).length < this.deps.maxWorkspacesPerOrg,
    );
    const action = rng.weighted<Action>({
      create_org: orgs.length < this.deps.maxOrgs ? 2 : 0,
      delete_org: orgs.length > 1 ? 0.15 : 0,
      ready: orgs.some((org) => !org.ready) ? 0.7 : 0,
      provision: roomy.length > 0 ? 3 : 0,
      stop: workspaces.length > 0 ? 1.5 : 0,
      start: workspaces.length > 0 ? 1.5 : 0,
      destroy: workspaces.length > 0 ? 1 : 0,
    });
    switch (action) {
      case "create_org":
        return this.createOrg(rng);
      case "delete_org":
        return this.deleteOrg(rng, rng.pick(orgs));
      case "ready":
        return this.ready(rng, rng.pick(orgs.filter((org) => !org.ready)));
      case "provision":
        return this.provision(rng, rng.pick(roomy));
      default: {
        const { org, workspace } = rng.pick(workspaces);
        return this.workspaceCall(rng, action, org, workspace);
      }
    }
  }

  async createOrg(rng: SeededRandom): Promise<void> {
    const n = ++this.seq;
    const slug = `chaos-${n}-${rng.int(1000, 9999)}`;
    const answer = await this.admin(rng, "cp org create", {
      method: "POST",
      path: "/cp/orgs",
      body: { slug, name: `Chaos ${n}` },
      idempotencyKey: `chaos-org-${slug}`,
    });
    if (answer.status !== 201) return;
    const org: CpOrg = {
      slug,
      id: answer.body.org.id,
      credential: answer.body.tenant_credential,
      deleted: false,
      ready: false,
      workspaces: new Map(),
    };
    this.orgs.set(slug, org);
    this.deps.ledger.track({
      service: "control-plane",
      id: `provision_tenant:${org.id}`,
      kind: "provision_tenant",
      subject: org.id,
      orgId: org.id,
    });
  }

  /** Deletes the org: its tenant instance, its workspaces' machines and its rows go, a tombstone stays. */
  async deleteOrg(rng: SeededRandom, org: CpOrg): Promise<void> {
    const answer = await this.admin(rng, "cp org delete", {
      method: "DELETE",
      path: `/cp/orgs/${org.slug}`,
      body: { confirm: org.slug },
    });
    if (answer.status !== 202) return;
    org.deleted = true;
    this.deps.ledger.track({
      service: "control-plane",
      id: `destroy_org:${org.id}`,
      kind: "destroy_org",
      subject: org.id,
      orgId: org.id,
    });
  }

  /** The tenant's `ready` boot event, as its platform sends it once it serves: only once its instance exists. */
  async ready(rng: SeededRandom, org: CpOrg): Promise<void> {
    if (!(await this.deps.tenantProvisioned(org.id))) return;
    const answer = await this.signed(rng, "cp boot-event ready", org, {
      op: "boot-event",
      method: "POST",
      path: "/cp/tenants/boot-event",
      body: { stage: "ready" },
    });
    if (answer.status === 204) org.ready = true;
  }

  async provision(rng: SeededRandom, org: CpOrg): Promise<void> {
    const workspaceId = ids.next("ws");
    const spec: CpWorkspaceSpec = {
      workspace_id: workspaceId,
      runtime: "hermes",
      tier: 2,
      env: { WORKSPACE_ID: workspaceId, WORKSPACE_BOOT_TOKEN: `boot-${workspaceId}` },
      secret_keys: ["WORKSPACE_BOOT_TOKEN"],
      metadata: {},
    };
    const answer = await this.signed(rng, "cp workspace provision", org, {
      op: "provision",
      method: "POST",
      path: "/cp/workspaces/provision",
      body: spec,
      idempotencyKey: `chaos-provision-${workspaceId}`,
    });
    if (answer.status !== 202) return;
    org.workspaces.set(workspaceId, { id: workspaceId, spec, destroyed: false });
    this.trackWorkspaceOperation(org, workspaceId, answer);
  }

  async workspaceCall(
    rng: SeededRandom,
    action: "stop" | "start" | "destroy",
    org: CpOrg,
    workspace: CpWorkspace,
  ): Promise<void> {
    const n = ++this.seq;
    const answer = await this.signed(rng, `cp workspace ${action}`, org, {
      op: action,
      method: action === "destroy" ? "DELETE" : "POST",
      path:
        action === "destroy" ? `/cp/workspaces/${workspace.id}` : `/cp/workspaces/${workspace.id}/${action}`,
      body: action === "start" ? { spec: workspace.spec, recreate: false } : undefined,
      idempotencyKey: `chaos-${action}-${workspace.id}-${n}`,
    });
    if (answer.status !== 202) return;
    if (action === "destroy") workspace.destroyed = true;
    this.trackWorkspaceOperation(org, workspace.id, answer);
  }

  private trackWorkspaceOperation(org: CpOrg, workspaceId: string, answer: Answer): void {
    this.deps.ledger.track({
      service: "control-plane",
      id: answer.body.operation.id,
      kind: answer.body.operation.kind,
      subject: workspaceId,
      orgId: org.id,
    });
  }

  private async admin(
    rng: SeededRandom,
    kind: string,
    request: { method: string; path: string; body?: unknown; idempotencyKey?: string },
  ): Promise<Answer> {
    const { urls, adminToken, ledger } = this.deps;
    const answer = await sendUntilAnswered(kind, urls, rng.int(0, urls.length - 1), ledger, (url) =>
      sendJson(url, adminToken, request),
    );
    ledger.record(kind, outcomeOf(answer));
    return answer;
  }

  /** A signed call as the org's tenant makes it (a new signature and nonce on every send, one idempotency key). */
  private async signed(
    rng: SeededRandom,
    kind: string,
    org: CpOrg,
    call: {
      op: string;
      method: "GET" | "POST" | "DELETE";
      path: string;
      body?: unknown;
      idempotencyKey?: string;
    },
  ): Promise<Answer> {
    const { urls, sharedSecret, ledger } = this.deps;
    const answer = await sendUntilAnswered(kind, urls, rng.int(0, urls.length - 1), ledger, (url) =>
      signedCall(signedTenantClient(url, sharedSecret, org.id, org.credential), call),
    );
    ledger.record(kind, outcomeOf(answer));
    return answer;
  }

  /** The org's workspaces as its tenant sees them (`GET /cp/workspaces`). */
  async listWorkspaces(org: CpOrg): Promise<Answer> {
    const { urls, sharedSecret } = this.deps;
    return sendUntilAnswered(`list ${org.slug}`, urls, 0, null, (url) =>
      signedCall(signedTenantClient(url, sharedSecret, org.id, org.credential), {
        op: "list",
        method: "GET",
        path: "/cp/workspaces",
      }),
    );
  }

  /** An admin GET through any replica that answers. */
  async adminGet(path: string): Promise<Answer> {
    const { urls, adminToken } = this.deps;
    return sendUntilAnswered(`GET ${path}`, urls, 0, null, (url) =>
      sendJson(url, adminToken, { method: "GET", path }),
    );
  }
}

/** The client's answer, its HTTP error as an answer, or NoAnswer when the control plane could not be reached. */
async function signedCall(
  client: ReturnType<typeof signedTenantClient>,
  call: Parameters<ReturnType<typeof signedTenantClient>["call"]>[0],
): Promise<Answer> {
  try {
    const reply = await client.call<unknown>(call);
    return { status: reply.status, body: reply.body };
  } catch (error) {
    if (error instanceof ProvisionerError && typeof error.details.httpStatus === "number") {
      return {
        status: error.details.httpStatus,
        body: { error: { code: error.details.cpCode ?? error.code, message: error.message } },
      };
    }
    if (error instanceof ProvisionerError && error.details.connection === true) {
      throw new NoAnswer(error.message);
    }
    throw error;
  }
}
