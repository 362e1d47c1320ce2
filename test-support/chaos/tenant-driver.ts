/**
 * The tenant half of the chaos run: random workspace creates, stops, starts, restarts and deletes on a standalone
 * tenant platform (docker backend), each through a random replica. It remembers every workspace it created and every
 * operation the platform accepted.
 */
import { type Answer, outcomeOf, sendJson, sendUntilAnswered } from "./http.ts";
import type { Ledger } from "./ledger.ts";
import type { SeededRandom } from "./random.ts";

type Action = "create" | "stop" | "start" | "restart" | "delete";

export interface TenantWorkspace {
  id: string;
  /** A delete was accepted: it must end removed. */
  deleted: boolean;
}

export class TenantDriver {
  readonly workspaces = new Map<string, TenantWorkspace>();
  private seq = 0;

  constructor(
    private readonly deps: {
      urls: readonly string[];
      adminToken: string;
      ledger: Ledger;
      /** Workspaces alive at once at most (each is a container with a running agent). */
      maxLive: number;
    },
  ) {}

  private live(): TenantWorkspace[] {
    return [...this.workspaces.values()].filter((workspace) => !workspace.deleted);
  }

  /** One random request; resolves once it has an answer. */
  async act(rng: SeededRandom): Promise<void> {
    const live = this.live();
    const action = rng.weighted<Action>({
      create: live.length < this.deps.maxLive ? 3 : 0,
      stop: live.length > 0 ? 2 : 0,
      start: live.length > 0 ? 2 : 0,
      restart: live.length > 0 ? 1.5 : 0,
      delete: live.length > 1 ? 0.7 : 0,
    });
    if (action === "create") {
      await this.create(rng);
      return;
    }
    await this.lifecycle(rng, action, rng.pick(live));
  }

  async create(rng: SeededRandom): Promise<void> {
    const n = ++this.seq;
    const answer = await this.send(rng, "tenant create", {
      method: "POST",
      path: "/workspaces",
      body: { name: `chaos-${n}`, runtime: "echo" },
      idempotencyKey: `chaos-create-${n}`,
    });
    if (answer.status !== 202) return;
    const id: string = answer.body.workspace.id;
    this.workspaces.set(id, { id, deleted: false });
    this.track("provision", id, answer);
  }

  async lifecycle(rng: SeededRandom, action: Exclude<Action, "create">, workspace: TenantWorkspace) {
    const n = ++this.seq;
    const answer = await this.send(rng, `tenant ${action}`, {
      method: action === "delete" ? "DELETE" : "POST",
      path: action === "delete" ? `/workspaces/${workspace.id}` : `/workspaces/${workspace.id}/${action}`,
      idempotencyKey: `chaos-${action}-${n}`,
    });
    if (answer.status !== 202) return;
    if (action === "delete") workspace.deleted = true;
    this.track(action === "delete" ? "destroy" : action, workspace.id, answer);
  }

  private track(kind: string, workspaceId: string, answer: Answer): void {
    this.deps.ledger.track({ service: "tenant", id: answer.body.operation.id, kind, subject: workspaceId });
  }

  private async send(
    rng: SeededRandom,
    kind: string,
    request: { method: string; path: string; body?: unknown; idempotencyKey: string },
  ): Promise<Answer> {
    const { urls, adminToken, ledger } = this.deps;
    const answer = await sendUntilAnswered(kind, urls, rng.int(0, urls.length - 1), ledger, (url) =>
      sendJson(url, adminToken, request),
    );
    ledger.record(kind, outcomeOf(answer));
    return answer;
  }

  /** GET through any replica that answers. */
  async get(path: string): Promise<Answer> {
    const { urls, adminToken } = this.deps;
    return sendUntilAnswered(`GET ${path}`, urls, 0, null, (url) =>
      sendJson(url, adminToken, { method: "GET", path }),
    );
  }
}
