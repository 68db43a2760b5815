/**
 * Test helper: commands on a real pseudo-terminal, through a private tmux
 * server (one per test process and name; kill it with {@link Tmux.killServer}).
 * A key like C-c then reaches the pane's foreground process group the way a
 * terminal delivers it.
 *
 * @module
 */

/** True when tmux can be run. */
export function hasTmux(): boolean {
  try {
    return new Deno.Command("tmux", { args: ["-V"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** A private tmux server. */
export class Tmux {
  /** The server's socket name (`tmux -L`). */
  readonly socket: string;

  /** A server named after `name` and this process. */
  constructor(name: string) {
    this.socket = `qmpkit-${name}-${Deno.pid}`;
  }

  /** Runs a tmux command against this server and returns its stdout. */
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

  /** Starts `command` (a `sh -c` line) in a new 200x50 session. */
  async start(session: string, command: string): Promise<Pane> {
    await this.run("new-session", "-d", "-s", session, "-x", "200", "-y", "50", command);
    return new Pane(this, session);
  }

  /** Kills the server and everything in it (never throws). */
  async killServer(): Promise<void> {
    await this.run("kill-server").catch(() => {});
  }
}

/** A tmux session's pane. */
export class Pane {
  /** The pane of `session` on `tmux`. */
  constructor(readonly tmux: Tmux, readonly session: string) {}

  /** The whole screen and scrollback, trailing blank lines removed. */
  async screen(): Promise<string> {
    return (await this.tmux.run("capture-pane", "-p", "-S", "-", "-t", this.session))
      .replace(/\s+$/, "");
  }

  /** Sends tmux keys (C-c, Enter, ...). */
  async keys(...keys: string[]): Promise<void> {
    await this.tmux.run("send-keys", "-t", this.session, ...keys);
  }

  /** Waits until `check(screen)` holds, or throws with the screen after `ms`. */
  async waitFor(what: string, check: (screen: string) => boolean, ms = 30_000): Promise<string> {
    const deadline = Date.now() + ms;
    let screen = "";
    while (Date.now() < deadline) {
      screen = await this.screen();
      if (check(screen)) return screen;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`Timed out waiting for ${what}; screen:\n${screen}`);
  }
}
