/**
 * A minimal line editor for raw-mode terminals: key decoding (escape
 * sequences, UTF-8), an edit buffer with cursor, history navigation, tab
 * completion with a candidate list on double-Tab, and printing of
 * asynchronous output above the prompt without garbling it.
 *
 * It does no I/O itself: feed it the bytes read from the terminal and give
 * it a `write` function, so it can be tested without a terminal.
 *
 * @module
 */
import { commonPrefix, type Completion } from "./completion.ts";
import { columns as layoutColumns } from "./schema_help.ts";

/** A decoded key press. `text` carries printable input (possibly several characters). */
export type Key =
  | { kind: "text"; text: string }
  | {
    kind:
      | "enter"
      | "backspace"
      | "delete"
      | "left"
      | "right"
      | "word-left"
      | "word-right"
      | "home"
      | "end"
      | "up"
      | "down"
      | "tab"
      | "ctrl-c"
      | "ctrl-d"
      | "kill-end"
      | "kill-start"
      | "kill-word"
      | "clear-screen"
      | "ignore";
  };

/** Kinds of non-text keys. */
type KeyKind = Exclude<Key, { kind: "text" }>["kind"];

const CTRL: Record<string, KeyKind> = {
  "\x01": "home",
  "\x02": "left",
  "\x03": "ctrl-c",
  "\x04": "ctrl-d",
  "\x05": "end",
  "\x06": "right",
  "\x08": "backspace",
  "\x09": "tab",
  "\x0b": "kill-end",
  "\x0c": "clear-screen",
  "\x0d": "enter",
  "\x0a": "enter",
  "\x0e": "down",
  "\x10": "up",
  "\x15": "kill-start",
  "\x17": "kill-word",
  "\x7f": "backspace",
};

const CSI_FINAL: Record<string, KeyKind> = {
  A: "up",
  B: "down",
  C: "right",
  D: "left",
  H: "home",
  F: "end",
};

const CSI_TILDE: Record<string, KeyKind> = {
  "1": "home",
  "7": "home",
  "4": "end",
  "8": "end",
  "3": "delete",
};

/**
 * Turns terminal input bytes into {@link Key}s. Escape sequences and UTF-8
 * characters split across reads are reassembled.
 */
export class KeyDecoder {
  readonly #decoder = new TextDecoder();
  #pending = "";
  #lastCr = false;

  /** Decodes a chunk; returns the complete keys it contained. */
  feed(bytes: Uint8Array | string): Key[] {
    const s = this.#pending +
      (typeof bytes === "string" ? bytes : this.#decoder.decode(bytes, { stream: true }));
    this.#pending = "";
    const keys: Key[] = [];
    let text = "";
    const flushText = () => {
      if (text) keys.push({ kind: "text", text });
      text = "";
    };
    let i = 0;
    while (i < s.length) {
      const c = s[i];
      if (c === "\n" && this.#lastCr) {
        this.#lastCr = false; // CR LF (a paste): one Enter
        i++;
        continue;
      }
      this.#lastCr = c === "\r";
      if (c === "\x1b") {
        flushText();
        const seq = parseEscape(s, i);
        if (seq === "incomplete") {
          this.#pending = s.slice(i);
          break;
        }
        keys.push(seq.key);
        i = seq.next;
        continue;
      }
      const ctrl = CTRL[c];
      if (ctrl) {
        flushText();
        keys.push({ kind: ctrl });
      } else if (c >= " ") {
        text += c;
      } else {
        flushText();
        keys.push({ kind: "ignore" });
      }
      i++;
    }
    flushText();
    return keys;
  }
}

function parseEscape(s: string, i: number): { key: Key; next: number } | "incomplete" {
  const next = s[i + 1];
  if (next === undefined) return "incomplete";
  if (next === "[") {
    let j = i + 2;
    while (j < s.length && !(s.charCodeAt(j) >= 0x40 && s.charCodeAt(j) <= 0x7e)) j++;
    if (j >= s.length) return "incomplete";
    const params = s.slice(i + 2, j);
    const final = s[j];
    let kind: KeyKind = "ignore";
    if (final === "~") kind = CSI_TILDE[params.split(";")[0]] ?? "ignore";
    else if (CSI_FINAL[final]) {
      kind = CSI_FINAL[final];
      const mod = params.split(";")[1];
      // Ctrl/Alt + Left/Right move by word.
      if (mod && mod !== "1" && (kind === "left" || kind === "right")) {
        kind = kind === "left" ? "word-left" : "word-right";
      }
    }
    return { key: { kind }, next: j + 1 };
  }
  if (next === "O") {
    const final = s[i + 2];
    if (final === undefined) return "incomplete";
    return { key: { kind: CSI_FINAL[final] ?? "ignore" }, next: i + 3 };
  }
  if (next === "b") return { key: { kind: "word-left" }, next: i + 2 };
  if (next === "f") return { key: { kind: "word-right" }, next: i + 2 };
  if (next === "\x7f" || next === "\x08") return { key: { kind: "kill-word" }, next: i + 2 };
  return { key: { kind: "ignore" }, next: i + 2 };
}

/** Command history: bounded, no empty lines, no consecutive duplicates. */
export class History {
  /** Oldest first. */
  readonly entries: string[];
  /** Maximum number of entries kept. */
  readonly limit: number;

  /** Creates a history from saved entries (oldest first), keeping the last `limit`. */
  constructor(entries: readonly string[] = [], limit = 1000) {
    this.limit = limit;
    this.entries = entries.filter((e) => e.trim() !== "").slice(-limit);
  }

  /** Adds a line; returns false when it was skipped (blank or same as the last one). */
  add(line: string): boolean {
    if (line.trim() === "" || this.entries[this.entries.length - 1] === line) return false;
    this.entries.push(line);
    if (this.entries.length > this.limit) this.entries.splice(0, this.entries.length - this.limit);
    return true;
  }
}

/** What {@link LineEditor.readLine} returns. */
export type ReadResult =
  /** Enter was pressed. */
  | { kind: "line"; line: string }
  /** Ctrl-D on an empty line, end of input, or {@link LineEditor.cancel}. */
  | { kind: "eof" }
  /** Ctrl-C: the line was discarded. */
  | { kind: "interrupt" };

/** Options of {@link LineEditor}. */
export interface LineEditorOptions {
  /** Writes to the terminal (the editor emits `\r\n` line ends itself). */
  write: (text: string) => void;
  /** Terminal width in columns (default 80). */
  columns?: () => number;
  /** History for Up/Down (and where entered lines are not added: the caller adds them). */
  history?: History;
  /** Completion for Tab. */
  complete?: (line: string, cursor: number) => Completion;
  /** Called on Ctrl-C while no line is being read (e.g. to cancel a running command). */
  onInterrupt?: () => void;
}

/**
 * The editor. Feed it terminal input with {@link LineEditor.feed}; call
 * {@link LineEditor.readLine} to read a line; print asynchronous output with
 * {@link LineEditor.print}. Keys typed while no line is being read are kept
 * (type-ahead), except Ctrl-C which calls `onInterrupt` and discards the keys
 * typed before it.
 */
export class LineEditor {
  readonly #opts: LineEditorOptions;
  readonly #decoder = new KeyDecoder();
  readonly #queue: Key[] = [];
  #text = "";
  #cursor = 0;
  #scroll = 0;
  #prompt = "";
  #resolve: ((r: ReadResult) => void) | undefined;
  #ended = false;
  #lastTab = false;
  #histIndex = 0;
  #draft = "";

  /** Creates an editor writing through `options.write`. */
  constructor(options: LineEditorOptions) {
    this.#opts = options;
  }

  /** True while a {@link LineEditor.readLine} is waiting. */
  get active(): boolean {
    return this.#resolve !== undefined;
  }

  /** The current buffer (for tests). */
  get text(): string {
    return this.#text;
  }

  /** The cursor offset in the buffer (for tests). */
  get cursor(): number {
    return this.#cursor;
  }

  /** Feeds terminal input bytes. */
  feed(bytes: Uint8Array | string): void {
    this.#queue.push(...this.#decoder.feed(bytes));
    this.#drain();
  }

  /** Signals the end of input: pending and future reads return `eof`. */
  end(): void {
    this.#ended = true;
    this.#drain();
  }

  /** Makes a pending read return `eof` (e.g. the connection closed). */
  cancel(): void {
    const r = this.#resolve;
    if (!r) return;
    this.#write("\r\n");
    this.#finish({ kind: "eof" });
  }

  /** Shows `prompt` and reads one line. */
  readLine(prompt: string): Promise<ReadResult> {
    if (this.#resolve) return Promise.reject(new Error("readLine is already pending"));
    this.#prompt = prompt;
    this.#text = "";
    this.#cursor = 0;
    this.#scroll = 0;
    this.#lastTab = false;
    this.#histIndex = this.#opts.history?.entries.length ?? 0;
    this.#draft = "";
    const p = new Promise<ReadResult>((resolve) => (this.#resolve = resolve));
    this.#render();
    this.#drain();
    return p;
  }

  /**
   * Prints `text` (a newline is added when missing). While a line is being
   * read, the prompt line is cleared first and redrawn after, with its buffer
   * and cursor, so asynchronous output does not garble the input.
   */
  print(text: string): void {
    const body = text.endsWith("\n") ? text : text + "\n";
    const out = body.replace(/\r?\n/g, "\r\n");
    if (this.active) {
      this.#write("\r\x1b[K" + out);
      this.#render();
    } else {
      this.#write(out);
    }
  }

  #write(s: string): void {
    this.#opts.write(s);
  }

  #drain(): void {
    while (this.#queue.length > 0) {
      const key = this.#queue[0];
      if (!this.active) {
        // Type-ahead is kept for the next read, unless a Ctrl-C follows: like a
        // terminal's interrupt, it discards what was typed before it.
        const i = this.#queue.findIndex((k) => k.kind === "ctrl-c");
        if (i < 0) return;
        this.#queue.splice(0, i + 1);
        this.#opts.onInterrupt?.();
        continue;
      }
      this.#queue.shift();
      this.#handle(key);
    }
    if (this.#ended && this.active) {
      this.#write("\r\n");
      this.#finish({ kind: "eof" });
    }
  }

  #finish(r: ReadResult): void {
    const resolve = this.#resolve;
    this.#resolve = undefined;
    resolve?.(r);
  }

  #handle(key: Key): void {
    const wasTab = this.#lastTab;
    this.#lastTab = false;
    const t = this.#text;
    const c = this.#cursor;
    switch (key.kind) {
      case "text":
        this.#set(t.slice(0, c) + key.text + t.slice(c), c + key.text.length);
        return;
      case "enter":
        this.#cursor = t.length;
        this.#render();
        this.#write("\r\n");
        this.#finish({ kind: "line", line: t });
        return;
      case "backspace":
        if (c > 0) this.#set(t.slice(0, c - 1) + t.slice(c), c - 1);
        return;
      case "delete":
        if (c < t.length) this.#set(t.slice(0, c) + t.slice(c + 1), c);
        return;
      case "ctrl-d":
        if (t === "") {
          this.#write("\r\n");
          this.#finish({ kind: "eof" });
        } else if (c < t.length) this.#set(t.slice(0, c) + t.slice(c + 1), c);
        return;
      case "ctrl-c":
        this.#write("^C\r\n");
        this.#finish({ kind: "interrupt" });
        return;
      case "left":
        this.#set(t, Math.max(0, c - 1));
        return;
      case "right":
        this.#set(t, Math.min(t.length, c + 1));
        return;
      case "word-left":
        this.#set(t, wordLeft(t, c));
        return;
      case "word-right":
        this.#set(t, wordRight(t, c));
        return;
      case "home":
        this.#set(t, 0);
        return;
      case "end":
        this.#set(t, t.length);
        return;
      case "kill-end":
        this.#set(t.slice(0, c), c);
        return;
      case "kill-start":
        this.#set(t.slice(c), 0);
        return;
      case "kill-word": {
        const w = wordLeft(t, c);
        this.#set(t.slice(0, w) + t.slice(c), w);
        return;
      }
      case "up":
        this.#historyMove(-1);
        return;
      case "down":
        this.#historyMove(1);
        return;
      case "tab":
        this.#lastTab = true;
        this.#tab(wasTab);
        return;
      case "clear-screen":
        this.#write("\x1b[H\x1b[2J");
        this.#render();
        return;
      case "ignore":
        return;
    }
  }

  #set(text: string, cursor: number): void {
    this.#text = text;
    this.#cursor = cursor;
    this.#render();
  }

  #historyMove(delta: number): void {
    const entries = this.#opts.history?.entries ?? [];
    const target = this.#histIndex + delta;
    if (target < 0 || target > entries.length) {
      this.#write("\x07");
      return;
    }
    if (this.#histIndex === entries.length) this.#draft = this.#text;
    this.#histIndex = target;
    const text = target === entries.length ? this.#draft : entries[target];
    this.#set(text, text.length);
  }

  #tab(second: boolean): void {
    const complete = this.#opts.complete;
    if (!complete) return this.#write("\x07");
    let result: Completion;
    try {
      result = complete(this.#text, this.#cursor);
    } catch {
      return this.#write("\x07");
    }
    const { start, candidates } = result;
    const typed = this.#text.slice(start, this.#cursor);
    if (candidates.length === 0) return this.#write("\x07");
    if (candidates.length === 1) {
      const word = candidates[0];
      const suffix = /[=.(]$/.test(word) || this.#text[this.#cursor] === " " ? "" : " ";
      this.#replace(start, word + suffix);
      return;
    }
    const prefix = commonPrefix(candidates);
    if (prefix.length > typed.length) {
      this.#replace(start, prefix);
      return;
    }
    if (second) {
      const width = this.#opts.columns?.() ?? 80;
      this.print(layoutColumns(candidates, width - 1));
    } else {
      this.#write("\x07");
    }
  }

  #replace(start: number, word: string): void {
    const t = this.#text;
    this.#set(t.slice(0, start) + word + t.slice(this.#cursor), start + word.length);
  }

  /**
   * Redraws the prompt line. Long lines scroll horizontally so the cursor
   * stays visible on one terminal row.
   */
  #render(): void {
    if (!this.active) return;
    const width = Math.max(20, this.#opts.columns?.() ?? 80);
    const promptW = this.#prompt.length;
    const avail = Math.max(8, width - promptW - 1);
    if (this.#cursor < this.#scroll) this.#scroll = this.#cursor;
    if (this.#cursor > this.#scroll + avail) this.#scroll = this.#cursor - avail;
    if (this.#text.length - this.#scroll < avail) {
      this.#scroll = Math.max(0, Math.min(this.#scroll, this.#text.length - avail));
    }
    const visible = this.#text.slice(this.#scroll, this.#scroll + avail);
    const col = promptW + this.#cursor - this.#scroll;
    this.#write(
      "\r" + this.#prompt + visible + "\x1b[K\r" + (col > 0 ? `\x1b[${col}C` : ""),
    );
  }
}

function wordLeft(t: string, c: number): number {
  let i = c;
  while (i > 0 && /\s/.test(t[i - 1])) i--;
  while (i > 0 && !/\s/.test(t[i - 1])) i--;
  return i;
}

function wordRight(t: string, c: number): number {
  let i = c;
  while (i < t.length && /\s/.test(t[i])) i++;
  while (i < t.length && !/\s/.test(t[i])) i++;
  return i;
}
