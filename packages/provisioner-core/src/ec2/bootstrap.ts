/**
 * How a VM gets its environment without a credential ever being in user-data: the environment (boot token, secrets,
 * an optional registry pull token) is a JSON bundle in Secrets Manager; user-data holds only the secret's ARN and a
 * boot script. The script installs a systemd unit that, on every boot, reads the bundle with the instance profile
 * (`aws secretsmanager get-secret-value`), writes it as a root-only env file, and runs the container image with it
 * (`docker run --env-file`). So a changed bundle reaches the process on the next boot (stop + start), and an
 * instance without an instance profile could not read it: one is required.
 */
import {
  CreateSecretCommand,
  DeleteSecretCommand,
  DescribeSecretCommand,
  PutSecretValueCommand,
  RestoreSecretCommand,
  TagResourceCommand,
} from "@aws-sdk/client-secrets-manager";
import { ProvisionerError } from "../errors.ts";
import { type AwsAccess, isAwsError, isAwsNotFound } from "./aws.ts";
import { type Ec2Scope, isOwnedBy, ownerTags, tagMap, type VmOwner } from "./tags.ts";

/** The message of the refusal when no instance profile is configured. */
export const INSTANCE_PROFILE_REQUIRED =
  "Secrets Manager + IAM instance profile are required: the VM reads its environment from Secrets Manager with its " +
  "instance profile, and credentials are never put in user-data (set the instance profile option)";

export function requireInstanceProfile(instanceProfile: string | undefined): string {
  if (!instanceProfile)
    throw new ProvisionerError("invalid_spec", `ec2: ${INSTANCE_PROFILE_REQUIRED}`, false);
  return instanceProfile;
}

/** A registry login the VM performs before pulling the image (the password stays in the bundle). */
export interface RegistryLogin {
  server: string;
  username: string;
  password: string;
}

/** What the secret holds. */
export interface BootstrapBundle {
  env: Record<string, string>;
  registry?: RegistryLogin;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: an env file cannot hold these
const ENV_FILE_UNSAFE = /[\u0000\n\r]/;

/** Checks every variable fits an env file (one `NAME=value` line); the refusal names the variable, never its value. */
export function assertEnvFileSafe(env: Record<string, string>): void {
  for (const [key, value] of Object.entries(env)) {
    if (!ENV_NAME.test(key)) {
      throw new ProvisionerError(
        "invalid_spec",
        "ec2: an environment variable name is not a shell name",
        false,
      );
    }
    if (ENV_FILE_UNSAFE.test(value)) {
      throw new ProvisionerError(
        "invalid_spec",
        `ec2: environment variable ${key} holds a line break or NUL, which an env file cannot carry`,
        false,
      );
    }
  }
}

/** The bundle secret's name: `molecule/<deployment>/<environment>/<ws-… | tenant-…>`. */
export function bundleSecretName(scope: Ec2Scope, name: string): string {
  return `molecule/${scope.deployment}/${scope.environment}/${name}`;
}

/**
 * Creates the owner's bundle secret, or replaces its value when it exists (a retry, or new env for a recreate).
 * A secret of that name that is not the owner's is a conflict. Returns the secret's ARN.
 */
export async function putBootstrapBundle(
  aws: AwsAccess,
  scope: Ec2Scope,
  owner: VmOwner,
  name: string,
  bundle: BootstrapBundle,
): Promise<string> {
  assertEnvFileSafe(bundle.env);
  const value = JSON.stringify(bundle);
  const secretName = bundleSecretName(scope, name);
  try {
    const created = await aws.call("SecretsManager", "CreateSecret", (abortSignal) =>
      aws.secrets.send(
        new CreateSecretCommand({
          Name: secretName,
          Description: `Molecule ${owner.role} bootstrap environment`,
          SecretString: value,
          Tags: ownerTags(scope, owner),
        }),
        { abortSignal },
      ),
    );
    if (!created.ARN)
      throw new ProvisionerError("backend_error", "AWS SecretsManager CreateSecret answered no ARN", true);
    return created.ARN;
  } catch (error) {
    // Exists (a retry whose answer was lost), or is scheduled for deletion (InvalidRequestException): adopt it.
    if (!isAwsError(error, "ResourceExistsException", "InvalidRequestException")) throw error;
  }
  const existing = await aws.call("SecretsManager", "DescribeSecret", (abortSignal) =>
    aws.secrets.send(new DescribeSecretCommand({ SecretId: secretName }), { abortSignal }),
  );
  if (!existing.ARN || !isOwnedBy(tagMap(existing.Tags), scope, owner)) {
    throw new ProvisionerError(
      "conflict",
      `a secret named ${secretName} exists but is not this ${owner.role}'s`,
      false,
    );
  }
  const arn = existing.ARN;
  if (existing.DeletedDate) {
    await aws.call("SecretsManager", "RestoreSecret", (abortSignal) =>
      aws.secrets.send(new RestoreSecretCommand({ SecretId: arn }), { abortSignal }),
    );
  }
  await aws.call("SecretsManager", "PutSecretValue", (abortSignal) =>
    aws.secrets.send(new PutSecretValueCommand({ SecretId: arn, SecretString: value }), { abortSignal }),
  );
  return arn;
}

/** The tag naming the one instance whose instance profile may read a bundle (`ec2:SourceInstanceARN`). */
export const BUNDLE_INSTANCE_TAG = "MoleculeInstanceArn";

/**
 * Tags the bundle with the ARN of the instance that boots from it, so the instance profile's policy can allow
 * `GetSecretValue` only where `secretsmanager:ResourceTag/MoleculeInstanceArn` equals `${ec2:SourceInstanceARN}`:
 * each instance reads its own bundle and no other. Idempotent; the boot script retries until the tag is there.
 */
export async function bindBundleToInstance(
  aws: AwsAccess,
  secretArn: string,
  instanceId: string,
): Promise<void> {
  const [, partition, , region, account] = secretArn.split(":");
  const instanceArn = `arn:${partition}:ec2:${region}:${account}:instance/${instanceId}`;
  await aws.call("SecretsManager", "TagResource", (abortSignal) =>
    aws.secrets.send(
      new TagResourceCommand({
        SecretId: secretArn,
        Tags: [{ Key: BUNDLE_INSTANCE_TAG, Value: instanceArn }],
      }),
      { abortSignal },
    ),
  );
}

/** Deletes the secret at once (no recovery window). Already gone is success. */
export async function deleteBootstrapBundle(aws: AwsAccess, secretId: string): Promise<void> {
  try {
    await aws.call("SecretsManager", "DeleteSecret", (abortSignal) =>
      aws.secrets.send(new DeleteSecretCommand({ SecretId: secretId, ForceDeleteWithoutRecovery: true }), {
        abortSignal,
      }),
    );
  } catch (error) {
    if (!isAwsNotFound(error)) throw error;
  }
}

/** The secret's ARN when it exists (and is not being deleted), else null. */
export async function findBootstrapBundle(
  aws: AwsAccess,
  scope: Ec2Scope,
  name: string,
): Promise<string | null> {
  try {
    const found = await aws.call("SecretsManager", "DescribeSecret", (abortSignal) =>
      aws.secrets.send(new DescribeSecretCommand({ SecretId: bundleSecretName(scope, name) }), {
        abortSignal,
      }),
    );
    return found.ARN && !found.DeletedDate ? found.ARN : null;
  } catch (error) {
    if (isAwsNotFound(error)) return null;
    throw error;
  }
}

export interface BootScript {
  /** The bundle secret's ARN: the only reference to the environment in user-data. */
  secretArn: string;
  region: string;
  /** The container image to run. */
  image: string;
  /** The container's name on the VM (`ws-…`, `tenant-…`). */
  containerName: string;
  /** The port the container serves, published on the VM's private address. */
  port: number;
  /** Where the container's persistent data lives: a host directory mounted at this path in the container. */
  dataPath: string;
  /**
   * The variable that tells the process the address it is reached at, set from instance metadata (IMDSv2) on every
   * boot as `http://<private ip>:<port>` (AGENT_PUBLIC_URL for a workspace).
   */
  addressEnv?: string;
}

/** Single-quotes a value for the shell. */
function sh(value: string): string {
  return `'${value.replaceAll("'", `'"'"'`)}'`;
}

const ARN = /^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+$/;
const IMAGE = /^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$/;
const CONTAINER_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
const DATA_PATH = /^\/[A-Za-z0-9._/-]{0,200}$/;

/**
 * The script the boot unit runs on every boot: fetch the bundle, write the env file (root-only, removed once the
 * container has it), log in to the registry when the bundle has a login, run the container. Paths are under
 * MOLECULE_ROOT, which is empty on a VM (tests run the script under a scratch root with stand-in commands).
 */
export function bootScript(boot: BootScript): string {
  if (!ARN.test(boot.secretArn))
    throw new ProvisionerError("invalid_spec", "ec2: unexpected secret ARN", false);
  if (!IMAGE.test(boot.image))
    throw new ProvisionerError("invalid_spec", "ec2: unexpected image reference", false);
  if (!CONTAINER_NAME.test(boot.containerName)) {
    throw new ProvisionerError("invalid_spec", "ec2: unexpected container name", false);
  }
  if (!DATA_PATH.test(boot.dataPath))
    throw new ProvisionerError("invalid_spec", "ec2: unexpected data path", false);
  if (boot.addressEnv !== undefined && !ENV_NAME.test(boot.addressEnv)) {
    throw new ProvisionerError("invalid_spec", "ec2: the address variable is not a shell name", false);
  }
  const address = boot.addressEnv
    ? [
        `imds_token=$(curl -fsS -X PUT http://169.254.169.254/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')`,
        `private_ip=$(curl -fsS -H "X-aws-ec2-metadata-token: $imds_token" http://169.254.169.254/latest/meta-data/local-ipv4)`,
        `echo "${boot.addressEnv}=http://$private_ip:$PORT" >> "$env_file"`,
      ]
    : [];
  return [
    "#!/bin/bash",
    "# Molecule VM boot: reads the environment bundle from Secrets Manager with the instance profile and runs the",
    "# container with it. No credential is written here.",
    "set -euo pipefail",
    "umask 077",
    `SECRET_ARN=${sh(boot.secretArn)}`,
    `REGION=${sh(boot.region)}`,
    `IMAGE=${sh(boot.image)}`,
    `NAME=${sh(boot.containerName)}`,
    `PORT=${boot.port}`,
    `DATA_PATH=${sh(boot.dataPath)}`,
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell parameter expansion, not a template
    'root="${MOLECULE_ROOT:-}"',
    'run_dir="$root/run/molecule"',
    'data_dir="$root/var/lib/molecule/data"',
    'mkdir -p "$run_dir" "$data_dir"',
    'env_file="$run_dir/env"',
    'bundle="$run_dir/bundle.json"',
    'trap \'rm -f "$bundle" "$env_file"\' EXIT',
    "command -v docker >/dev/null || { dnf install -y docker || yum install -y docker || apt-get install -y docker.io; }",
    "systemctl enable --now docker",
    "# The bundle is readable once it is tagged with this instance's ARN, just after launch: retry until then.",
    "for attempt in $(seq 1 30); do",
    '  aws secretsmanager get-secret-value --region "$REGION" --secret-id "$SECRET_ARN" --query SecretString --output text > "$bundle" && break',
    '  [ "$attempt" -lt 30 ] || exit 1',
    "  sleep 10",
    "done",
    `python3 - "$bundle" > "$env_file" <<'PY'`,
    "import json, sys",
    "bundle = json.load(open(sys.argv[1]))",
    "for key, value in bundle['env'].items():",
    "    print(f'{key}={value}')",
    "PY",
    ...address,
    `registry=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])).get("registry"); print(r["server"] if r else "")' "$bundle")`,
    'if [ -n "$registry" ]; then',
    `  python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["registry"]; print(r["username"]); print(r["password"])' "$bundle" | { read -r user; docker login --username "$user" --password-stdin "$registry"; }`,
    "fi",
    'docker pull "$IMAGE"',
    'docker rm -f "$NAME" >/dev/null 2>&1 || true',
    'docker run -d --name "$NAME" --restart unless-stopped -p "$PORT:$PORT" --env-file "$env_file" -e "MOLECULE_IMAGE=$IMAGE" -v "$data_dir:$DATA_PATH" "$IMAGE"',
    "",
  ].join("\n");
}

/** Where user-data installs the boot script, and the unit that runs it on every boot. */
export const BOOT_SCRIPT_PATH = "/usr/local/sbin/molecule-boot";
export const BOOT_UNIT = "molecule.service";

/** Shell lines that write `content` to `path` (under MOLECULE_ROOT when set), root-only and executable. */
function installScript(path: string, content: string): string[] {
  return [
    `cat > "\${MOLECULE_ROOT:-}${path}" <<'MOLECULE_BOOT'`,
    content.trimEnd(),
    "MOLECULE_BOOT",
    `chmod 0700 "\${MOLECULE_ROOT:-}${path}"`,
  ];
}

/**
 * The user-data: a shell script with no secret in it. It installs `bootScript` as a systemd unit and starts it; the
 * unit runs on every boot. Base64, as RunInstances takes it.
 */
export function renderUserData(boot: BootScript): string {
  const start = bootScript(boot);
  const unit = [
    "[Unit]",
    "Description=Molecule container",
    "After=network-online.target docker.service",
    "Wants=network-online.target",
    "[Service]",
    "Type=oneshot",
    "RemainAfterExit=yes",
    `ExecStart=${BOOT_SCRIPT_PATH}`,
    "[Install]",
    "WantedBy=multi-user.target",
  ];
  const script = [
    "#!/bin/bash",
    "set -euo pipefail",
    ...installScript(BOOT_SCRIPT_PATH, start),
    `cat > /etc/systemd/system/${BOOT_UNIT} <<'MOLECULE_UNIT'`,
    ...unit,
    "MOLECULE_UNIT",
    "systemctl daemon-reload",
    `systemctl enable --now ${BOOT_UNIT}`,
    "",
  ].join("\n");
  return Buffer.from(script, "utf8").toString("base64");
}

/**
 * The shell script an SSM Run Command (`AWS-RunShellScript`) runs to move a VM to another image without a reboot:
 * it installs the boot script for `boot.image` where user-data put the first one and restarts the boot unit, which
 * pulls the image (a failed pull leaves the running container alone), replaces the container and keeps its data
 * directory. Later boots run the new image too. When the unit fails, the previous boot script is put back and the
 * unit run again with it, so the VM goes back to the image it ran; the command then fails with the unit's log.
 */
export function redeployScript(boot: BootScript): string {
  const next = `${BOOT_SCRIPT_PATH}.next`;
  const previous = `${BOOT_SCRIPT_PATH}.previous`;
  const at = (path: string) => `"\${MOLECULE_ROOT:-}${path}"`;
  return [
    "#!/bin/bash",
    "set -euo pipefail",
    ...installScript(next, bootScript(boot)),
    `cp -p ${at(BOOT_SCRIPT_PATH)} ${at(previous)}`,
    `mv ${at(next)} ${at(BOOT_SCRIPT_PATH)}`,
    `if ! systemctl restart ${BOOT_UNIT}; then`,
    `  journalctl -u ${BOOT_UNIT} -n 40 --no-pager 2>&1 || true`,
    `  mv ${at(previous)} ${at(BOOT_SCRIPT_PATH)}`,
    `  systemctl restart ${BOOT_UNIT} || true`,
    `  echo "molecule: ${boot.containerName} could not be moved to ${boot.image}; it runs its previous image again" >&2`,
    "  exit 1",
    "fi",
    `rm -f ${at(previous)}`,
    `echo "molecule: ${boot.containerName} runs ${boot.image}"`,
    "",
  ].join("\n");
}
