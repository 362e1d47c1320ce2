import type { CpOperationResult } from "@molecule/contracts";
import type { Scrubber, StepReporter } from "@molecule/provisioner-core";
import {
  type AttemptContext,
  OperationRunner as DurableOperationRunner,
  type OperationsTable,
  type OperationTableAdapter,
} from "@molecule/service-kit/runner";
import { type CpOperationError, type CpOperationRow, cpOperations } from "../db/schema.ts";
import type { ControlPlaneDeps } from "./deps.ts";

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
