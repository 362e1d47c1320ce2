import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../../test-support/net.ts";
import { parseCli, runFlags, TOKEN_FLAG_WARNING, UsageError } from "./cli.ts";
import { sendText, spawnEntry, waitForEvent } from "./testing/agent-process.ts";
import { FakePlatform } from "./testing/fake-platform.ts";

const entry = fileURLToPath(new URL("./cli.ts", import.meta.url));

async function until(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("parseCli", () => {
  const env = {};
  const parse = (argv: string[], extra: Partial<Parameters<typeof parseCli>[1]> = {}) =>
    parseCli(argv, { env, home: "/home/someone", ...extra });

  it("reads the run flags with their defaults", () => {
    const command = parse([
      "run",
      "--platform",
      "https://platform.example.com",
      "--token",
      "mbt_abc",
      "--workspace",
      "ws_01",
      "--url",
      "https://agent.example.com:8443/a2a",
    ]);
    expect(command).toEqual({
      kind: "run",
      // The token on the command line works, with a warning: `ps` shows it to every user of the machine.
      warnings: [TOKEN_FLAG_WARNING],
      options: {
        platformUrl: "https://platform.example.com",
        workspaceId: "ws_01",
        token: "mbt_abc",
        url: "https://agent.example.com:8443/a2a",
        port: 8443,
        host: "127.0.0.1",
        stateDir: "/home/someone/.molecule/agent",
        heartbeatIntervalMs: 30_000,
      },
    });
  });

  it("reads the token from --token-file or WORKSPACE_BOOT_TOKEN without a warning", () => {
    const base = ["run", "--platform", "http://p", "--workspace", "ws_1", "--url", "http://a"];
    const files: Record<string, string> = { "/t": "mbt_file\n", "/empty": " \n", "/two": "mbt_a mbt_b" };
    const readFile = (path: string) => {
      const text = files[path];
      if (text === undefined) throw Object.assign(new Error("no such file"), { code: "ENOENT" });
      return text;
    };
    expect(parse([...base, "--token-file", "/t"], { readFile })).toMatchObject({
      warnings: [],
      options: { token: "mbt_file" },
    });
    expect(parse(base, { env: { WORKSPACE_BOOT_TOKEN: "mbt_env" } })).toMatchObject({
      warnings: [],
      options: { token: "mbt_env" },
    });
    // The file wins over the environment.
    expect(
      parse([...base, "--token-file", "/t"], { readFile, env: { WORKSPACE_BOOT_TOKEN: "mbt_env" } }),
    ).toMatchObject({ options: { token: "mbt_file" } });
    for (const [argv, message] of [
      [[...base, "--token-file", "/missing"], "--token-file /missing: ENOENT"],
      [[...base, "--token-file", "/empty"], "--token-file /empty is empty"],
      [[...base, "--token-file", "/two"], "holds more than one token"],
      [[...base, "--token-file", "/t", "--token", "mbt_x"], "--token and --token-file are both given"],
    ] as [string[], string][]) {
      expect(() => parse(argv, { readFile }), argv.join(" ")).toThrow(message);
    }
  });

  it("takes the platform, workspace and token from the environment, flags first", () => {
    const command = parse(["run", "--url", "https://agent.example.com", "--port", "0", "--state-dir", "/s"], {
      env: {
        PLATFORM_URL: "http://127.0.0.1:8080",
        WORKSPACE_ID: "ws_env",
        WORKSPACE_BOOT_TOKEN: "mbt_env",
        WORKSPACE_STATE_DIR: "/ignored",
      },
    });
    expect(command).toMatchObject({
      kind: "run",
      options: {
        platformUrl: "http://127.0.0.1:8080",
        workspaceId: "ws_env",
        token: "mbt_env",
        port: 0,
        stateDir: "/s",
      },
    });
    // No port in the URL: 8000.
    expect(
      parse(["run", "--url", "https://agent.example.com"], {
        env: { PLATFORM_URL: "http://p", WORKSPACE_ID: "ws_1" },
      }),
    ).toMatchObject({ options: { port: 8000, token: undefined } });
  });

  it("reads a connection bundle, or the whole create response, from --bundle", () => {
    const connection = {
      workspace_id: "ws_bundle",
      platform_url: "http://127.0.0.1:9000",
      registration_token: "mbt_bundle",
    };
    for (const text of [JSON.stringify(connection), JSON.stringify({ workspace: {}, connection })]) {
      const command = parse(["run", "--bundle", "b.json", "--url", "http://127.0.0.1:7000"], {
        readFile: () => text,
      });
      expect(command).toMatchObject({
        options: {
          workspaceId: "ws_bundle",
          platformUrl: "http://127.0.0.1:9000",
          token: "mbt_bundle",
          port: 7000,
        },
      });
    }
    expect(() => parse(["run", "--bundle", "b.json", "--url", "http://x"], { readFile: () => "{" })).toThrow(
      "--bundle b.json: not JSON",
    );
    expect(() => parse(["run", "--bundle", "b.json", "--url", "http://x"], { readFile: () => "{}" })).toThrow(
      "no workspace_id",
    );
  });

  it("takes the heartbeat interval from the flag, the environment, or the bundle, in that order", () => {
    const base = ["run", "--platform", "http://p", "--workspace", "ws_1", "--url", "http://a"];
    const interval = (argv: string[], extra: Partial<Parameters<typeof parseCli>[1]> = {}) => {
      const command = parse(argv, extra);
      return command.kind === "run" ? command.options.heartbeatIntervalMs : undefined;
    };
    expect(interval(base)).toBe(30_000);
    expect(interval(base, { env: { HEARTBEAT_INTERVAL_SECONDS: "3" } })).toBe(3_000);
    expect(interval(base, { env: { HEARTBEAT_INTERVAL_SECONDS: "3", HEARTBEAT_INTERVAL_MS: "1500" } })).toBe(
      1_500,
    );
    expect(
      interval([...base, "--heartbeat-interval-ms", "700"], { env: { HEARTBEAT_INTERVAL_MS: "1500" } }),
    ).toBe(700);
    const bundle = JSON.stringify({
      workspace_id: "ws_b",
      platform_url: "http://p",
      heartbeat_interval_seconds: 5,
    });
    const fromBundle = ["run", "--bundle", "b.json", "--url", "http://a"];
    expect(interval(fromBundle, { readFile: () => bundle })).toBe(5_000);
    expect(interval(fromBundle, { readFile: () => bundle, env: { HEARTBEAT_INTERVAL_SECONDS: "2" } })).toBe(
      2_000,
    );
    expect(() => parse(base, { env: { HEARTBEAT_INTERVAL_SECONDS: "soon" } })).toThrow(
      "HEARTBEAT_INTERVAL_SECONDS must be an integer from 1 to 3600",
    );
  });

  it("reads back what runFlags writes, the token coming from the environment", () => {
    const options = {
      platformUrl: "http://127.0.0.1:9000",
      workspaceId: "ws_flags",
      url: "http://127.0.0.1:7000",
      port: 7001,
      host: "0.0.0.0",
      stateDir: "/state",
      heartbeatIntervalMs: 250,
    };
    const flags = runFlags(options);
    expect(flags).not.toContain("--token");
    expect(parse(["run", ...flags], { env: { WORKSPACE_BOOT_TOKEN: "mbt_flags" } })).toEqual({
      kind: "run",
      warnings: [],
      options: { ...options, token: "mbt_flags" },
    });
    expect(runFlags({ workspaceId: "ws_1" })).toEqual(["--workspace", "ws_1"]);
  });

  it("answers help, and refuses bad usage with one line", () => {
    expect(parse(["--help"])).toEqual({ kind: "help" });
    expect(parse(["run", "-h"])).toEqual({ kind: "help" });
    const cases: [string[], string][] = [
      [[], "missing command"],
      [["serve"], 'unknown command "serve"'],
      [["run", "--nope"], "Unknown option '--nope'"],
      [["run", "--url", "http://a", "--workspace", "ws_1"], "--platform is required"],
      [["run", "--platform", "http://p", "--url", "http://a"], "--workspace is required"],
      [["run", "--platform", "http://p", "--workspace", "ws_1"], "--url is required"],
      [
        ["run", "--platform", "ftp://p", "--workspace", "ws_1", "--url", "http://a"],
        "--platform must be an http(s) URL",
      ],
      [["run", "--platform", "http://p", "--workspace", "ws 1", "--url", "http://a"], "--workspace must be"],
      [
        ["run", "--platform", "http://p", "--workspace", "ws_1", "--url", "http://a", "--port", "70000"],
        "--port",
      ],
      [
        [
          "run",
          "--platform",
          "http://p",
          "--workspace",
          "ws_1",
          "--url",
          "http://a",
          "--heartbeat-interval-ms",
          "5",
        ],
        "--heartbeat-interval-ms must be an integer from 100",
      ],
      [["run", "extra"], 'unexpected argument "extra"'],
    ];
    for (const [argv, message] of cases) {
      let error: unknown;
      try {
        parse(argv);
      } catch (err) {
        error = err;
      }
      expect(error, argv.join(" ")).toBeInstanceOf(UsageError);
      expect((error as Error).message).toContain(message);
      expect((error as Error).message).not.toContain("\n");
    }
  });
});

describe("molecule-agent process", () => {
  const platform = new FakePlatform();
  let stateDir = "";
  beforeAll(async () => {
    await platform.start();
    stateDir = await mkdtemp(join(tmpdir(), "molecule-agent-cli-"));
  });
  afterAll(async () => {
    await platform.stop();
    await rm(stateDir, { recursive: true, force: true });
  });

  /** The token goes in the environment, as the connection bundle's snippet passes it. */
  const cli = (args: string[], token?: string) =>
    spawnEntry(entry, args, {
      PATH: process.env.PATH ?? "",
      HOME: stateDir,
      ...(token === undefined ? {} : { WORKSPACE_BOOT_TOKEN: token }),
    });

  const runArgs = (id: string, port: number) => [
    "run",
    ...runFlags({
      platformUrl: platform.url,
      workspaceId: id,
      url: `http://127.0.0.1:${port}`,
      stateDir,
      heartbeatIntervalMs: 200,
    }),
  ];

  it("registers, serves the echo agent, heartbeats, and restarts on its stored token after SIGTERM", async () => {
    const token = platform.addWorkspace("ws_cli_proc", { MY_SECRET: "not-for-logs" });
    const port = await freePort();
    const first = cli(runArgs("ws_cli_proc", port), token);
    try {
      const ready = await waitForEvent(first, "agent_ready");
      expect(ready).toMatchObject({ authSource: "registered", port, url: `http://127.0.0.1:${port}` });
      expect(platform.workspace("ws_cli_proc").url).toBe(`http://127.0.0.1:${port}`);
      const reply = await sendText(
        `http://127.0.0.1:${port}`,
        "hi",
        "message/send",
        platform.workspace("ws_cli_proc").inboundToken,
      );
      expect(await reply.json()).toMatchObject({
        result: { kind: "task", artifacts: [{ parts: [{ kind: "text", text: "echo: hi" }] }] },
      });
      // The loop goes on beating at --heartbeat-interval-ms.
      await until("three heartbeats", () => platform.workspace("ws_cli_proc").heartbeats.length >= 3);
    } finally {
      first.child.kill("SIGTERM");
    }
    expect(await first.exited).toBe(0);
    const everything = first.out.join("\n") + first.stderr();
    expect(everything).not.toContain(token);
    expect(everything).not.toContain(platform.workspace("ws_cli_proc").authToken ?? "missing");
    expect(everything).not.toContain(platform.workspace("ws_cli_proc").inboundToken ?? "missing");
    expect(everything).not.toContain("not-for-logs");

    // Same state directory, no token: the stored bearer token is used, no second registration.
    const second = cli(runArgs("ws_cli_proc", port));
    try {
      const ready = await waitForEvent(second, "agent_ready");
      expect(ready).toMatchObject({ authSource: "stored", port, a2aAuth: "inbound_token" });
      expect(platform.workspace("ws_cli_proc").registrations).toBe(1);
      // The inbound token was stored with it: still required, still accepted.
      expect((await sendText(`http://127.0.0.1:${port}`, "hi")).status).toBe(401);
      const inbound = platform.workspace("ws_cli_proc").inboundToken;
      expect((await sendText(`http://127.0.0.1:${port}`, "hi", "message/send", inbound)).status).toBe(200);
    } finally {
      second.child.kill("SIGINT");
    }
    expect(await second.exited).toBe(0);
  });

  it("exits 1 with one line when it has no token and none is stored", async () => {
    platform.addWorkspace("ws_cli_none");
    const run = cli(runArgs("ws_cli_none", await freePort()));
    expect(await run.exited).toBe(1);
    expect(run.stderr()).toMatch(/^molecule-agent: workspace ws_cli_none has no auth token .*\n$/);
  });

  it("exits 0 when the workspace is deleted", async () => {
    const token = platform.addWorkspace("ws_cli_gone");
    const run = cli(runArgs("ws_cli_gone", await freePort()), token);
    await waitForEvent(run, "agent_ready");
    platform.remove("ws_cli_gone");
    expect(await run.exited).toBe(0);
    expect(run.stderr()).toBe("molecule-agent: workspace ws_cli_gone was deleted\n");
  });

  it("a token given as --token still registers, after one warning line on stderr", async () => {
    const token = platform.addWorkspace("ws_cli_flag");
    const run = cli([...runArgs("ws_cli_flag", await freePort()), "--token", token]);
    try {
      await waitForEvent(run, "agent_ready");
      expect(run.stderr()).toBe(`molecule-agent: ${TOKEN_FLAG_WARNING}\n`);
      expect(run.stderr()).not.toContain(token);
    } finally {
      run.child.kill("SIGTERM");
    }
    expect(await run.exited).toBe(0);
  });

  it("prints usage for --help and exits 2 on a bad flag", async () => {
    const help = cli(["--help"]);
    expect(await help.exited).toBe(0);
    expect(help.out.join("\n")).toContain("Usage: molecule-agent run");
    const bad = cli(["run", "--frobnicate"]);
    expect(await bad.exited).toBe(2);
    expect(bad.stderr()).toBe("molecule-agent: Unknown option '--frobnicate' (see --help)\n");
  });
});
