/**
 * The processes of the chaos run: replicas of a service that are SIGKILLed and started again on the same port (so
 * agents' PLATFORM_URL and the other replicas' view of the world stay valid), with every incarnation's output kept
 * for the failure message, and any exit the run did not cause recorded as a crash.
 */
import type { PlatformExit } from "../process.ts";

/** What a started service process offers the fleet (PlatformProcess and ControlPlaneProcess both do). */
export interface RunningProcess {
  url: string;
  pid: number;
  output(): string;
  kill(signal?: NodeJS.Signals): Promise<PlatformExit>;
  waitForExit(timeoutMs?: number): Promise<PlatformExit>;
}

export interface ReplicaSpec<P extends RunningProcess> {
  /** `tenant-a`, `cp-b`, … */
  name: string;
  service: "tenant" | "control-plane";
  /** Its fixed address, the same for every incarnation. */
  url: string;
  /** Starts one incarnation on the replica's fixed port and resolves once it answers /health. */
  start(): Promise<P>;
}

export interface Crash {
  replica: string;
  exit: PlatformExit;
  output: string;
}

const FOREVER_MS = 7 * 24 * 3_600_000;
/** How much of each replica's output a failure message shows. */
const OUTPUT_TAIL_CHARS = 30_000;

export class Replica<P extends RunningProcess = RunningProcess> {
  private current: P | null = null;
  private starting: Promise<P> | null = null;
  /** Output of incarnations that have ended, oldest first. */
  private readonly history: string[] = [];
  private expectedExit = false;
  starts = 0;
  kills = 0;

  constructor(
    readonly spec: ReplicaSpec<P>,
    private readonly onCrash: (crash: Crash) => void,
  ) {}

  get name(): string {
    return this.spec.name;
  }

  get service(): ReplicaSpec<P>["service"] {
    return this.spec.service;
  }

  get url(): string {
    return this.spec.url;
  }

  /** The running incarnation, or null while it is down or starting. */
  get process(): P | null {
    return this.current;
  }

  get isUp(): boolean {
    return this.current !== null;
  }

  /** Starts an incarnation unless one is running or starting. */
  async start(): Promise<P> {
    if (this.current) return this.current;
    this.starting ??= this.spec
      .start()
      .then((started) => {
        this.starts += 1;
        this.current = started;
        this.expectedExit = false;
        void started.waitForExit(FOREVER_MS).then(
          (exit) => this.ended(started, exit),
          () => {},
        );
        return started;
      })
      .finally(() => {
        this.starting = null;
      });
    return this.starting;
  }

  /** SIGKILL, wait for the exit; a no-op while down. */
  async kill(): Promise<void> {
    const running = this.current;
    if (!running) return;
    this.expectedExit = true;
    this.kills += 1;
    await running.kill("SIGKILL");
    this.ended(running, { code: null, signal: "SIGKILL" });
  }

  /** Every incarnation's output, the last `OUTPUT_TAIL_CHARS` characters. */
  output(): string {
    const all = [...this.history, this.current?.output() ?? ""].join("\n--- restarted ---\n");
    return all.length > OUTPUT_TAIL_CHARS ? `…${all.slice(-OUTPUT_TAIL_CHARS)}` : all;
  }

  private ended(incarnation: P, exit: PlatformExit): void {
    if (this.current !== incarnation) return;
    this.current = null;
    this.history.push(incarnation.output());
    if (!this.expectedExit) this.onCrash({ replica: this.name, exit, output: incarnation.output() });
  }
}

export class Fleet {
  readonly replicas: Replica[];
  readonly crashes: Crash[] = [];

  constructor(specs: ReplicaSpec<RunningProcess>[]) {
    this.replicas = specs.map((spec) => new Replica(spec, (crash) => this.crashes.push(crash)));
  }

  of(service: ReplicaSpec<RunningProcess>["service"]): Replica[] {
    return this.replicas.filter((replica) => replica.service === service);
  }

  byName(name: string): Replica {
    const found = this.replicas.find((replica) => replica.name === name);
    if (!found) throw new Error(`no replica ${name}`);
    return found;
  }

  /** Starts every replica that is down (all at once). */
  async ensureAllUp(): Promise<void> {
    await Promise.all(this.replicas.map((replica) => replica.start()));
  }

  get kills(): number {
    return this.replicas.reduce((sum, replica) => sum + replica.kills, 0);
  }

  /** Each replica's output, for a failure message. */
  outputs(): string {
    return this.replicas.map((replica) => `===== ${replica.name} =====\n${replica.output()}`).join("\n");
  }
}
