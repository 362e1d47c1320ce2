import { describe, expect, it } from "vitest";
import { loadConfig } from "./config.ts";

const base = {
  PROVISION_SHARED_SECRET: "s".repeat(32),
  CP_SECRETS_ENCRYPTION_KEY: "a".repeat(64),
};

const production = { ...base, MOLECULE_ENV: "production", CP_ADMIN_API_TOKEN: "t".repeat(16) };

describe("control plane config", () => {
  it("has defaults: port 8090, docker backends, admin API off without a token", () => {
    const config = loadConfig(base);
    expect(config.http.port).toBe(8090);
    expect(config.workspaceBackend.name).toBe("docker");
    expect(config.tenantBackend).toEqual({
      name: "docker",
      image: "molecule/tenant-platform:latest",
      network: "molecule",
      urlTemplate: null,
      canaryImage: "molecule/tenant-platform:latest",
      ghcrPullToken: null,
      databaseUrl: null,
      perOrgDatabases: null,
      commandDeadlineMs: 600_000,
      readyDeadlineMs: 300_000,
    });
    expect(config.auth.adminToken).toBeNull();
    expect(config.http.publicUrl).toBe("http://host.docker.internal:8090");
    expect(loadConfig({ ...base, TENANT_NETWORK: "host" }).http.publicUrl).toBe("http://127.0.0.1:8090");
    expect(loadConfig({ ...base, CP_PUBLIC_URL: "https://cp.example.com" }).http.publicUrl).toBe(
      "https://cp.example.com",
    );
  });

  it("rate limits: admin 3000 and tenant 3000 a minute per credential by default, each settable, 0 off", () => {
    expect(loadConfig(base).rateLimits).toEqual({ admin: 3000, tenant: 3000, maxKeys: 100_000 });
    expect(
      loadConfig({ ...base, RATE_LIMIT_ADMIN_PER_MINUTE: "0", RATE_LIMIT_TENANT_PER_MINUTE: "120" })
        .rateLimits,
    ).toEqual({ admin: 0, tenant: 120, maxKeys: 100_000 });
    expect(() => loadConfig({ ...base, RATE_LIMIT_TENANT_PER_MINUTE: "many" })).toThrow(
      /^invalid configuration: RATE_LIMIT_TENANT_PER_MINUTE: /,
    );
  });

  it("stops with one line naming the variable", () => {
    const cases: [Record<string, string>, string][] = [
      [{ ...base, PROVISION_SHARED_SECRET: "short" }, "PROVISION_SHARED_SECRET must be at least 32"],
      [{ ...base, CP_SECRETS_ENCRYPTION_KEY: "not-a-key" }, "CP_SECRETS_ENCRYPTION_KEY must be 32 bytes"],
      [{ ...base, CP_ADMIN_API_TOKEN: "short" }, "CP_ADMIN_API_TOKEN must be at least 16"],
      [
        { ...base, MOLECULE_ENV: "production" },
        "CP_ADMIN_API_TOKEN is required when MOLECULE_ENV=production",
      ],
      [
        { ...production, PROVISION_SHARED_SECRET: "" },
        "PROVISION_SHARED_SECRET is required when MOLECULE_ENV=production",
      ],
      [
        { ...production, CP_SECRETS_ENCRYPTION_KEY: "" },
        "CP_SECRETS_ENCRYPTION_KEY is required when MOLECULE_ENV=production",
      ],
      [{ ...base, CP_TENANT_BACKEND: "external" }, "TENANT_URL_TEMPLATE is required"],
      [
        { ...base, CP_TENANT_BACKEND: "external", TENANT_URL_TEMPLATE: "not a url" },
        "TENANT_URL_TEMPLATE must be a URL",
      ],
      [{ ...base, CP_TENANT_BACKEND: "kubernetes" }, "CP_TENANT_BACKEND"],
      [{ ...base, CP_WORKSPACE_BACKEND: "flyio" }, "FLY_API_TOKEN is required"],
      [{ ...base, CP_WORKSPACE_BACKEND: "flyio", FLY_API_TOKEN: "t" }, "FLY_WORKSPACE_APP is required"],
      [{ ...base, CP_WORKSPACE_BACKEND: "kubernetes" }, "CP_WORKSPACE_BACKEND"],
      [{ ...base, TENANT_NETWORK: "overlay" }, "TENANT_NETWORK"],
    ];
    for (const [env, message] of cases) {
      expect(() => loadConfig(env), message).toThrow(message);
    }
  });

  it("accepts the cloud guides' MOLECULE_ENV names too; prod is as strict as production", () => {
    expect(() => loadConfig({ ...base, MOLECULE_ENV: "prod" })).toThrow(
      "CP_ADMIN_API_TOKEN is required when MOLECULE_ENV=prod",
    );
    expect(loadConfig({ ...production, MOLECULE_ENV: "prod" }).environment).toBe("prod");
    for (const name of ["dev", "staging", "test"]) {
      const config = loadConfig({ MOLECULE_ENV: name });
      expect(config.environment).toBe(name);
      expect(config.auth.adminToken).toBeNull();
    }
  });

  it("leaves the secrets unset in development without them (generated at start-up, see bootstrap.ts)", () => {
    const config = loadConfig({});
    expect(config.environment).toBe("development");
    expect(config.auth).toEqual({ adminToken: null, provisionSharedSecret: null });
    expect(config.secrets.key).toBeNull();
  });

  it("takes an external tenant backend with its URL template", () => {
    const config = loadConfig({
      ...base,
      CP_TENANT_BACKEND: "external",
      TENANT_URL_TEMPLATE: "https://{slug}.tenants.example.com",
    });
    expect(config.tenantBackend).toMatchObject({
      name: "external",
      urlTemplate: "https://{slug}.tenants.example.com",
    });
  });

  it("gives docker tenants a database per org on CP_TENANT_DATABASE_URL, else on its own DATABASE_URL", () => {
    expect(loadConfig(base).tenantBackend.perOrgDatabases).toBeNull();
    const own = loadConfig({
      ...base,
      TENANT_DATABASES: "per-org",
      DATABASE_URL: "postgres://cp@db.internal:5432/molecule_cp",
    });
    expect(own.tenantBackend.perOrgDatabases).toEqual({
      adminUrl: "postgres://cp@db.internal:5432/molecule_cp",
    });
    const other = loadConfig({
      ...base,
      TENANT_DATABASES: "per-org",
      DATABASE_URL: "postgres://cp@db.internal:5432/molecule_cp",
      CP_TENANT_DATABASE_URL: "postgres://admin@tenants.internal:5432/postgres",
    });
    expect(other.tenantBackend.perOrgDatabases).toEqual({
      adminUrl: "postgres://admin@tenants.internal:5432/postgres",
    });
    for (const [env, message] of [
      [
        { TENANT_DATABASES: "per-org" },
        "TENANT_DATABASES=per-org needs CP_TENANT_DATABASE_URL (or DATABASE_URL)",
      ],
      [{ TENANT_DATABASES: "yes" }, "TENANT_DATABASES"],
      [
        { CP_TENANT_DATABASE_URL: "postgres://a@b/c" },
        "CP_TENANT_DATABASE_URL is used only with TENANT_DATABASES=per-org",
      ],
      [{ TENANT_DATABASES: "per-org", CP_TENANT_DATABASE_URL: "mysql://a@b/c" }, "must be a postgres:// URL"],
      [
        {
          TENANT_DATABASES: "per-org",
          CP_TENANT_DATABASE_URL: "postgres://a@b/c",
          CP_TENANT_BACKEND: "external",
          TENANT_URL_TEMPLATE: "https://{slug}.example.com",
        },
        "TENANT_DATABASES=per-org needs CP_TENANT_BACKEND=docker",
      ],
    ] as const) {
      expect(() => loadConfig({ ...base, ...env })).toThrow(message);
    }
  });

  it("accepts a production configuration", () => {
    const config = loadConfig({
      ...base,
      MOLECULE_ENV: "production",
      CP_ADMIN_API_TOKEN: "t".repeat(16),
      CP_WORKSPACE_BACKEND: "flyio",
      FLY_API_TOKEN: "fly",
      FLY_WORKSPACE_APP: "ws-app",
    });
    expect(config.workspaceBackend).toMatchObject({ name: "flyio", flyApp: "ws-app", flyRegion: "ord" });
  });
});

describe("control plane config for backups", () => {
  it("flags tenants stale after 36 h by default and passes no backup settings while the prefix is empty", () => {
    const config = loadConfig({ ...base, TENANT_BACKUP_INTERVAL: "6h" });
    expect(config.backups).toEqual({ staleAfterMs: 36 * 3_600_000, tenantEnv: {} });
  });

  it("hands tenants the backup settings that are set, and reads BACKUP_STALE_AFTER as a duration", () => {
    const config = loadConfig({
      ...base,
      BACKUP_STALE_AFTER: "48h",
      TENANT_BACKUP_S3_PREFIX: "s3://molecule-backups/tenants",
      TENANT_BACKUP_INTERVAL: "12h",
      TENANT_BACKUP_S3_REGION: "eu-west-1",
    });
    expect(config.backups).toEqual({
      staleAfterMs: 48 * 3_600_000,
      tenantEnv: {
        TENANT_BACKUP_S3_PREFIX: "s3://molecule-backups/tenants",
        TENANT_BACKUP_INTERVAL: "12h",
        TENANT_BACKUP_S3_REGION: "eu-west-1",
      },
    });
  });

  it("stops with one line naming the variable", () => {
    expect(() => loadConfig({ ...base, TENANT_BACKUP_S3_PREFIX: "https://bucket/prefix" })).toThrow(
      /^invalid configuration: TENANT_BACKUP_S3_PREFIX: .*must be an s3:\/\/bucket\/prefix URL/,
    );
    expect(() => loadConfig({ ...base, TENANT_BACKUP_INTERVAL: "nightly" })).toThrow(
      /^invalid configuration: TENANT_BACKUP_INTERVAL: .*must be a duration/,
    );
    expect(() => loadConfig({ ...base, TENANT_BACKUP_FORMAT: "zip" })).toThrow(
      /TENANT_BACKUP_FORMAT must be custom or plain/,
    );
    expect(() => loadConfig({ ...base, TENANT_BACKUP_S3_ACCESS_KEY_ID: "AKIA" })).toThrow(
      /^TENANT_BACKUP_S3_ACCESS_KEY_ID and/,
    );
    expect(() => loadConfig({ ...base, BACKUP_STALE_AFTER: "soon" })).toThrow(
      /^invalid configuration: BACKUP_STALE_AFTER: .*must be a duration/,
    );
  });
});

describe("control plane config for EC2", () => {
  const ec2Tenants = {
    ...base,
    CP_TENANT_BACKEND: "ec2",
    CP_PUBLIC_URL: "http://cp.internal:8090",
    AWS_REGION: "eu-west-1",
    EC2_VPC_ID: "vpc-0123456789abcdef0",
    EC2_SUBNET_ID: "subnet-0123456789abcdef0",
    EC2_TENANT_IAM_PROFILE: "molecule-tenant",
  };
  const canary = {
    CANARY_ROLE_ARN: "arn:aws:iam::123456789012:role/molecule-canary",
    CANARY_REGION: "us-west-2",
    CANARY_VPC_ID: "vpc-0fedcba9876543210",
    CANARY_SUBNET_ID: "subnet-0fedcba9876543210",
  };

  it("takes the EC2 settings with their defaults", () => {
    const config = loadConfig({
      ...ec2Tenants,
      CP_WORKSPACE_BACKEND: "ec2",
      AWS_ENDPOINT_URL: "http://127.0.0.1:5056",
      EIC_ENDPOINT_SG_ID: "sg-0aaaaaaaaaaaaaaaa",
      EC2_TENANT_INGRESS_SG_IDS: "sg-0bbbbbbbbbbbbbbbb, sg-0cccccccccccccccc,",
      EC2_AMI: "ami-0123456789abcdef0",
      TENANT_IMAGE: "ghcr.io/acme/tenant-platform:1.2.3",
      CANARY_TENANT_IMAGE: "ghcr.io/acme/tenant-platform:1.3.0-rc1",
      GHCR_PULL_TOKEN: "ghp_pull",
      TENANT_DATABASE_URL: "postgres://tenants.internal/molecule",
      ...canary,
      CANARY_EIC_ENDPOINT_SG_ID: "sg-0dddddddddddddddd",
      CANARY_TENANT_INGRESS_SG_IDS: "sg-0eeeeeeeeeeeeeeee",
    });
    expect(config.ec2).toEqual({
      region: "eu-west-1",
      endpoint: "http://127.0.0.1:5056",
      vpcId: "vpc-0123456789abcdef0",
      subnetId: "subnet-0123456789abcdef0",
      sharedSecurityGroupId: null,
      eicEndpointSgId: "sg-0aaaaaaaaaaaaaaaa",
      tenantIngressSgIds: ["sg-0bbbbbbbbbbbbbbbb", "sg-0cccccccccccccccc"],
      tenantIamProfile: "molecule-tenant",
      workspaceIamProfile: "molecule-tenant",
      instanceType: "t3.small",
      keyName: null,
      fallbackAmi: "ami-0123456789abcdef0",
      terminateDeadlineMs: 300_000,
      hibernation: false,
      canary: {
        roleArn: canary.CANARY_ROLE_ARN,
        region: "us-west-2",
        vpcId: canary.CANARY_VPC_ID,
        subnetId: canary.CANARY_SUBNET_ID,
        eicEndpointSgId: "sg-0dddddddddddddddd",
        ingressSgIds: ["sg-0eeeeeeeeeeeeeeee"],
      },
    });
    expect(config.tenantBackend).toMatchObject({
      name: "ec2",
      image: "ghcr.io/acme/tenant-platform:1.2.3",
      canaryImage: "ghcr.io/acme/tenant-platform:1.3.0-rc1",
      ghcrPullToken: "ghp_pull",
      databaseUrl: "postgres://tenants.internal/molecule",
      urlTemplate: null,
    });
    expect(config.workspaceBackend.name).toBe("ec2");
  });

  it("a shared group instead of a VPC; the workspace profile of its own; type, key and deadline", () => {
    const config = loadConfig({
      ...base,
      CP_TENANT_BACKEND: "ec2",
      CP_WORKSPACE_BACKEND: "ec2",
      CP_PUBLIC_URL: "http://cp.internal:8090",
      AWS_REGION: "us-east-1",
      EC2_SECURITY_GROUP: "sg-0123456789abcdef0",
      EC2_SUBNET_ID: "subnet-0123456789abcdef0",
      EC2_TENANT_IAM_PROFILE: "molecule-tenant",
      EC2_WORKSPACE_IAM_PROFILE: "molecule-workspace",
      EC2_INSTANCE_TYPE: "m7g.large",
      EC2_KEY_NAME: "ops",
      EC2_TERMINATE_DEADLINE_SECONDS: "120",
      EC2_HIBERNATION: "true",
    });
    expect(config.ec2).toMatchObject({
      vpcId: null,
      subnetId: "subnet-0123456789abcdef0",
      sharedSecurityGroupId: "sg-0123456789abcdef0",
      tenantIamProfile: "molecule-tenant",
      workspaceIamProfile: "molecule-workspace",
      instanceType: "m7g.large",
      keyName: "ops",
      terminateDeadlineMs: 120_000,
      hibernation: true,
      canary: null,
    });
  });

  it("stops with one line naming what is wrong or missing", () => {
    const cases: [Record<string, string>, string][] = [
      [{ ...ec2Tenants, AWS_REGION: "" }, "AWS_REGION is required when CP_TENANT_BACKEND=ec2"],
      [{ ...ec2Tenants, AWS_REGION: "Ireland" }, "AWS_REGION must be a region"],
      [{ ...ec2Tenants, EC2_TENANT_IAM_PROFILE: "" }, "Secrets Manager + IAM instance profile are required"],
      [
        { ...ec2Tenants, EC2_VPC_ID: "", EC2_SUBNET_ID: "" },
        "EC2_VPC_ID (per-tenant security groups) or EC2_SECURITY_GROUP",
      ],
      [{ ...ec2Tenants, EC2_SUBNET_ID: "" }, "EC2_SUBNET_ID is required when CP_TENANT_BACKEND=ec2"],
      [{ ...ec2Tenants, EC2_VPC_ID: "my-vpc" }, "EC2_VPC_ID must be an id like vpc-"],
      [
        { ...ec2Tenants, EC2_TENANT_INGRESS_SG_IDS: "sg-0123abcd,0.0.0.0/0" },
        "EC2_TENANT_INGRESS_SG_IDS must be an id like sg-",
      ],
      [{ ...ec2Tenants, EC2_AMI: "ubuntu" }, "EC2_AMI must be an id like ami-"],
      [{ ...ec2Tenants, EC2_INSTANCE_TYPE: "large" }, "EC2_INSTANCE_TYPE must be an instance type"],
      [{ ...ec2Tenants, EC2_TERMINATE_DEADLINE_SECONDS: "0" }, "EC2_TERMINATE_DEADLINE_SECONDS"],
      [{ ...ec2Tenants, EC2_HIBERNATION: "yes" }, "EC2_HIBERNATION"],
      [{ ...ec2Tenants, AWS_ENDPOINT_URL: "moto" }, "AWS_ENDPOINT_URL must be a URL"],
      [{ ...ec2Tenants, TENANT_DATABASE_URL: "db" }, "TENANT_DATABASE_URL must be a URL"],
      [
        { ...ec2Tenants, CP_WORKSPACE_BACKEND: "ec2", EC2_TENANT_IAM_PROFILE: "" },
        "Secrets Manager + IAM instance profile are required",
      ],
      [
        { ...base, CP_WORKSPACE_BACKEND: "ec2", AWS_REGION: "us-east-1", EC2_SECURITY_GROUP: "sg-0123abcd" },
        "CP_WORKSPACE_BACKEND=ec2 needs CP_TENANT_BACKEND=ec2",
      ],
      [{ ...ec2Tenants, CP_PUBLIC_URL: "" }, "CP_PUBLIC_URL is required when CP_TENANT_BACKEND=ec2"],
      [{ ...base, CP_WORKSPACE_BACKEND: "ec2" }, "CP_WORKSPACE_BACKEND=ec2 needs CP_TENANT_BACKEND=ec2"],
      [
        { ...ec2Tenants, CANARY_ROLE_ARN: canary.CANARY_ROLE_ARN },
        "CANARY_ROLE_ARN, CANARY_REGION, CANARY_VPC_ID, CANARY_SUBNET_ID are set together (the canary account): missing CANARY_REGION, CANARY_VPC_ID, CANARY_SUBNET_ID",
      ],
      [
        { ...base, ...canary, CANARY_SUBNET_ID: "" },
        "are set together (the canary account): missing CANARY_SUBNET_ID",
      ],
      [
        { ...ec2Tenants, ...canary, CANARY_ROLE_ARN: "molecule-canary" },
        "CANARY_ROLE_ARN must be an IAM role ARN",
      ],
      [
        { ...ec2Tenants, ...canary, CANARY_TENANT_INGRESS_SG_IDS: "10.0.0.0/8" },
        "CANARY_TENANT_INGRESS_SG_IDS must be an id like sg-",
      ],
    ];
    for (const [env, message] of cases) {
      expect(() => loadConfig(env), message).toThrow(message);
    }
  });

  it("the production checks come first, whichever MOLECULE_ENV vocabulary", () => {
    for (const name of ["production", "prod"]) {
      expect(() => loadConfig({ ...ec2Tenants, MOLECULE_ENV: name })).toThrow(
        `CP_ADMIN_API_TOKEN is required when MOLECULE_ENV=${name}`,
      );
      const config = loadConfig({
        ...ec2Tenants,
        ...canary,
        MOLECULE_ENV: name,
        CP_ADMIN_API_TOKEN: "t".repeat(16),
      });
      expect(config.environment).toBe(name);
    }
    expect(loadConfig({ ...ec2Tenants, MOLECULE_ENV: "staging" }).environment).toBe("staging");
  });

  it("ignores the AWS settings while neither backend is ec2", () => {
    const config = loadConfig({ ...base, AWS_REGION: "us-east-1" });
    expect(config.ec2.region).toBe("us-east-1");
    expect(config.tenantBackend.name).toBe("docker");
  });

  it("gives every operation kind a deadline, OPERATION_DEADLINES overriding some; a bad pair is one line", () => {
    expect(loadConfig(base).operations.deadlinesMs).toEqual({
      provision_tenant: 900_000,
      destroy_org: 600_000,
      provision: 900_000,
      start: 900_000,
      stop: 600_000,
      suspend: 600_000,
      destroy: 600_000,
      stop_tenant: 900_000,
      start_tenant: 1_200_000,
      redeploy_tenant: 1_200_000,
    });
    const config = loadConfig({ ...base, OPERATION_DEADLINES: "provision_tenant=1800" });
    expect(config.operations.deadlinesMs).toMatchObject({ provision_tenant: 1_800_000, provision: 900_000 });
    expect(() => loadConfig({ ...base, OPERATION_DEADLINES: "restart=60" })).toThrow(
      /^invalid configuration: OPERATION_DEADLINES: "restart=60" is not kind=seconds with seconds above 0 and a kind among provision_tenant, destroy_org, /,
    );
  });

  it("keeps finished operations 30 days and boot events 7 days unless told otherwise", () => {
    expect(loadConfig(base).retention).toEqual({
      operationsMs: 30 * 86_400_000,
      eventsMs: 7 * 86_400_000,
      backupRecordsMs: 90 * 86_400_000,
      sweepIntervalMs: 3_600_000,
    });
    expect(loadConfig({ ...base, EVENT_RETENTION_DAYS: "1" }).retention.eventsMs).toBe(86_400_000);
    expect(loadConfig({ ...base, BACKUP_RECORD_RETENTION_DAYS: "400" }).retention.backupRecordsMs).toBe(
      400 * 86_400_000,
    );
    expect(() => loadConfig({ ...base, BACKUP_RECORD_RETENTION_DAYS: "-1" })).toThrow(
      /^invalid configuration: BACKUP_RECORD_RETENTION_DAYS: /,
    );
    expect(() => loadConfig({ ...base, OPERATION_RETENTION_DAYS: "0" })).toThrow(
      /^invalid configuration: OPERATION_RETENTION_DAYS: /,
    );
  });
});
