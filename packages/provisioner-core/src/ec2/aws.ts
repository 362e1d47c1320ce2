import { AsyncLocalStorage } from "node:async_hooks";
/**
 * AWS access for every EC2 role (the workspace provisioner, the control plane's tenant backend): the SDK v3 clients
 * built from injected settings (endpoint, region, credentials provider: no process.env here), and one call wrapper.
 *
 * The SDK's own retries are off (maxAttempts 1). Throttling (`RequestLimitExceeded`, `Throttling*`), 5xx answers and
 * network errors are retried under our one backoff policy (`@molecule/contracts/backoff`, with the clock and sleep
 * injected), and every failure becomes a ProvisionerError whose message is built from the service, the operation,
 * the AWS error code and the request id: never from AWS's message text, which can quote a request's parameters
 * (user-data, a secret's value).
 */
import { EC2Client, type EC2ClientConfig } from "@aws-sdk/client-ec2";
import { SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { SSMClient } from "@aws-sdk/client-ssm";
import { Backoff, type RetryPolicy } from "@molecule/contracts";
import { ProvisionerError, type ProvisionerErrorCode } from "../errors.ts";
import { connectionCause, isConnectionError, pauseUnlessAborted } from "../retry.ts";

export interface AwsLogger {
  warn(fields: Record<string, unknown>, message: string): void;
  info?(fields: Record<string, unknown>, message: string): void;
}

/** A static key pair or a provider (the control plane passes STS AssumeRole credentials for a second account). */
export type AwsCredentials = EC2ClientConfig["credentials"];

export interface AwsAccessOptions {
  /** AWS_REGION */
  region: string;
  /** AWS_ENDPOINT_URL, read by the apps' config loaders (moto in tests); default: AWS's endpoint for the region. */
  endpoint?: string;
  /** Default: the SDK's default provider chain. */
  credentials?: AwsCredentials;
  /** Per request: an answer must arrive within this (default 30 s). */
  requestTimeoutMs?: number;
  /** Bounds for retrying throttling, 5xx and dropped connections (default DEFAULT_AWS_RETRY). */
  retry?: Partial<RetryPolicy>;
  clock?: { now(): number };
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
  logger?: AwsLogger;
}

export const DEFAULT_AWS_RETRY: RetryPolicy = {
  maxAttempts: 6,
  baseDelayMs: 250,
  maxDelayMs: 10_000,
  maxElapsedMs: 60_000,
};

export type AwsService = "EC2" | "SecretsManager" | "SSM";

/**
 * Answers about a resource made moments ago that AWS does not show everywhere yet (eventual consistency): a new
 * security group named by AuthorizeSecurityGroupIngress or RunInstances. Calls that name what they just made retry
 * them (`pauseOrThrow`); elsewhere they mean what they say.
 */
export const NOT_YET_VISIBLE: readonly string[] = ["InvalidGroup.NotFound"];

export interface AwsCallOptions {
  /** false for a create that is not idempotent by itself: the caller looks for the resource before trying again. */
  retry?: boolean;
  signal?: AbortSignal;
}

const THROTTLING = new Set([
  "RequestLimitExceeded",
  "Throttling",
  "ThrottlingException",
  "ThrottledException",
  "RequestThrottled",
  "RequestThrottledException",
  "TooManyRequestsException",
  "SlowDown",
  "PriorRequestNotComplete",
]);
const UNAVAILABLE = new Set([
  "InternalError",
  "InternalFailure",
  "InternalServiceError",
  "InternalServiceErrorException",
  "ServiceUnavailable",
  "ServiceUnavailableException",
  "Unavailable",
]);
const AUTH = new Set([
  "AuthFailure",
  "UnauthorizedOperation",
  "AccessDenied",
  "AccessDeniedException",
  "InvalidClientTokenId",
  "SignatureDoesNotMatch",
  "UnrecognizedClientException",
  "OptInRequired",
]);
const INVALID = new Set([
  "InvalidParameter",
  "InvalidParameterValue",
  "InvalidParameterCombination",
  "InvalidParameterException",
  "InvalidRequestException",
  "MissingParameter",
  "ValidationError",
  "ValidationException",
  "InvalidAMIID.Malformed",
  "InvalidAMIID.NotFound",
  "InvalidSubnetID.NotFound",
  "InvalidKeyPair.NotFound",
  "InvalidVpcID.NotFound",
  "InvalidBlockDeviceMapping",
  "Unsupported",
  "UnsupportedOperation",
  "UnsupportedHibernationConfiguration",
  "IdempotentParameterMismatch",
  "MalformedPolicyDocumentException",
]);
const CAPACITY = new Set(["InsufficientInstanceCapacity", "InstanceLimitExceeded", "VcpuLimitExceeded"]);
/** States a call may meet while another change is under way: a later attempt may succeed. */
const BUSY = new Set(["DependencyViolation", "IncorrectInstanceState", "IncorrectState", "InvalidState"]);

interface SdkErrorShape {
  name?: unknown;
  Code?: unknown;
  code?: unknown;
  $fault?: unknown;
  $metadata?: { httpStatusCode?: unknown; requestId?: unknown };
}

/** A token AWS sent (an error code, a request id), passed on only when it has the shape of one. */
function safeToken(value: unknown, pattern: RegExp): string | undefined {
  return typeof value === "string" && pattern.test(value) ? value : undefined;
}

/** The AWS error code of an SDK error (`InvalidInstanceID.NotFound`), or undefined for a non-AWS failure. */
export function awsErrorCode(error: unknown): string | undefined {
  if (error instanceof ProvisionerError) {
    return typeof error.details.awsCode === "string" ? error.details.awsCode : undefined;
  }
  const e = error as SdkErrorShape | undefined;
  if (!e?.$metadata) return undefined;
  return safeToken(e.Code ?? e.name, /^[A-Za-z][A-Za-z0-9.]{0,79}$/);
}

/** True when `error` is AWS's answer `code` (or one ending in `.code`, e.g. `.NotFound`). */
export function isAwsError(error: unknown, ...codes: string[]): boolean {
  const code = awsErrorCode(error);
  return code !== undefined && codes.some((c) => code === c || (c.startsWith(".") && code.endsWith(c)));
}

/** True for answers that mean "no such resource": `*.NotFound`, `ResourceNotFoundException`, `NoSuchEntity`. */
export function isAwsNotFound(error: unknown): boolean {
  return isAwsError(error, ".NotFound", "ResourceNotFoundException", "NoSuchEntity", "InvalidGroup.NotFound");
}

function isAbort(error: unknown): boolean {
  const name = (error as { name?: unknown })?.name;
  return name === "AbortError";
}

/** Network-level failures the SDK reports without an answer (reset, refused, timed out). */
function isNetworkError(error: unknown): boolean {
  const e = error as SdkErrorShape | undefined;
  if (e?.$metadata?.httpStatusCode !== undefined) return false;
  return isConnectionError(error) || e?.name === "TimeoutError" || e?.name === "RequestTimeout";
}

/**
 * Maps an SDK failure to a ProvisionerError: code and `retryable` from the AWS error code and HTTP status, the message
 * from fixed words. `details.transient` marks what the call wrapper retries by itself.
 */
export function awsError(service: AwsService, op: string, error: unknown): ProvisionerError {
  if (error instanceof ProvisionerError) return error;
  if (isAbort(error)) {
    return new ProvisionerError("timeout", `AWS ${service} ${op} aborted`, true, { service, operation: op });
  }
  if (isNetworkError(error)) {
    const cause = connectionCause(error);
    return new ProvisionerError(
      "backend_unavailable",
      `AWS ${service} ${op} failed: connection error (${cause}); the request may have been applied`,
      true,
      { service, operation: op, transient: true, connection: true },
    );
  }
  const e = (error ?? {}) as SdkErrorShape;
  const status = typeof e.$metadata?.httpStatusCode === "number" ? e.$metadata.httpStatusCode : undefined;
  const awsCode = awsErrorCode(error);
  const requestId = safeToken(e.$metadata?.requestId, /^[A-Za-z0-9-]{1,100}$/);
  let code: ProvisionerErrorCode = "backend_error";
  let retryable = false;
  let transient = false;
  let reason = "unexpected answer";
  if (awsCode && CAPACITY.has(awsCode)) {
    [code, retryable, reason] = ["capacity", true, "insufficient capacity or a limit reached"];
  } else if (awsCode && THROTTLING.has(awsCode)) {
    [code, retryable, transient, reason] = ["rate_limited", true, true, "throttled"];
  } else if ((status !== undefined && status >= 500) || (awsCode && UNAVAILABLE.has(awsCode))) {
    [code, retryable, transient, reason] = ["backend_unavailable", true, true, "AWS internal error"];
  } else if (status === 429) {
    [code, retryable, transient, reason] = ["rate_limited", true, true, "throttled"];
  } else if (awsCode && /^(ExpiredToken|RequestExpired)/.test(awsCode)) {
    [code, retryable, reason] = ["backend_error", true, "credentials expired (check the AWS credentials)"];
  } else if (awsCode && AUTH.has(awsCode)) {
    reason = "not authorised (check the AWS credentials and the role's permissions)";
  } else if (awsCode && BUSY.has(awsCode)) {
    [code, retryable, reason] = ["conflict", true, "the resource is in use or changing state"];
  } else if (awsCode && INVALID.has(awsCode)) {
    [code, reason] = ["invalid_spec", "the request was refused as invalid"];
  } else if (isAwsNotFound(error)) {
    [code, reason] = ["not_found", "not found"];
  } else if (awsCode && /Duplicate$|^ResourceExistsException$|AlreadyExists/.test(awsCode)) {
    [code, reason] = ["conflict", "already exists"];
  }
  const what = [awsCode, status === undefined ? undefined : `HTTP ${status}`].filter(Boolean).join(", ");
  return new ProvisionerError(
    code,
    `AWS ${service} ${op} failed: ${reason}${what ? ` (${what})` : ""} (request id ${requestId ?? "none"})`,
    retryable,
    { service, operation: op, awsCode, httpStatus: status, awsRequestId: requestId, transient },
  );
}

/**
 * The EC2, Secrets Manager and SSM clients and the one call wrapper both EC2 roles use. The SDK retries nothing; `call`
 * retries transient failures under the policy, and maps every failure with `awsError`.
 */
export class AwsAccess {
  readonly ec2: EC2Client;
  readonly secrets: SecretsManagerClient;
  readonly ssm: SSMClient;
  readonly region: string;
  readonly now: () => number;
  readonly sleep: (ms: number) => Promise<void>;
  private readonly policy: RetryPolicy;
  private readonly random: () => number;
  /** The signal of the lifecycle call under way (see `underSignal`), so that helpers need not pass it along. */
  private readonly callSignal = new AsyncLocalStorage<AbortSignal | undefined>();

  constructor(private readonly options: AwsAccessOptions) {
    if (!options.region)
      throw new ProvisionerError("invalid_spec", "ec2: region (AWS_REGION) is required", false);
    this.region = options.region;
    this.now = options.clock ? () => (options.clock as { now(): number }).now() : Date.now;
    this.sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.random = options.random ?? Math.random;
    this.policy = { ...DEFAULT_AWS_RETRY, ...options.retry };
    const timeout = options.requestTimeoutMs ?? 30_000;
    const config = {
      region: options.region,
      ...(options.endpoint ? { endpoint: options.endpoint } : {}),
      ...(options.credentials ? { credentials: options.credentials } : {}),
      maxAttempts: 1,
      requestHandler: { requestTimeout: timeout, connectionTimeout: timeout },
    };
    this.ec2 = new EC2Client(config);
    this.secrets = new SecretsManagerClient(config);
    this.ssm = new SSMClient(config);
  }

  /** A fresh retry budget under this access's policy, for callers that retry a sequence of calls themselves. */
  backoff(): Backoff {
    return new Backoff(this.policy, this.now, this.random);
  }

  /**
   * Runs one AWS request (`send`), retrying throttling, 5xx and network errors under the policy unless `retry` is
   * false. Throws the mapped ProvisionerError; its `details.awsCode` lets callers accept answers (`.NotFound`).
   */
  async call<T>(
    service: AwsService,
    op: string,
    send: (signal?: AbortSignal) => Promise<T>,
    options: AwsCallOptions = {},
  ): Promise<T> {
    const backoff = this.backoff();
    const signal = options.signal ?? this.callSignal.getStore();
    for (;;) {
      if (signal?.aborted) throw awsError(service, op, { name: "AbortError" });
      let failure: ProvisionerError;
      try {
        return await send(signal);
      } catch (error) {
        failure = awsError(service, op, error);
        if (options.retry === false || failure.details.transient !== true) throw failure;
      }
      const delay = backoff.next();
      if (delay === null) {
        if (backoff.attempts > 1)
          failure.message = `${failure.message}; gave up after ${backoff.attempts} attempts`;
        throw failure;
      }
      this.options.logger?.warn(
        { service, operation: op, attempt: backoff.attempts, delayMs: delay, error: failure.message },
        "aws request failed; retrying",
      );
      await this.pause(delay);
    }
  }

  /**
   * After a failed attempt of a sequence the caller retries itself: waits (the injected sleep) when the failure is
   * transient, or one of `notYetVisible` (an answer about something made moments ago, e.g. NOT_YET_VISIBLE), and the
   * budget allows; otherwise throws. A not-yet-visible answer that outlasts the budget is thrown retryable.
   */
  async pauseOrThrow(backoff: Backoff, error: unknown, notYetVisible: readonly string[] = []): Promise<void> {
    const lagging = notYetVisible.length > 0 && isAwsError(error, ...notYetVisible);
    if (!lagging && (!(error instanceof ProvisionerError) || error.details.transient !== true)) throw error;
    const delay = backoff.next();
    if (delay === null) {
      if (lagging && error instanceof ProvisionerError) {
        throw new ProvisionerError(
          error.code,
          `${error.message}; still not visible, retry later`,
          true,
          error.details,
        );
      }
      throw error;
    }
    await this.pause(delay);
  }

  /**
   * Runs `fn` (one lifecycle call) under `signal`: every request it makes through `call` and every `pause` ends with
   * a retryable `timeout` once the signal fires.
   */
  underSignal<T>(signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    return this.callSignal.run(signal, fn);
  }

  /** Waits `ms` (the injected sleep), or ends with a retryable `timeout` as soon as the current call's signal fires. */
  pause(ms: number): Promise<void> {
    return pauseUnlessAborted(this.sleep, ms, this.callSignal.getStore(), "AWS");
  }

  /** Closes the SDK clients' sockets. */
  destroy(): void {
    this.ec2.destroy();
    this.secrets.destroy();
    this.ssm.destroy();
  }
}
