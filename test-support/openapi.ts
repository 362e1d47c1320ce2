/**
 * Holding a service to its OpenAPI document in tests: the document is valid OpenAPI 3.1, it describes every route the
 * app serves and nothing else, and every JSON answer the test suite receives matches the schema the document gives
 * for that route and status (`AnswerChecker`, which the test platforms run on every call).
 */
import { compileErrors, validate } from "@readme/openapi-parser";
import { Ajv2020, type ValidateFunction } from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

// biome-ignore lint/suspicious/noExplicitAny: OpenAPI documents are plain JSON
type Document = Record<string, any>;

/** The validator's findings, as one string (empty when the document is valid OpenAPI). */
export async function openApiProblems(document: Document): Promise<string> {
  const result = await validate(structuredClone(document) as never);
  return result.valid ? "" : compileErrors(result);
}

/** What the app registers: `METHOD /path` for each route (middleware left out), raw front-door routes included. */
export function servedRoutes(
  app: { routes: readonly { method: string; path: string }[] },
  rawRoutes: readonly { method: string; path: string }[] = [],
): Set<string> {
  const served = new Set<string>();
  for (const route of [...app.routes, ...rawRoutes]) {
    if (route.method === "ALL") continue;
    served.add(`${route.method} ${route.path.replace(/\/+$/, "") || "/"}`);
  }
  return served;
}

/** `METHOD /path` (Hono's form of the path) for each operation of the document. */
export function documentedRoutes(document: Document): Set<string> {
  const documented = new Set<string>();
  for (const [path, operations] of Object.entries(document.paths as Document)) {
    for (const method of Object.keys(operations)) {
      documented.add(`${method.toUpperCase()} ${path.replace(/\{([^}]+)\}/g, ":$1")}`);
    }
  }
  return documented;
}

interface Operation {
  pattern: RegExp;
  literals: number;
  pointer: string;
  responses: Document;
}

const escapePointer = (part: string) => part.replace(/~/g, "~0").replace(/\//g, "~1");

/**
 * Checks answers against a document: `check` throws, naming the route, the status and what differs, when a JSON answer
 * does not match the schema documented for its route and status (or the route has no such status and no default).
 * An answer on a path the document does not have is held to `fallback` (the service's 404 envelope).
 */
/** The two ways a document and an app can disagree, each as a sorted list (both empty when they agree). */
export function routeMismatch(
  document: Document,
  served: Set<string>,
): { servedNotDocumented: string[]; documentedNotServed: string[] } {
  const documented = documentedRoutes(document);
  return {
    servedNotDocumented: [...served].filter((route) => !documented.has(route)).sort(),
    documentedNotServed: [...documented].filter((route) => !served.has(route)).sort(),
  };
}

/**
 * What is wrong with a `/docs` answer for this document (empty when nothing): it must be a 200 HTML page under a
 * CSP that allows nothing from anywhere, load no script, stylesheet or other-origin resource, and name every path.
 */
export async function docsPageProblems(response: Response, document: Document): Promise<string[]> {
  const problems: string[] = [];
  if (response.status !== 200) problems.push(`status ${response.status}`);
  if (!/^text\/html/.test(response.headers.get("content-type") ?? "")) problems.push("not text/html");
  const csp = response.headers.get("content-security-policy") ?? "";
  if (!csp.includes("default-src 'none'")) problems.push(`CSP without default-src 'none': ${csp}`);
  if (/script-src|https?:/.test(csp)) problems.push(`CSP allows scripts or another origin: ${csp}`);
  const page = await response.text();
  const loaded = page.match(/<script|<link|src=|href="(https?:)?\/\//i);
  if (loaded) problems.push(`page loads something: ${loaded[0]}`);
  for (const path of Object.keys(document.paths ?? {})) {
    if (!page.includes(`<code>${path}</code>`)) problems.push(`page does not name ${path}`);
  }
  return problems;
}

export class AnswerChecker {
  private readonly ajv: Ajv2020;
  private readonly operations = new Map<string, Operation[]>();
  private readonly compiled = new Map<string, ValidateFunction>();
  private static readonly BASE = "https://molecule.invalid/openapi.json";

  constructor(
    document: Document,
    private readonly fallback = "#/components/schemas/ErrorEnvelope",
  ) {
    this.ajv = new Ajv2020({ strict: false, allErrors: true });
    addFormats.default(this.ajv);
    this.ajv.addSchema({ ...document, $id: AnswerChecker.BASE });
    for (const [path, operations] of Object.entries(document.paths as Document)) {
      const segments = path.split("/").filter(Boolean);
      const pattern = new RegExp(
        `^/${segments.map((part) => (part.startsWith("{") ? "[^/]+" : escapeRegExp(part))).join("/")}$`,
      );
      const literals = segments.filter((part) => !part.startsWith("{")).length;
      for (const [method, operation] of Object.entries(operations as Document)) {
        const key = method.toUpperCase();
        const list = this.operations.get(key) ?? [];
        list.push({
          pattern,
          literals,
          pointer: `#/paths/${escapePointer(path)}/${method}`,
          responses: operation.responses,
        });
        list.sort((a, b) => b.literals - a.literals);
        this.operations.set(key, list);
      }
    }
  }

  check(method: string, url: string, status: number, contentType: string | null, body: unknown): void {
    if (!contentType || !/^application\/(.+\+)?json\b/i.test(contentType)) return;
    // As the service saw it: the URL parser resolves dot segments (`/workspaces/%2e%2e` is `/`) before the app does.
    const path = new URL(url, "http://service.test").pathname;
    const operation = this.operations.get(method.toUpperCase())?.find((op) => op.pattern.test(path));
    let pointer: string;
    let where: string;
    if (!operation) {
      pointer = this.fallback;
      where = `${method} ${path} (no such route in the document)`;
    } else {
      const documented = operation.responses[String(status)] ? String(status) : "default";
      const response = operation.responses[documented];
      where = `${method} ${path} -> ${status} (${operation.pointer.slice(2)}, response ${documented})`;
      if (!response) throw new Error(`${where}: the document has no answer ${status} and no default`);
      if (!response.content?.["application/json"]) {
        throw new Error(
          `${where}: answered JSON where the document says ${Object.keys(response.content ?? {})}`,
        );
      }
      pointer = `${operation.pointer}/responses/${documented}/content/application~1json/schema`;
    }
    let validateAnswer = this.compiled.get(pointer);
    if (!validateAnswer) {
      validateAnswer = this.ajv.compile({ $ref: `${AnswerChecker.BASE}${pointer}` });
      this.compiled.set(pointer, validateAnswer);
    }
    if (!validateAnswer(body)) {
      const problems = (validateAnswer.errors ?? [])
        .slice(0, 5)
        .map((error) => `${error.instancePath || "(root)"} ${error.message} ${JSON.stringify(error.params)}`);
      throw new Error(
        `${where}: the answer does not match its documented schema:\n  ${problems.join("\n  ")}\n  answer: ${JSON.stringify(body).slice(0, 500)}`,
      );
    }
  }
}

/** `check` for an answer read as text: JSON is parsed first (text that is not JSON under a JSON type fails). */
export function checkAnswerText(
  checker: AnswerChecker,
  method: string,
  url: string,
  status: number,
  contentType: string | null,
  text: string,
): void {
  if (!text || !contentType || !/^application\/(.+\+)?json\b/i.test(contentType)) return;
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`${method} ${url} -> ${status}: ${contentType} that is not JSON: ${text.slice(0, 200)}`);
  }
  checker.check(method, url, status, contentType, body);
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
