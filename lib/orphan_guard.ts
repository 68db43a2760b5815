/**
 * Tying a spawned QEMU to its owner's lifetime. On Linux the kernel can kill
 * a child when its parent dies (`PR_SET_PDEATHSIG`); Deno cannot ask for it
 * itself, so QEMU is started through util-linux `setpriv --pdeathsig SIGKILL`.
 * Without `setpriv` (or permission to run it) only a process-exit hook is
 * left, which a killed owner never runs: that is warned about once.
 *
 * @module
 */

/**
 * What kills QEMU when its owner dies: `"pdeathsig"` (the kernel, on any death
 * of the owner, even SIGKILL) or `"exit-hook"` (the owner's `unload` hook only:
 * a normal exit, `Deno.exit()` or an uncaught error; QEMU outlives an owner
 * killed by a signal).
 */
export type OrphanGuard = "pdeathsig" | "exit-hook";

/** A command line that starts `binary` under the best available guard. */
export interface GuardedCommand {
  /** The program to spawn (`setpriv` or the binary itself). */
  command: string;
  /** Its arguments (the binary and its arguments last). */
  args: string[];
  /** The guard this command line gets. */
  guard: OrphanGuard;
}

const SETPRIV_DIRS = ["/usr/bin", "/bin"];
let wrapper: { prefix: string[]; guard: OrphanGuard; why?: (binary: string) => string } | undefined;
const warned = new Set<string>();

function detect(): { prefix: string[]; guard: OrphanGuard; why?: (binary: string) => string } {
  if (Deno.build.os !== "linux") return { prefix: [], guard: "exit-hook" };
  let found: string | undefined;
  for (const dir of SETPRIV_DIRS) {
    try {
      if (Deno.statSync(`${dir}/setpriv`).isFile) {
        found = `${dir}/setpriv`;
        break;
      }
    } catch { /* not here, or not allowed to look */ }
  }
  if (found === undefined) {
    return {
      prefix: [],
      guard: "exit-hook",
      why: () =>
        `util-linux setpriv was not found in ${SETPRIV_DIRS.join(" or ")} (Debian: ` +
        `apt-get install util-linux), or --allow-read does not cover it.`,
    };
  }
  if (Deno.permissions.querySync({ name: "run", command: found }).state !== "granted") {
    return {
      prefix: [],
      guard: "exit-hook",
      why: (binary) =>
        `Deno may not run ${found}: add it, e.g. ` +
        `--allow-run=${binary.slice(binary.lastIndexOf("/") + 1)},setpriv (or plain --allow-run).`,
    };
  }
  return { prefix: [found, "--pdeathsig", "SIGKILL", "--"], guard: "pdeathsig" };
}

/**
 * Wraps `binary args...` so that the kernel kills it when this process dies,
 * when possible (Linux, `setpriv` present and allowed). When it is not
 * possible on Linux, prints one warning per `subject` and process (naming the
 * missing permission or package) on stderr. `subject` names what outlives its
 * owner in that warning (default: QEMU started by `launch()`).
 */
export function guardCommand(
  binary: string,
  args: string[],
  subject = "QEMU started by launch()",
): GuardedCommand {
  wrapper ??= detect();
  if (wrapper.why && !warned.has(subject)) {
    warned.add(subject);
    console.warn(
      `qmpkit: warning: ${subject} will outlive this process if it is killed ` +
        `(SIGKILL, SIGTERM, SIGINT): only a normal exit stops it. ${wrapper.why(binary)}`,
    );
  }
  return wrapper.prefix.length
    ? {
      command: wrapper.prefix[0],
      args: [...wrapper.prefix.slice(1), binary, ...args],
      guard: wrapper.guard,
    }
    : { command: binary, args, guard: wrapper.guard };
}

/**
 * SIGKILLs what is left of the process group `pgid` (a detached child's pid):
 * helpers QEMU spawned, or a child a fake binary left holding its pipes.
 * Best effort: needs `--allow-run` without a list (else nothing happens).
 */
export function killProcessGroup(pgid: number): void {
  if (Deno.build.os === "windows" || pgid <= 1) return;
  try {
    Deno.kill(-pgid, "SIGKILL");
  } catch { /* empty group, or not allowed */ }
}
