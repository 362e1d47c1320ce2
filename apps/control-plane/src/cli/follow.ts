/**
 * Following an org while something happens to it (its tenant boots, it is deleted, its tenant is stopped, started or
 * redeployed): `GET /cp/orgs/:slug` polled, each new tenant boot event and operation step printed once, as it
 * appears.
 */
import { OrgDetail } from "@molecule/contracts";
import { CommandFailed, type CommandIo } from "./command.ts";
import { cell, duration } from "./output.ts";

/** How long a command follows an org before giving up (the control plane's own deadlines are shorter). */
export const WAIT_LIMIT_MS = 30 * 60_000;

export const orgPath = (slug: string) => `/cp/orgs/${encodeURIComponent(slug)}`;

/** `: text` with the text made printable, or nothing. */
export function suffix(text: string | null | undefined): string {
  return text ? `: ${cell(text)}` : "";
}

/** A progress line: on stdout, or on stderr in `--json` mode, where stdout carries one JSON document. */
export function progress(io: CommandIo, line: string): void {
  (io.json ? io.stderr : io.stdout)(`${line}\n`);
}

/**
 * Polls the org until `settled` says so and returns the last answer. Boot events from before `eventsSince` (an
 * operation's `created_at`: the control plane's clock, not this machine's) are history and not printed.
 */
export async function followOrg(
  io: CommandIo,
  slug: string,
  settled: (detail: OrgDetail) => boolean,
  eventsSince?: string,
): Promise<{ data: OrgDetail; raw: unknown }> {
  const seen = new Set<string>();
  const since = eventsSince === undefined ? Number.NEGATIVE_INFINITY : Date.parse(eventsSince);
  const deadline = io.now() + WAIT_LIMIT_MS;
  for (;;) {
    const answer = await io.client.call("GET", orgPath(slug), OrgDetail);
    const { provision_status: status, operation } = answer.data;
    for (const event of status?.events ?? []) {
      const key = `event ${event.at} ${event.stage}`;
      if (seen.has(key) || Date.parse(event.at) < since) continue;
      seen.add(key);
      const image = event.image ? ` on ${cell(event.image)}` : "";
      progress(io, `  ${cell(event.at)}  tenant ${cell(event.stage)}${image}${suffix(event.detail)}`);
    }
    for (const step of operation?.steps ?? []) {
      const key = `step ${operation?.id} ${step.name}`;
      if (seen.has(key)) continue;
      seen.add(key);
      progress(
        io,
        `  ${cell(operation?.kind)} step ${cell(step.name)} (${duration(step.duration_ms)})${suffix(step.detail)}`,
      );
    }
    if (settled(answer.data)) return answer;
    if (io.now() > deadline) {
      throw new CommandFailed(
        `org ${slug} is still ${answer.data.org.status} after ${duration(WAIT_LIMIT_MS)}; see molecule-cp orgs show ${slug}`,
      );
    }
    await io.sleep(io.pollIntervalMs);
  }
}
