import { z } from "zod";

export const WORKSPACE_STATUSES = [
  "provisioning",
  "awaiting_agent",
  "online",
  "degraded",
  "offline",
  "stopping",
  "stopped",
  "suspended",
  "failed",
  "removing",
  "removed",
] as const;

export const WorkspaceStatus = z.enum(WORKSPACE_STATUSES);
export type WorkspaceStatus = z.infer<typeof WorkspaceStatus>;

/** The one table of allowed status changes; code and tests both read it. */
export const ALLOWED_TRANSITIONS: Readonly<Record<WorkspaceStatus, readonly WorkspaceStatus[]>> = {
  provisioning: ["awaiting_agent", "online", "failed", "removing"],
  awaiting_agent: ["online", "offline", "stopping", "failed", "removing"],
  online: ["degraded", "offline", "stopping", "failed", "removing"],
  degraded: ["online", "offline", "stopping", "failed", "removing"],
  offline: ["online", "stopping", "failed", "removing"],
  stopping: ["stopped", "suspended", "failed", "removing"],
  stopped: ["provisioning", "removing"],
  suspended: ["provisioning", "stopping", "removing"],
  failed: ["provisioning", "stopping", "removing"],
  removing: ["removed", "failed"],
  removed: [],
};

export function canTransition(from: WorkspaceStatus, to: WorkspaceStatus): boolean {
  return ALLOWED_TRANSITIONS[from].includes(to);
}

/** Statuses a status can be entered from, for guarded `UPDATE … WHERE status IN (…)`. */
export function sourcesOf(to: WorkspaceStatus): WorkspaceStatus[] {
  return WORKSPACE_STATUSES.filter((from) => ALLOWED_TRANSITIONS[from].includes(to));
}

/** Statuses in which the workspace's process is expected to be running. */
export const LIVE_STATUSES: readonly WorkspaceStatus[] = ["awaiting_agent", "online", "degraded", "offline"];

export const OPERATION_KINDS = [
  "provision",
  "start",
  "stop",
  "restart",
  "redeploy",
  "suspend",
  "destroy",
] as const;
export const OperationKind = z.enum(OPERATION_KINDS);
export type OperationKind = z.infer<typeof OperationKind>;

export const OPERATION_STATUSES = ["pending", "running", "succeeded", "failed"] as const;
export const OperationStatus = z.enum(OPERATION_STATUSES);
export type OperationStatus = z.infer<typeof OperationStatus>;

/** What a lifecycle request moves the workspace to when it is accepted. */
export const OPERATION_ENTRY_STATUS: Record<OperationKind, WorkspaceStatus> = {
  provision: "provisioning",
  start: "provisioning",
  stop: "stopping",
  restart: "stopping",
  redeploy: "stopping",
  suspend: "stopping",
  destroy: "removing",
};
