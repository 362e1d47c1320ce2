/// <reference path="./docker-modem-http.d.ts" />
/**
 * The one way this codebase makes a Docker client. dockerode's transport (docker-modem) sends every request through
 * its own copy of an old follow-redirects: on a 3xx with a Location it issues a second request to wherever the
 * engine pointed, and that request's errors (a DNS lookup of an unresolvable host, an unknown protocol) are thrown
 * outside any handler, killing the process. The engine's API never redirects a well-formed call; a redirect means a
 * malformed path (the engine cleans `/containers/../x` with a 301) or something that is not the engine answering.
 *
 * `createDockerClient` replaces docker-modem's redirect-following request functions with Node's own, so a 3xx is an
 * ordinary response: dockerode rejects with its status code (`(HTTP code 301) unexpected`) and the backends map it to
 * a ProvisionerError like any other engine answer. docker-modem holds those functions in one module shared by every
 * client in the process, so the change applies to all of them; it is made once, on the first call.
 */
import nodeHttp from "node:http";
import nodeHttps from "node:https";
// Must be the docker-modem dockerode itself loads (the catalog pins both); client.test.ts fails otherwise.
import modemTransport from "docker-modem/lib/http.js";
import Dockerode from "dockerode";

const NATIVE = { http: nodeHttp.request, https: nodeHttps.request } as const;

function refuseRedirects(): void {
  for (const protocol of ["http", "https"] as const) {
    const transport = modemTransport[protocol];
    if (transport.request !== NATIVE[protocol]) transport.request = NATIVE[protocol];
  }
}

/** A Docker client that never follows a redirect (see above); `options` as dockerode's (default: the local engine). */
export function createDockerClient(options?: Dockerode.DockerOptions): Dockerode {
  refuseRedirects();
  return new Dockerode(options);
}
