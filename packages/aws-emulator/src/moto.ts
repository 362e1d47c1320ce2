import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import type { Socket } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

/**
 * Runs moto 5.2.3 (the AWS emulator, a Python program) on loopback for tests. A Python that already has moto (a
 * hosted CI that ran `pip install 'moto[server]==5.2.3'`) is used as it is; otherwise Debian's `/usr/bin/python3`
 * with its libraries runs the source tree vendored in this package, unpacked once into a cache folder.
 */

export const MOTO_VERSION = "5.2.3";

/** The Debian packages moto's server needs; `.ci/run` installs the same list. */
export const MOTO_APT_PACKAGES = [
  "python3-boto3",
  "python3-botocore",
  "python3-werkzeug",
  "python3-flask",
  "python3-flask-cors",
  "python3-jinja2",
  "python3-xmltodict",
  "python3-responses",
  "python3-requests",
  "python3-dateutil",
  "python3-cryptography",
  "python3-yaml",
  "python3-pyparsing",
  "python3-setuptools",
  "python3-jsonschema",
];

const PYTHON_MODULES = [
  "boto3",
  "botocore",
  "werkzeug",
  "flask",
  "flask_cors",
  "jinja2",
  "xmltodict",
  "responses",
  "requests",
  "dateutil",
  "cryptography",
  "yaml",
  "pyparsing",
  "setuptools",
  "jsonschema",
];

const PACKAGE_DIR = join(dirname(fileURLToPath(import.meta.url)), "..");
const VENDORED_TARBALL = join(PACKAGE_DIR, "vendor", `moto-${MOTO_VERSION}.tgz`);
const DEFAULT_CACHE_DIR = join(PACKAGE_DIR, "node_modules", ".cache", `moto-${MOTO_VERSION}`);

export interface MotoOptions {
  /** Where the vendored source is unpacked; default `node_modules/.cache/moto-5.2.3` of this package. */
  cacheDir?: string;
  /** The interpreter for the vendored source; default `/usr/bin/python3` (Debian's, with its libraries). */
  python?: string;
  /** Skip looking for a Python that has moto installed (always run the vendored source). */
  vendoredOnly?: boolean;
  /** Longest wait for moto to answer after it was spawned; default 60 s. */
  startTimeoutMs?: number;
  /** Extra environment for moto (its `MOTO_*` settings); nothing else of this process's environment is passed. */
  env?: Record<string, string>;
}

export interface MotoServer {
  /** `http://127.0.0.1:<port>`: the AWS SDK's `endpoint`. */
  readonly endpoint: string;
  readonly pid: number;
  stop(): Promise<void>;
}

const run = promisify(execFile);

/** Python started by the bootstrap below exits when its stdin closes, i.e. when this process dies in any way. */
const BOOTSTRAP = `
import os, sys, threading
def _orphaned():
    sys.stdin.buffer.read()
    os._exit(0)
threading.Thread(target=_orphaned, daemon=True).start()
from moto.server import main
main(["-H", "127.0.0.1", "-p", "0"])
`;

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

function killOnExit(child: ChildProcess): void {
  running.add(child);
  child.once("exit", () => running.delete(child));
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const c of running) c.kill("SIGKILL");
  });
}

interface Interpreter {
  executable: string;
  /** Set when the vendored tree is used. */
  pythonPath?: string;
}

async function installedMoto(): Promise<Interpreter | null> {
  try {
    const { stdout } = await run(
      "python3",
      ["-c", "import sys, moto, flask, flask_cors; print(moto.__version__); print(sys.executable)"],
      { timeout: 30_000 },
    );
    const [version, executable] = stdout.trim().split("\n");
    if (version !== MOTO_VERSION || !executable) return null;
    return { executable };
  } catch {
    return null;
  }
}

async function checkLibraries(python: string): Promise<void> {
  const probe = `
import importlib
missing = []
for name in ${JSON.stringify(PYTHON_MODULES)}:
    try:
        importlib.import_module(name)
    except Exception:
        missing.append(name)
print(" ".join(missing))
`;
  let missing: string;
  try {
    missing = (await run(python, ["-c", probe], { timeout: 60_000 })).stdout.trim();
  } catch (error) {
    throw new Error(
      `moto needs ${python} (Debian's python3 with its libraries): ${(error as Error).message.split("\n")[0]}; ` +
        `run: apt-get install -y python3 ${MOTO_APT_PACKAGES.join(" ")}`,
    );
  }
  if (missing) {
    throw new Error(
      `moto needs Python modules that ${python} cannot import (${missing}); ` +
        `run: apt-get install -y ${MOTO_APT_PACKAGES.join(" ")}`,
    );
  }
}

/** Unpacks the vendored tarball once; concurrent callers each unpack to their own folder and the first rename wins. */
export async function unpackMoto(cacheDir: string = DEFAULT_CACHE_DIR): Promise<string> {
  if (existsSync(join(cacheDir, "moto", "server.py"))) return cacheDir;
  await mkdir(dirname(cacheDir), { recursive: true });
  const temp = `${cacheDir}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  await mkdir(temp);
  try {
    await run("tar", ["-xzf", VENDORED_TARBALL, "-C", temp], { timeout: 120_000 });
    await rename(temp, cacheDir);
  } catch (error) {
    if (!existsSync(join(cacheDir, "moto", "server.py"))) throw error;
  } finally {
    await rm(temp, { recursive: true, force: true });
  }
  return cacheDir;
}

async function resolveInterpreter(options: MotoOptions): Promise<Interpreter> {
  if (!options.vendoredOnly) {
    const installed = await installedMoto();
    if (installed) return installed;
  }
  const python = options.python ?? "/usr/bin/python3";
  await checkLibraries(python);
  return { executable: python, pythonPath: await unpackMoto(options.cacheDir) };
}

/** Starts moto on 127.0.0.1 at a port the system picks and waits until it answers. */
export async function startMoto(options: MotoOptions = {}): Promise<MotoServer> {
  const interpreter = await resolveInterpreter(options);
  const env: Record<string, string> = { LANG: "C.UTF-8", PYTHONUNBUFFERED: "1", ...options.env };
  if (interpreter.pythonPath) env.PYTHONPATH = interpreter.pythonPath;
  const child = spawn(interpreter.executable, ["-c", BOOTSTRAP], {
    cwd: interpreter.pythonPath ?? PACKAGE_DIR,
    env,
    stdio: ["pipe", "pipe", "pipe"],
  });
  killOnExit(child);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  try {
    const port = await announcedPort(child, options.startTimeoutMs ?? 60_000);
    const endpoint = `http://127.0.0.1:${port}`;
    await waitUntilAnswering(endpoint, child);
    // A server the caller forgot to stop does not keep this process alive (and dies with it, see BOOTSTRAP).
    child.unref();
    for (const stream of [child.stdin, child.stdout, child.stderr]) (stream as Socket | null)?.unref();
    return {
      endpoint,
      pid: child.pid ?? -1,
      async stop() {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill("SIGTERM");
          const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
          await exited;
          clearTimeout(timer);
        }
      },
    };
  } catch (error) {
    child.kill("SIGKILL");
    await exited;
    throw error;
  }
}

/** werkzeug logs ` * Running on http://127.0.0.1:<port>` once it listens. */
function announcedPort(child: ChildProcess, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let output = "";
    const onData = (chunk: Buffer) => {
      output += chunk.toString("utf8");
      const match = /Running on http:\/\/127\.0\.0\.1:(\d+)/.exec(output);
      if (match?.[1]) {
        done();
        resolve(Number(match[1]));
      }
      if (output.length > 64_000) output = output.slice(-16_000);
    };
    const onExit = (code: number | null, signal: string | null) => {
      done();
      reject(
        new Error(`moto exited before listening (${signal ?? `code ${code}`}): ${output.slice(-2_000)}`),
      );
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`moto did not listen within ${timeoutMs} ms: ${output.slice(-2_000)}`));
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      child.stderr?.off("data", onData);
      child.stdout?.off("data", onData);
      child.off("exit", onExit);
      // Keep draining, so a chatty server never blocks on a full pipe.
      child.stderr?.resume();
      child.stdout?.resume();
    };
    child.stderr?.on("data", onData);
    child.stdout?.on("data", onData);
    child.once("exit", onExit);
  });
}

async function waitUntilAnswering(endpoint: string, child: ChildProcess): Promise<void> {
  for (let attempt = 0; attempt < 100; attempt++) {
    if (child.exitCode !== null) throw new Error(`moto exited (code ${child.exitCode})`);
    try {
      const response = await fetch(`${endpoint}/moto-api/`);
      await response.arrayBuffer();
      if (response.ok) return;
    } catch {
      // not accepting yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`moto at ${endpoint} did not answer GET /moto-api/`);
}
