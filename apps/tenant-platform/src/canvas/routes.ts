import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type { ApiRoute } from "@molecule/service-kit/openapi";
import { type Context, Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../http/types.ts";

/**
 * The canvas: a single page served at `/` with its scripts and styles under `/canvas/`. The page and its assets are
 * public; the page signs in with the admin token and calls the (protected) API like any other client. Nothing is
 * fetched from elsewhere, and the Content-Security-Policy says so.
 */

const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
};

/** Every file the canvas serves; anything else under `/canvas/` is a 404. */
export const CANVAS_ASSETS = [
  "index.html",
  "canvas.css",
  "favicon.svg",
  "main.js",
  "api.js",
  "stream.js",
  "store.js",
  "dom.js",
  "format.js",
  "parts.js",
  "login.js",
  "fleet.js",
  "workspace.js",
  "create.js",
] as const;

interface Asset {
  body: string;
  contentType: string;
  etag: string;
}

function loadAssets(): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  for (const name of CANVAS_ASSETS) {
    const body = readFileSync(new URL(`./static/${name}`, import.meta.url), "utf8");
    const extension = name.slice(name.lastIndexOf("."));
    const contentType = CONTENT_TYPES[extension];
    if (!contentType) throw new Error(`canvas asset ${name} has no content type`);
    const etag = `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`;
    assets.set(name, { body, contentType, etag });
  }
  return assets;
}

function respond(c: Context<AppEnv>, asset: Asset | undefined) {
  if (!asset) return c.notFound();
  c.header("content-security-policy", CONTENT_SECURITY_POLICY);
  c.header("x-content-type-options", "nosniff");
  c.header("referrer-policy", "no-referrer");
  c.header("cache-control", "no-cache");
  c.header("etag", asset.etag);
  if (c.req.header("if-none-match") === asset.etag) return c.body(null, 304);
  c.header("content-type", asset.contentType);
  return c.body(asset.body, 200);
}

export function canvasRoutes() {
  const assets = loadAssets();
  const app = new Hono<AppEnv>();
  app.get("/", (c) => respond(c, assets.get("index.html")));
  app.get("/canvas/:file", (c) => {
    const file = c.req.param("file");
    return respond(c, file === "index.html" ? undefined : assets.get(file));
  });
  return app;
}

export const canvasApi: ApiRoute[] = [
  {
    method: "GET",
    path: "/",
    summary: "The canvas (web UI)",
    description: "Signs in with the admin token and calls this API like any client.",
    tag: "canvas",
    auth: [],
    responses: { 200: { description: "Its page", contentType: "text/html" } },
  },
  {
    method: "GET",
    path: "/canvas/:file",
    summary: "A script, style or image of the canvas",
    tag: "canvas",
    auth: [],
    params: z.object({ file: z.enum(CANVAS_ASSETS.filter((name) => name !== "index.html")) }),
    responses: { 200: { description: "The file", contentType: "text/javascript" } },
    errors: [404],
  },
];
