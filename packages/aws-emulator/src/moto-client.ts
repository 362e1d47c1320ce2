import type { IncomingHttpHeaders } from "node:http";
import { performance } from "node:perf_hooks";
import { request } from "undici";
import type { Answer } from "./protocol.ts";
import type { Scope } from "./state.ts";

/** Headers that belong to one connection, not to the call: never forwarded either way. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
  "expect",
  "host",
  "content-length",
  "proxy-connection",
  "te",
  "trailer",
]);

const EC2_API_VERSION = "2016-11-15";

/** Calls to one moto server: the SDK's requests relayed byte for byte, and the proxy's own EC2 calls. */
export class MotoClient {
  /** Milliseconds spent waiting on moto, for the benchmark's "time beyond moto's". */
  waitedMs = 0;

  constructor(readonly endpoint: string) {}

  async forward(method: string, url: string, headers: IncomingHttpHeaders, body: Buffer): Promise<Answer> {
    const forwarded: Record<string, string> = {};
    for (const [name, value] of Object.entries(headers)) {
      if (value === undefined || HOP_BY_HOP.has(name)) continue;
      forwarded[name] = Array.isArray(value) ? value.join(", ") : value;
    }
    return this.send(method, url, forwarded, body);
  }

  /** An EC2 Query call of the proxy's own, in the caller's account and region (moto does not check signatures). */
  async ec2(scope: Scope, action: string, params: Record<string, string> | URLSearchParams): Promise<Answer> {
    const form = new URLSearchParams(params);
    form.set("Action", action);
    form.set("Version", EC2_API_VERSION);
    const date = new Date().toISOString().slice(0, 10).replace(/-/g, "");
    return this.send(
      "POST",
      "/",
      {
        "content-type": "application/x-www-form-urlencoded; charset=utf-8",
        authorization:
          `AWS4-HMAC-SHA256 Credential=${scope.accessKeyId}/${date}/${scope.region}/ec2/aws4_request, ` +
          "SignedHeaders=host, Signature=0",
      },
      Buffer.from(form.toString()),
    );
  }

  private async send(
    method: string,
    url: string,
    headers: Record<string, string>,
    body: Buffer,
  ): Promise<Answer> {
    const started = performance.now();
    try {
      const response = await request(`${this.endpoint}${url}`, {
        method: method as "POST",
        headers,
        body: method === "GET" || method === "HEAD" ? undefined : body,
      });
      const payload = Buffer.from(await response.body.arrayBuffer());
      const answerHeaders: Record<string, string> = {};
      for (const [name, value] of Object.entries(response.headers)) {
        if (value === undefined || HOP_BY_HOP.has(name) || name === "status") continue;
        answerHeaders[name] = Array.isArray(value) ? value.join(", ") : value;
      }
      return { status: response.statusCode, headers: answerHeaders, body: payload };
    } finally {
      this.waitedMs += performance.now() - started;
    }
  }
}
