/**
 * The Dockerfiles in infra/ are for machines with a registry and are not built here; the images the tests run are
 * built by the registry-free scripts. This keeps the two in step: for the tenant platform and the control plane, the
 * Dockerfile's final stage runs the same bundle script's output at the same entry point, with the same environment,
 * port, working directory and unprivileged uid as the image the tests built (global setup).
 */
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { REPO_ROOT } from "../test-support/process.ts";

const run = promisify(execFile);

interface ImageConfig {
  User: string;
  ExposedPorts: Record<string, unknown>;
  Env: string[];
  Entrypoint: string[];
  WorkingDir: string;
}

/** What the final stage of a Dockerfile says about the running container. */
function finalStage(dockerfile: string) {
  const text = readFileSync(join(REPO_ROOT, dockerfile), "utf8");
  const stages = text.split(/^FROM /m);
  const stage = stages[stages.length - 1] ?? "";
  const env = Object.fromEntries(
    [...stage.matchAll(/^ENV (.+)$/gm)].flatMap((match) =>
      (match[1] as string).split(/\s+/).map((pair) => pair.split("=") as [string, string]),
    ),
  );
  return {
    text,
    env,
    entrypoint: JSON.parse(/^ENTRYPOINT (.+)$/m.exec(stage)?.[1] ?? "[]") as string[],
    user: /^USER (.+)$/m.exec(stage)?.[1],
    workdir: /^WORKDIR (.+)$/m.exec(stage)?.[1],
    expose: /^EXPOSE (.+)$/m.exec(stage)?.[1],
    copiesApp: /^COPY --from=build\b.* \/out\/app \/app$/m.test(stage),
  };
}

async function imageConfig(image: string): Promise<ImageConfig> {
  const { stdout } = await run("docker", ["image", "inspect", image, "--format", "{{json .Config}}"]);
  return JSON.parse(stdout) as ImageConfig;
}

describe.each([
  [
    "tenant platform",
    "infra/tenant-platform.Dockerfile",
    "molecule/tenant-platform:latest",
    "bundle-tenant-platform.sh",
  ],
  [
    "control plane",
    "infra/control-plane.Dockerfile",
    "molecule/control-plane:latest",
    "bundle-control-plane.sh",
  ],
])("the %s Dockerfile and the image the tests run", (_name, dockerfile, image, bundle) => {
  it("bundle the same way and start the same program, as the same uid, with the same settings", async () => {
    const stage = finalStage(dockerfile);
    const built = await imageConfig(image);
    expect(stage.text).toContain(`bash infra/${bundle} /out/app`);
    expect(stage.copiesApp).toBe(true);
    // node is on PATH in node:20-slim and at /usr/local/bin/node in the built image: the program is the same file.
    expect(stage.entrypoint[0]).toBe("node");
    expect(built.Entrypoint[0]).toBe("/usr/local/bin/node");
    expect(stage.entrypoint.slice(1)).toEqual(built.Entrypoint.slice(1));
    const builtEnv = Object.fromEntries(built.Env.map((pair) => pair.split("=") as [string, string]));
    for (const name of ["NODE_ENV", "HOME", "MOLECULE_DATA_DIR", "PORT"]) {
      expect({ name, value: stage.env[name] }).toEqual({ name, value: builtEnv[name] });
    }
    expect(Object.keys(built.ExposedPorts)).toEqual([`${stage.expose}/tcp`]);
    expect(stage.workdir).toBe(built.WorkingDir);
    // node:20-slim's "node" user is uid 1000, the uid the built image runs as.
    expect(stage.user).toBe("node");
    expect(built.User).toBe("1000:1000");
  });
});
