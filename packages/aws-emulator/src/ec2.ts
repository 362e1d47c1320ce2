import { randomUUID } from "node:crypto";
import {
  describedInstances,
  rewriteDescribeInstances,
  runInstancesIds,
  type StateChange,
  terminateInstancesXml,
} from "./ec2-xml.ts";
import type { MotoClient } from "./moto-client.ts";
import { type Answer, type AwsCall, errorAnswer, listParam } from "./protocol.ts";
import type { FidelityState } from "./state.ts";

/**
 * What EC2 does and moto does not, measured: client tokens make `RunInstances` idempotent, a security group in use
 * cannot be deleted, termination passes through `shutting-down`, and a new instance is invisible for a moment.
 */

export interface Ec2Context {
  state: FidelityState;
  moto: MotoClient;
  /** Sends the SDK's request to moto as it came. */
  relay(): Promise<Answer>;
}

/** Calls that name instances and answer `InvalidInstanceID.NotFound` for one AWS does not show yet. */
const NAMES_INSTANCES = new Set([
  "DescribeInstances",
  "DescribeInstanceStatus",
  "DescribeInstanceAttribute",
  "ModifyInstanceAttribute",
  "CreateTags",
  "DeleteTags",
  "StartInstances",
  "StopInstances",
  "RebootInstances",
  "TerminateInstances",
]);

export async function handleEc2(call: AwsCall, ctx: Ec2Context): Promise<Answer> {
  if (NAMES_INSTANCES.has(call.action)) {
    const hidden = namedInstanceIds(call.params).filter((id) => ctx.state.isHidden(id));
    if (hidden.length > 0) return instanceNotFound(call, hidden);
  }
  switch (call.action) {
    case "RunInstances":
      return runInstances(call, ctx);
    case "DescribeInstances":
      return describeInstances(call, ctx);
    case "TerminateInstances":
      return terminateInstances(call, ctx);
    case "StartInstances":
    case "StopInstances":
    case "RebootInstances":
      return changeInstanceState(call, ctx);
    case "DeleteSecurityGroup":
      return deleteSecurityGroup(call, ctx);
    default:
      return ctx.relay();
  }
}

function namedInstanceIds(params: URLSearchParams): string[] {
  const ids: string[] = [];
  for (const [key, value] of params) {
    if (/^(InstanceId|ResourceId)(\.\d+)?$/.test(key) && value.startsWith("i-")) ids.push(value);
  }
  return ids;
}

function instanceNotFound(call: AwsCall, ids: string[]): Answer {
  const message =
    ids.length === 1
      ? `The instance ID '${ids[0]}' does not exist`
      : `The instance IDs '${ids.join(", ")}' do not exist`;
  return errorAnswer(call, 400, "InvalidInstanceID.NotFound", message);
}

function xmlAnswer(body: string): Answer {
  return { status: 200, headers: { "content-type": "text/xml;charset=UTF-8" }, body };
}

async function runInstances(call: AwsCall, ctx: Ec2Context): Promise<Answer> {
  const launch = async () => {
    const answer = await ctx.relay();
    if (answer.status === 200) ctx.state.hide(runInstancesIds(answer.body.toString()));
    return answer;
  };
  const token = call.params.get("ClientToken");
  if (!token) return launch();
  const paramsKey = [...call.params]
    .filter(([key]) => key !== "ClientToken")
    .map(([key, value]) => `${key}=${value}`)
    .sort()
    .join("&");
  for (;;) {
    const claim = ctx.state.claimToken(call, token, paramsKey);
    if (claim.kind === "mismatch") {
      return errorAnswer(
        call,
        400,
        "IdempotentParameterMismatch",
        "Arguments on this idempotent request are inconsistent with arguments used in previous request(s).",
      );
    }
    if (claim.kind === "replay") {
      const answer = await claim.answer;
      if (answer) return answer;
      continue; // the first call failed: this one runs
    }
    try {
      const answer = await launch();
      claim.finish(answer.status === 200 ? answer : null);
      return answer;
    } catch (error) {
      claim.finish(null);
      throw error;
    }
  }
}

const STATE_FILTERS = new Set(["instance-state-name", "instance-state-code"]);

/**
 * The request's filters without the instance-state ones (moto would apply them to its own states, not to the ones
 * the proxy shows), and a test that applies them to the rewritten answer instead.
 */
function splitStateFilters(params: URLSearchParams): {
  forwarded: URLSearchParams | null;
  keep: (state: { code: number; name: string }) => boolean;
} {
  const filters = new Map<string, { name: string; values: string[] }>();
  const rest = new URLSearchParams();
  for (const [key, value] of params) {
    const match = /^Filter\.(\d+)\.(Name|Value\.\d+)$/.exec(key);
    if (!match?.[1]) {
      rest.append(key, value);
      continue;
    }
    const filter = filters.get(match[1]) ?? { name: "", values: [] };
    if (match[2] === "Name") filter.name = value;
    else filter.values.push(value);
    filters.set(match[1], filter);
  }
  const stateFilters = [...filters.values()].filter((f) => STATE_FILTERS.has(f.name));
  if (stateFilters.length === 0) return { forwarded: null, keep: () => true };
  const others = [...filters.entries()]
    .sort((a, b) => Number(a[0]) - Number(b[0]))
    .map(([, f]) => f)
    .filter((f) => !STATE_FILTERS.has(f.name));
  others.forEach((f, i) => {
    rest.append(`Filter.${i + 1}.Name`, f.name);
    f.values.forEach((v, j) => {
      rest.append(`Filter.${i + 1}.Value.${j + 1}`, v);
    });
  });
  return {
    forwarded: rest,
    keep: (state) =>
      stateFilters.every((f) =>
        f.values.includes(f.name === "instance-state-name" ? state.name : String(state.code)),
      ),
  };
}

async function describeInstances(call: AwsCall, ctx: Ec2Context): Promise<Answer> {
  if (!ctx.state.hasTerminations() && !ctx.state.hasHiddenInstances()) return ctx.relay();
  const { forwarded, keep } = splitStateFilters(call.params);
  const answer = forwarded
    ? await ctx.moto.ec2(call, "DescribeInstances", withoutProtocolParams(forwarded))
    : await ctx.relay();
  if (answer.status !== 200) return answer;
  const body = rewriteDescribeInstances(answer.body.toString(), {
    hidden: (id) => ctx.state.isHidden(id),
    shuttingDown: (id) => ctx.state.isShuttingDown(id),
    keep,
  });
  return { ...answer, body };
}

function withoutProtocolParams(params: URLSearchParams): URLSearchParams {
  const copy = new URLSearchParams(params);
  copy.delete("Action");
  copy.delete("Version");
  return copy;
}

function instanceIdParams(ids: string[]): Record<string, string> {
  return Object.fromEntries(ids.map((id, i) => [`InstanceId.${i + 1}`, id]));
}

/** moto's state of each named instance, or null when moto does not know one of them (it answers that itself). */
async function motoStates(
  call: AwsCall,
  ctx: Ec2Context,
  ids: string[],
): Promise<Map<string, string> | null> {
  const described = await ctx.moto.ec2(call, "DescribeInstances", instanceIdParams(ids));
  if (described.status !== 200) return null;
  return new Map(describedInstances(described.body.toString()).map((i) => [i.instanceId, i.stateName]));
}

/** The instance keeps running in moto while it is `shutting-down` here; the proxy terminates it in moto later. */
async function terminateInstances(call: AwsCall, ctx: Ec2Context): Promise<Answer> {
  const ids = listParam(call.params, "InstanceId");
  const { state } = ctx;
  if (ids.length === 0 || (state.timing.shuttingDownMs <= 0 && !state.terminationsStuck)) return ctx.relay();
  const states = await motoStates(call, ctx, ids);
  if (!states) return ctx.relay();
  const changes: StateChange[] = ids.map((instanceId) => {
    const current = states.get(instanceId) ?? "terminated";
    if (current === "terminated") return { instanceId, previous: "terminated", current: "terminated" };
    if (state.isShuttingDown(instanceId)) {
      return { instanceId, previous: "shutting-down", current: "shutting-down" };
    }
    state.beginTermination(call, instanceId);
    return { instanceId, previous: current, current: "shutting-down" };
  });
  return xmlAnswer(terminateInstancesXml(changes, randomUUID()));
}

/** A `shutting-down` instance can no longer be started, stopped or rebooted. */
async function changeInstanceState(call: AwsCall, ctx: Ec2Context): Promise<Answer> {
  const busy = listParam(call.params, "InstanceId").find((id) => ctx.state.isShuttingDown(id));
  if (!busy) return ctx.relay();
  const verb = { StartInstances: "started", StopInstances: "stopped", RebootInstances: "rebooted" }[
    call.action as "StartInstances"
  ];
  return errorAnswer(
    call,
    400,
    "IncorrectInstanceState",
    `The instance '${busy}' is not in a state from which it can be ${verb}.`,
  );
}

/** AWS refuses while any instance that is not `terminated` (a `shutting-down` one included) uses the group. */
async function deleteSecurityGroup(call: AwsCall, ctx: Ec2Context): Promise<Answer> {
  const groupId = call.params.get("GroupId");
  const groupName = call.params.get("GroupName");
  const filter = groupId
    ? ["instance.group-id", groupId]
    : groupName
      ? ["instance.group-name", groupName]
      : null;
  if (!filter) return ctx.relay();
  const described = await ctx.moto.ec2(call, "DescribeInstances", {
    "Filter.1.Name": filter[0] as string,
    "Filter.1.Value.1": filter[1] as string,
  });
  if (described.status === 200) {
    const inUse = describedInstances(described.body.toString()).some((i) => i.stateName !== "terminated");
    if (inUse) {
      return errorAnswer(
        call,
        400,
        "DependencyViolation",
        `resource ${groupId ?? groupName} has a dependent object`,
      );
    }
  }
  return ctx.relay();
}
