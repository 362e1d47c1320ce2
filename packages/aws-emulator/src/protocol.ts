import { randomUUID } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";

/**
 * Just enough of AWS's wire protocols to name a call and to answer errors the way AWS does: the Query protocol
 * (EC2, IAM, STS: a form body with `Action=…`, XML answers) and the JSON protocol (Secrets Manager, SSM, …: an
 * `X-Amz-Target` header, JSON answers). The service, region and access key come from the SigV4 credential scope.
 */

export interface AwsCall {
  /** `RunInstances` for EC2; `<service>.<Action>` for the others (`secretsmanager.CreateSecret`, `sts.GetCallerIdentity`). */
  action: string;
  /** The signing name: `ec2`, `secretsmanager`, `ssm`, `sts`, `iam`, … */
  service: string;
  region: string;
  accessKeyId: string;
  protocol: "query" | "json" | "other";
  /** The form parameters of a Query call (empty for the others). */
  params: URLSearchParams;
  /** The body of a JSON call (undefined for the others). */
  json: unknown;
}

/** An HTTP answer, made here or relayed from moto. */
export interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string | Buffer;
}

const CREDENTIAL_SCOPE = /Credential=([^/,\s]+)\/\d{8}\/([^/,\s]+)\/([^/,\s]+)\/aws4_request/;

export function parseCall(method: string, url: string, headers: IncomingHttpHeaders, body: string): AwsCall {
  const scope = CREDENTIAL_SCOPE.exec(String(headers.authorization ?? ""));
  const accessKeyId = scope?.[1] ?? "anonymous";
  const region = scope?.[2] ?? "us-east-1";
  const service = scope?.[3] ?? "unknown";
  const target = headers["x-amz-target"];
  if (typeof target === "string" && target.includes(".")) {
    let json: unknown;
    try {
      json = body ? JSON.parse(body) : {};
    } catch {
      json = undefined;
    }
    const name = target.slice(target.lastIndexOf(".") + 1);
    return {
      action: `${service}.${name}`,
      service,
      region,
      accessKeyId,
      protocol: "json",
      params: new URLSearchParams(),
      json,
    };
  }
  const params = new URLSearchParams(new URL(url, "http://127.0.0.1").search);
  const contentType = String(headers["content-type"] ?? "");
  if (method === "POST" && contentType.startsWith("application/x-www-form-urlencoded")) {
    for (const [key, value] of new URLSearchParams(body)) params.append(key, value);
  }
  const name = params.get("Action");
  if (name) {
    const action = service === "ec2" ? name : `${service}.${name}`;
    return { action, service, region, accessKeyId, protocol: "query", params, json: undefined };
  }
  return {
    action: `${service}.${method} ${new URL(url, "http://127.0.0.1").pathname}`,
    service,
    region,
    accessKeyId,
    protocol: "other",
    params,
    json: undefined,
  };
}

/** Values of a Query list parameter: `InstanceId.1`, `InstanceId.2`, … in order. */
export function listParam(params: URLSearchParams, name: string): string[] {
  const values: [number, string][] = [];
  const prefix = `${name}.`;
  for (const [key, value] of params) {
    if (!key.startsWith(prefix)) continue;
    const index = Number(key.slice(prefix.length));
    if (Number.isInteger(index)) values.push([index, value]);
  }
  return values.sort((a, b) => a[0] - b[0]).map(([, value]) => value);
}

export function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/** An error in the shape the call's protocol uses: EC2's `<Response><Errors>`, Query's `<ErrorResponse>`, JSON's `__type`. */
export function errorAnswer(call: AwsCall, status: number, code: string, message: string): Answer {
  const requestId = randomUUID();
  if (call.protocol === "json") {
    return {
      status,
      headers: {
        "content-type": "application/x-amz-json-1.1",
        "x-amzn-requestid": requestId,
        "x-amzn-errortype": code,
      },
      body: JSON.stringify({ __type: code, message }),
    };
  }
  const headers = { "content-type": "text/xml;charset=UTF-8", "x-amzn-requestid": requestId };
  if (call.service === "ec2") {
    return {
      status,
      headers,
      body:
        `<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>${escapeXml(code)}</Code>` +
        `<Message>${escapeXml(message)}</Message></Error></Errors><RequestID>${requestId}</RequestID></Response>`,
    };
  }
  const type = status >= 500 ? "Receiver" : "Sender";
  return {
    status,
    headers,
    body:
      `<ErrorResponse><Error><Type>${type}</Type><Code>${escapeXml(code)}</Code><Message>${escapeXml(message)}</Message>` +
      `</Error><RequestId>${requestId}</RequestId></ErrorResponse>`,
  };
}

export type ServiceFailure = "throttle" | "internal-error" | "unavailable";

/** What AWS answers when it throttles or fails, per protocol (EC2 has its own codes and sends throttling as 503). */
export function failureAnswer(call: AwsCall, failure: ServiceFailure): Answer {
  const ec2 = call.service === "ec2";
  switch (failure) {
    case "throttle":
      if (ec2) return errorAnswer(call, 503, "RequestLimitExceeded", "Request limit exceeded.");
      if (call.protocol === "json") return errorAnswer(call, 400, "ThrottlingException", "Rate exceeded");
      return errorAnswer(call, 400, "Throttling", "Rate exceeded");
    case "internal-error":
      if (ec2) return errorAnswer(call, 500, "InternalError", "An internal error has occurred.");
      return errorAnswer(
        call,
        500,
        "InternalFailure",
        "The request processing has failed because of an unknown error.",
      );
    case "unavailable":
      if (ec2)
        return errorAnswer(
          call,
          503,
          "Unavailable",
          "The server is overloaded and can't handle the request.",
        );
      return errorAnswer(
        call,
        503,
        "ServiceUnavailable",
        "The request has failed due to a temporary failure of the server.",
      );
  }
}
