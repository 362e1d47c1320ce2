/**
 * The workspace's auth token (and its agent's inbound token, which came in the same register answer): where they come
 * from and where they are kept. A boot token is one-time, so an agent that restarts (container restart, CLI restart)
 * must re-use the tokens it got the first time; they are stored in the state directory, mode 0600, written atomically. A stored token that the platform rejects is replaced by
 * registering again when a (new) boot token is available.
 */
import { randomBytes } from "node:crypto";
import { chmod, mkdir, open, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { backoffDelay, sleep as realSleep, type Sleep } from "./backoff.ts";
import { type AgentCard, type PlatformClient, PlatformError, type RegisterResult } from "./client.ts";
import { errorFields, type Logger, silentLogger } from "./log.ts";

export const DEFAULT_STATE_DIR = "/workspace/.molecule";

/** `WORKSPACE_STATE_DIR` from the given environment, else `/workspace/.molecule`. */
export function defaultStateDir(env: Readonly<Record<string, string | undefined>>): string {
  const dir = env.WORKSPACE_STATE_DIR?.trim();
  return dir ? dir : DEFAULT_STATE_DIR;
}

export interface StoredCredentials {
  workspaceId: string;
  authToken: string;
  /** Null in a file written before the platform issued inbound tokens (or by a platform that issues none). */
  inboundToken: string | null;
  platformUrl: string;
  savedAt: string;
}

/** One file per workspace in `dir`, so several agents (CLI on a laptop) can share a state directory. */
export class CredentialStore {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  fileFor(workspaceId: string): string {
    const safe = /^[A-Za-z0-9_-]{1,64}$/.test(workspaceId)
      ? workspaceId
      : Buffer.from(workspaceId).toString("base64url").slice(0, 120);
    return join(this.dir, `credentials-${safe}.json`);
  }

  /** The stored credentials for this workspace, or null when none (or the file is unreadable garbage). */
  async load(workspaceId: string): Promise<StoredCredentials | null> {
    let text: string;
    try {
      text = await readFile(this.fileFor(workspaceId), "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw err;
    }
    try {
      const data = JSON.parse(text) as Partial<StoredCredentials>;
      if (data.workspaceId !== workspaceId || typeof data.authToken !== "string" || data.authToken === "") {
        return null;
      }
      return {
        workspaceId,
        authToken: data.authToken,
        inboundToken:
          typeof data.inboundToken === "string" && data.inboundToken !== "" ? data.inboundToken : null,
        platformUrl: String(data.platformUrl ?? ""),
        savedAt: String(data.savedAt ?? ""),
      };
    } catch {
      return null;
    }
  }

  /** Writes to a temporary file (0600) in the same directory, fsyncs it, then renames it over the old one. */
  async save(
    credentials: Omit<StoredCredentials, "savedAt" | "inboundToken"> & { inboundToken?: string | null },
  ): Promise<void> {
    const record: StoredCredentials = {
      ...credentials,
      inboundToken: credentials.inboundToken ?? null,
      savedAt: new Date().toISOString(),
    };
    await this.#writeAtomic(this.fileFor(credentials.workspaceId), `${JSON.stringify(record)}\n`);
  }

  /**
   * The port the agent listened on last time it was given port 0, so that a restarted agent (whose registered URL
   * cannot change without a new boot token) comes back on the same URL when it can.
   */
  async loadPort(workspaceId: string): Promise<number | null> {
    try {
      const port = Number(
        (await readFile(this.fileFor(workspaceId).replace(/\.json$/, ".port"), "utf8")).trim(),
      );
      return Number.isInteger(port) && port > 0 && port < 65_536 ? port : null;
    } catch {
      return null;
    }
  }

  async savePort(workspaceId: string, port: number): Promise<void> {
    await this.#writeAtomic(this.fileFor(workspaceId).replace(/\.json$/, ".port"), `${port}\n`);
  }

  async #writeAtomic(file: string, content: string): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
    const handle = await open(tmp, "wx", 0o600);
    try {
      await handle.writeFile(content, "utf8");
      await handle.chmod(0o600); // in case a umask or an odd filesystem widened it
      await handle.sync();
    } catch (err) {
      await handle.close();
      await rm(tmp, { force: true });
      throw err;
    }
    await handle.close();
    try {
      await rename(tmp, file);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    await chmod(file, 0o600);
  }

  /** Forgets the token (the remembered port stays). */
  async clear(workspaceId: string): Promise<void> {
    await rm(this.fileFor(workspaceId), { force: true });
  }
}

export type CredentialsErrorCode =
  | "boot_token_rejected"
  | "token_rejected"
  | "no_credentials"
  | "workspace_gone";

/** Credentials cannot be obtained without a person acting (a new boot token, or the workspace is gone). */
export class CredentialsError extends Error {
  readonly code: CredentialsErrorCode;

  constructor(code: CredentialsErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CredentialsError";
    this.code = code;
  }
}

export type CredentialSource = "explicit" | "stored" | "registered";

/** What a register answer carried beyond the tokens (see `RegisterResult`); absent where the platform sent nothing. */
export type RegisterOutcome = Pick<RegisterResult, "secrets" | "status" | "heartbeatIntervalSeconds">;

export interface CredentialManagerOptions {
  client: Pick<PlatformClient, "register" | "workspaceId" | "platformUrl">;
  /** Where the auth token is persisted; null keeps it in memory only. */
  store: CredentialStore | null;
  bootToken?: string;
  /** A token given by the operator (e.g. from a register answer); used before the store. */
  authToken?: string;
  /** The inbound token from the same register answer as `authToken`. */
  inboundToken?: string;
  /** What register sends; read at register time so the real listening URL is used. */
  registration: () => { url: string | null; agentCard: AgentCard };
  /** Backoff between register attempts on retryable errors. Default 500 ms doubling to 30 s. */
  retry?: { baseMs: number; maxMs: number };
  sleep?: Sleep;
  random?: () => number;
  log?: Logger;
}

/**
 * Holds the current auth token and inbound token. `acquire` picks explicit > stored > register (retrying retryable failures until the
 * signal aborts); `renew` replaces a token the platform rejected; `withToken` runs a call and renews once on 401.
 */
export class CredentialManager {
  readonly #opts: CredentialManagerOptions;
  readonly #log: Logger;
  #token: string | null = null;
  #inboundToken: string | null = null;
  #source: CredentialSource | null = null;
  #explicitUsed = false;
  #bootTokenSpent = false;
  #persisting: Promise<void> = Promise.resolve();
  #answer: RegisterOutcome | null = null;

  constructor(options: CredentialManagerOptions) {
    this.#opts = options;
    this.#log = options.log ?? silentLogger;
  }

  get token(): string | null {
    return this.#token;
  }

  /**
   * What the platform's A2A proxy presents to this agent; null while there is no auth token, and when the platform
   * gave none with it.
   */
  get inboundToken(): string | null {
    return this.#inboundToken;
  }

  get source(): CredentialSource | null {
    return this.#source;
  }

  /**
   * What the last registration's answer said beyond the tokens (the secrets it carried, the workspace's status), once:
   * null when the current token was not registered since the last call. Never log it.
   */
  takeRegistration(): RegisterOutcome | null {
    const answer = this.#answer;
    this.#answer = null;
    return answer;
  }

  /**
   * The token to use, registering when there is none; resolves once a registered token is in the store, or, with
   * `persistInBackground`, at once while the write goes on (see `persisted`).
   */
  async acquire(signal?: AbortSignal, options: { persistInBackground?: boolean } = {}): Promise<string> {
    const token = await this.#acquire(signal);
    if (!options.persistInBackground) await this.#persisting;
    return token;
  }

  async #acquire(signal?: AbortSignal): Promise<string> {
    if (this.#token) return this.#token;
    const { authToken, inboundToken, store, client } = this.#opts;
    if (authToken && !this.#explicitUsed) {
      this.#explicitUsed = true;
      return this.#set(authToken, inboundToken ?? null, "explicit");
    }
    if (store) {
      let stored: StoredCredentials | null = null;
      try {
        stored = await store.load(client.workspaceId);
      } catch (err) {
        this.#log("warn", "credentials_unreadable", { dir: store.dir, ...errorFields(err) });
      }
      if (stored?.inboundToken === null && this.#opts.bootToken && !this.#bootTokenSpent) {
        // Stored before the platform issued inbound tokens: a fresh boot token (a restart) registers for one, so
        // the agent stops answering callers that go around the platform. A spent one leaves the stored token.
        try {
          return await this.#register(signal);
        } catch (err) {
          if (!(err instanceof CredentialsError && err.code === "boot_token_rejected")) throw err;
        }
      }
      if (stored) return this.#set(stored.authToken, stored.inboundToken, "stored");
    }
    return this.#register(signal);
  }

  /**
   * Resolves once the token registered last is in the store, or failed to get there (logged, never thrown). An agent
   * starting up acquires with `persistInBackground`, so its next requests overlap that write (an fsync), and waits
   * for this before its heartbeat loop and its `agent_ready`: an agent that said `agent_ready` has its token on disk. (The
   * platform may show it online a moment earlier: a registration answered `online` counts as its first heartbeat.)
   */
  persisted(): Promise<void> {
    return this.#persisting;
  }

  /** The current token was rejected (401): forget it and register again if a boot token is still unspent. */
  async renew(signal?: AbortSignal): Promise<string> {
    const rejected = this.#source;
    this.#token = null;
    this.#inboundToken = null;
    this.#source = null;
    const { store, client } = this.#opts;
    // A write still under way would put the rejected token back after the clear.
    await this.#persisting;
    if (store && (rejected === "stored" || rejected === "registered"))
      await store.clear(client.workspaceId).catch(() => {});
    this.#log("warn", "auth_token_rejected", { source: rejected });
    if (!this.#opts.bootToken || this.#bootTokenSpent) {
      throw new CredentialsError(
        "token_rejected",
        `the platform rejected the ${rejected ?? ""} auth token of workspace ${client.workspaceId} and no unused boot ` +
          "token is available; issue a new boot token for this workspace and restart the agent with it",
      );
    }
    const token = await this.#register(signal);
    await this.#persisting;
    return token;
  }

  /** Runs `call` with the token (not waiting for a write of it still under way), renewing once on 401. */
  async withToken<T>(signal: AbortSignal | undefined, call: (token: string) => Promise<T>): Promise<T> {
    const token = await this.#acquire(signal);
    try {
      return await call(token);
    } catch (err) {
      if (!(err instanceof PlatformError) || !err.unauthorized) throw err;
      return call(await this.renew(signal));
    }
  }

  #set(token: string, inboundToken: string | null, source: CredentialSource): string {
    this.#token = token;
    this.#inboundToken = inboundToken;
    this.#source = source;
    if (source !== "registered") {
      this.#answer = null;
      this.#log("info", "credentials_reused", { source });
    }
    return token;
  }

  async #register(signal?: AbortSignal): Promise<string> {
    const { bootToken, client, store } = this.#opts;
    if (!bootToken || this.#bootTokenSpent) {
      throw new CredentialsError(
        "no_credentials",
        `workspace ${client.workspaceId} has no auth token${store ? ` stored in ${store.dir}` : ""} and no ` +
          "unused boot token; start the agent with the boot token from the workspace creation (WORKSPACE_BOOT_TOKEN)",
      );
    }
    const retry = this.#opts.retry ?? { baseMs: 500, maxMs: 30_000 };
    const sleep = this.#opts.sleep ?? realSleep;
    for (let attempt = 1; ; attempt++) {
      signal?.throwIfAborted();
      const registration = this.#opts.registration();
      try {
        const res = await client.register(bootToken, registration, { signal });
        this.#bootTokenSpent = true;
        this.#set(res.authToken, res.inboundToken, "registered");
        this.#answer = {
          ...(res.secrets ? { secrets: res.secrets } : {}),
          ...(res.status ? { status: res.status } : {}),
          ...(res.heartbeatIntervalSeconds ? { heartbeatIntervalSeconds: res.heartbeatIntervalSeconds } : {}),
        };
        this.#log("info", "registered", { url: registration.url, attempts: attempt });
        if (store) {
          const record = {
            workspaceId: client.workspaceId,
            authToken: res.authToken,
            inboundToken: res.inboundToken,
            platformUrl: client.platformUrl,
          };
          // After any earlier write, so the files land in the order the tokens came.
          this.#persisting = this.#persisting.then(() =>
            store.save(record).catch((err: unknown) => {
              // The agent still works; it just cannot survive a restart without a new boot token.
              this.#log("warn", "credentials_not_persisted", { dir: store.dir, ...errorFields(err) });
            }),
          );
        }
        return res.authToken;
      } catch (err) {
        signal?.throwIfAborted();
        if (!(err instanceof PlatformError) || !err.retryable) {
          if (err instanceof PlatformError && err.unauthorized) {
            this.#bootTokenSpent = true;
            throw new CredentialsError(
              "boot_token_rejected",
              `the platform rejected the boot token of workspace ${client.workspaceId} (already used or invalid) ` +
                `and no usable stored auth token exists${store ? ` in ${store.dir}` : ""}; issue a new boot token`,
              { cause: err },
            );
          }
          if (err instanceof PlatformError && err.workspaceGone) {
            throw new CredentialsError(
              "workspace_gone",
              `workspace ${client.workspaceId} does not exist on ${client.platformUrl}`,
              { cause: err },
            );
          }
          throw err;
        }
        const delayMs = backoffDelay(attempt, { ...retry, random: this.#opts.random });
        this.#log("warn", "register_retry", { attempt, delayMs, ...errorFields(err) });
        await sleep(delayMs, signal);
      }
    }
  }
}
