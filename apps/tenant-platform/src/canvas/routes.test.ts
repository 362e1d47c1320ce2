import { readdirSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { CANVAS_ASSETS, canvasRoutes } from "./routes.ts";

const app = canvasRoutes();

describe("canvas assets", () => {
  it("serves exactly the files in static/", () => {
    const files = readdirSync(new URL("./static/", import.meta.url)).sort();
    expect([...CANVAS_ASSETS].sort()).toEqual(files);
  });

  it("answers each with its content type, the security headers and a validator", async () => {
    const expected: Record<string, string> = {
      "/": "text/html; charset=utf-8",
      "/canvas/main.js": "text/javascript; charset=utf-8",
      "/canvas/canvas.css": "text/css; charset=utf-8",
      "/canvas/favicon.svg": "image/svg+xml",
    };
    for (const [path, type] of Object.entries(expected)) {
      const response = await app.request(path);
      expect(response.status, path).toBe(200);
      expect(response.headers.get("content-type"), path).toBe(type);
      expect(response.headers.get("content-security-policy"), path).toMatch(
        /^default-src 'none'; script-src 'self';/,
      );
      expect(response.headers.get("x-content-type-options"), path).toBe("nosniff");
      const etag = response.headers.get("etag") ?? "";
      expect(etag).toMatch(/^"[\w-]+"$/);
      const again = await app.request(path, { headers: { "if-none-match": etag } });
      expect(again.status, path).toBe(304);
      expect(await again.text()).toBe("");
    }
  });

  it("serves nothing else under /canvas/", async () => {
    for (const path of ["/canvas/index.html", "/canvas/routes.ts", "/canvas/..%2Froutes.ts", "/canvas/"]) {
      expect((await app.request(path)).status, path).toBe(404);
    }
  });

  it("the page loads only same-origin modules and styles, with no inline script or style", async () => {
    const html = await (await app.request("/")).text();
    expect(html).toContain('<script type="module" src="/canvas/main.js"></script>');
    expect(html).not.toMatch(/<script>|\sstyle=|\son\w+=|https?:\/\//);
  });
});
