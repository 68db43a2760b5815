/**
 * Test helper: a headless Chromium (Debian's `chromium` package) driven over
 * the DevTools protocol, with no third-party code: Chromium listens on a free
 * port on 127.0.0.1 (`--remote-debugging-port=0`), Deno's built-in WebSocket
 * talks to it. Each browser gets a fresh temp `--user-data-dir`; disposing it
 * closes the browser (SIGKILL if it does not exit within 5 s) and removes the
 * dir, so no Chromium is left running.
 *
 * Chromium is kept off the network: host names resolve to nothing (loopback
 * only) and background networking is off; tests can check
 * {@link ChromiumPage.requests} for anything the page fetched.
 *
 * @module
 */

/** The Chromium binary, or undefined when none is installed. */
export function findChromium(): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":")) {
    for (const name of ["chromium", "chromium-browser"]) {
      try {
        const path = `${dir}/${name}`;
        if (Deno.statSync(path).isFile) return path;
      } catch { /* not here */ }
    }
  }
  return undefined;
}

interface Pending {
  resolve(v: Record<string, unknown>): void;
  reject(e: Error): void;
  timer: ReturnType<typeof setTimeout>;
}

/** A page (tab) of a {@link Chromium}, attached in a DevTools session. */
export interface ChromiumPage {
  /** Sends a DevTools command in this page's session. */
  send(method: string, params?: Record<string, unknown>): Promise<Record<string, unknown>>;
  /** Evaluates `expression` in the page and returns its (JSON) value; throws on exceptions. */
  eval<T = unknown>(expression: string): Promise<T>;
  /** Navigates and waits for the load event. */
  goto(url: string): Promise<void>;
  /** Clicks (mouse press and release) at the centre of the first element matching `selector`. */
  click(selector: string): Promise<void>;
  /** Saves a PNG screenshot of the whole page (or `clipSelector`'s box) to `path`. */
  screenshot(path: string, clipSelector?: string): Promise<void>;
  /** URLs of every request the page made. */
  readonly requests: string[];
  /** Messages of JavaScript dialogs (alert, confirm...) the page opened. */
  readonly dialogs: string[];
}

/** A running headless Chromium; `await using` closes it. */
export class Chromium implements AsyncDisposable {
  readonly #child: Deno.ChildProcess;
  readonly #ws: WebSocket;
  readonly #userDataDir: string;
  readonly #pending = new Map<number, Pending>();
  readonly #listeners = new Map<string, ((params: Record<string, unknown>) => void)[]>();
  #nextId = 1;
  #closed = false;
  readonly #stderrDone: Promise<void>;
  readonly #stderr: { text: string };

  private constructor(
    child: Deno.ChildProcess,
    ws: WebSocket,
    userDataDir: string,
    stderrDone: Promise<void>,
    stderr: { text: string },
  ) {
    this.#child = child;
    this.#ws = ws;
    this.#userDataDir = userDataDir;
    this.#stderrDone = stderrDone;
    this.#stderr = stderr;
    ws.onmessage = (ev) => this.#onMessage(String(ev.data));
    ws.onclose = () => {
      for (const p of this.#pending.values()) {
        clearTimeout(p.timer);
        p.reject(new Error("Chromium's DevTools connection closed"));
      }
      this.#pending.clear();
    };
  }

  /**
   * Starts Chromium (headless, temp profile under `tempDir`) and connects to
   * it; throws when it does not offer DevTools within `timeoutMs`.
   */
  static async launch(
    binary: string,
    tempDir: string,
    options: { timeoutMs?: number; width?: number; height?: number } = {},
  ): Promise<Chromium> {
    const userDataDir = await Deno.makeTempDir({ dir: tempDir, prefix: "chromium-profile-" });
    const child = new Deno.Command(binary, {
      args: [
        "--headless",
        "--no-sandbox", // tests run as root in CI containers
        "--disable-gpu",
        "--disable-dev-shm-usage",
        `--user-data-dir=${userDataDir}`,
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--no-pings",
        "--mute-audio",
        // Loopback only: no host name resolves, so nothing can reach the network.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        `--window-size=${options.width ?? 1280},${options.height ?? 900}`,
        "about:blank",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const stderr = { text: "" };
    let found: ((url: string) => void) | undefined;
    const urlPromise = new Promise<string>((r) => (found = r));
    const stderrDone = (async () => {
      const d = new TextDecoder();
      for await (const chunk of child.stderr) {
        stderr.text += d.decode(chunk, { stream: true });
        if (stderr.text.length > 200_000) stderr.text = stderr.text.slice(-100_000);
        const m = /DevTools listening on (ws:\/\/\S+)/.exec(stderr.text);
        if (m) found?.(m[1]);
      }
    })();
    const timeoutMs = options.timeoutMs ?? 30_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const fail = async (why: string): Promise<never> => {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
      await child.status;
      await stderrDone;
      await Deno.remove(userDataDir, { recursive: true }).catch(() => {});
      throw new Error(`${why}; Chromium's stderr:\n${stderr.text.slice(-3000)}`);
    };
    const url = await Promise.race([
      urlPromise,
      child.status.then(() => "exited" as const),
      new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), timeoutMs))),
    ]);
    clearTimeout(timer);
    if (url === "exited") return await fail("Chromium exited before offering DevTools");
    if (url === "timeout") return await fail(`Chromium offered no DevTools within ${timeoutMs} ms`);
    const ws = new WebSocket(url);
    const opened = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 10_000);
      ws.onopen = () => {
        clearTimeout(t);
        resolve(true);
      };
      ws.onerror = () => {
        clearTimeout(t);
        resolve(false);
      };
    });
    if (!opened) {
      if (ws.readyState !== WebSocket.CLOSED) {
        const closed = new Promise((r) => ws.addEventListener("close", r, { once: true }));
        ws.close();
        await closed;
      }
      return await fail(`cannot connect to Chromium's DevTools at ${url} within 10 s`);
    }
    return new Chromium(child, ws, userDataDir, stderrDone, stderr);
  }

  #onMessage(text: string): void {
    const msg = JSON.parse(text) as {
      id?: number;
      result?: Record<string, unknown>;
      error?: { message: string };
      method?: string;
      params?: Record<string, unknown>;
      sessionId?: string;
    };
    if (msg.id !== undefined) {
      const p = this.#pending.get(msg.id);
      if (!p) return;
      this.#pending.delete(msg.id);
      clearTimeout(p.timer);
      if (msg.error) p.reject(new Error(`DevTools: ${msg.error.message}`));
      else p.resolve(msg.result ?? {});
      return;
    }
    if (msg.method) {
      const key = `${msg.sessionId ?? ""}/${msg.method}`;
      for (const l of this.#listeners.get(key) ?? []) l(msg.params ?? {});
    }
  }

  /** Sends a DevTools command (to the browser, or to a page's session). */
  send(
    method: string,
    params: Record<string, unknown> = {},
    sessionId?: string,
    timeoutMs = 20_000,
  ): Promise<Record<string, unknown>> {
    if (this.#closed) return Promise.reject(new Error("Chromium is closed"));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`DevTools ${method} got no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      this.#ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    });
  }

  /** Calls `fn` with the params of every `method` event (of `sessionId`'s page). */
  on(method: string, sessionId: string, fn: (params: Record<string, unknown>) => void): void {
    const key = `${sessionId}/${method}`;
    this.#listeners.set(key, [...(this.#listeners.get(key) ?? []), fn]);
  }

  /** Resolves with the params of the next `method` event, or rejects after `timeoutMs`. */
  once(method: string, sessionId: string, timeoutMs = 20_000): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const key = `${sessionId}/${method}`;
      const timer = setTimeout(() => {
        remove();
        reject(new Error(`no ${method} event within ${timeoutMs} ms`));
      }, timeoutMs);
      const fn = (p: Record<string, unknown>) => {
        remove();
        clearTimeout(timer);
        resolve(p);
      };
      const remove = () =>
        this.#listeners.set(key, (this.#listeners.get(key) ?? []).filter((f) => f !== fn));
      this.on(method, sessionId, fn);
    });
  }

  /** Opens a new page and attaches to it (Page, Runtime and Network events enabled). */
  async newPage(options: { javaScript?: boolean } = {}): Promise<ChromiumPage> {
    const { targetId } = await this.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await this.send("Target.attachToTarget", { targetId, flatten: true });
    const sid = String(sessionId);
    const requests: string[] = [];
    const dialogs: string[] = [];
    this.on("Network.requestWillBeSent", sid, (p) => {
      requests.push(String((p.request as Record<string, unknown>).url));
    });
    this.on("Page.javascriptDialogOpening", sid, (p) => {
      dialogs.push(String(p.message));
      void this.send("Page.handleJavaScriptDialog", { accept: true }, sid).catch(() => {});
    });
    await this.send("Page.enable", {}, sid);
    await this.send("Runtime.enable", {}, sid);
    await this.send("Network.enable", {}, sid);
    if (options.javaScript === false) {
      await this.send("Emulation.setScriptExecutionDisabled", { value: true }, sid);
    }
    const page: ChromiumPage = {
      requests,
      dialogs,
      send: (method, params) => this.send(method, params, sid),
      eval: async <T>(expression: string): Promise<T> => {
        const r = await this.send("Runtime.evaluate", {
          expression,
          returnByValue: true,
          awaitPromise: true,
        }, sid);
        if (r.exceptionDetails) {
          throw new Error(`page evaluation failed: ${JSON.stringify(r.exceptionDetails)}`);
        }
        return (r.result as { value: T }).value;
      },
      goto: async (url) => {
        const loaded = this.once("Page.loadEventFired", sid, 30_000);
        const r = await this.send("Page.navigate", { url }, sid);
        if (r.errorText) {
          loaded.catch(() => {});
          throw new Error(`cannot load ${url}: ${r.errorText}`);
        }
        await loaded;
      },
      click: async (selector) => {
        // DOM.getBoxModel works with JavaScript disabled too.
        const { root } = await this.send("DOM.getDocument", {}, sid);
        const { nodeId } = await this.send("DOM.querySelector", {
          nodeId: (root as { nodeId: number }).nodeId,
          selector,
        }, sid);
        if (!nodeId) throw new Error(`no element matches ${selector}`);
        await this.send("DOM.scrollIntoViewIfNeeded", { nodeId }, sid);
        const { model } = await this.send("DOM.getBoxModel", { nodeId }, sid);
        const q = (model as { content: number[] }).content;
        // A point just inside the left edge: the summary's marker and text are there.
        const x = q[0] + Math.min(12, (q[2] - q[0]) / 2);
        const y = (q[1] + q[5]) / 2;
        for (const type of ["mousePressed", "mouseReleased"]) {
          await this.send("Input.dispatchMouseEvent", {
            type,
            x,
            y,
            button: "left",
            clickCount: 1,
          }, sid);
        }
      },
      screenshot: async (path, clipSelector) => {
        let clip: Record<string, number> | undefined;
        if (clipSelector) {
          const { root } = await this.send("DOM.getDocument", {}, sid);
          const { nodeId } = await this.send("DOM.querySelector", {
            nodeId: (root as { nodeId: number }).nodeId,
            selector: clipSelector,
          }, sid);
          if (!nodeId) throw new Error(`no element matches ${clipSelector}`);
          const { model } = await this.send("DOM.getBoxModel", { nodeId }, sid);
          const b = (model as { border: number[] }).border;
          clip = { x: b[0], y: b[1], width: b[2] - b[0], height: b[5] - b[1], scale: 1 };
        } else {
          const m = await this.send("Page.getLayoutMetrics", {}, sid);
          const size = m.cssContentSize as { width: number; height: number };
          clip = { x: 0, y: 0, width: size.width, height: Math.min(size.height, 12000), scale: 1 };
        }
        const { data } = await this.send("Page.captureScreenshot", {
          format: "png",
          clip,
          captureBeyondViewport: true,
        }, sid);
        await Deno.writeFile(path, Uint8Array.from(atob(String(data)), (c) => c.charCodeAt(0)));
      },
    };
    return page;
  }

  /** Closes the browser (SIGKILL after 5 s) and removes its profile dir. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      if (this.#ws.readyState === WebSocket.OPEN) {
        const id = this.#nextId++;
        this.#ws.send(JSON.stringify({ id, method: "Browser.close", params: {} }));
      }
    } catch { /* closing anyway */ }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const exited = await Promise.race([
      this.#child.status.then(() => true),
      new Promise<false>((r) => (timer = setTimeout(() => r(false), 5000))),
    ]);
    clearTimeout(timer);
    if (!exited) {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* exited meanwhile */ }
    }
    await this.#child.status;
    if (this.#ws.readyState !== WebSocket.CLOSED) {
      const closed = new Promise((r) => this.#ws.addEventListener("close", r, { once: true }));
      this.#ws.close();
      await closed;
    }
    for (const p of this.#pending.values()) clearTimeout(p.timer);
    this.#pending.clear();
    // Helper processes (renderer, GPU, zygote) normally follow the browser out; any
    // that linger are ours (they carry our profile dir): kill them by pid.
    const deadline = Date.now() + 3000;
    let left = await this.leftoverPids();
    while (left.length > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      left = await this.leftoverPids();
    }
    for (const pid of left) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone meanwhile */ }
    }
    await this.#stderrDone;
    await Deno.remove(this.#userDataDir, { recursive: true }).catch(() => {});
  }

  /** What Chromium printed on stderr (for diagnostics). */
  get stderr(): string {
    return this.#stderr.text;
  }

  /** Pids of processes still running with this browser's profile dir (none after close). */
  async leftoverPids(): Promise<number[]> {
    const out = await new Deno.Command("pgrep", {
      args: ["-f", "--", `--user-data-dir=${this.#userDataDir}`],
      stdout: "piped",
      stderr: "null",
    }).output();
    return new TextDecoder().decode(out.stdout).split("\n").filter(Boolean).map(Number);
  }

  /** The browser's pid (for orphan checks). */
  get pid(): number {
    return this.#child.pid;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
