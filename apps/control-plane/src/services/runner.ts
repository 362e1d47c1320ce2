import type { CpOperationResult } from "@molecule/contracts";
import type { Scrubber, StepReporter } from "@molecule/provisioner-core";
import {
  type AttemptContext,
  OperationRunner as DurableOperationRunner,
  type OperationsTable,
  type OperationTableAdapter,
} from "@molecule/service-kit/runner";
import {
  type CpOperationError,
  type CpOperationRow,
  type CpRolloutRow,
  cpOperations,
  cpRollouts,
} from "../db/schema.ts";
import type { ControlPlaneDeps } from "./deps.ts";
import { performRollout } from "./rollout-run.ts";

export type { AttemptContext, RunnerDb } from "@molecule/service-kit/runner";
export { OperationDeferred, OperationSuperseded } from "@molecule/service-kit/runner";

export interface OperationOutcome {
  result?: CpOperationResult;
}

/**
 * Does the work of one operation kind; called again on every attempt, so it must be idempotent. Every secret it opens
 * (a spec's env, a tenant's tokens) is added to `scrub`, so that no failure, step detail or log line carries it.
 * `attempt.signal` goes to every backend call; each write of the subject's state goes through `attempt.fenced`, which
 * keeps an attempt abandoned at its deadline, or overtaken by another runner, from writing its late result.
 */
export type Perform = (
  operation: CpOperationRow,
  step: StepReporter,
  scrub: Scrubber,
  attempt: AttemptContext,
) => Promise<OperationOutcome | undefined>;

/** What happens when an operation fails for good (marks the workspace or org failed). */
export type OnFailed = (operation: CpOperationRow, error: CpOperationError) => Promise<void>;

/** The control plane's operations: one at a time per subject (a workspace, or an org); errors keep `retryable`. */
const cpOperationTable: OperationTableAdapter<CpOperationRow, CpOperationError> = {
  table: cpOperations as unknown as OperationsTable,
  subject: "subject",
  storedError: ({ code, message, retryable }) => ({ code, message, retryable }),
  logFields: (operation) => ({
    operationId: operation.id,
    orgId: operation.orgId,
    workspaceId: operation.workspaceId,
  }),
};

/** The service-kit runner on `cp_operations`; a successful operation's result is stored on its row. */
export class OperationRunner extends DurableOperationRunner<CpOperationRow, CpOperationError> {
  constructor(
    deps: ControlPlaneDeps,
    instanceId: string,
    perform: Perform,
    onFailed: OnFailed,
    pollIntervalMs = 500,
  ) {
    super(
      deps,
      cpOperationTable,
      instanceId,
      {
        perform: async (operation, step, scrub, attempt) => ({
          result: (await perform(operation, step, scrub, attempt))?.result ?? null,
        }),
        onFailed,
        unexpectedMessage: "unexpected error; see the control plane log",
      },
      pollIntervalMs,
    );
  }
}

/**
 * How long one attempt of a rollout may run before it is abandoned as hung and resumed by the next attempt (which
 * skips what is finished): a fleet rollout waits on every workspace of every tenant, and on the soak.
 */
export const ROLLOUT_ATTEMPT_DEADLINE_MS = 24 * 60 * 60_000;

/** Rollouts: one at a time (one subject); errors keep `retryable`. */
const cpRolloutTable: OperationTableAdapter<CpRolloutRow, CpOperationError> = {
  table: cpRollouts as unknown as OperationsTable,
  subject: "subject",
  storedError: ({ code, message, retryable }) => ({ code, message, retryable }),
  logFields: (rollout) => ({ rolloutId: rollout.id }),
};

/**
 * The same service-kit runner on `cp_rollouts`. A rollout is not an org's operation (it spans orgs, and an org's
 * operations are deleted with the org), so it has its own table; steps, leases, attempts and deadlines work alike.
 */
export function createRolloutRunner(deps: ControlPlaneDeps, instanceId: string, pollIntervalMs = 500) {
  const { events } = deps;
  const settings = {
    ...deps.settings,
    operationDeadlinesMs: { tenant: ROLLOUT_ATTEMPT_DEADLINE_MS, fleet: ROLLOUT_ATTEMPT_DEADLINE_MS },
  };
  return new DurableOperationRunner<CpRolloutRow, CpOperationError>(
    { ...deps, settings },
    cpRolloutTable,
    instanceId,
    {
      perform: async (rollout, step, scrub, attempt) => {
        await performRollout(deps, rollout, step, scrub, attempt);
        return undefined;
      },
      onStep: (rollout, step) =>
        events.publish({
          type: "rollout.step",
          workspaceId: null,
          data: { rolloutId: rollout.id, name: step.name, durationMs: step.durationMs },
        }),
      onFinished: (rollout, outcome) =>
        events.publish({
          type: "rollout.finished",
          workspaceId: null,
          data: {
            rolloutId: rollout.id,
            status: outcome.error?.code === "superseded" ? "cancelled" : outcome.status,
            ...(outcome.error ? { error: { code: outcome.error.code, message: outcome.error.message } } : {}),
          },
        }),
      unexpectedMessage: "unexpected error; see the control plane log",
    },
    pollIntervalMs,
  );
}
