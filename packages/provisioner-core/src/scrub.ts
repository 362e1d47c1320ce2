/**
 * Takes secret values out of text before it becomes an error message, a step detail, an event or a log field.
 *
 * The first rule is that backends build their error messages from the operation, the status and fields they chose
 * (errors.ts, docker/errors.ts, flyio/api.ts, controlplane/client.ts), never from an upstream's raw answer. This is
 * the second layer: every backend knows the spec it was handed, so whatever text it passes on is scrubbed of that
 * spec's values and of its own credentials, in the forms an upstream is known to quote them (as is, JSON-escaped,
 * Go-quoted, or cut at a control character).
 */
import { DomainError } from "@molecule/contracts";
import { ProvisionerError } from "./errors.ts";
import type { ProvisionContext, StepReporter, WorkspaceSpec } from "./provisioner.ts";

export const SCRUBBED = "[redacted]";

/** Shorter secret values are not searched for: taking every "ab" out of a message would garble it. */
const MIN_SECRET_LENGTH = 4;
/** Non-secret env values (URLs, ports, ids) are scrubbed only when long enough to be worth hiding. */
const MIN_ENV_LENGTH = 8;
/** A piece of a value between two control characters, which an upstream may quote alone. */
const MIN_FRAGMENT_LENGTH = 6;
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this splits on
const CONTROL = /[\u0000-\u001f\u007f]/;

/** How Go's %q (strconv.Quote) writes `value`: Docker and runc quote environment variables this way. */
function goQuoted(value: string): string {
  let out = "";
  for (const char of value) {
    const code = char.codePointAt(0) ?? 0;
    if (char === "\\" || char === '"') out += `\\${char}`;
    else if (char === "\n") out += "\\n";
    else if (char === "\r") out += "\\r";
    else if (char === "\t") out += "\\t";
    else if (char === "\u0007") out += "\\a";
    else if (char === "\b") out += "\\b";
    else if (char === "\f") out += "\\f";
    else if (char === "\v") out += "\\v";
    else if (code < 0x20 || code === 0x7f) out += `\\x${code.toString(16).padStart(2, "0")}`;
    else out += char;
  }
  return out;
}

/** Every form of `value` an upstream may quote. */
function formsOf(value: string, minLength: number): string[] {
  if (value.length < minLength) return [];
  const forms = new Set([value, JSON.stringify(value).slice(1, -1), goQuoted(value)]);
  if (CONTROL.test(value)) {
    for (const fragment of value.split(CONTROL)) {
      if (fragment.length >= MIN_FRAGMENT_LENGTH) forms.add(fragment);
    }
  }
  return [...forms];
}

/**
 * An upstream's message with what it quotes taken off: everything from the first `{` or `[` (a request quoted as
 * JSON) and every double-quoted part (a variable quoted Go-style). Error kinds are recognised on what is left, so an
 * echoed request (a config naming its image registry, a secret that reads "no such image") cannot pass for one.
 */
export function unquoted(text: string): string {
  const cut = text.search(/[{[]/);
  return (cut === -1 ? text : text.slice(0, cut)).replace(/"(?:[^"\\]|\\.)*"?/g, '""');
}

export class Scrubber {
  private needles: string[] = [];

  /** Secret values (tokens, secret env values): scrubbed when at least 4 characters long. */
  add(...values: (string | null | undefined)[]): this {
    return this.addAll(values, MIN_SECRET_LENGTH);
  }

  /**
   * Every value of the spec's env: the secret ones as `add` does, the others when at least 8 characters long and not
   * one of the ids that messages name on purpose (the workspace, org and deployment).
   */
  addSpec(spec: Pick<WorkspaceSpec, "env" | "secretKeys"> & Partial<WorkspaceSpec>): this {
    const secret = new Set(spec.secretKeys);
    const ids = new Set([spec.workspaceId, spec.orgId, spec.deployment]);
    for (const [key, value] of Object.entries(spec.env)) {
      if (secret.has(key)) this.add(value);
      else if (!ids.has(value)) this.addAll([value], MIN_ENV_LENGTH);
    }
    return this;
  }

  /** `addSpec`, returning the spec: `const spec = scrub.learn(buildSpec())`. */
  learn<S extends Pick<WorkspaceSpec, "env" | "secretKeys"> & Partial<WorkspaceSpec>>(spec: S): S {
    this.addSpec(spec);
    return spec;
  }

  private addAll(values: (string | null | undefined)[], minLength: number): this {
    const next = new Set(this.needles);
    for (const value of values) if (value) for (const form of formsOf(value, minLength)) next.add(form);
    // Longest first, so a value is taken out whole before a fragment of it is looked for.
    this.needles = [...next].sort((a, b) => b.length - a.length);
    return this;
  }

  get empty(): boolean {
    return this.needles.length === 0;
  }

  text(value: string): string {
    let out = value;
    for (const needle of this.needles) if (out.includes(needle)) out = out.split(needle).join(SCRUBBED);
    return out;
  }

  /** `value` with every string in it scrubbed (objects and arrays walked, other values kept). */
  value<T>(value: T): T {
    if (typeof value === "string") return this.text(value) as T;
    if (Array.isArray(value)) return value.map((item) => this.value(item)) as T;
    if (value && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, this.value(v)])) as T;
    }
    return value;
  }

  /**
   * The error with its message, stack and details scrubbed. A ProvisionerError stays one (same code and retryable);
   * anything else becomes a plain Error of the same name, without the properties a library may have hung on it.
   */
  error(error: unknown): Error {
    if (error instanceof ProvisionerError) {
      const scrubbed = new ProvisionerError(
        error.code,
        this.text(error.message),
        error.retryable,
        this.value(error.details),
      );
      if (error.stack) scrubbed.stack = this.text(error.stack);
      return scrubbed;
    }
    const original = error instanceof Error ? error : new Error(String(error));
    const scrubbed = new Error(this.text(original.message));
    scrubbed.name = original.name;
    if (original.stack) scrubbed.stack = this.text(original.stack);
    const code = (original as { code?: unknown }).code;
    if (typeof code === "string") Object.assign(scrubbed, { code });
    return scrubbed;
  }

  /** A step reporter that scrubs each detail before passing it on. */
  reporter(step: StepReporter | undefined): StepReporter | undefined {
    if (!step) return undefined;
    return (name, detail) => step(name, detail === undefined ? undefined : this.text(detail));
  }

  /** `ctx` with its step reporter scrubbing details. */
  context<C extends ProvisionContext>(ctx: C | undefined): C | undefined {
    if (!ctx?.step) return ctx;
    return { ...ctx, step: this.reporter(ctx.step) };
  }

  /** Runs `fn`; a failure is rethrown scrubbed. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (error) {
      throw this.error(error);
    }
  }
}

/** A scrubber for the spec's values and the backend's own credentials. */
export function specScrubber(
  spec: Pick<WorkspaceSpec, "env" | "secretKeys"> & Partial<WorkspaceSpec>,
  ...credentials: (string | undefined)[]
): Scrubber {
  return new Scrubber().add(...credentials).addSpec(spec);
}

/** What a runner records and logs about a failed attempt. */
export interface FailureReport {
  /** The ProvisionerError's (or DomainError's) code, else `internal`. */
  code: string;
  /**
   * Safe to store, show and publish: the ProvisionerError's or DomainError's message (scrubbed), else
   * `internalMessage`.
   */
  message: string;
  retryable: boolean;
  /**
   * Fields for the log line: a ProvisionerError's code, message and details (`error`), or an unexpected error
   * scrubbed, with its stack (`err`): never a library's error object with what it hung on it (a driver's query
   * parameters, an engine's answer).
   */
  log: Record<string, unknown>;
}

/** Describes `error` for an operation row, an event and a log line, with `scrub`'s values taken out of all of them. */
export function describeFailure(
  error: unknown,
  internalMessage: string,
  scrub: Scrubber = new Scrubber(),
): FailureReport {
  if (error instanceof ProvisionerError) {
    const message = scrub.text(error.message);
    return {
      code: error.code,
      message,
      retryable: error.retryable,
      log: {
        error: { code: error.code, message, retryable: error.retryable, details: scrub.value(error.details) },
      },
    };
  }
  // A domain error (a value sealed with a key this process lacks, say) is written to be shown, and retrying the same
  // attempt cannot change it.
  if (error instanceof DomainError) {
    const message = scrub.text(error.message);
    return {
      code: error.code,
      message,
      retryable: false,
      log: { error: { code: error.code, message, details: scrub.value(error.details) } },
    };
  }
  return { code: "internal", message: internalMessage, retryable: false, log: { err: scrub.error(error) } };
}
