/**
 * Listing a playbook's top-level steps without a VM (`deno task play --list`,
 * and deciding whether `--filter` can select anything).
 *
 * @module
 */
import type { AgentClient } from "../agent/client.ts";
import type { QmpClient } from "../client.ts";
import type { Machine } from "../machine.ts";
import type { StepFilter } from "./filter.ts";
import { PlaybookSkip } from "./errors.ts";
import { expect } from "./expect.ts";
import type { Playbook, PlaybookContext, StepOptions } from "./playbook.ts";

/** One top-level step found by {@link listPlaybook}. */
export interface ListedStep {
  /** The step's name. */
  name: string;
  /** Whether `--filter` selects it (always true without a filter). */
  matched: boolean;
  /** The skip reason, when the step is declared with `skip`. */
  skip?: string;
}

/** What {@link listPlaybook} found. */
export interface PlaybookListing {
  /** The playbook's name. */
  name: string;
  /** Its file, when known. */
  file?: string;
  /** Its description. */
  description?: string;
  /** Its tags. */
  tags?: string[];
  /** Why it is skipped: `playbook.skip` / `meta.skip`, or `t.skip(reason)` in its body outside a step. */
  skip?: string;
  /** True for `playbook.only`. */
  only?: boolean;
  /** Whether `--filter` selects the playbook by name or file. */
  matched: boolean;
  /** Top-level steps, in order. */
  steps: ListedStep[];
  /** False when the body stopped before its end (see `note`): later steps are not listed. */
  complete: boolean;
  /** Why the listing is incomplete. */
  note?: string;
}

class ListModeStop extends Error {
  constructor(what: string) {
    super(what);
    this.name = "ListModeStop";
  }
}

/**
 * Lists a playbook's top-level steps without a VM: the body runs with a `t`
 * whose `step` records the name and does not run the step's body. Nested
 * steps live inside step bodies, so they are not listed; and the listing
 * stops early (`complete: false`) where the body uses QMP or the VM outside
 * a step. `t.tempDir` is a real temp dir, created on first use and removed
 * before this resolves, so bodies may build paths in it (or write to it).
 */
export async function listPlaybook(
  pb: Playbook,
  options: { file?: string; filter?: StepFilter } = {},
): Promise<PlaybookListing> {
  const filter = options.filter;
  const matched = !filter || filter.matches(pb.meta.name) ||
    (options.file !== undefined && filter.matches(options.file));
  const listing: PlaybookListing = {
    name: pb.meta.name,
    ...(options.file ? { file: options.file } : {}),
    ...(pb.meta.description ? { description: pb.meta.description } : {}),
    ...(pb.meta.tags?.length ? { tags: [...pb.meta.tags] } : {}),
    ...(pb.meta.skip
      ? { skip: typeof pb.meta.skip === "string" ? pb.meta.skip : "playbook.skip" }
      : {}),
    ...(pb.meta.only ? { only: true } : {}),
    matched,
    steps: [],
    complete: true,
  };
  const stop = (what: string): never => {
    throw new ListModeStop(what);
  };
  const never = new AbortController().signal;
  let tempDir: string | undefined;
  const t: PlaybookContext = {
    name: pb.meta.name,
    file: options.file,
    get qmp(): QmpClient {
      return stop("uses t.qmp");
    },
    get vm(): Machine {
      return stop("uses t.vm");
    },
    get agent(): AgentClient {
      return stop("uses t.agent");
    },
    get daemon(): never {
      return stop("uses t.daemon");
    },
    attached: false,
    signal: never,
    get tempDir(): string {
      try {
        return tempDir ??= Deno.makeTempDirSync({ prefix: "qmpkit-list-" });
      } catch (e) {
        return stop(`uses t.tempDir, and no temp dir could be made (${errorText(e)})`);
      }
    },
    stepPath: [],
    step(name: string, _fn: unknown, opts: StepOptions = {}): Promise<boolean> {
      listing.steps.push({
        name,
        matched: matched || !filter || filter.matches(name) || filter.mayContain(name),
        ...(opts.skip ? { skip: typeof opts.skip === "string" ? opts.skip : "skipped" } : {}),
      });
      return Promise.resolve(false);
    },
    cleanup() {},
    log() {},
    expect: <T>(actual: T, label?: string) => expect(actual, label),
    expectEvent: () => stop("waits for an event"),
    expectError: () => stop("expects an error"),
    eventually: () => stop("polls with t.eventually"),
    launch: () => stop("launches a VM"),
    sleep: () => Promise.resolve(),
    skip: (reason?: string) => {
      throw new PlaybookSkip(typeof reason === "string" && reason !== "" ? reason : "t.skip()");
    },
  } as PlaybookContext;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      Promise.resolve().then(() => pb.fn(t)),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new ListModeStop("did not finish within 5s")), 5000);
      }),
    ]);
  } catch (e) {
    if (e instanceof PlaybookSkip) {
      listing.skip ??= e.reason;
      return listing;
    }
    listing.complete = false;
    listing.note = e instanceof ListModeStop
      ? `listing stopped where the playbook body ${e.message} outside a step`
      : `listing stopped: the body threw ${errorText(e)} (it may depend on a step's result)`;
  } finally {
    clearTimeout(timer);
    if (tempDir) await Deno.remove(tempDir, { recursive: true }).catch(() => undefined);
  }
  return listing;
}

function errorText(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}
