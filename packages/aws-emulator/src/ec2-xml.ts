import { XMLBuilder, XMLParser } from "fast-xml-parser";
import { escapeXml } from "./protocol.ts";

/**
 * Reading and rewriting moto's EC2 instance answers. The XML is parsed in document order (fast-xml-parser's
 * `preserveOrder`), changed in place and written back, so every element the proxy does not touch reaches the SDK
 * exactly as moto sent it.
 */

type XmlNode = Record<string, unknown>;

const OPTIONS = {
  preserveOrder: true,
  ignoreAttributes: false,
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: false,
} as const;
const parser = new XMLParser(OPTIONS);
const builder = new XMLBuilder({ ...OPTIONS, suppressEmptyNode: true });

function tagOf(node: XmlNode): string | undefined {
  return Object.keys(node).find((key) => key !== ":@" && key !== "#text");
}

function kids(node: XmlNode | undefined): XmlNode[] {
  const tag = node && tagOf(node);
  const value = tag ? node[tag] : undefined;
  return Array.isArray(value) ? (value as XmlNode[]) : [];
}

function child(node: XmlNode | undefined, tag: string): XmlNode | undefined {
  return kids(node).find((k) => tagOf(k) === tag);
}

function text(node: XmlNode | undefined): string {
  return kids(node)
    .map((k) => (typeof k["#text"] === "string" ? k["#text"] : ""))
    .join("");
}

function setText(node: XmlNode | undefined, value: string): void {
  const tag = node && tagOf(node);
  if (node && tag) node[tag] = [{ "#text": value }];
}

function root(tree: XmlNode[]): XmlNode | undefined {
  return tree.find((n) => {
    const tag = tagOf(n);
    return tag !== undefined && !tag.startsWith("?");
  });
}

export interface InstanceView {
  instanceId: string;
  stateName: string;
}

/** `RunInstancesResponse > instancesSet > item > instanceId`. */
export function runInstancesIds(xml: string): string[] {
  const items = kids(child(root(parser.parse(xml)), "instancesSet"));
  return items.map((item) => text(child(item, "instanceId"))).filter(Boolean);
}

function eachInstance(describeRoot: XmlNode | undefined): { reservation: XmlNode; instance: XmlNode }[] {
  const found: { reservation: XmlNode; instance: XmlNode }[] = [];
  for (const reservation of kids(child(describeRoot, "reservationSet"))) {
    for (const instance of kids(child(reservation, "instancesSet"))) found.push({ reservation, instance });
  }
  return found;
}

/** Every instance of a `DescribeInstancesResponse` with its state name. */
export function describedInstances(xml: string): InstanceView[] {
  return eachInstance(root(parser.parse(xml))).map(({ instance }) => ({
    instanceId: text(child(instance, "instanceId")),
    stateName: text(child(child(instance, "instanceState"), "name")),
  }));
}

export const STATE_CODES: Record<string, number> = {
  pending: 0,
  running: 16,
  "shutting-down": 32,
  terminated: 48,
  stopping: 64,
  stopped: 80,
};

export interface DescribeRewrite {
  /** Instances to leave out (inside their not-found window). */
  hidden(instanceId: string): boolean;
  /** Instances to show as `shutting-down`. */
  shuttingDown(instanceId: string): boolean;
  /** Instances to keep after the rewrite (the request's state filters, applied to the rewritten state). */
  keep(state: { code: number; name: string }): boolean;
}

/** A `DescribeInstancesResponse` as AWS would answer it; reservations left with no instance are dropped. */
export function rewriteDescribeInstances(xml: string, rewrite: DescribeRewrite): string {
  const tree = parser.parse(xml) as XmlNode[];
  const describeRoot = root(tree);
  for (const { instance } of eachInstance(describeRoot)) {
    const id = text(child(instance, "instanceId"));
    const state = child(instance, "instanceState");
    if (rewrite.shuttingDown(id)) {
      setText(child(state, "code"), String(STATE_CODES["shutting-down"]));
      setText(child(state, "name"), "shutting-down");
    }
  }
  const reservationSet = child(describeRoot, "reservationSet");
  const reservations = kids(reservationSet);
  for (const reservation of reservations) {
    const instances = kids(child(reservation, "instancesSet"));
    const kept = instances.filter((instance) => {
      const state = child(instance, "instanceState");
      const name = text(child(state, "name"));
      const code = Number(text(child(state, "code")));
      return !rewrite.hidden(text(child(instance, "instanceId"))) && rewrite.keep({ code, name });
    });
    instances.splice(0, instances.length, ...kept);
  }
  const nonEmpty = reservations.filter((r) => kids(child(r, "instancesSet")).length > 0);
  reservations.splice(0, reservations.length, ...nonEmpty);
  return builder.build(tree) as string;
}

export interface StateChange {
  instanceId: string;
  previous: string;
  current: string;
}

/** A `TerminateInstancesResponse` (the shape of AWS's `InstanceStateChange` list). */
export function terminateInstancesXml(changes: StateChange[], requestId: string): string {
  const state = (name: string) => `<code>${STATE_CODES[name] ?? 0}</code><name>${escapeXml(name)}</name>`;
  const items = changes
    .map(
      (c) =>
        `<item><instanceId>${escapeXml(c.instanceId)}</instanceId><currentState>${state(c.current)}</currentState>` +
        `<previousState>${state(c.previous)}</previousState></item>`,
    )
    .join("");
  return (
    `<?xml version="1.0" encoding="UTF-8"?>\n<TerminateInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">` +
    `<requestId>${requestId}</requestId><instancesSet>${items}</instancesSet></TerminateInstancesResponse>`
  );
}
