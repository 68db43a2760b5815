/**
 * `qmp qom [ADDRESS] ls|get|set|tree ...`: the QEMU Object Model from the
 * command line, as QEMU's `qom-list`, `qom-get`, `qom-set` and `qom-tree`
 * scripts, each with `--json`. `tree` walks with many commands in flight.
 *
 * @module
 */
import {
  QOM_TREE_CONCURRENCY,
  qomGet,
  qomList,
  type QomNode,
  qomSet,
  qomTree,
  REDACTED,
  redactReply,
} from "../../mod.ts";
import { stringifyJson } from "../../lib/json.ts";
import { parseValue } from "./args.ts";
import {
  COMMON_HELP,
  durationOption,
  EXIT_OK,
  looksLikeAddress,
  parseCommandLine,
  toJson,
  UsageError,
  wantsLaunch,
  withTarget,
  writeOut,
} from "./common.ts";

/** `qmp qom --help`. */
export const QOM_HELP =
  `Usage: qmp qom [ADDRESS] ls [PATH]                 list an object's properties
       qmp qom [ADDRESS] get PATH.PROP | PATH PROP     print a property's value
       qmp qom [ADDRESS] set PATH.PROP VALUE | PATH PROP VALUE
       qmp qom [ADDRESS] tree [PATH] [--props]         the composition tree under PATH

The QEMU Object Model, as QEMU's qom-list, qom-get, qom-set and qom-tree scripts.
PATH is a QOM path (/machine, /machine/peripheral/net0, /objects/sec0); default "/".
ls marks child objects with a trailing "/". get prints strings as they are and
other values as JSON. set takes VALUE as qmp exec does (a JSON literal when it
parses: 42, true, "str", {...}; else the string itself). The one-argument form
PATH.PROP splits at the last "." after the last "/"; for a property name with a
dot (sse4.1) give PATH PROP.

tree prints each object as "name/ (type)", indented, children sorted by name; with
--props every other property too, as "name: value (type)" ("<error: ...>" when it
cannot be read; secret values as ${REDACTED}). Up to --concurrency commands are in
flight at once (default ${QOM_TREE_CONCURRENCY}; 1 walks one at a time like qom-tree).

Options:
  --json                    print JSON (ls: the qom-list reply; get: the value; tree:
                            {path, name, type, children, properties?, error?} nodes)
  --props                   tree: also read every property's value
  --concurrency N           tree: most commands in flight (default ${QOM_TREE_CONCURRENCY})
  --timeout D               bound of each command
  -p, --pretty | --compact  force indented / one-line JSON

${COMMON_HELP}

Exit status: 0 ok; 1 QMP error (a path or property that does not exist:
DeviceNotFound / GenericError), connection failure, timeout; 2 usage error.

Examples:
  qmp qom /tmp/vm.sock tree /machine --props
  QMP_SOCKET=/tmp/vm.sock qmp qom ls /machine/peripheral
  qmp qom /tmp/vm.sock get /machine.type
  qmp qom /tmp/vm.sock set /machine/peripheral/nic0 x-pending true`;

const ACTIONS = new Set(["ls", "get", "set", "tree"]);

/** Runs `qmp qom` with `argv` (after the subcommand name); returns the exit code. */
export async function qomCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandLine(argv, {
    json: { type: "boolean" },
    props: { type: "boolean" },
    concurrency: { type: "string" },
    timeout: { type: "string" },
    pretty: { type: "boolean", short: "p" },
    compact: { type: "boolean" },
  });
  if (values.help) {
    writeOut(QOM_HELP + "\n");
    return EXIT_OK;
  }
  const { address, action, rest } = splitTarget(values, positionals);
  const timeout = values.timeout === undefined
    ? undefined
    : durationOption("timeout", values.timeout as string);
  const json = Boolean(values.json);
  const pretty = values.pretty ? true : values.compact ? false : undefined;
  let concurrency = QOM_TREE_CONCURRENCY;
  if (values.concurrency !== undefined) {
    concurrency = Number(values.concurrency);
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new UsageError(`--concurrency must be a positive integer, got ${values.concurrency}`);
    }
    if (action !== "tree") throw new UsageError("--concurrency applies to tree");
  }
  if (values.props && action !== "tree") throw new UsageError("--props applies to tree");

  // Validate the arguments before connecting.
  let run: (client: Parameters<typeof qomList>[0]) => Promise<void>;
  const exec = { timeout };
  switch (action) {
    case "ls": {
      if (rest.length > 1) throw new UsageError(`ls takes one PATH, got ${rest.length}`);
      const path = rest[0] ?? "/";
      run = async (client) => {
        const items = await qomList(client, path, exec);
        if (json) return writeOut(toJson(items, pretty) + "\n");
        const width = Math.max(0, ...items.map((i) => i.name.length + 1));
        const sorted = [...items].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
        for (const i of sorted) {
          const name = i.type.startsWith("child<") ? `${i.name}/` : i.name;
          writeOut(`${name.padEnd(width)}  ${i.type}\n`);
        }
      };
      break;
    }
    case "get": {
      const [path, property] = pathAndProperty(rest, 0, "get");
      run = async (client) => {
        const value = await qomGet(client, path, property, exec);
        if (!json && typeof value === "string") writeOut(value + "\n");
        else writeOut(toJson(value, pretty) + "\n");
      };
      break;
    }
    case "set": {
      const [path, property, raw] = pathAndProperty(rest, 1, "set");
      const value = parseValue(raw!, "VALUE");
      run = async (client) => {
        await qomSet(client, path, property, value, exec);
        if (json) writeOut("{}\n");
      };
      break;
    }
    default: { // tree
      if (rest.length > 1) throw new UsageError(`tree takes one PATH, got ${rest.length}`);
      const path = rest[0] ?? "/";
      run = async (client) => {
        const tree = await qomTree(client, path, {
          props: Boolean(values.props),
          concurrency,
          timeout,
        });
        redactTree(tree);
        if (json) writeOut(toJson(tree, pretty) + "\n");
        else writeOut(formatQomTree(tree));
      };
    }
  }
  return await withTarget(address, values, {}, async ({ client }) => {
    await run(client);
    return EXIT_OK;
  });
}

/**
 * `[ADDRESS] ACTION ARGS...`, or `ACTION [ADDRESS] ARGS...`: a QOM path has a
 * "/" too, so after ACTION only a clear address (`unix:`, `tcp:`, an existing
 * socket file) is taken as one when $QMP_SOCKET is set.
 */
function splitTarget(
  values: Parameters<typeof wantsLaunch>[0],
  positionals: string[],
): { address: string | undefined; action: string; rest: string[] } {
  const args = [...positionals];
  let address: string | undefined;
  let action: string | undefined;
  const env = envVar("QMP_SOCKET") || undefined;
  if (args[0] !== undefined && !ACTIONS.has(args[0])) {
    if (wantsLaunch(values)) {
      throw new UsageError(
        `expected ls, get, set or tree, got "${args[0]}" (--launch starts its own VM: no ADDRESS)`,
      );
    }
    address = args.shift();
    action = args.shift();
  } else {
    action = args.shift();
    if (!wantsLaunch(values)) {
      if (
        args[0] !== undefined && (isClearAddress(args[0]) || (env === undefined && values.retry))
      ) {
        address = args.shift();
      } else if (env !== undefined) {
        address = env;
      } else if (args[0] !== undefined) {
        throw new UsageError(
          `"${args[0]}" is not a QMP address (no such socket): give it before the action ` +
            `(qmp qom ADDRESS ${action} ...), or set QMP_SOCKET`,
        );
      }
    }
  }
  if (action === undefined || !ACTIONS.has(action)) {
    throw new UsageError(
      action === undefined
        ? "Missing ls, get, set or tree (qmp qom ADDRESS ls /machine)"
        : `unknown qom action "${action}" (ls, get, set, tree)`,
    );
  }
  if (address === undefined && !wantsLaunch(values)) {
    throw new UsageError(
      "Missing ADDRESS (e.g. unix:/run/vm1/qmp.sock), or set QMP_SOCKET, or use --launch",
    );
  }
  return { address, action, rest: args };
}

function isClearAddress(text: string): boolean {
  if (/^(unix|tcp):/.test(text)) return true;
  if (looksLikeAddress(text) && !text.includes("/")) return true; // host:port
  try {
    return Deno.statSync(text).isSocket === true;
  } catch {
    return false;
  }
}

function envVar(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/** `PATH.PROP [VALUE]` or `PATH PROP [VALUE]` (`extra` trailing arguments). */
function pathAndProperty(
  rest: string[],
  extra: number,
  action: string,
): [string, string, string | undefined] {
  const usage = `${action} takes PATH.PROP${extra ? " VALUE" : ""} or PATH PROP${
    extra ? " VALUE" : ""
  }`;
  if (rest.length === 2 + extra) return [rest[0], rest[1], rest[2]];
  if (rest.length !== 1 + extra) throw new UsageError(`${usage}, got ${rest.length} arguments`);
  const joined = rest[0];
  const dot = joined.lastIndexOf(".");
  if (dot <= joined.lastIndexOf("/") || dot === joined.length - 1) {
    throw new UsageError(`${usage}: "${joined}" has no ".PROP" after its last "/"`);
  }
  return [joined.slice(0, dot) || "/", joined.slice(dot + 1), rest[1]];
}

/** Replaces secret property values (a `secret` object's `data`, passwords) by the placeholder. */
function redactTree(node: QomNode): void {
  const stack = [node];
  while (stack.length > 0) {
    const n = stack.pop()!;
    for (const p of n.properties ?? []) {
      if (p.value === undefined) continue;
      const out = redactReply({ return: p.value }, "qom-get", { path: n.path, property: p.name });
      p.value = out.return;
    }
    stack.push(...n.children);
  }
}

/**
 * The text form of a tree: the root's path and type, then each object as
 * `name/ (type)` indented by depth, its properties (`name: value (type)`)
 * before its children.
 */
export function formatQomTree(tree: QomNode): string {
  const lines: string[] = [];
  const stack: { node: QomNode; depth: number }[] = [{ node: tree, depth: 0 }];
  while (stack.length > 0) {
    const { node, depth } = stack.pop()!;
    const pad = "  ".repeat(depth);
    const label = depth === 0 ? node.path : `${node.name}/`;
    lines.push(`${pad}${label} (${node.type})${node.error ? ` <error: ${node.error}>` : ""}`);
    for (const p of node.properties ?? []) {
      const value = p.error !== undefined ? `<error: ${p.error}>` : stringifyJson(p.value);
      lines.push(`${pad}  ${p.name}: ${value} (${p.type})`);
    }
    for (let i = node.children.length - 1; i >= 0; i--) {
      stack.push({ node: node.children[i], depth: depth + 1 });
    }
  }
  return lines.join("\n") + "\n";
}
