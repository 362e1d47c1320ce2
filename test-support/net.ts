import { createServer } from "node:net";

/**
 * A loopback port nobody listens on right now: listen on 0, read it, close. Use it for a server a test starts
 * later, or as an address where nothing answers.
 */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}
