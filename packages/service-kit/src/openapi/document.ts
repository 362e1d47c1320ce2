import { z } from "zod";

/**
 * The OpenAPI 3.1 document of a service, built from the route descriptions kept beside its routes and the zod schemas
 * those routes already validate with (`z.toJSONSchema`, draft 2020-12, which OpenAPI 3.1 schemas are). Nothing here is
 * written by hand twice: a schema that a contracts module exports by name becomes one component, referenced wherever
 * it is used.
 */

export type HttpMethod = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";

export interface ApiResponse {
  description: string;
  /** The JSON body's schema. */
  schema?: z.ZodType;
  /** A body that is not JSON (an event stream, a page, metrics text); default `application/json` with a schema. */
  contentType?: string;
  /** Other types the same answer may come as, each a stream of text (the A2A proxy relays an event stream). */
  alsoAs?: readonly string[];
}

/** One operation, described beside the route that serves it. */
export interface ApiRoute {
  method: HttpMethod;
  /** The path as the route is registered (`/workspaces/:id`). */
  path: string;
  summary: string;
  description?: string;
  tag: string;
  /** The security schemes any one of which the route accepts; empty for a public route. */
  auth: readonly string[];
  params?: z.ZodObject;
  query?: z.ZodObject;
  headers?: z.ZodObject;
  /** A JSON request body. */
  body?: z.ZodType;
  /** The answers of this route by status (successes, and errors with a shape of their own). */
  responses: Readonly<Record<number, ApiResponse>>;
  /** Error statuses this route answers with the service's error schema (401 is added for routes with auth). */
  errors?: readonly number[];
  /** The schema of this route's errors when it is not the service's envelope (the A2A proxy's JSON-RPC errors). */
  errorSchema?: z.ZodType;
}

export interface ApiDescription {
  title: string;
  version: string;
  description: string;
  /** Bearer-token security schemes by name, with what the token is. */
  security: Readonly<Record<string, string>>;
  /** What every error is answered with, unless a route says otherwise. */
  errorSchema: z.ZodType;
  /** Schemas with a name (a contracts module's exports): each becomes a component when a route uses it. */
  named: Readonly<Record<string, unknown>>;
  routes: readonly ApiRoute[];
}

// biome-ignore lint/suspicious/noExplicitAny: JSON Schema and OpenAPI objects are plain JSON
export type OpenApiDocument = Record<string, any>;
type Json = Record<string, unknown>;

const COMPONENT_PREFIX = "#/components/schemas/";
const SHARED = "__shared";

const STATUS_TEXT: Record<number, string> = {
  400: "The request is malformed (body, path, query or header)",
  401: "No valid credential",
  403: "The credential may not do this",
  404: "No such resource",
  409: "Conflicts with the resource's state",
  413: "The body is larger than the limit",
  415: "The body is not JSON",
  502: "The backend or target answered badly",
  503: "The backend or target is unavailable now",
  504: "The backend or target did not answer in time",
};

/** `/workspaces/:id` as OpenAPI writes it: `/workspaces/{id}`. */
export function openApiPath(path: string): string {
  return path.replace(/:([A-Za-z0-9_]+)/g, "{$1}");
}

function operationId(route: ApiRoute): string {
  const words = route.path
    .split("/")
    .filter(Boolean)
    .map((part) => (part.startsWith(":") ? `by-${part.slice(1)}` : part))
    .join("-")
    .split(/[^A-Za-z0-9]+/)
    .filter(Boolean);
  return [route.method.toLowerCase(), ...words.map((w) => w[0]?.toUpperCase() + w.slice(1))].join("");
}

/**
 * Converts every schema of one direction (requests are read as zod's input, answers as its output) with named schemas
 * as components. A schema that is not named but used in several places stays inline; zod's own shared definitions
 * (recursive schemas) become components too.
 */
class SchemaSet {
  private readonly registry = z.registry<{ id: string }>();
  private readonly ids = new Map<z.ZodType, string>();
  private readonly anonymous = new Set<string>();
  private counter = 0;

  constructor(
    private readonly io: "input" | "output",
    private readonly names: ReadonlyMap<z.ZodType, string>,
  ) {}

  /** Registers a schema a route uses at the top; returns the id its JSON is found under after `emit`. */
  add(schema: z.ZodType): string {
    const known = this.ids.get(schema);
    if (known) return known;
    const named = this.names.get(schema);
    const id = named ?? `__${this.io}${this.counter++}`;
    if (!named) this.anonymous.add(id);
    this.ids.set(schema, id);
    this.registry.add(schema, { id });
    return id;
  }

  /**
   * Every registered schema as JSON, and each named schema it reaches as a component. `componentName` decides the
   * component a named schema of this direction is published under (an input that differs from the output is renamed).
   */
  emit(componentName: (name: string) => string): { roots: Map<string, Json>; components: Map<string, Json> } {
    // Named schemas nested in the ones registered become components, so register them all (pruned later if unused).
    for (const schema of this.names.keys()) if (!this.ids.has(schema)) this.add(schema);
    const uri = (id: string) => (id === SHARED ? SHARED : `${COMPONENT_PREFIX}${componentName(id)}`);
    const { schemas } = z.toJSONSchema(this.registry, {
      target: "draft-2020-12",
      io: this.io,
      unrepresentable: "any",
      uri,
    });
    const roots = new Map<string, Json>();
    const components = new Map<string, Json>();
    for (const [id, raw] of Object.entries(schemas)) {
      const schema = rewriteShared(raw, this.io) as Json;
      delete schema.$schema;
      delete schema.$id;
      if (id === SHARED) {
        const defs = (schema.$defs ?? {}) as Record<string, Json>;
        for (const [defId, def] of Object.entries(defs))
          components.set(sharedName(this.io, defId), rewriteShared(def, this.io) as Json);
        continue;
      }
      roots.set(id, schema);
      if (!this.anonymous.has(id)) components.set(componentName(id), schema);
    }
    return { roots, components };
  }
}

const sharedName = (io: string, defId: string) => `Shared_${io}_${defId}`;

/** zod's `__shared#/$defs/x` references (its definitions for recursive schemas) point at components instead. */
function rewriteShared(value: unknown, io: string): unknown {
  if (Array.isArray(value)) return value.map((inner) => rewriteShared(inner, io));
  if (!value || typeof value !== "object") return value;
  const out: Json = {};
  for (const [key, inner] of Object.entries(value)) {
    if (key === "$ref" && typeof inner === "string" && inner.startsWith(`${SHARED}#/$defs/`)) {
      out[key] = `${COMPONENT_PREFIX}${sharedName(io, inner.slice(`${SHARED}#/$defs/`.length))}`;
    } else {
      out[key] = rewriteShared(inner, io);
    }
  }
  return out;
}

/** The named schemas among a module's exports, by object. */
function namedSchemas(named: Readonly<Record<string, unknown>>): Map<z.ZodType, string> {
  const names = new Map<z.ZodType, string>();
  for (const [name, value] of Object.entries(named)) {
    if (value instanceof z.ZodType && !names.has(value)) names.set(value, name);
  }
  return names;
}

function refsIn(value: unknown, found: Set<string>): Set<string> {
  if (Array.isArray(value)) for (const inner of value) refsIn(inner, found);
  else if (value && typeof value === "object") {
    for (const [key, inner] of Object.entries(value)) {
      if (key === "$ref" && typeof inner === "string" && inner.startsWith(COMPONENT_PREFIX)) {
        found.add(inner.slice(COMPONENT_PREFIX.length));
      } else refsIn(inner, found);
    }
  }
  return found;
}

export function buildOpenApiDocument(api: ApiDescription): OpenApiDocument {
  const names = namedSchemas(api.named);
  const output = new SchemaSet("output", names);
  const input = new SchemaSet("input", names);

  // Register every top-level schema first; the JSON is produced once both sets know theirs.
  const plans = api.routes.map((route) => ({
    route,
    params: route.params ? objectFields(route.params, input) : [],
    query: route.query ? objectFields(route.query, input) : [],
    headers: route.headers ? objectFields(route.headers, input) : [],
    body: route.body ? input.add(route.body) : undefined,
    responses: Object.entries(route.responses).map(([status, response]) => ({
      status,
      response,
      id: response.schema ? output.add(response.schema) : undefined,
    })),
    errorId: output.add(route.errorSchema ?? api.errorSchema),
  }));

  const outputs = output.emit((name) => name);
  const answered = reachable(
    plans.flatMap((plan) => [plan.errorId, ...plan.responses.flatMap((r) => (r.id ? [r.id] : []))]),
    new Map([...outputs.roots, ...outputs.components]),
  );
  // A named schema that both requests and answers use, whose input differs from its output (defaults, which the input
  // may leave out), is published twice, the input as `<name>Input`; renaming one renames those that reach it, so
  // repeat until nothing changes.
  const renamed = new Set<string>();
  const inputName = (name: string) => (renamed.has(name) ? `${name}Input` : name);
  let inputs = input.emit(inputName);
  for (;;) {
    const before = renamed.size;
    for (const name of names.values()) {
      if (renamed.has(name) || !answered.has(name)) continue;
      const asInput = inputs.roots.get(name);
      if (asInput && JSON.stringify(asInput) !== JSON.stringify(outputs.roots.get(name))) renamed.add(name);
    }
    if (renamed.size === before) break;
    inputs = input.emit(inputName);
  }

  const components: Record<string, Json> = {};
  const answers = [...outputs.components].filter(
    ([name]) => answered.has(name) || name.startsWith("Shared_"),
  );
  for (const [name, schema] of [...answers, ...inputs.components]) {
    if (components[name] && JSON.stringify(components[name]) !== JSON.stringify(schema)) {
      throw new Error(`two different schemas would be published as ${name}`);
    }
    components[name] ??= schema;
  }

  const paths: Record<string, Record<string, Json>> = {};
  const usedSecurity = new Set<string>();
  for (const plan of plans) {
    const { route } = plan;
    const parameters = [
      ...plan.params.map((field) =>
        parameter("path", field, rootOf(inputs.roots, field.id, inputName), true),
      ),
      ...plan.query.map((field) =>
        parameter("query", field, rootOf(inputs.roots, field.id, inputName), false),
      ),
      ...plan.headers.map((field) =>
        parameter("header", field, rootOf(inputs.roots, field.id, inputName), false),
      ),
    ];
    const errorSchema = rootOf(outputs.roots, plan.errorId);
    const responses: Record<string, Json> = {};
    for (const { status, response, id } of plan.responses) {
      const contentType = response.contentType ?? "application/json";
      // Without a schema: any JSON, or text.
      const schema = id ? rootOf(outputs.roots, id) : contentType.endsWith("json") ? {} : { type: "string" };
      const content: Record<string, Json> = { [contentType]: { schema } };
      for (const other of response.alsoAs ?? []) content[other] = { schema: { type: "string" } };
      responses[status] = { description: response.description, content };
    }
    const errorStatuses = new Set(route.errors ?? []);
    if (route.auth.length > 0) errorStatuses.add(401);
    for (const status of [...errorStatuses].sort()) {
      responses[String(status)] ??= {
        description: STATUS_TEXT[status] ?? "Error",
        content: { "application/json": { schema: errorSchema } },
      };
    }
    responses.default = {
      description: "Any other error, in the same shape",
      content: { "application/json": { schema: errorSchema } },
    };
    for (const scheme of route.auth) {
      if (!(scheme in api.security)) throw new Error(`${route.method} ${route.path}: unknown auth ${scheme}`);
      usedSecurity.add(scheme);
    }
    const operation: Json = {
      operationId: operationId(route),
      summary: route.summary,
      ...(route.description ? { description: route.description } : {}),
      tags: [route.tag],
      security: route.auth.map((scheme) => ({ [scheme]: [] })),
      ...(parameters.length > 0 ? { parameters } : {}),
      ...(plan.body
        ? {
            requestBody: {
              required: true,
              content: { "application/json": { schema: rootOf(inputs.roots, plan.body, inputName) } },
            },
          }
        : {}),
      responses,
    };
    const path = openApiPath(route.path);
    const method = route.method.toLowerCase();
    paths[path] ??= {};
    if (paths[path][method]) throw new Error(`${route.method} ${route.path} is described twice`);
    paths[path][method] = operation;
  }

  const securitySchemes: Record<string, Json> = {};
  for (const [name, description] of Object.entries(api.security)) {
    if (usedSecurity.has(name)) securitySchemes[name] = { type: "http", scheme: "bearer", description };
  }
  const document: OpenApiDocument = {
    openapi: "3.1.1",
    info: { title: api.title, version: api.version, description: api.description },
    jsonSchemaDialect: "https://json-schema.org/draft/2020-12/schema",
    tags: [...new Set(api.routes.map((route) => route.tag))].map((name) => ({ name })),
    paths,
    components: { securitySchemes, schemas: {} as Record<string, Json> },
  };
  // Only the components something reaches.
  const reached = reachable([...refsIn(paths, new Set())], new Map(Object.entries(components)));
  for (const name of [...reached].sort()) document.components.schemas[name] = components[name];
  return document;
}

/** The components the given names reach, themselves included. */
function reachable(start: readonly string[], components: ReadonlyMap<string, Json>): Set<string> {
  const visited = new Set<string>();
  const queue = [...start];
  while (queue.length > 0) {
    const name = queue.pop() as string;
    if (visited.has(name)) continue;
    visited.add(name);
    const schema = components.get(name);
    if (!schema) throw new Error(`the document refers to a schema it lacks: ${name}`);
    queue.push(...refsIn(schema, new Set()));
  }
  // Schemas without a name are inlined where they are used, never components.
  return new Set([...visited].filter((name) => !name.startsWith("__")));
}

/** A route's schema at the top: a named one by reference, any other inline. */
function rootOf(roots: Map<string, Json>, id: string, name: (id: string) => string = (id) => id): Json {
  if (!id.startsWith("__")) return { $ref: `${COMPONENT_PREFIX}${name(id)}` };
  const schema = roots.get(id);
  if (!schema) throw new Error(`no JSON schema was made for ${id}`);
  return schema;
}

interface Field {
  name: string;
  id: string;
  optional: boolean;
  description: string | undefined;
}

function objectFields(object: z.ZodObject, set: SchemaSet): Field[] {
  return Object.entries(object.shape).map(([name, schema]) => {
    const field = schema as z.ZodType;
    return {
      name,
      id: set.add(field),
      optional: field.safeParse(undefined).success,
      description: field.description,
    };
  });
}

function parameter(where: "path" | "query" | "header", field: Field, schema: Json, required: boolean) {
  return {
    name: field.name,
    in: where,
    required: required || !field.optional,
    ...(field.description ? { description: field.description } : {}),
    schema,
  };
}
