/**
 * A captured serial console: everything the guest prints is buffered and can
 * be waited for (expect-style), logged to a file, and written to.
 *
 * @module
 */
import type { Duration } from "./duration.ts";
import { boundedWait } from "./deadline.ts";
import { ConnectionClosedError, QmpError } from "./errors.ts";

/** Options of {@link SerialConsole.waitFor}. */
export interface ConsoleWaitOptions {
  /** Give up after this long with a {@link TimeoutError} (default: wait until the VM exits). */
  timeout?: Duration;
  /** Give up when aborted. */
  signal?: AbortSignal;
}

/** A console match: the text matched and, for a RegExp, its groups. */
export interface ConsoleMatch {
  /** The matched text. */
  text: string;
  /** Capture groups of a RegExp pattern (empty for strings). */
  groups: string[];
  /** Everything printed between the previous match (or the start) and this match. */
  before: string;
}

interface Waiter {
  pattern: string | RegExp;
  resolve(m: ConsoleMatch): void;
  reject(e: unknown): void;
}

/** The most console text kept in memory; older text is dropped (it stays in the log file). */
export const CONSOLE_BUFFER_LIMIT = 4 * 1024 * 1024;

/**
 * Serial console output of a VM. `waitFor` scans forward from a cursor, like
 * `expect`: each match consumes the text up to its end, so waiting for the
 * same prompt twice waits for two occurrences. Text printed before `waitFor`
 * is called is not lost.
 *
 * @example
 * ```ts ignore
 * await vm.console.waitFor(/login:|READY/, { timeout: "30s" });
 * await vm.console.write("uname -r\n");
 * const m = await vm.console.waitFor(/(\d+\.\d+\.\d+)\S*\r?\n/);
 * console.log(m.groups[0]);
 * ```
 */
export class SerialConsole {
  #text = "";
  #cursor = 0;
  #waiters: Waiter[] = [];
  #ended: Error | undefined;
  #write: ((bytes: Uint8Array) => Promise<void>) | undefined;
  #onText: ((text: string) => void) | undefined;

  /**
   * Creates a console. `write` sends bytes to the guest; `onText` sees every
   * piece of output (e.g. to tee it to a log file).
   */
  constructor(
    write?: (bytes: Uint8Array) => Promise<void>,
    onText?: (text: string) => void,
  ) {
    this.#write = write;
    this.#onText = onText;
  }

  /** All output captured so far (up to {@link CONSOLE_BUFFER_LIMIT}, oldest dropped first). */
  get text(): string {
    return this.#text;
  }

  /** Output not yet consumed by a `waitFor` match. */
  get unread(): string {
    return this.#text.slice(this.#cursor);
  }

  /** Appends output. Used by the launcher. */
  append(text: string): void {
    if (text === "") return;
    this.#onText?.(text);
    this.#text += text;
    if (this.#text.length > CONSOLE_BUFFER_LIMIT) {
      const drop = this.#text.length - CONSOLE_BUFFER_LIMIT;
      this.#text = this.#text.slice(drop);
      this.#cursor = Math.max(0, this.#cursor - drop);
    }
    this.#check();
  }

  /** Marks the end of output (the VM exited): pending and later waits reject. */
  end(reason: Error): void {
    if (this.#ended) return;
    this.#ended = reason;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w.reject(this.#endError(w.pattern));
  }

  /**
   * Waits until `pattern` appears in the output after the cursor, then moves
   * the cursor past the match. Output streams in pieces and a RegExp is tried
   * as soon as each piece arrives, so end a variable-length pattern with what
   * follows it (`/sum-(\d+)\r?\n/`, not `/sum-(\d+)/`, which may match `sum-4`
   * before the `2` arrives).
   */
  waitFor(pattern: string | RegExp, options: ConsoleWaitOptions = {}): Promise<ConsoleMatch> {
    const hit = this.#match(pattern);
    if (hit) return Promise.resolve(hit);
    if (this.#ended) return Promise.reject(this.#endError(pattern));
    return boundedWait<ConsoleMatch>(
      `Waiting for ${String(pattern)} on the serial console`,
      options,
      (resolve, reject) => {
        const waiter: Waiter = { pattern, resolve, reject };
        this.#waiters.push(waiter);
        return () => (this.#waiters = this.#waiters.filter((w) => w !== waiter));
      },
      { hint: () => `last output: ${JSON.stringify(this.tail(200))}` },
    );
  }

  /** Writes text (or bytes) to the guest's serial port. */
  async write(data: string | Uint8Array): Promise<void> {
    if (!this.#write) {
      throw new QmpError("This console is not writable: the VM was launched with console: false");
    }
    if (this.#ended) {
      throw new ConnectionClosedError(
        `Cannot write to the serial console: ${this.#ended.message}`,
        {
          reason: "peer",
          cause: this.#ended,
        },
      );
    }
    await this.#write(typeof data === "string" ? new TextEncoder().encode(data) : data);
  }

  /** The last `n` characters of output. */
  tail(n = 2000): string {
    return this.#text.slice(-n);
  }

  /** Finds `pattern` after the cursor without consuming it. */
  #find(pattern: string | RegExp): { index: number; text: string; groups: string[] } | undefined {
    const rest = this.#text.slice(this.#cursor);
    if (typeof pattern === "string") {
      const index = rest.indexOf(pattern);
      return index < 0 ? undefined : { index, text: pattern, groups: [] };
    }
    const m = new RegExp(pattern.source, pattern.flags.replace(/[gy]/g, "")).exec(rest);
    return m ? { index: m.index, text: m[0], groups: m.slice(1).map((g) => g ?? "") } : undefined;
  }

  /** Consumes output up to the end of a match found by {@link #find}. */
  #consume(hit: { index: number; text: string; groups: string[] }): ConsoleMatch {
    const before = this.#text.slice(this.#cursor, this.#cursor + hit.index);
    this.#cursor += hit.index + hit.text.length;
    return { text: hit.text, groups: hit.groups, before };
  }

  #match(pattern: string | RegExp): ConsoleMatch | undefined {
    const hit = this.#find(pattern);
    return hit ? this.#consume(hit) : undefined;
  }

  #check(): void {
    // Serve the waiter whose match comes first in the output, then look again: the
    // outcome does not depend on how the output was split into chunks.
    while (this.#waiters.length > 0) {
      let best:
        | { waiter: Waiter; hit: { index: number; text: string; groups: string[] } }
        | undefined;
      for (const waiter of this.#waiters) {
        const hit = this.#find(waiter.pattern);
        if (hit && (!best || hit.index < best.hit.index)) best = { waiter, hit };
      }
      if (!best) return;
      best.waiter.resolve(this.#consume(best.hit));
    }
  }

  #endError(pattern: string | RegExp): Error {
    return new ConnectionClosedError(
      `Serial console ended before ${String(pattern)} appeared: ${this.#ended?.message}. ` +
        `Last output: ${JSON.stringify(this.tail(200))}`,
      { reason: "peer", cause: this.#ended },
    );
  }
}
