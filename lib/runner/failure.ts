/**
 * Flattening errors into report failures ({@link Failure}): message, cause
 * chain, assertion details, the recent QMP messages, the serial console's
 * last lines and how QEMU died.
 *
 * @module
 */
import { ConnectionClosedError } from "../errors.ts";
import type { Machine } from "../machine.ts";
import { ExpectationError } from "./errors.ts";
import { formatValue } from "./format.ts";
import type { Failure, TranscriptRecord } from "./results.ts";

/**
 * When the connection to QEMU was lost, waits briefly for QEMU's exit status
 * (it lags the socket's close by a few ms) and describes it.
 */
export async function qemuExit(
  error: unknown,
  machine: Pick<Machine, "running" | "exited" | "describeExit"> | undefined,
): Promise<string | undefined> {
  if (!machine) return undefined;
  let lost = false;
  for (let e: unknown = error, i = 0; e instanceof Error && i < 8; e = e.cause, i++) {
    if (e instanceof ConnectionClosedError) lost = true;
  }
  if (!lost && machine.running) return undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    machine.exited,
    new Promise((r) => (timer = setTimeout(r, 1000))),
  ]);
  clearTimeout(timer);
  return machine.describeExit();
}

/** The last `lines` lines of the VM's serial console, when it printed anything. */
export function consoleTail(machine: Machine | undefined, lines = 15): string | undefined {
  if (!machine) return undefined;
  const text = machine.console.tail(4000).replace(/\r/g, "");
  if (!text.trim()) return undefined;
  return text.split("\n").slice(-lines).join("\n");
}

/** `Name: message` of an error, or the value as text. */
export function errorText(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/** Removes ANSI escape sequences (Deno colours some of its own error messages). */
export function stripAnsi(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/\x1b\[[0-9;?]*[ -\/]*[@-~]/g, "");
}

/** Flattens an error into a JSON-safe {@link Failure}. */
export function describeFailure(
  error: unknown,
  step: string,
  ring: readonly TranscriptRecord[],
  consoleText: string | undefined,
): Failure {
  const err = error instanceof Error ? error : new Error(String(error));
  const causes: string[] = [];
  let c: unknown = err.cause;
  for (let i = 0; c !== undefined && i < 5; i++) {
    causes.push(stripAnsi(errorText(c)));
    c = c instanceof Error ? c.cause : undefined;
  }
  const failure: Failure = {
    name: err.name,
    message: stripAnsi(err.message),
    step,
    causes,
    transcript: [...ring],
  };
  if (err.stack) failure.stack = stripAnsi(err.stack);
  if (err instanceof ExpectationError) {
    failure.matcher = err.matcher;
    if (err.expected !== undefined) failure.expected = formatValue(err.expected);
    if (err.actual !== undefined) failure.actual = formatValue(err.actual);
    if (err.diff) failure.diff = err.diff;
  }
  if (consoleText) failure.consoleTail = consoleText;
  return failure;
}
