import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { performance } from "node:perf_hooks";
import { handleEc2 } from "./ec2.ts";
import { type Fault, FaultPlan, isServiceFailure } from "./faults.ts";
import { type MotoOptions, type MotoServer, startMoto } from "./moto.ts";
import { MotoClient } from "./moto-client.ts";
import { type Answer, errorAnswer, failureAnswer, parseCall } from "./protocol.ts";
import { type CommandOutcome, type CommandScript, type SentCommand, SsmState } from "./ssm.ts";
import { DEFAULT_TIMING, FidelityState, type Scope, type Timing } from "./state.ts";

/**
 * An HTTP proxy in front of one moto server that the AWS SDK uses as its endpoint. It relays every call to moto
 * unchanged, adds what AWS does and moto does not (`ec2.ts`), injects faults per action (`faults.ts`) and counts
 * calls per action.
 */

export interface AwsEmulatorOptions {
  /** A moto already running (its endpoint); otherwise one is started with `motoOptions` and stopped by `close()`. */
  motoEndpoint?: string;
  motoOptions?: MotoOptions;
  timing?: Partial<Timing>;
  /** Milliseconds since the epoch; drives client-token expiry, not-found windows and terminations. */
  now?: () => number;
  /** What a `slow` fault waits with. */
  sleep?: (ms: number) => Promise<void>;
}

export class AwsEmulator {
  private readonly faults = new FaultPlan();
  private readonly callCounts = new Map<string, number>();
  private readonly state: FidelityState;
  private readonly ssm = new SsmState();
  private readonly now: () => number;
  private readonly moto: MotoClient;
  private readonly sleep: (ms: number) => Promise<void>;
  private server: Server | null = null;
  private baseUrl = "";
  private settling: Promise<void> = Promise.resolve();
  private handlingMs = 0;

  constructor(
    motoEndpoint: string,
    options: AwsEmulatorOptions = {},
    private readonly ownedMoto: MotoServer | null = null,
  ) {
    this.moto = new MotoClient(motoEndpoint);
    this.now = options.now ?? Date.now;
    this.state = new FidelityState({ ...DEFAULT_TIMING, ...options.timing }, this.now);
    this.sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
  }

  async start(): Promise<string> {
    const server = createServer((req, res) => {
      this.handle(req, res).catch((error: unknown) => {
        if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" });
        res.end(`aws-emulator: ${(error as Error).message}`);
      });
    });
    // Node closes a keep-alive connection idle for 5 s by default; the AWS SDK's agent ignores the Keep-Alive hint, so
    // a call that reuses the connection as it closes fails with ECONNRESET. AWS keeps idle connections far longer.
    server.keepAliveTimeout = 0;
    this.server = server;
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    this.baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return this.baseUrl;
  }

  /** The AWS SDK's `endpoint`. */
  get endpoint(): string {
    if (!this.baseUrl) throw new Error("aws emulator not started");
    return this.baseUrl;
  }

  /** moto itself, for looking at its state without the proxy's rewriting. */
  get motoEndpoint(): string {
    return this.moto.endpoint;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (server) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    await this.ownedMoto?.stop();
  }

  // ---- test controls -------------------------------------------------------------------------------------------

  inject(fault: Fault): void {
    this.faults.inject(fault);
  }

  /** Armed faults not yet consumed by a matching call. */
  pendingFaults(): number {
    return this.faults.pending();
  }

  clearFaults(): void {
    this.faults.clear();
    this.ssm.clear();
  }

  /** Calls received per action (`RunInstances`, `secretsmanager.CreateSecret`, …), faulted ones included. */
  counts(): Record<string, number> {
    return Object.fromEntries(this.callCounts);
  }

  /** Milliseconds spent waiting on moto since the last reset (summed over concurrent calls). */
  motoTimeMs(): number {
    return this.moto.waitedMs;
  }

  /** Milliseconds calls spent in the proxy from their last byte received to their answer, moto's time included. */
  handlingTimeMs(): number {
    return this.handlingMs;
  }

  resetCounts(): void {
    this.callCounts.clear();
    this.moto.waitedMs = 0;
    this.handlingMs = 0;
  }

  get timing(): Readonly<Timing> {
    return this.state.timing;
  }

  /** Changes the timing for what happens from now on. */
  setTiming(timing: Partial<Timing>): void {
    Object.assign(this.state.timing, timing);
  }

  /**
   * How the next SSM command (to `instanceId`, or to any instance) ends: `Failed` with an exit code and output, or
   * `InProgress` until `finishCommand` or its executionTimeout; without a script, moto's `Success`.
   */
  scriptCommand(script: CommandScript): void {
    this.ssm.script(script);
  }

  /** Command scripts not yet used by a command. */
  pendingCommandScripts(): number {
    return this.ssm.pendingScripts();
  }

  /** Ends an invocation a script kept `InProgress`, as the instance finishing the command would. */
  finishCommand(
    commandId: string,
    instanceId: string,
    outcome: Exclude<CommandOutcome, { status: "InProgress" }>,
  ): void {
    this.ssm.finish(commandId, instanceId, outcome);
  }

  /** Every SSM command accepted so far, oldest first. */
  sentCommands(): SentCommand[] {
    return this.ssm.sent.map((command) => structuredClone(command));
  }

  /** Stuck: terminated instances stay `shutting-down` until unstuck (for deadline tests). */
  setTerminationsStuck(stuck: boolean): void {
    this.state.setTerminationsStuck(stuck);
  }

  /**
   * Terminates in moto the instances whose `shutting-down` time is over. Every call through the proxy does this
   * first; a test that looks at moto directly calls it before.
   */
  settle(): Promise<void> {
    const next = this.settling.then(async () => {
      const due = this.state.takeDueTerminations();
      const byScope = new Map<string, { scope: Scope; ids: string[] }>();
      for (const t of due) {
        const key = `${t.accessKeyId}|${t.region}`;
        const group = byScope.get(key) ?? { scope: t, ids: [] };
        group.ids.push(t.instanceId);
        byScope.set(key, group);
      }
      for (const { scope, ids } of byScope.values()) {
        await this.moto.ec2(
          scope,
          "TerminateInstances",
          Object.fromEntries(ids.map((id, i) => [`InstanceId.${i + 1}`, id])),
        );
      }
    });
    // One failed round (moto gone) must not fail every later call's settling.
    this.settling = next.catch(() => {});
    return next;
  }

  // ---- HTTP plumbing -------------------------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    const started = performance.now();
    const method = (req.method ?? "GET").toUpperCase();
    const url = req.url ?? "/";
    const call = parseCall(method, url, req.headers, body.toString("utf8"));
    this.callCounts.set(call.action, (this.callCounts.get(call.action) ?? 0) + 1);
    await this.settle();

    const fault = this.faults.take(call);
    if (fault?.kind === "slow") await this.sleep(fault.delayMs);
    if (fault?.kind === "drop-before") {
      req.socket.destroy();
      return;
    }
    let answer: Answer;
    const kind = fault?.kind;
    if (kind && isServiceFailure(kind)) answer = failureAnswer(call, kind);
    else if (fault?.kind === "error") {
      answer = errorAnswer(call, fault.status, fault.code, fault.message ?? fault.code);
    } else {
      const relay = () => this.moto.forward(method, url, req.headers, body);
      answer =
        call.service === "ec2"
          ? await handleEc2(call, { state: this.state, moto: this.moto, relay })
          : call.service === "ssm"
            ? await this.ssm.handle(call, { moto: this.moto, now: this.now, relay })
            : await relay();
    }
    if (fault?.kind === "drop-after") {
      req.socket.destroy();
      return;
    }
    this.reply(res, answer);
    this.handlingMs += performance.now() - started;
  }

  private reply(res: ServerResponse, answer: Answer): void {
    const payload = typeof answer.body === "string" ? Buffer.from(answer.body) : answer.body;
    res.writeHead(answer.status, { ...answer.headers, "content-length": String(payload.length) });
    res.end(payload);
  }
}

/** Starts the proxy (and, unless `motoEndpoint` is given, a moto behind it) on 127.0.0.1 at free ports. */
export async function startAwsEmulator(options: AwsEmulatorOptions = {}): Promise<AwsEmulator> {
  const owned = options.motoEndpoint ? null : await startMoto(options.motoOptions);
  const emulator = new AwsEmulator(options.motoEndpoint ?? (owned as MotoServer).endpoint, options, owned);
  try {
    await emulator.start();
  } catch (error) {
    await emulator.close();
    throw error;
  }
  return emulator;
}
