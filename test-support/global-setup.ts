import { execFileSync } from "node:child_process";
import { ensureTemplate } from "./pg.ts";

function dockerAvailable(): boolean {
  try {
    execFileSync("docker", ["info"], { stdio: "ignore", timeout: 20_000 });
    return true;
  } catch {
    return false;
  }
}

/**
 * Runs once before all test files: checks the real peers tests rely on, migrates the template database and
 * builds the workspace, tenant platform and control plane images every container test shares. Under CI a missing peer is a
 * failure, never a skip.
 */
export default async function setup(): Promise<void> {
  try {
    await ensureTemplate();
  } catch (error) {
    throw new Error(`PostgreSQL is required for the tests (TEST_DATABASE_URL): ${(error as Error).message}`);
  }
  if (!dockerAvailable()) {
    throw new Error("A running Docker engine is required for the tests: `docker info` failed");
  }
  // Each image is built once per run (an unchanged build is a hash check); sequentially, to spare the CPUs.
  for (const script of [
    "infra/build-workspace-image.sh",
    "infra/build-tenant-image.sh",
    "infra/build-control-plane-image.sh",
  ]) {
    execFileSync("bash", [script], { stdio: "inherit", timeout: 300_000 });
  }
}
