import { DEFAULT_CP_PROVISION_URL } from "@molecule/provisioner-core";
import { describe, expect, it } from "vitest";
import { CLOUD_CREDENTIAL_VARIABLES, loadConfig } from "./config.ts";

describe("loadConfig", () => {
  it("has defaults a self-hoster can start with", () => {
    const config = loadConfig({});
    expect(config.http.port).toBe(8080);
    expect(config.data.dir).toBe("./.data");
    expect(config.workspaces.allowedRuntimes).toEqual(["echo"]);
    expect(config.liveness.staleAfterMs).toBe(90_000);
    expect(config.org.saas).toBe(false);
  });

  it("coerces and splits", () => {
    const config = loadConfig({
      PORT: "9000",
      ALLOWED_RUNTIMES: "echo, claude ,",
      HEARTBEAT_STALE_AFTER: "5",
    });
    expect(config.http.port).toBe(9000);
    expect(config.workspaces.allowedRuntimes).toEqual(["echo", "claude"]);
    expect(config.liveness.staleAfterMs).toBe(5_000);
  });

  it("idle suspend is off unless IDLE_SUSPEND_AFTER is a duration; A2A waits 60 s for a wake by default", () => {
    expect(loadConfig({}).idle.suspendAfterMs).toBeNull();
    for (const off of ["", "0", "off"])
      expect(loadConfig({ IDLE_SUSPEND_AFTER: off }).idle.suspendAfterMs).toBeNull();
    expect(loadConfig({ IDLE_SUSPEND_AFTER: "15m" }).idle.suspendAfterMs).toBe(900_000);
    expect(loadConfig({ IDLE_SUSPEND_AFTER: "600" }).idle.suspendAfterMs).toBe(600_000);
    expect(() => loadConfig({ IDLE_SUSPEND_AFTER: "soon" })).toThrow(/IDLE_SUSPEND_AFTER/);
    expect(() => loadConfig({ IDLE_SUSPEND_AFTER: "10ms" })).toThrow(/IDLE_SUSPEND_AFTER/);
    expect(loadConfig({}).a2a.wakeTimeoutMs).toBe(60_000);
    expect(loadConfig({ A2A_WAKE_TIMEOUT_SECONDS: "5" }).a2a.wakeTimeoutMs).toBe(5_000);
    expect(() => loadConfig({ A2A_WAKE_TIMEOUT_SECONDS: "0" })).toThrow(/A2A_WAKE_TIMEOUT_SECONDS/);
  });

  it("stops with one line naming the variable", () => {
    expect(() => loadConfig({ PORT: "http" })).toThrow(/PORT/);
    expect(() => loadConfig({ ADMIN_TOKEN: "short" })).toThrow(/ADMIN_TOKEN/);
  });

  it("refuses production without an admin token or a secrets key", () => {
    expect(() => loadConfig({ MOLECULE_ENV: "production" })).toThrow(/ADMIN_TOKEN is required/);
    expect(() =>
      loadConfig({ MOLECULE_ENV: "production", ADMIN_TOKEN: "a-long-enough-admin-token" }),
    ).toThrow(/SECRETS_ENCRYPTION_KEY is required/);
  });

  it("applies the production checks to MOLECULE_ENV=prod too, and keeps the name as given", () => {
    expect(() => loadConfig({ MOLECULE_ENV: "prod" })).toThrow(
      "ADMIN_TOKEN is required when MOLECULE_ENV=prod",
    );
    const strict = { ADMIN_TOKEN: "a-long-enough-admin-token", SECRETS_ENCRYPTION_KEY: "a".repeat(64) };
    expect(loadConfig({ ...strict, MOLECULE_ENV: "prod" }).environment).toBe("prod");
    for (const name of ["dev", "staging", "test", "development"]) {
      expect(loadConfig({ MOLECULE_ENV: name }).environment).toBe(name);
    }
    expect(() => loadConfig({ MOLECULE_ENV: "qa" })).toThrow(/MOLECULE_ENV/);
  });

  it("MOLECULE_ORG_ID turns on SaaS mode", () => {
    const config = loadConfig({
      MOLECULE_ORG_ID: "org_abc",
      CP_TENANT_TOKEN: "cpt",
      PROVISION_SHARED_SECRET: "key",
    });
    expect(config.org).toEqual({ id: "org_abc", saas: true });
  });
});

describe("rate limits", () => {
  it("default to budgets per credential a minute: api 3000, agent 600, a2a 6000, 100,000 credentials kept", () => {
    expect(loadConfig({}).rateLimits).toEqual({ api: 3000, agent: 600, a2a: 6000, maxKeys: 100_000 });
  });

  it("take each budget as given, 0 turning it off", () => {
    const config = loadConfig({
      RATE_LIMIT_API_PER_MINUTE: "60",
      RATE_LIMIT_AGENT_PER_MINUTE: "0",
      RATE_LIMIT_A2A_PER_MINUTE: "120",
      RATE_LIMIT_MAX_KEYS: "5000",
    });
    expect(config.rateLimits).toEqual({ api: 60, agent: 0, a2a: 120, maxKeys: 5000 });
  });

  it("stop start-up with one line naming a bad value", () => {
    expect(() => loadConfig({ RATE_LIMIT_AGENT_PER_MINUTE: "-5" })).toThrow(
      /^invalid configuration: RATE_LIMIT_AGENT_PER_MINUTE: /,
    );
    expect(() => loadConfig({ RATE_LIMIT_MAX_KEYS: "0" })).toThrow(
      /^invalid configuration: RATE_LIMIT_MAX_KEYS: /,
    );
  });
});

describe("operation deadlines and retention", () => {
  it("gives every kind a deadline (15 min for what creates, 10 min for the rest) and 30 days of finished operations", () => {
    const config = loadConfig({});
    expect(config.operations.deadlinesMs).toEqual({
      provision: 900_000,
      start: 900_000,
      restart: 900_000,
      redeploy: 900_000,
      stop: 600_000,
      suspend: 600_000,
      destroy: 600_000,
    });
    expect(config.retention).toEqual({
      operationsMs: 30 * 86_400_000,
      backupRecordsMs: 90 * 86_400_000,
      sweepIntervalMs: 3_600_000,
    });
  });

  it("OPERATION_DEADLINES overrides some kinds; a bad pair stops start-up with one line", () => {
    const config = loadConfig({
      OPERATION_DEADLINES: "provision=1800,destroy=120",
      OPERATION_RETENTION_DAYS: "7",
    });
    expect(config.operations.deadlinesMs).toMatchObject({
      provision: 1_800_000,
      destroy: 120_000,
      start: 900_000,
    });
    expect(config.retention.operationsMs).toBe(7 * 86_400_000);
    expect(() => loadConfig({ OPERATION_DEADLINES: "provision_tenant=60" })).toThrow(
      'invalid configuration: OPERATION_DEADLINES: "provision_tenant=60" is not kind=seconds with seconds above 0 and a kind among provision, start, restart, redeploy, stop, suspend, destroy',
    );
  });
});

describe("loadConfig in controlplane mode", () => {
  const saas = {
    MOLECULE_ORG_ID: "org_abc",
    CP_TENANT_TOKEN: "cpt_tenant_credential",
    PROVISION_SHARED_SECRET: "derived-org-signing-key",
  };

  it("takes the control plane's URL, credential and signing key, with the documented default URL", () => {
    const config = loadConfig(saas);
    expect(config.controlPlane).toEqual({
      url: DEFAULT_CP_PROVISION_URL,
      tenantToken: "cpt_tenant_credential",
      signingKey: "derived-org-signing-key",
      startupWaitMs: 60_000,
      image: null,
    });
    expect(DEFAULT_CP_PROVISION_URL).toBe("http://127.0.0.1:8090");
    expect(
      loadConfig({ ...saas, CP_PROVISION_URL: "http://cp.internal:9000", CP_STARTUP_WAIT_SECONDS: "5" })
        .controlPlane,
    ).toMatchObject({ url: "http://cp.internal:9000", startupWaitMs: 5_000 });
  });

  it("refuses to start without the credential or the signing key, naming the variable", () => {
    expect(() => loadConfig({ ...saas, CP_TENANT_TOKEN: undefined })).toThrow(/^CP_TENANT_TOKEN is required/);
    expect(() => loadConfig({ ...saas, CP_TENANT_TOKEN: "" })).toThrow(/^CP_TENANT_TOKEN is required/);
    expect(() => loadConfig({ ...saas, PROVISION_SHARED_SECRET: undefined })).toThrow(
      /^PROVISION_SHARED_SECRET is required/,
    );
    // explicit CONTAINER_BACKEND=controlplane without an org id is controlplane mode too
    expect(() => loadConfig({ CONTAINER_BACKEND: "controlplane" })).toThrow(/^CP_TENANT_TOKEN is required/);
  });

  it("refuses to start while holding any cloud credential, naming each and never its value", () => {
    for (const name of CLOUD_CREDENTIAL_VARIABLES) {
      let message = "";
      try {
        loadConfig({ ...saas, [name]: "credential-value-123" });
      } catch (error) {
        message = (error as Error).message;
      }
      expect(message).toMatch(/^a tenant in controlplane mode must not hold cloud credentials; remove /);
      expect(message).toContain(name);
      expect(message).not.toContain("credential-value-123");
    }
    expect(() => loadConfig({ ...saas, FLY_API_TOKEN: "fly", AWS_PROFILE: "prod" })).toThrow(
      /remove FLY_API_TOKEN, AWS_PROFILE from its environment/,
    );
    // the refusal comes before the missing-credential check: the fix is to remove, not to add
    expect(() => loadConfig({ MOLECULE_ORG_ID: "org_abc", AWS_ACCESS_KEY_ID: "AKIA" })).toThrow(
      /must not hold cloud credentials/,
    );
  });

  it("a blank-looking CONTAINER_BACKEND is unset: with an org id it is controlplane mode, checked as such", () => {
    for (const blank of [" ", "\t", "  \n"]) {
      expect(() =>
        loadConfig({ ...saas, CONTAINER_BACKEND: blank, FLY_API_TOKEN: "fly-credential-value" }),
      ).toThrow(/^a tenant in controlplane mode must not hold cloud credentials; remove FLY_API_TOKEN /);
      expect(loadConfig({ ...saas, CONTAINER_BACKEND: blank }).backend.selection).toEqual({
        backend: "controlplane",
        cpProvisionUrl: undefined,
      });
    }
  });

  it("decides the backend once: the config carries what selectBackend chose", () => {
    expect(loadConfig({}).backend.selection).toEqual({ backend: "docker" });
    expect(loadConfig({ MOLECULE_ORG_ID: " " }).backend.selection).toEqual({ backend: "docker" });
    expect(loadConfig({ MOLECULE_ORG_ID: " " }).org).toEqual({ id: "org_local", saas: false });
    expect(
      loadConfig({ CONTAINER_BACKEND: " flyio ", FLY_API_TOKEN: "fly", FLY_WORKSPACE_APP: "app" }).backend
        .selection,
    ).toEqual({ backend: "flyio", flyApiToken: "fly", flyWorkspaceApp: "app", flyRegion: "ord" });
  });

  it("a backend misconfiguration stops loadConfig with one line naming the variable", () => {
    expect(() => loadConfig({ CONTAINER_BACKEND: "kubernetes" })).toThrow(/^CONTAINER_BACKEND="kubernetes"/);
    expect(() => loadConfig({ CONTAINER_BACKEND: "flyio", FLY_WORKSPACE_APP: "app" })).toThrow(
      /^FLY_API_TOKEN is required when CONTAINER_BACKEND=flyio$/,
    );
  });

  it("leaves the other backends alone", () => {
    expect(() => loadConfig({ FLY_API_TOKEN: "fly", AWS_PROFILE: "dev" })).not.toThrow();
    expect(() =>
      loadConfig({ ...saas, CONTAINER_BACKEND: "flyio", FLY_API_TOKEN: "fly", FLY_WORKSPACE_APP: "app" }),
    ).not.toThrow();
    expect(loadConfig({}).controlPlane.tenantToken).toBeUndefined();
  });
});

describe("backups", () => {
  it("are off while TENANT_BACKUP_S3_PREFIX is empty", () => {
    expect(loadConfig({}).backups).toBeNull();
    expect(loadConfig({ TENANT_BACKUP_S3_PREFIX: "  ", TENANT_BACKUP_INTERVAL: "1h" }).backups).toBeNull();
  });

  it("take the prefix, a daily interval, pg_dump's custom format and the control plane's report URL by default", () => {
    const config = loadConfig({
      TENANT_BACKUP_S3_PREFIX: "s3://molecule-backups/tenants/eu/",
      CP_PROVISION_URL: "https://cp.example.com/",
      PATH: "/usr/bin:/bin",
    });
    expect(config.backups).toEqual({
      target: { bucket: "molecule-backups", keyPrefix: "tenants/eu" },
      intervalMs: 24 * 3_600_000,
      pgFormat: "custom",
      reportUrl: "https://cp.example.com/cp/tenants/backup-report",
      searchPath: "/usr/bin:/bin",
      s3: { region: "us-east-1", endpoint: null, credentials: null },
    });
    expect(loadConfig({ TENANT_BACKUP_S3_PREFIX: "s3://bucket" }).backups?.reportUrl).toBe(
      `${DEFAULT_CP_PROVISION_URL}/cp/tenants/backup-report`,
    );
  });

  it("take every setting as given", () => {
    const config = loadConfig({
      TENANT_BACKUP_S3_PREFIX: "s3://bucket/x",
      TENANT_BACKUP_INTERVAL: "6h",
      TENANT_BACKUP_FORMAT: "plain",
      TENANT_BACKUP_REPORT_URL: "https://reports.example.com/in?org=1",
      TENANT_BACKUP_S3_REGION: "eu-west-1",
      TENANT_BACKUP_S3_ENDPOINT: "http://127.0.0.1:9000",
      TENANT_BACKUP_S3_ACCESS_KEY_ID: "AKIA",
      TENANT_BACKUP_S3_SECRET_ACCESS_KEY: "secret",
    });
    expect(config.backups).toMatchObject({
      intervalMs: 6 * 3_600_000,
      pgFormat: "plain",
      reportUrl: "https://reports.example.com/in?org=1",
      s3: {
        region: "eu-west-1",
        endpoint: "http://127.0.0.1:9000",
        credentials: { accessKeyId: "AKIA", secretAccessKey: "secret" },
      },
    });
  });

  it("stop start-up with one line naming the variable, never its value", () => {
    const cases: [Record<string, string>, RegExp][] = [
      [
        { TENANT_BACKUP_S3_PREFIX: "https://bucket/prefix" },
        /^invalid configuration: TENANT_BACKUP_S3_PREFIX: /,
      ],
      [{ TENANT_BACKUP_S3_PREFIX: "s3://bkt/p", TENANT_BACKUP_INTERVAL: "daily" }, /TENANT_BACKUP_INTERVAL/],
      [{ TENANT_BACKUP_S3_PREFIX: "s3://bkt/p", TENANT_BACKUP_FORMAT: "zip" }, /TENANT_BACKUP_FORMAT/],
      [{ TENANT_BACKUP_REPORT_URL: "not a url" }, /TENANT_BACKUP_REPORT_URL/],
      [
        { TENANT_BACKUP_S3_PREFIX: "s3://bkt/p", TENANT_BACKUP_S3_SECRET_ACCESS_KEY: "only-half" },
        /^TENANT_BACKUP_S3_ACCESS_KEY_ID and TENANT_BACKUP_S3_SECRET_ACCESS_KEY are set together/,
      ],
    ];
    for (const [env, message] of cases) {
      expect(() => loadConfig(env)).toThrow(message);
      try {
        loadConfig(env);
      } catch (error) {
        expect((error as Error).message).not.toContain("only-half");
      }
    }
  });
});
