/**
 * The SDK's entry points (`cli.ts`, `echo-agent.ts`) run as their own processes, the way a person or the workspace
 * image runs them, for the SDK's tests: their JSON log lines and stderr are collected as they come.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { INBOUND_TOKEN_HEADER } from "@molecule/contracts/inbound";

export interface EntryProcess {
  child: ChildProcess;
  /** The stdout lines so far (each one JSON log line). */
  out: string[];
  stderr(): string;
  exited: Promise<number | null>;
}

/** `node --import tsx <entry> …args` with exactly `env` (give PATH if the process needs it). */
export function spawnEntry(entry: string, args: string[], env: Record<string, string>): EntryProcess {
  const child = spawn(process.execPath, ["--import", "tsx", entry, ...args], {
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const out: string[] = [];
  let err = "";
  let buffer = "";
  child.stdout.on("data", (chunk: Buffer) => {
    buffer += chunk.toString();
    const lines = buffer.split("\n");
    buffer = lines.pop() ?? "";
    out.push(...lines);
  });
  child.stderr.on("data", (chunk: Buffer) => {
    err += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, out, stderr: () => err, exited };
}

/** The first log line with this event; fails with the output when the process exits first or after 20 s. */
export async function waitForEvent(run: EntryProcess, event: string): Promise<Record<string, unknown>> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const line = run.out.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.event === event);
    if (line) return line;
    if (Date.now() > deadline || run.child.exitCode !== null)
      throw new Error(`no ${event} in:\n${run.out.join("\n")}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Posts one user text message to an A2A server: `message/send` by default, or `message/stream`; with an inbound
 * token, as the platform's proxy would.
 */
export function sendText(
  url: string,
  text: string,
  method = "message/send",
  inboundToken?: string | null,
): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: inboundToken ? { [INBOUND_TOKEN_HEADER]: inboundToken } : {},
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: "1",
      method,
      params: { message: { role: "user", parts: [{ kind: "text", text }], messageId: "m" } },
    }),
  });
}
