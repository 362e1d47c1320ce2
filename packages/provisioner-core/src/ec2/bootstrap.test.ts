/**
 * The boot script as a VM runs it, under a scratch root with stand-in `aws`, `curl`, `docker` and `systemctl` that
 * record what they were given (nothing leaves the machine): the container gets exactly the bundle's environment plus
 * its address, the registry password goes to `docker login` on stdin only, and no file with the environment is left.
 */
import { execFile } from "node:child_process";
import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type BootScript, bootScript, renderUserData } from "./bootstrap.ts";

const run = promisify(execFile);

const BOOT: BootScript = {
  secretArn: "arn:aws:secretsmanager:us-east-1:123456789012:secret:molecule/dep/test/ws-01j-AbCdEf",
  region: "us-east-1",
  image: "ghcr.io/molecule/workspace-hermes:1.2.3",
  containerName: "ws-01jabc",
  port: 8000,
  dataPath: "/workspace",
  addressEnv: "AGENT_PUBLIC_URL",
};

const BUNDLE = {
  env: {
    WORKSPACE_ID: "ws_01jabc",
    WORKSPACE_BOOT_TOKEN: "boot-token-with = and 'quotes' and $dollar",
    PLATFORM_URL: "http://10.0.0.5:8080",
  },
  registry: { server: "ghcr.io", username: "bot", password: "registry-pull-secret" },
};

let dir: string;

/** Stand-ins on PATH: each records its arguments (and docker run's env file, docker login's stdin) under `dir`. */
async function standIns(bundle: unknown): Promise<Record<string, string>> {
  const bin = join(dir, "bin");
  await run("mkdir", ["-p", bin, join(dir, "root")]);
  await writeFile(join(dir, "bundle.json"), JSON.stringify(bundle));
  const scripts: Record<string, string> = {
    aws: `echo "aws $*" >> "${dir}/calls"; cat "${dir}/bundle.json"`,
    curl: `echo "curl $*" >> "${dir}/calls"; case "$*" in *api/token*) echo imds-token ;; *local-ipv4*) echo 10.20.1.7 ;; esac`,
    systemctl: `echo "systemctl $*" >> "${dir}/calls"`,
    docker: [
      `echo "docker $*" >> "${dir}/calls"`,
      `if [ "$1" = login ]; then cat > "${dir}/login-stdin"; fi`,
      `if [ "$1" = run ]; then while [ $# -gt 0 ]; do if [ "$1" = --env-file ]; then cp "$2" "${dir}/container-env"; fi; shift; done; fi`,
    ].join("\n"),
  };
  for (const [name, body] of Object.entries(scripts)) {
    await writeFile(join(bin, name), `#!/bin/bash\n${body}\n`);
    await chmod(join(bin, name), 0o755);
  }
  return { PATH: `${bin}:/usr/bin:/bin`, MOLECULE_ROOT: join(dir, "root") };
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "molecule-boot-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("the boot script", () => {
  it("runs the container with the bundle's environment and its address, logging in with the password on stdin", async () => {
    const env = await standIns(BUNDLE);
    await writeFile(join(dir, "boot"), bootScript(BOOT));
    await run("bash", [join(dir, "boot")], { env });

    const containerEnv = (await readFile(join(dir, "container-env"), "utf8")).trimEnd().split("\n");
    expect(containerEnv).toEqual([
      "WORKSPACE_ID=ws_01jabc",
      "WORKSPACE_BOOT_TOKEN=boot-token-with = and 'quotes' and $dollar",
      "PLATFORM_URL=http://10.0.0.5:8080",
      "AGENT_PUBLIC_URL=http://10.20.1.7:8000",
    ]);
    expect(await readFile(join(dir, "login-stdin"), "utf8")).toBe("registry-pull-secret\n");
    const calls = await readFile(join(dir, "calls"), "utf8");
    expect(calls).toContain(
      `aws secretsmanager get-secret-value --region us-east-1 --secret-id ${BOOT.secretArn} --query SecretString --output text`,
    );
    expect(calls).toContain("docker login --username bot --password-stdin ghcr.io");
    expect(calls).toContain(
      `docker run -d --name ws-01jabc --restart unless-stopped -p 8000:8000 --env-file ${env.MOLECULE_ROOT}/run/molecule/env -e MOLECULE_IMAGE=ghcr.io/molecule/workspace-hermes:1.2.3 -v ${env.MOLECULE_ROOT}/var/lib/molecule/data:/workspace ghcr.io/molecule/workspace-hermes:1.2.3`,
    );
    // No argument of any command carried a secret, and nothing with the environment is left behind.
    for (const secret of ["boot-token-with", "registry-pull-secret"]) expect(calls).not.toContain(secret);
    expect(await readdir(join(dir, "root", "run", "molecule"))).toEqual([]);
  });

  it("skips the registry login when the bundle has none", async () => {
    const env = await standIns({ env: { A: "1" } });
    await writeFile(join(dir, "boot"), bootScript({ ...BOOT, addressEnv: undefined }));
    await run("bash", [join(dir, "boot")], { env });
    expect((await readFile(join(dir, "container-env"), "utf8")).trimEnd()).toBe("A=1");
    expect(await readFile(join(dir, "calls"), "utf8")).not.toContain("docker login");
  });

  it("is installed by the user-data as a unit that runs on every boot", async () => {
    const userData = Buffer.from(renderUserData(BOOT), "base64").toString("utf8");
    expect(userData).toContain(bootScript(BOOT).trimEnd());
    expect(userData).toContain("ExecStart=/usr/local/sbin/molecule-boot");
    expect(userData).toContain("systemctl enable --now molecule.service");
    await writeFile(join(dir, "user-data"), userData);
    await run("bash", ["-n", join(dir, "user-data")]);
  });
});
