import { createHash } from "node:crypto";
import type { OpenApiDocument } from "./document.ts";

/**
 * The reference page at `/docs`: one HTML document rendered on the server from the OpenAPI document, with its one
 * style sheet inline (allowed by its hash) and no script. Nothing is loaded from anywhere, and the
 * Content-Security-Policy sent with it says so.
 */

const STYLE = `
body{font:15px/1.5 system-ui,sans-serif;margin:0 auto;max-width:70rem;padding:1rem 2rem;color:#1b1f24}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #d0d7de;padding-bottom:.3rem;margin-top:2.5rem}
.op{border:1px solid #d0d7de;border-radius:6px;margin:.8rem 0;padding:.2rem .9rem}
.op>summary{cursor:pointer;padding:.4rem 0;font-weight:600}
.method{display:inline-block;min-width:4.2rem;font:700 12px ui-monospace,monospace;text-transform:uppercase}
.get{color:#0969da}.post{color:#1a7f37}.put,.patch{color:#9a6700}.delete{color:#cf222e}
code,pre{font:13px ui-monospace,monospace}pre{background:#f6f8fa;padding:.6rem;overflow:auto;border-radius:4px}
table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:.2rem .5rem;text-align:left;vertical-align:top}
.auth{color:#57606a}nav a{margin-right:.8rem}
`;

export const DOCS_CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  `style-src 'sha256-${createHash("sha256").update(STYLE).digest("base64")}'`,
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const escapeHtml = (text: string) =>
  text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

const anchor = (text: string) => text.replace(/[^A-Za-z0-9_-]/g, "-");

/** A schema as indented JSON, each reference to a component a link to it. */
function schemaBlock(schema: unknown): string {
  const text = escapeHtml(JSON.stringify(schema, null, 2));
  return `<pre>${text.replace(
    /&quot;#\/components\/schemas\/([A-Za-z0-9_]+)&quot;/g,
    (_, name: string) => `<a href="#schema-${anchor(name)}">${name}</a>`,
  )}</pre>`;
}

// biome-ignore lint/suspicious/noExplicitAny: OpenAPI objects are plain JSON
type Json = Record<string, any>;

function operationHtml(path: string, method: string, operation: Json): string {
  const auth = (operation.security as Json[]).flatMap((entry) => Object.keys(entry));
  const parts = [
    `<details class="op" id="${anchor(operation.operationId)}"><summary><span class="method ${method}">${method}</span>`,
    `<code>${escapeHtml(path)}</code> — ${escapeHtml(operation.summary)}</summary>`,
  ];
  if (operation.description) parts.push(`<p>${escapeHtml(operation.description)}</p>`);
  parts.push(
    `<p class="auth">Auth: ${auth.length === 0 ? "none (public)" : auth.map((name) => `<a href="#auth-${anchor(name)}">${escapeHtml(name)}</a>`).join(" or ")}</p>`,
  );
  const parameters = (operation.parameters ?? []) as Json[];
  if (parameters.length > 0) {
    parts.push("<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>required</th><th>schema</th></tr>");
    for (const parameter of parameters) {
      parts.push(
        `<tr><td><code>${escapeHtml(parameter.name)}</code>${parameter.description ? `<br>${escapeHtml(parameter.description)}` : ""}</td><td>${parameter.in}</td><td>${parameter.required ? "yes" : "no"}</td><td>${schemaBlock(parameter.schema)}</td></tr>`,
      );
    }
    parts.push("</table>");
  }
  const body = operation.requestBody?.content?.["application/json"]?.schema;
  if (body) parts.push(`<h4>Request body (application/json)</h4>${schemaBlock(body)}`);
  parts.push("<h4>Responses</h4>");
  for (const [status, response] of Object.entries(operation.responses as Json)) {
    for (const [type, content] of Object.entries((response.content ?? {}) as Json)) {
      parts.push(
        `<p><strong>${status}</strong> ${escapeHtml(response.description)} <code>${escapeHtml(type)}</code></p>`,
      );
      if (type === "application/json") parts.push(schemaBlock(content.schema));
    }
  }
  parts.push("</details>");
  return parts.join("\n");
}

export function renderDocsPage(document: OpenApiDocument): string {
  const title = escapeHtml(document.info.title);
  const byTag = new Map<string, string[]>();
  for (const [path, operations] of Object.entries(document.paths as Json)) {
    for (const [method, operation] of Object.entries(operations as Json)) {
      const tag = (operation.tags?.[0] as string | undefined) ?? "other";
      byTag.set(tag, [...(byTag.get(tag) ?? []), operationHtml(path, method, operation)]);
    }
  }
  const schemes = Object.entries((document.components.securitySchemes ?? {}) as Json)
    .map(
      ([name, scheme]) =>
        `<dt id="auth-${anchor(name)}"><code>${escapeHtml(name)}</code> (bearer token)</dt><dd>${escapeHtml(scheme.description ?? "")}</dd>`,
    )
    .join("\n");
  const schemas = Object.entries((document.components.schemas ?? {}) as Json)
    .map(([name, schema]) => `<h3 id="schema-${anchor(name)}">${escapeHtml(name)}</h3>${schemaBlock(schema)}`)
    .join("\n");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${title} API</title><style>${STYLE}</style></head><body>
<h1>${title} API</h1><p>Version ${escapeHtml(document.info.version)} · OpenAPI ${escapeHtml(document.openapi)} ·
<a href="openapi.json">openapi.json</a></p>
<p>${escapeHtml(document.info.description)}</p>
<nav>${[...byTag.keys()].map((tag) => `<a href="#tag-${anchor(tag)}">${escapeHtml(tag)}</a>`).join(" ")}<a href="#schemas">schemas</a></nav>
<h2>Authentication</h2><dl>${schemes}</dl>
${[...byTag].map(([tag, operations]) => `<h2 id="tag-${anchor(tag)}">${escapeHtml(tag)}</h2>\n${operations.join("\n")}`).join("\n")}
<h2 id="schemas">Schemas</h2>
${schemas}
</body></html>
`;
}
