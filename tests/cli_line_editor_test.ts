/**
 * Unit tests of the shell's line editor: key decoding, editing, history,
 * Tab completion, Ctrl-C/Ctrl-D, type-ahead, and printing above the prompt.
 * Driven with bytes, no terminal, no permissions.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import {
  History,
  type Key,
  KeyDecoder,
  LineEditor,
  type LineEditorOptions,
  type ReadResult,
} from "../scripts/cli/line_editor.ts";
import type { Completion } from "../scripts/cli/completion.ts";

const test = (name: string, fn: () => void | Promise<void>) =>
  Deno.test({ name, permissions: "none", fn });

const kinds = (keys: Key[]) => keys.map((k) => (k.kind === "text" ? `text:${k.text}` : k.kind));

test("KeyDecoder: text, control keys and escape sequences", () => {
  const d = new KeyDecoder();
  assertEquals(kinds(d.feed("ab\tc\r")), ["text:ab", "tab", "text:c", "enter"]);
  assertEquals(kinds(d.feed("\x1b[A\x1b[B\x1b[C\x1b[D\x1b[H\x1b[F")), [
    "up",
    "down",
    "right",
    "left",
    "home",
    "end",
  ]);
  assertEquals(kinds(d.feed("\x1bOH\x1bOF\x1b[1~\x1b[4~\x1b[3~")), [
    "home",
    "end",
    "home",
    "end",
    "delete",
  ]);
  assertEquals(kinds(d.feed("\x1b[1;5C\x1b[1;5D\x1bb\x1bf")), [
    "word-right",
    "word-left",
    "word-left",
    "word-right",
  ]);
  assertEquals(kinds(d.feed("\x01\x05\x03\x04\x0b\x15\x17\x7f\x08\x0c\x10\x0e")), [
    "home",
    "end",
    "ctrl-c",
    "ctrl-d",
    "kill-end",
    "kill-start",
    "kill-word",
    "backspace",
    "backspace",
    "clear-screen",
    "up",
    "down",
  ]);
  assertEquals(kinds(d.feed("\x1b[15~\x1a")), ["ignore", "ignore"]);
});

test("KeyDecoder: sequences and UTF-8 split across reads; CR LF is one Enter", () => {
  const d = new KeyDecoder();
  assertEquals(kinds(d.feed("x\x1b")), ["text:x"]);
  assertEquals(kinds(d.feed("[")), []);
  assertEquals(kinds(d.feed("Dy")), ["left", "text:y"]);
  const e = new TextEncoder().encode("é");
  assertEquals(kinds(d.feed(e.subarray(0, 1))), []);
  assertEquals(kinds(d.feed(e.subarray(1))), ["text:é"]);
  assertEquals(kinds(d.feed("a\r\nb\n")), ["text:a", "enter", "text:b", "enter"]);
});

test("History: bounded, no blanks, no consecutive duplicates", () => {
  const h = new History(["a", "", "b"], 3);
  assertEquals(h.entries, ["a", "b"]);
  assertEquals(h.add("b"), false);
  assertEquals(h.add("  "), false);
  assertEquals(h.add("c"), true);
  assertEquals(h.add("d"), true);
  assertEquals(h.entries, ["b", "c", "d"]);
  assertEquals(new History(["1", "2", "3", "4"], 2).entries, ["3", "4"]);
});

/** An editor writing into a string, with helpers. */
function setup(options: Partial<LineEditorOptions> = {}) {
  let out = "";
  const editor = new LineEditor({ write: (s) => (out += s), columns: () => 80, ...options });
  return {
    editor,
    get out() {
      return out;
    },
    clear() {
      out = "";
    },
  };
}

async function read(editor: LineEditor, input: string, prompt = "> "): Promise<ReadResult> {
  const p = editor.readLine(prompt);
  editor.feed(input);
  return await p;
}

test("LineEditor: typing, cursor movement and editing keys", async () => {
  const { editor } = setup();
  assertEquals(await read(editor, "helo\x1b[Dl\r"), { kind: "line", line: "hello" });
  assertEquals(await read(editor, "world\x01x\x05!\r"), { kind: "line", line: "xworld!" });
  assertEquals(await read(editor, "abc\x7f\x7fd\r"), { kind: "line", line: "ad" });
  assertEquals(await read(editor, "\x7f\x1b[3~z\r"), { kind: "line", line: "z" });
  assertEquals(await read(editor, "abcdef\x1b[D\x1b[D\x0b\r"), { kind: "line", line: "abcd" });
  assertEquals(await read(editor, "abcdef\x1b[D\x1b[D\x15\r"), { kind: "line", line: "ef" });
  assertEquals(await read(editor, "one two three\x17\r"), { kind: "line", line: "one two " });
  assertEquals(await read(editor, "one two\x1bb\x1b[3~\r"), { kind: "line", line: "one wo" });
  assertEquals(await read(editor, "ab\x1b[H\x1b[3~\r"), { kind: "line", line: "b" });
});

test("LineEditor: Ctrl-C discards the line, Ctrl-D exits only on an empty line", async () => {
  const t = setup();
  assertEquals(await read(t.editor, "partial\x03"), { kind: "interrupt" });
  assert(t.out.includes("^C\r\n"));
  assertEquals(await read(t.editor, "\x04"), { kind: "eof" });
  // Ctrl-D with text deletes the character under the cursor.
  assertEquals(await read(t.editor, "abc\x01\x04\r"), { kind: "line", line: "bc" });
  const p = t.editor.readLine("> ");
  t.editor.end();
  assertEquals(await p, { kind: "eof" });
  assertEquals(await t.editor.readLine("> "), { kind: "eof" });
});

test("LineEditor: Up/Down walk the history and restore the draft", async () => {
  const history = new History(["first", "second"]);
  const { editor } = setup({ history });
  assertEquals(await read(editor, "\x1b[A\r"), { kind: "line", line: "second" });
  assertEquals(await read(editor, "\x1b[A\x1b[A\r"), { kind: "line", line: "first" });
  // Past the oldest entry: stays there (bell).
  assertEquals(await read(editor, "\x1b[A\x1b[A\x1b[A\r"), { kind: "line", line: "first" });
  // Down past the newest returns to what was being typed.
  assertEquals(await read(editor, "dra\x1b[A\x1b[A\x1b[B\x1b[Bft\r"), {
    kind: "line",
    line: "draft",
  });
  // A recalled entry can be edited.
  assertEquals(await read(editor, "\x1b[A\x7f\x7f\x7f\x7f\x7f\x7fthird\r"), {
    kind: "line",
    line: "third",
  });
  assertEquals(history.entries, ["first", "second"], "the caller adds entries");
});

test("LineEditor: Tab completes, Tab Tab lists the candidates", async () => {
  const words = ["query-stats", "query-status", "quit"];
  const complete = (line: string, cursor: number): Completion => {
    const start = line.lastIndexOf(" ", cursor - 1) + 1;
    const prefix = line.slice(start, cursor);
    return { start, candidates: words.filter((w) => w.startsWith(prefix)) };
  };
  const t = setup({ complete });
  // Unique: completed plus a space.
  assertEquals(await read(t.editor, "qui\t\r"), { kind: "line", line: "quit " });
  // Ambiguous: the common prefix first, then the list on the second Tab.
  t.clear();
  const p = t.editor.readLine("(QEMU) ");
  t.editor.feed("query-s\t");
  assertEquals(t.editor.text, "query-stat");
  t.editor.feed("\x7f\x7f");
  t.editor.feed("\t");
  assertEquals(t.editor.text, "query-stat");
  t.editor.feed("\x7f\x7f\x1b[Cat");
  assertEquals(t.editor.text, "query-stat");
  t.clear();
  t.editor.feed("\t");
  assertEquals(t.out, "\x07", "bell when nothing more can be completed, no list yet");
  t.editor.feed("\t");
  assert(t.out.includes("query-stats   query-status"), JSON.stringify(t.out));
  // The prompt and buffer are redrawn after the list.
  assert(t.out.endsWith("\r(QEMU) query-stat\x1b[K\r\x1b[17C"), JSON.stringify(t.out.slice(-40)));
  t.editor.feed("u\t\r");
  assertEquals(await p, { kind: "line", line: "query-status " });
  // Completion in the middle of a line.
  assertEquals(await read(t.editor, "x  tail\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dqui\t\r"), {
    kind: "line",
    line: "x quit tail",
  });
  // No candidates: bell, nothing changes.
  assertEquals(await read(t.editor, "zz\t\r"), { kind: "line", line: "zz" });
  // Candidates ending in "=" or "." get no space.
  const t2 = setup({ complete: () => ({ start: 0, candidates: ["driver="] }) });
  assertEquals(await read(t2.editor, "d\t\r"), { kind: "line", line: "driver=" });
});

test("LineEditor: output printed above the prompt keeps the input intact", async () => {
  const t = setup();
  const p = t.editor.readLine("(QEMU) ");
  t.editor.feed("query-st");
  t.clear();
  t.editor.print("[12:00:00.000] event STOP");
  assertEquals(t.out, "\r\x1b[K[12:00:00.000] event STOP\r\n\r(QEMU) query-st\x1b[K\r\x1b[15C");
  t.editor.feed("atus\r");
  assertEquals(await p, { kind: "line", line: "query-status" });
  // Not reading: printed as is, with CR LF line ends.
  t.clear();
  t.editor.print("a\nb\n");
  assertEquals(t.out, "a\r\nb\r\n");
});

test("LineEditor: type-ahead is kept; Ctrl-C while idle calls onInterrupt", async () => {
  let interrupts = 0;
  const { editor } = setup({ onInterrupt: () => interrupts++ });
  editor.feed("stop\rcont\r");
  assertEquals(interrupts, 0);
  assertEquals(await editor.readLine("> "), { kind: "line", line: "stop" });
  assertEquals(await editor.readLine("> "), { kind: "line", line: "cont" });
  // Ctrl-C while a command runs: interrupt, and drop what was typed before it.
  editor.feed("discarded\r\x03kept\r");
  assertEquals(interrupts, 1);
  assertEquals(await editor.readLine("> "), { kind: "line", line: "kept" });
  const p = editor.readLine("> ");
  editor.cancel();
  assertEquals(await p, { kind: "eof" });
});

test("LineEditor: long lines scroll horizontally to keep the cursor visible", async () => {
  const t = setup({ columns: () => 20 });
  const p = t.editor.readLine("> ");
  t.clear();
  t.editor.feed("0123456789abcdefghijklmnop");
  // The last render shows the tail of the line, within 20 columns.
  const last = t.out.slice(t.out.lastIndexOf("\r> "));
  const m = new RegExp("^\r> (.*)\x1b\\[K\r\x1b\\[(\\d+)C$").exec(last);
  assert(m, JSON.stringify(last));
  assertEquals(m[1], "9abcdefghijklmnop");
  assert(Number(m[2]) <= 19);
  t.editor.feed("\x01");
  const home = t.out.slice(t.out.lastIndexOf("\r> "));
  assertEquals(home, "\r> 0123456789abcdefg\x1b[K\r\x1b[2C");
  t.editor.feed("\r");
  assertEquals(await p, { kind: "line", line: "0123456789abcdefghijklmnop" });
});
