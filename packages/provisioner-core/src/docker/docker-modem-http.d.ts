/** docker-modem's transport module: request functions per protocol, each following redirects unless replaced. */
declare module "docker-modem/lib/http.js" {
  import type { request } from "node:http";
  const transport: Record<"http" | "https", { request: typeof request }>;
  export default transport;
}
