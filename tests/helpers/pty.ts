/**
 * A private tmux server for tests that need a real pseudo-terminal (the
 * interactive shell): start a command in a pane, type into it, read its
 * screen. Dispose the {@link Tmux} to kill the server and everything in it.
 *
 * @module
 */
import { delay } from "./qemu.ts";

/** True when tmux is installed (pseudo-terminal tests are skipped without it). */
export function hasTmux(): boolean {
  try {
    return new Deno.Command("tmux", { args: ["-V"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** A tmux server private to one test (its own socket name). */
export class Tmux implements AsyncDisposable {
  readonly socket: string;
  #count = 0;

  constructor(label: string) {
    this.socket = `qmpkit-${label}-${Deno.pid}-${Math.random().toString(36).slice(2, 8)}`;
  }

  /** Runs a tmux command on this server; returns its stdout. */
  async run(...args: string[]): Promise<string> {
    const out = await new Deno.Command("tmux", {
      args: ["-L", this.socket, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(`tmux ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
    }
    return new TextDecoder().decode(out.stdout);
  }

  /** Starts `command` (a shell command line) in a new 200x50 session. */
  async start(command: string): Promise<Pane> {
    const name = `s${++this.#count}`;
    await this.run("new-session", "-d", "-s", name, "-x", "200", "-y", "50", command);
    return new Pane(this, name);
  }

  /** Kills the server and everything in it (never throws). */
  async killServer(): Promise<void> {
    await this.run("kill-server").catch(() => {});
  }

  /** Kills the server (for `await using`). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.killServer();
  }
}

/** A command running in a tmux session. */
export class Pane {
  constructor(readonly tmux: Tmux, readonly name: string) {}

  /** The visible screen (with `scrollback`, the history above it too), trailing blanks removed. */
  async screen(scrollback = false): Promise<string> {
    const args = ["capture-pane", "-p", ...(scrollback ? ["-S", "-"] : []), "-t", this.name];
    return (await this.tmux.run(...args)).replace(/\s+$/, "");
  }

  /** Sends keys (tmux key names: Tab, Enter, Up, C-c, ...; other words are typed). */
  async keys(...keys: string[]): Promise<void> {
    await this.tmux.run("send-keys", "-t", this.name, ...keys);
  }

  /** Types text literally. */
  async type(text: string): Promise<void> {
    await this.tmux.run("send-keys", "-t", this.name, "-l", text);
  }

  /** Waits until `check(screen, lastLine)` holds (`scrollback`: over the whole history). */
  async waitFor(
    what: string,
    check: (screen: string, last: string) => boolean,
    ms = 15_000,
    scrollback = false,
  ): Promise<string> {
    const deadline = Date.now() + ms;
    let screen = "";
    while (Date.now() < deadline) {
      screen = await this.screen(scrollback);
      const lines = screen.split("\n");
      if (check(screen, lines[lines.length - 1].trimEnd())) return screen;
      await delay(50);
    }
    throw new Error(`Timed out waiting for ${what}; screen:\n${screen}`);
  }

  /** Waits until the last line reads exactly `line`. */
  waitLast(line: string, ms?: number): Promise<string> {
    return this.waitFor(JSON.stringify(line), (_, last) => last === line, ms);
  }
}
