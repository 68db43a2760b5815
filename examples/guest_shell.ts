/**
 * A helper for the example playbooks: run a shell command on the tiny guest's
 * serial console and get its output back, robustly (the command is resent
 * until the answer arrives, e.g. when typed before the shell is listening).
 *
 * @module
 */
import type { SerialConsole } from "../lib/console.ts";
import type { PlaybookContext } from "../lib/runner/playbook.ts";

let counter = 0;

/**
 * Runs `command` in the guest's shell and resolves with what it printed
 * (trimmed, lines joined by `\n`). Keep commands idempotent: they may run
 * more than once.
 *
 * @example
 * ```ts ignore
 * const serial = await guestShell(t, t.vm.console, "cat /sys/block/vda/serial");
 * ```
 */
export async function guestShell(
  t: PlaybookContext,
  serial: SerialConsole,
  command: string,
): Promise<string> {
  const tag = `qmpkit-out-${++counter}`;
  // The echoed command line reads `tag""=[`, so only the command's output matches `tag=[`.
  const answer = new RegExp(`${tag}=\\[([^\\]]*)\\]`);
  return await t.eventually(async () => {
    await serial.write(`echo "${tag}""=[$(${command})]"\n`);
    const m = await serial.waitFor(answer, { timeout: "2s", signal: t.signal });
    return m.groups[0].replace(/\r/g, "").trim();
  }, { timeout: "30s", interval: "100ms", message: `the guest answers ${command}` });
}
