/** What the control plane's event stream says about rollouts (metadata only: ids, slugs, statuses, step names). */
export type RolloutEventType =
  | "rollout.queued"
  | "rollout.step"
  | "rollout.tenant"
  | "rollout.workspace"
  | "rollout.finished";

export interface RolloutEvents {
  publish(input: {
    type: RolloutEventType;
    workspaceId: string | null;
    data: Record<string, unknown>;
  }): unknown;
}
