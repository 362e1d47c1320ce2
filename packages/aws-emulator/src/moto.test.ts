import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CreateVpcCommand,
  DescribeRegionsCommand,
  DescribeVpcsCommand,
  EC2Client,
} from "@aws-sdk/client-ec2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type MotoServer, startMoto, unpackMoto } from "./moto.ts";

describe("startMoto", () => {
  let moto: MotoServer;
  let ec2: EC2Client;

  beforeAll(async () => {
    moto = await startMoto();
    ec2 = new EC2Client({
      endpoint: moto.endpoint,
      region: "us-east-1",
      credentials: { accessKeyId: "test", secretAccessKey: "test" },
    });
  });

  afterAll(async () => {
    ec2?.destroy();
    await moto?.stop();
  });

  it("listens on loopback and answers EC2 calls made with the AWS SDK", async () => {
    expect(moto.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const regions = await ec2.send(new DescribeRegionsCommand({}));
    expect(regions.Regions?.map((r) => r.RegionName)).toContain("us-east-1");

    const created = await ec2.send(new CreateVpcCommand({ CidrBlock: "10.42.0.0/16" }));
    const vpcId = created.Vpc?.VpcId;
    expect(vpcId).toMatch(/^vpc-/);
    const described = await ec2.send(new DescribeVpcsCommand({ VpcIds: [vpcId as string] }));
    expect(described.Vpcs?.[0]?.CidrBlock).toBe("10.42.0.0/16");
  });

  it("stop() ends the python process", async () => {
    const second = await startMoto();
    expect(second.endpoint).not.toBe(moto.endpoint);
    await second.stop();
    expect(() => process.kill(second.pid, 0)).toThrow();
    await expect(fetch(`${second.endpoint}/moto-api/`)).rejects.toThrow();
  });

  it("fails naming the apt-get line when the python it needs is missing, never skipping", async () => {
    await expect(startMoto({ vendoredOnly: true, python: "/nonexistent/python3" })).rejects.toThrow(
      /apt-get install -y python3 python3-boto3 .*python3-jsonschema/,
    );
  });

  it("unpacks once when several callers unpack at the same time, leaving no temporary folder", async () => {
    const parent = mkdtempSync(join(tmpdir(), "moto-unpack-"));
    try {
      const cacheDir = join(parent, "moto");
      const results = await Promise.all([unpackMoto(cacheDir), unpackMoto(cacheDir), unpackMoto(cacheDir)]);
      expect(results).toEqual([cacheDir, cacheDir, cacheDir]);
      expect(existsSync(join(cacheDir, "moto", "server.py"))).toBe(true);
      expect(readdirSync(parent)).toEqual(["moto"]);
    } finally {
      rmSync(parent, { recursive: true, force: true });
    }
  });
});
