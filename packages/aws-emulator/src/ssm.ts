import { describedInstances } from "./ec2-xml.ts";
import type { MotoClient } from "./moto-client.ts";
import { type Answer, type AwsCall, errorAnswer } from "./protocol.ts";

/**
 * What SSM Run Command does and moto does not: moto answers every command `Success` with no output, for any instance
 * id. Here a test decides how the next command (on one instance, or any) ends — it fails with an exit code and
 * output, or it stays `InProgress` until the test finishes it or its `executionTimeout` passes (then `TimedOut`) —
 * `CancelCommand` cancels what is still running, and a command for an instance that is not running is refused
 * (`InvalidInstanceId`), as AWS refuses it.
 */

/** How a command's invocation ends (or that it does not). */
export type CommandOutcome =
  | { status: "Success"; output?: string }
  | { status: "Failed"; output?: string; errorOutput?: string; exitCode?: number }
  | { status: "InProgress"; output?: string };

export interface CommandScript {
  /** Only commands sent to this instance; default any. */
  instanceId?: string;
  /** How many commands it applies to (default 1). */
  times?: number;
  outcome: CommandOutcome;
}

/** A command the proxy saw accepted, as the test plays the instance's side from it. */
export interface SentCommand {
  commandId: string;
  instanceIds: string[];
  documentName: string;
  /** The document's `commands` parameter (AWS-RunShellScript: the script's lines). */
  commands: string[];
  comment: string;
}

interface Invocation {
  outcome: CommandOutcome | { status: "Cancelled" };
  sentAt: number;
  executionTimeoutMs: number;
}

export interface SsmContext {
  moto: MotoClient;
  now(): number;
  relay(): Promise<Answer>;
}

/** Moto's default for AWS-RunShellScript's executionTimeout, as AWS's: one hour. */
const DEFAULT_EXECUTION_TIMEOUT_S = 3600;

export class SsmState {
  private readonly scripts: (CommandScript & { remaining: number })[] = [];
  private readonly invocations = new Map<string, Invocation>();
  readonly sent: SentCommand[] = [];

  script(script: CommandScript): void {
    this.scripts.push({ ...script, remaining: script.times ?? 1 });
  }

  pendingScripts(): number {
    return this.scripts.reduce((sum, s) => sum + s.remaining, 0);
  }

  /** Ends an invocation a script kept `InProgress` (the instance's side finishing its work). */
  finish(
    commandId: string,
    instanceId: string,
    outcome: Exclude<CommandOutcome, { status: "InProgress" }>,
  ): void {
    const invocation = this.invocations.get(key(commandId, instanceId));
    if (!invocation) throw new Error(`no scripted invocation of ${commandId} on ${instanceId}`);
    invocation.outcome = outcome;
  }

  clear(): void {
    this.scripts.length = 0;
  }

  async handle(call: AwsCall, ctx: SsmContext): Promise<Answer> {
    switch (call.action) {
      case "ssm.SendCommand":
        return this.sendCommand(call, ctx);
      case "ssm.GetCommandInvocation":
        return this.getCommandInvocation(call, ctx);
      case "ssm.CancelCommand":
        return this.cancelCommand(call);
      default:
        return ctx.relay();
    }
  }

  private take(instanceId: string): CommandOutcome | null {
    const index = this.scripts.findIndex(
      (s) => s.remaining > 0 && (s.instanceId === undefined || s.instanceId === instanceId),
    );
    const script = this.scripts[index];
    if (!script) return null;
    script.remaining -= 1;
    if (script.remaining <= 0) this.scripts.splice(index, 1);
    return script.outcome;
  }

  private async sendCommand(call: AwsCall, ctx: SsmContext): Promise<Answer> {
    const body = (call.json ?? {}) as {
      InstanceIds?: string[];
      DocumentName?: string;
      Comment?: string;
      Parameters?: Record<string, string[]>;
    };
    const instanceIds = body.InstanceIds ?? [];
    const notRunning: string[] = [];
    for (const instanceId of instanceIds) {
      const described = await ctx.moto.ec2(call, "DescribeInstances", { "InstanceId.1": instanceId });
      const state =
        described.status === 200 ? describedInstances(String(described.body))[0]?.stateName : undefined;
      if (state !== "running") notRunning.push(instanceId);
    }
    if (notRunning.length > 0) {
      return errorAnswer(
        call,
        400,
        "InvalidInstanceId",
        `Instances [[${notRunning.join(", ")}]] not in a valid state for account`,
      );
    }
    const answer = await ctx.relay();
    if (answer.status !== 200) return answer;
    const command = (JSON.parse(String(answer.body)) as { Command?: { CommandId?: string } }).Command;
    const commandId = command?.CommandId;
    if (!commandId) return answer;
    const timeout = Number(body.Parameters?.executionTimeout?.[0] ?? DEFAULT_EXECUTION_TIMEOUT_S);
    for (const instanceId of instanceIds) {
      const outcome = this.take(instanceId);
      if (outcome) {
        this.invocations.set(key(commandId, instanceId), {
          outcome,
          sentAt: ctx.now(),
          executionTimeoutMs: (Number.isFinite(timeout) ? timeout : DEFAULT_EXECUTION_TIMEOUT_S) * 1000,
        });
      }
    }
    this.sent.push({
      commandId,
      instanceIds,
      documentName: body.DocumentName ?? "",
      commands: body.Parameters?.commands ?? [],
      comment: body.Comment ?? "",
    });
    return answer;
  }

  private async getCommandInvocation(call: AwsCall, ctx: SsmContext): Promise<Answer> {
    const answer = await ctx.relay();
    const body = (call.json ?? {}) as { CommandId?: string; InstanceId?: string };
    const invocation = this.invocations.get(key(body.CommandId ?? "", body.InstanceId ?? ""));
    if (answer.status !== 200 || !invocation) return answer;
    const shown = JSON.parse(String(answer.body)) as Record<string, unknown>;
    const { outcome } = invocation;
    const timedOut =
      outcome.status === "InProgress" && ctx.now() >= invocation.sentAt + invocation.executionTimeoutMs;
    const fields: Record<string, unknown> =
      outcome.status === "InProgress"
        ? timedOut
          ? { Status: "TimedOut", StatusDetails: "ExecutionTimedOut", ResponseCode: -1 }
          : { Status: "InProgress", StatusDetails: "InProgress", ResponseCode: -1 }
        : outcome.status === "Cancelled"
          ? { Status: "Cancelled", StatusDetails: "Cancelled", ResponseCode: -1 }
          : outcome.status === "Failed"
            ? {
                Status: "Failed",
                StatusDetails: "Failed",
                ResponseCode: outcome.exitCode ?? 1,
                StandardErrorContent: outcome.errorOutput ?? "",
              }
            : { Status: "Success", StatusDetails: "Success", ResponseCode: 0 };
    const output = "output" in outcome ? (outcome.output ?? "") : "";
    const rewritten: Record<string, unknown> = {
      ...shown,
      StandardOutputContent: output,
      StandardErrorContent: "",
      ...fields,
    };
    if (outcome.status === "InProgress" && !timedOut) delete rewritten.ExecutionEndDateTime;
    const payload = JSON.stringify(rewritten);
    return { ...answer, body: payload };
  }

  /** moto has no CancelCommand: a scripted invocation still running is cancelled here; AWS answers `{}`. */
  private cancelCommand(call: AwsCall): Answer {
    const body = (call.json ?? {}) as { CommandId?: string; InstanceIds?: string[] };
    const commandId = body.CommandId ?? "";
    const sent = this.sent.find((command) => command.commandId === commandId);
    if (!sent) return errorAnswer(call, 400, "InvalidCommandId", "Invalid command id.");
    for (const instanceId of body.InstanceIds ?? sent.instanceIds) {
      const invocation = this.invocations.get(key(commandId, instanceId));
      if (invocation?.outcome.status === "InProgress") invocation.outcome = { status: "Cancelled" };
    }
    return {
      status: 200,
      headers: { "content-type": "application/x-amz-json-1.1" },
      body: "{}",
    };
  }
}

const key = (commandId: string, instanceId: string) => `${commandId}|${instanceId}`;
