/**
 * Shell commands on a running instance through SSM Run Command (`AWS-RunShellScript`): sent once, then followed with
 * `GetCommandInvocation` until it ends or a deadline passes. The instance's SSM agent runs it as root; its instance
 * profile needs the SSM managed-instance permissions (docs/backends/ec2.md).
 *
 * A command that ends in anything but `Success`, or is still running at the deadline (it is then cancelled), is a
 * non-retryable ProvisionerError whose message carries the end of its output: the command changed the machine, so
 * the caller decides what follows, never a blind retry.
 */
import {
  CancelCommandCommand,
  GetCommandInvocationCommand,
  type GetCommandInvocationCommandOutput,
  SendCommandCommand,
} from "@aws-sdk/client-ssm";
import { ProvisionerError } from "../errors.ts";
import { type AwsAccess, isAwsError } from "./aws.ts";

export const SHELL_DOCUMENT = "AWS-RunShellScript";
/** How much longer than the caller's deadline the instance lets the script run, when nobody cancels it. */
const EXECUTION_TIMEOUT_SLACK_S = 30;

/** Statuses after which an invocation changes no more. */
const FINISHED = new Set(["Success", "Failed", "Cancelled", "TimedOut", "Cancelling"]);
/** How much of a command's output an error or a result keeps (its end: where a failure shows). */
export const OUTPUT_TAIL_CHARS = 2_000;

export interface ShellCommand {
  instanceId: string;
  /** The script: one shell script, sent as the document's `commands`. */
  script: string;
  /** Shown in the SSM console's history (at most 100 characters). */
  comment: string;
  /**
   * How long the command may run, from the moment it is sent; past it the command is cancelled and fails. The
   * document's executionTimeout is a little longer: the instance ends the script itself should nobody cancel it.
   */
  deadlineMs: number;
  /** Between two looks at the invocation (default 2 s). */
  pollMs?: number;
  /** Told the command's id once SSM accepted it. */
  onSent?: (commandId: string) => void;
}

export interface ShellCommandResult {
  commandId: string;
  /** The end of its standard output and error. */
  output: string;
}

/** The end of the invocation's standard output then standard error, at most OUTPUT_TAIL_CHARS. */
function outputOf(invocation: GetCommandInvocationCommandOutput | undefined): string {
  const text = [invocation?.StandardOutputContent, invocation?.StandardErrorContent]
    .filter((part) => part?.trim())
    .join("\n")
    .trim();
  return text.length > OUTPUT_TAIL_CHARS ? `…${text.slice(-OUTPUT_TAIL_CHARS)}` : text;
}

/** Runs `script` on the instance and waits for its end; see the module comment for how it fails. */
export async function runShellCommand(aws: AwsAccess, command: ShellCommand): Promise<ShellCommandResult> {
  const { instanceId } = command;
  const deadline = aws.now() + command.deadlineMs;
  const seconds = Math.max(1, Math.ceil(command.deadlineMs / 1000));
  const sent = await aws.call("SSM", "SendCommand", (abortSignal) =>
    aws.ssm.send(
      new SendCommandCommand({
        DocumentName: SHELL_DOCUMENT,
        InstanceIds: [instanceId],
        Comment: command.comment.slice(0, 100),
        Parameters: {
          commands: [command.script],
          executionTimeout: [String(seconds + EXECUTION_TIMEOUT_SLACK_S)],
        },
        // The time the command may wait for the instance's agent to pick it up (SSM's minimum is 30 s).
        TimeoutSeconds: Math.max(30, seconds),
      }),
      { abortSignal },
    ),
  );
  const commandId = sent.Command?.CommandId;
  if (!commandId)
    throw new ProvisionerError("backend_error", "AWS SSM SendCommand answered no command id", true);
  command.onSent?.(commandId);

  let invocation: GetCommandInvocationCommandOutput | undefined;
  for (;;) {
    try {
      invocation = await aws.call("SSM", "GetCommandInvocation", (abortSignal) =>
        aws.ssm.send(new GetCommandInvocationCommand({ CommandId: commandId, InstanceId: instanceId }), {
          abortSignal,
        }),
      );
    } catch (error) {
      // Just after SendCommand the invocation may not be visible yet.
      if (!isAwsError(error, "InvocationDoesNotExist")) throw error;
    }
    const status = invocation?.Status;
    if (status === "Success") return { commandId, output: outputOf(invocation) };
    if (status && FINISHED.has(status)) {
      const output = outputOf(invocation);
      throw new ProvisionerError(
        "backend_error",
        `SSM command ${commandId} on ${instanceId} ended ${status}` +
          `${invocation?.ResponseCode !== undefined && invocation.ResponseCode >= 0 ? ` (exit ${invocation.ResponseCode})` : ""}` +
          `: ${output || "no output"}`,
        false,
        { commandId, instanceId, status, output },
      );
    }
    if (aws.now() >= deadline) break;
    await aws.pause(Math.min(command.pollMs ?? 2_000, Math.max(1, deadline - aws.now())));
  }
  await cancel(aws, commandId, instanceId);
  const output = outputOf(invocation);
  throw new ProvisionerError(
    "timeout",
    `SSM command ${commandId} on ${instanceId} did not finish within ${seconds} s (last status ${invocation?.Status ?? "unknown"}); it was cancelled. Output so far: ${output || "none"}`,
    false,
    { commandId, instanceId, status: invocation?.Status, output },
  );
}

/** Best effort: a command past its deadline is cancelled so that it does not go on changing the machine later. */
async function cancel(aws: AwsAccess, commandId: string, instanceId: string): Promise<void> {
  try {
    await aws.call("SSM", "CancelCommand", (abortSignal) =>
      aws.ssm.send(new CancelCommandCommand({ CommandId: commandId, InstanceIds: [instanceId] }), {
        abortSignal,
      }),
    );
  } catch {
    // The timeout is the failure to report; the command's own executionTimeout ends it anyway.
  }
}
