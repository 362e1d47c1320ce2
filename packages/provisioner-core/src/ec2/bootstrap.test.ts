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
import { type BootScript, bootScript, redeployScript, renderUserData } from "./bootstrap.ts";

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

describe("the redeploy script (an SSM command)", () => {
  const NEXT = "ghcr.io/molecule/workspace-hermes:1.3.0";

  /** The VM as user-data left it: the boot script installed; `systemctl restart` runs it as the unit would. */
  async function bootedVm(pullFails: string | null): Promise<Record<string, string>> {
    const env = await standIns(BUNDLE);
    const sbin = join(env.MOLECULE_ROOT as string, "usr", "local", "sbin");
    await run("mkdir", ["-p", sbin]);
    await writeFile(join(sbin, "molecule-boot"), bootScript(BOOT));
    await chmod(join(sbin, "molecule-boot"), 0o700);
    await writeFile(
      join(dir, "bin", "systemctl"),
      `#!/bin/bash\necho "systemctl $*" >> "${dir}/calls"\nif [ "$1" = restart ]; then bash "$MOLECULE_ROOT/usr/local/sbin/molecule-boot"; fi\n`,
    );
    if (pullFails) {
      await writeFile(
        join(dir, "bin", "docker"),
        `#!/bin/bash\necho "docker $*" >> "${dir}/calls"\nif [ "$1" = pull ] && [ "$2" = "${pullFails}" ]; then echo "manifest unknown" >&2; exit 1; fi\n`,
      );
    }
    return env;
  }

  it("installs the boot script for the new image and restarts the unit: the container runs it on the same data", async () => {
    const env = await bootedVm(null);
    await writeFile(join(dir, "redeploy"), redeployScript({ ...BOOT, image: NEXT }));
    const { stdout } = await run("bash", [join(dir, "redeploy")], { env });
    expect(stdout).toContain(`molecule: ws-01jabc runs ${NEXT}`);
    const calls = await readFile(join(dir, "calls"), "utf8");
    expect(calls).toContain("systemctl restart molecule.service");
    expect(calls).toContain(`docker pull ${NEXT}`);
    expect(calls).toContain(
      `-e MOLECULE_IMAGE=${NEXT} -v ${env.MOLECULE_ROOT}/var/lib/molecule/data:/workspace ${NEXT}`,
    );
    expect(calls).not.toContain("reboot");
    // The next boot runs the new image too; nothing of the switch is left behind.
    const installed = await readFile(
      join(env.MOLECULE_ROOT as string, "usr/local/sbin/molecule-boot"),
      "utf8",
    );
    expect(installed).toBe(`${bootScript({ ...BOOT, image: NEXT }).trimEnd()}\n`);
    expect((await readdir(join(env.MOLECULE_ROOT as string, "usr/local/sbin"))).sort()).toEqual([
      "molecule-boot",
    ]);
    expect(calls).not.toContain("registry-pull-secret");
  });

  it("fails with the unit's output when the new image cannot be pulled, and puts the previous boot script back", async () => {
    const env = await bootedVm(NEXT);
    await writeFile(join(dir, "redeploy"), redeployScript({ ...BOOT, image: NEXT }));
    const failure = await run("bash", [join(dir, "redeploy")], { env }).then(
      () => null,
      (error: { code: number; stderr: string }) => error,
    );
    expect(failure?.code).toBe(1);
    expect(failure?.stderr).toContain("manifest unknown");
    expect(failure?.stderr).toContain(`could not be moved to ${NEXT}; it runs its previous image again`);
    const installed = await readFile(
      join(env.MOLECULE_ROOT as string, "usr/local/sbin/molecule-boot"),
      "utf8",
    );
    expect(installed).toBe(bootScript(BOOT));
    const calls = await readFile(join(dir, "calls"), "utf8");
    // The previous image is pulled and run again by the restored unit; the new one never ran.
    expect(calls).toContain(`docker pull ${BOOT.image}`);
    expect(calls).not.toContain(`MOLECULE_IMAGE=${NEXT}`);
  });
});
