import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/**
 * A small OpenAPI 3.0 checker for the Fly Machines document: type, nullable, required, properties, items, enum,
 * allOf/anyOf/oneOf, $ref into components/schemas and additionalProperties. Annotation keywords (description,
 * example, format, x-*) are ignored by name; any other keyword makes compilation fail, so nothing is skipped silently.
 */

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Schema = { [key: string]: unknown };

interface Parameter {
  name: string;
  in: "path" | "query" | "header" | "cookie";
  required?: boolean;
  schema?: Schema;
}

interface Operation {
  operationId: string;
  parameters?: Parameter[];
  requestBody?: { required?: boolean; content?: Record<string, { schema?: Schema }> };
  responses: Record<string, { content?: Record<string, { schema?: Schema }> }>;
}

export interface OpenApiDocument {
  openapi: string;
  servers?: { url: string }[];
  paths: Record<string, Record<string, unknown>>;
  components: { schemas: Record<string, Schema> };
}

export interface MatchedOperation {
  operationId: string;
  template: string;
  method: string;
  params: Record<string, string>;
}

export interface ExchangeRequest {
  method: string;
  /** Path below the server's base path (`/apps/x/machines`), without query. */
  path: string;
  query: URLSearchParams;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}

export interface ExchangeResponse {
  method: string;
  path: string;
  status: number;
  body: unknown;
}

const ANNOTATIONS = new Set([
  "description",
  "example",
  "format",
  "title",
  "default",
  "deprecated",
  "readOnly",
]);
const KEYWORDS = new Set([
  "type",
  "nullable",
  "required",
  "properties",
  "items",
  "enum",
  "allOf",
  "anyOf",
  "oneOf",
  "$ref",
  "additionalProperties",
]);

/**
 * Query parameters Fly documents outside the OpenAPI document (in its Machines API guides): the
 * `metadata.<key>=<value>` filter of the machine list. Named here so the exception is visible.
 */
const DOCUMENTED_EXTRA_QUERY: Record<string, RegExp[]> = {
  Machines_list: [/^metadata\.[A-Za-z0-9_.-]+$/],
};

/** The error envelope Fly answers with; used for error statuses an operation does not declare. */
const ERROR_SCHEMA: Schema = { $ref: "#/components/schemas/ErrorResponse" };

/** Fly's Machines OpenAPI document, as vendored in this package (`openapi/machines-openapi.json`). */
export function machinesOpenApiPath(): string {
  return fileURLToPath(new URL("../openapi/machines-openapi.json", import.meta.url));
}

function typeOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value;
}

export class OpenApiValidator {
  private readonly routes: {
    regex: RegExp;
    names: string[];
    template: string;
    ops: Record<string, Operation>;
  }[] = [];
  /** When set, request bodies may only use properties the schemas name (catches misspelt fields we send). */
  readonly strictRequestProperties: boolean;

  constructor(
    readonly doc: OpenApiDocument,
    options: { strictRequestProperties?: boolean } = {},
  ) {
    this.strictRequestProperties = options.strictRequestProperties ?? true;
    if (!doc.openapi?.startsWith("3.")) throw new Error(`not an OpenAPI 3 document: ${doc.openapi}`);
    for (const schema of Object.values(doc.components.schemas)) this.checkKeywords(schema, "components");
    for (const [template, item] of Object.entries(doc.paths)) {
      const names: string[] = [];
      const pattern = template
        .replace(/[.*+?^$()|[\]\\]/g, "\\$&")
        .replace(/\{([^}]+)\}/g, (_m, name: string) => {
          names.push(name);
          return "([^/]+)";
        });
      const ops: Record<string, Operation> = {};
      for (const [method, op] of Object.entries(item)) {
        if (typeof op !== "object" || op === null || !("responses" in op)) continue;
        const operation = op as Operation;
        for (const p of operation.parameters ?? []) if (p.schema) this.checkKeywords(p.schema, template);
        ops[method.toUpperCase()] = operation;
      }
      this.routes.push({ regex: new RegExp(`^${pattern}$`), names, template, ops });
    }
  }

  static fromFile(file: string = machinesOpenApiPath(), options?: { strictRequestProperties?: boolean }) {
    return new OpenApiValidator(JSON.parse(readFileSync(file, "utf8")) as OpenApiDocument, options);
  }

  private checkKeywords(schema: unknown, where: string): void {
    if (typeof schema !== "object" || schema === null) return;
    for (const [key, value] of Object.entries(schema)) {
      if (ANNOTATIONS.has(key) || key.startsWith("x-")) continue;
      if (!KEYWORDS.has(key)) throw new Error(`unsupported schema keyword "${key}" in ${where}`);
      if (key === "properties") {
        for (const sub of Object.values(value as Record<string, unknown>)) this.checkKeywords(sub, where);
      } else if (key === "items" || (key === "additionalProperties" && typeof value === "object")) {
        this.checkKeywords(value, where);
      } else if (key === "allOf" || key === "anyOf" || key === "oneOf") {
        for (const sub of value as unknown[]) this.checkKeywords(sub, where);
      }
    }
  }

  match(method: string, path: string): (MatchedOperation & { op: Operation }) | null {
    for (const route of this.routes) {
      const m = route.regex.exec(path);
      if (!m) continue;
      const op = route.ops[method.toUpperCase()];
      if (!op) continue;
      const params: Record<string, string> = {};
      try {
        route.names.forEach((name, i) => {
          params[name] = decodeURIComponent(m[i + 1] ?? "");
        });
      } catch {
        return null; // a malformed escape matches no operation; the emulator answers it 400
      }
      return {
        operationId: op.operationId,
        template: route.template,
        method: method.toUpperCase(),
        params,
        op,
      };
    }
    return null;
  }

  private resolveRef(ref: string): Schema {
    const prefix = "#/components/schemas/";
    if (!ref.startsWith(prefix)) throw new Error(`unsupported $ref ${ref}`);
    const schema = this.doc.components.schemas[ref.slice(prefix.length)];
    if (!schema) throw new Error(`unresolvable $ref ${ref}`);
    return schema;
  }

  /** Issues found checking `value` against `schema`, each prefixed with its JSON path. */
  validate(schema: Schema, value: unknown, at = "$", strict = false): string[] {
    const issues: string[] = [];
    this.walk(schema, value, at, strict, issues);
    return issues;
  }

  private walk(schema: Schema, value: unknown, at: string, strict: boolean, issues: string[]): void {
    if (typeof schema.$ref === "string") {
      this.walk(this.resolveRef(schema.$ref), value, at, strict, issues);
      return;
    }
    if (value === null && schema.nullable === true) return;
    for (const sub of (schema.allOf as Schema[] | undefined) ?? []) this.walk(sub, value, at, strict, issues);
    for (const key of ["anyOf", "oneOf"] as const) {
      const options = schema[key] as Schema[] | undefined;
      if (!options) continue;
      const passing = options.filter((sub) => this.validate(sub, value, at, strict).length === 0).length;
      if (key === "anyOf" ? passing === 0 : passing !== 1) issues.push(`${at}: does not match ${key}`);
    }
    const type = schema.type as string | undefined;
    const actual = typeOf(value);
    if (type && !(actual === type || (type === "number" && actual === "integer"))) {
      issues.push(`${at}: expected ${type}, got ${actual}`);
      return;
    }
    if (Array.isArray(schema.enum) && !schema.enum.includes(value as Json)) {
      issues.push(`${at}: ${JSON.stringify(value)} is not one of ${JSON.stringify(schema.enum)}`);
    }
    if (actual === "array" && schema.items) {
      (value as unknown[]).forEach((item, i) => {
        this.walk(schema.items as Schema, item, `${at}[${i}]`, strict, issues);
      });
    }
    if (actual === "object") {
      const record = value as Record<string, unknown>;
      for (const key of (schema.required as string[] | undefined) ?? []) {
        if (!(key in record)) issues.push(`${at}: missing required property "${key}"`);
      }
      const properties = (schema.properties as Record<string, Schema> | undefined) ?? {};
      const additional = schema.additionalProperties as boolean | Schema | undefined;
      const declared = this.declaredProperties(schema);
      for (const [key, item] of Object.entries(record)) {
        const sub = properties[key];
        if (sub) this.walk(sub, item, `${at}.${key}`, strict, issues);
        else if (additional === false) issues.push(`${at}: unexpected property "${key}"`);
        else if (typeof additional === "object") this.walk(additional, item, `${at}.${key}`, strict, issues);
        else if (strict && declared !== null && !declared.has(key)) {
          issues.push(`${at}: property "${key}" is not in the schema`);
        }
      }
    }
  }

  /** Names declared by a schema and its allOf parts; null when the schema says nothing about properties. */
  private declaredProperties(schema: Schema): Set<string> | null {
    const names = new Set<string>();
    let any = false;
    const visit = (s: Schema) => {
      if (typeof s.$ref === "string") return visit(this.resolveRef(s.$ref));
      if (s.properties) {
        any = true;
        for (const k of Object.keys(s.properties as object)) names.add(k);
      }
      if (s.additionalProperties !== undefined) any = false;
      for (const sub of (s.allOf as Schema[] | undefined) ?? []) visit(sub);
    };
    visit(schema);
    return any ? names : null;
  }

  private checkParam(p: Parameter, raw: string, issues: string[]): void {
    const schema = p.schema ?? {};
    let value: unknown = raw;
    if (schema.type === "integer") {
      if (!/^-?\d+$/.test(raw)) issues.push(`${p.in} ${p.name}: "${raw}" is not an integer`);
      value = Number(raw);
    } else if (schema.type === "boolean") {
      if (raw !== "true" && raw !== "false") issues.push(`${p.in} ${p.name}: "${raw}" is not a boolean`);
      value = raw === "true";
    }
    if (schema.type === "string" && Array.isArray(schema.enum)) {
      for (const part of raw.split(",")) {
        if (!schema.enum.includes(part))
          issues.push(`${p.in} ${p.name}: "${part}" is not one of ${schema.enum}`);
      }
      return;
    }
    issues.push(...this.validate(schema, value, `${p.in} ${p.name}`));
  }

  validateRequest(req: ExchangeRequest): string[] {
    const matched = this.match(req.method, req.path);
    if (!matched) return [`${req.method} ${req.path}: no such operation in the OpenAPI document`];
    const { op } = matched;
    const issues: string[] = [];
    const params = op.parameters ?? [];
    for (const p of params) {
      if (p.in === "query") {
        const raw = req.query.get(p.name);
        if (raw === null) {
          if (p.required) issues.push(`query ${p.name}: required`);
        } else this.checkParam(p, raw, issues);
      } else if (p.in === "header") {
        const raw = req.headers[p.name.toLowerCase()];
        if (raw === undefined) {
          if (p.required) issues.push(`header ${p.name}: required`);
        } else this.checkParam(p, Array.isArray(raw) ? raw.join(",") : raw, issues);
      } else if (p.in === "path") {
        const raw = matched.params[p.name];
        if (raw === undefined || raw === "") issues.push(`path ${p.name}: required`);
        else this.checkParam(p, raw, issues);
      }
    }
    const known = new Set(params.filter((p) => p.in === "query").map((p) => p.name));
    const extra = DOCUMENTED_EXTRA_QUERY[op.operationId] ?? [];
    for (const name of new Set(req.query.keys())) {
      if (!known.has(name) && !extra.some((re) => re.test(name))) issues.push(`query ${name}: not declared`);
    }
    const bodySchema = op.requestBody?.content?.["application/json"]?.schema;
    if (req.body === undefined) {
      if (op.requestBody?.required) issues.push("body: required");
    } else if (!op.requestBody) {
      issues.push("body: the operation takes no request body");
    } else if (bodySchema) {
      issues.push(...this.validate(bodySchema, req.body, "body", this.strictRequestProperties));
    }
    return issues.map((i) => `${op.operationId} request ${i}`);
  }

  validateResponse(res: ExchangeResponse): string[] {
    const matched = this.match(res.method, res.path);
    if (!matched) return [`${res.method} ${res.path}: no such operation in the OpenAPI document`];
    const { op } = matched;
    const declared = op.responses[String(res.status)];
    let schema: Schema | undefined;
    if (declared) schema = declared.content?.["application/json"]?.schema;
    else if (res.status >= 400) schema = ERROR_SCHEMA;
    else return [`${op.operationId} response: status ${res.status} is not declared`];
    if (!schema) return [];
    if (res.body === undefined) return [`${op.operationId} response ${res.status}: a JSON body is declared`];
    return this.validate(schema, res.body, "body").map(
      (i) => `${op.operationId} response ${res.status} ${i}`,
    );
  }
}
