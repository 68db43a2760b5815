/**
 * QOM (QEMU Object Model) helpers: list an object's properties, read one,
 * and walk the whole composition tree (`/machine`, `/objects`, ...) with its
 * types and, optionally, every property's value, as QEMU's `qom-tree` script
 * does, but with many `qom-list`/`qom-get` in flight at once (bounded).
 *
 * They take anything with `executeRaw` (a {@link QmpClient} of either schema:
 * a VM or the storage daemon), so they work on any QMP server with QOM.
 *
 * @module
 */
import type { ExecuteOptions, QmpClient } from "./client.ts";
import { AbortError, QmpCommandError } from "./errors.ts";

/** What the QOM helpers need of a client: `executeRaw` (any {@link QmpClient} has it). */
export type QomClient = Pick<QmpClient, "executeRaw">;

/** One entry of `qom-list`: a property of an object. */
export interface QomProperty {
  /** The property name. */
  name: string;
  /**
   * Its type: a QAPI type (`bool`, `str`, `uint64`, ...), a QOM type name,
   * `child<TYPE>` for a child object or `link<TYPE>` for a link to another one.
   */
  type: string;
  /** QEMU's description, when it has one. */
  description?: string;
  /** The default value, when QEMU reports one. */
  "default-value"?: unknown;
}

/** A property and its value in a {@link QomNode} (with `props`). */
export interface QomPropertyValue {
  /** The property name. */
  name: string;
  /** The property type (as in {@link QomProperty.type}). */
  type: string;
  /** The value, when `qom-get` succeeded. */
  value?: unknown;
  /** Why `qom-get` failed (QEMU's description; e.g. a write-only property); `value` is unset. */
  error?: string;
}

/** One object of the composition tree, as returned by {@link qomTree}. */
export interface QomNode {
  /** The object's canonical path, e.g. `/machine/i440fx`. */
  path: string;
  /** The last component of the path (`""` for the root `/`). */
  name: string;
  /** The object's QOM type, e.g. `i440FX-pcihost` (from `child<...>`, or its `type` property). */
  type: string;
  /** Its child objects, sorted by name. */
  children: QomNode[];
  /** Its other properties (links included) with their values, with `props: true`; sorted. */
  properties?: QomPropertyValue[];
  /** Why this object could not be listed (it vanished during the walk, ...). */
  error?: string;
}

/** Options of {@link qomTree}. */
export interface QomTreeOptions {
  /** Also read every non-child property with `qom-get` (default `false`). */
  props?: boolean;
  /**
   * Most commands in flight at once (default {@link QOM_TREE_CONCURRENCY}).
   * `1` walks one command at a time, as QEMU's `qom-tree` script does.
   */
  concurrency?: number;
  /** Bound of each command (`qom-list`, `qom-get`). */
  timeout?: ExecuteOptions["timeout"];
  /** Cancels the walk: commands not yet sent are not sent, the promise rejects with `AbortError`. */
  signal?: AbortSignal;
}

/**
 * Default concurrency of {@link qomTree}: QEMU runs monitor commands one at a
 * time, so more in flight only hides round trips; past a few dozen it gains
 * nothing (see the README's QOM section for figures).
 */
export const QOM_TREE_CONCURRENCY = 32;

/**
 * Lists the properties of the object at `path` (`qom-list`). A path that
 * does not exist rejects with QEMU's {@link QmpCommandError} (`DeviceNotFound`).
 *
 * @example
 * ```ts ignore
 * for (const p of await qomList(vm.qmp, "/machine")) console.log(p.name, p.type);
 * ```
 */
export async function qomList(
  qmp: QomClient,
  path: string,
  options?: ExecuteOptions,
): Promise<QomProperty[]> {
  const list = await qmp.executeRaw("qom-list", { path }, options);
  if (!Array.isArray(list)) throw new TypeError(`qom-list ${path} returned a non-list`);
  return list as QomProperty[];
}

/**
 * Reads property `property` of the object at `path` (`qom-get`). Rejects with
 * QEMU's {@link QmpCommandError} when the path or property does not exist or
 * the property cannot be read.
 *
 * @example
 * ```ts ignore
 * const type = await qomGet(vm.qmp, "/machine", "type"); // "pc-i440fx-7.2-machine"
 * ```
 */
export async function qomGet(
  qmp: QomClient,
  path: string,
  property: string,
  options?: ExecuteOptions,
): Promise<unknown> {
  return await qmp.executeRaw("qom-get", { path, property }, options);
}

/**
 * Sets property `property` of the object at `path` to `value` (`qom-set`).
 *
 * @example
 * ```ts ignore
 * await qomSet(vm.qmp, "/machine/peripheral/nic0", "x-pending", true);
 * ```
 */
export async function qomSet(
  qmp: QomClient,
  path: string,
  property: string,
  value: unknown,
  options?: ExecuteOptions,
): Promise<void> {
  await qmp.executeRaw("qom-set", { path, property, value }, options);
}

/**
 * Walks the composition tree under `path` (default `/`): every child object
 * with its type and, with `props: true`, every other property's value. Up to
 * `concurrency` commands are in flight at once. A `qom-get` that fails (some
 * properties have no getter, or fail when read) is recorded as
 * {@link QomPropertyValue.error}, and a child that cannot be listed as
 * {@link QomNode.error}: the walk goes on. Only a `path` that does not
 * exist (QEMU's `DeviceNotFound`), a closed connection, a timeout or an
 * abort reject.
 *
 * @example
 * ```ts ignore
 * const tree = await qomTree(vm.qmp, "/machine", { props: true });
 * console.log(tree.type, tree.children.map((c) => c.name));
 * ```
 */
export async function qomTree(
  qmp: QomClient,
  path = "/",
  options: QomTreeOptions = {},
): Promise<QomNode> {
  const limit = Math.max(1, Math.floor(options.concurrency ?? QOM_TREE_CONCURRENCY));
  const run = limiter(limit, options.signal);
  const exec = { timeout: options.timeout, signal: options.signal };
  const root = normalizePath(path);

  const visit = async (
    at: string,
    type: string,
    node: QomNode,
    listed?: QomProperty[],
  ): Promise<void> => {
    const items = listed ?? await run(() => qomList(qmp, at, exec));
    const children = items.filter((p) => p.type.startsWith("child<")).sort(byName);
    const others = items.filter((p) => !p.type.startsWith("child<")).sort(byName);
    node.type = type;
    const jobs: Promise<void>[] = [];
    if (options.props) {
      node.properties = others.map((p) => ({ name: p.name, type: p.type }));
      node.properties.forEach((prop) => {
        jobs.push(
          run(() => qomGet(qmp, at, prop.name, exec)).then(
            (value) => void (prop.value = value),
            (err) => {
              if (!(err instanceof QmpCommandError)) throw err;
              prop.error = err.desc;
            },
          ),
        );
      });
    }
    for (const c of children) {
      const childPath = at === "/" ? `/${c.name}` : `${at}/${c.name}`;
      const child: QomNode = {
        path: childPath,
        name: c.name,
        type: c.type.slice(6, -1),
        children: [],
      };
      node.children.push(child);
      jobs.push(
        visit(childPath, child.type, child).catch((err) => {
          if (!(err instanceof QmpCommandError)) throw err;
          child.error = err.desc;
        }),
      );
    }
    await settleAll(jobs);
  };

  // qom-list first: a path that does not exist fails there, with QEMU's message.
  const items = await run(() => qomList(qmp, root, exec));
  const type = await run(() => qomGet(qmp, root, "type", exec));
  const node: QomNode = {
    path: root,
    name: root === "/" ? "" : root.slice(root.lastIndexOf("/") + 1),
    type: typeof type === "string" ? type : String(type),
    children: [],
  };
  await visit(root, node.type, node, items);
  return node;
}

/** `/machine/` → `/machine`; relative paths are QEMU's to resolve (a partial path). */
function normalizePath(path: string): string {
  if (path.length > 1 && path.endsWith("/")) return path.replace(/\/+$/, "") || "/";
  return path;
}

/** Natural order: `irq[2]` before `irq[10]`. */
const COLLATOR = new Intl.Collator("en", { numeric: true });

function byName(a: { name: string }, b: { name: string }): number {
  return COLLATOR.compare(a.name, b.name);
}

/** Waits for all; then rethrows the first failure (so nothing is left running unobserved). */
async function settleAll(jobs: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(jobs);
  const failed = results.find((r) => r.status === "rejected") as PromiseRejectedResult | undefined;
  if (failed) throw failed.reason;
}

/** Runs at most `limit` tasks at once; once `signal` aborts, queued tasks reject without running. */
function limiter(
  limit: number,
  signal?: AbortSignal,
): <T>(task: () => Promise<T>) => Promise<T> {
  let active = 0;
  const queue: (() => void)[] = [];
  const next = () => {
    if (active >= limit) return;
    const start = queue.shift();
    if (start) start();
  };
  return <T>(task: () => Promise<T>) =>
    new Promise<T>((resolve, reject) => {
      queue.push(() => {
        if (signal?.aborted) {
          reject(new AbortError("qomTree", { cause: signal.reason }));
          next();
          return;
        }
        active++;
        task().then(resolve, reject).finally(() => {
          active--;
          next();
        });
      });
      next();
    });
}
