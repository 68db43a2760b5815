/**
 * The `--launch` target of the `qmp` subcommands: a throwaway VM, shut down
 * when the command ends or on a stop signal. `openTarget` (`common.ts`)
 * imports this module only for `--launch`: a command given an ADDRESS does not
 * load the launcher, the signal handling or the shell-line splitter.
 *
 * @module
 */
import { launch, type Machine } from "../../lib/machine.ts";
import type { ClientOptions } from "../../lib/client.ts";
import { shellSplit } from "./args.ts";
import { UsageError } from "./parse_args.ts";
import { onStopSignals, SIGNAL_EXIT_CODE, type StopSignal } from "./signals.ts";
import type { CommonValues, Target, TargetOptions } from "./common.ts";

/** Launches the VM the options describe (`--launch`, `--launch-args`, `--guest`) as a target. */
export async function launchTarget(
  values: CommonValues,
  options: ClientOptions,
  targetOptions: TargetOptions,
): Promise<Target> {
  const verbose = Boolean(values.verbose);
  if (values.guest !== undefined && values.guest !== "tiny") {
    throw new UsageError(`--guest must be "tiny", got ${JSON.stringify(values.guest)}`);
  }
  const args = shellSplit(values["launch-args"] ?? "");
  // Listening from before the launch: a signal while QEMU starts aborts the launch,
  // which then removes its temp dir; later ones shut the VM down. Either way, then exit.
  // Further signals (one Ctrl-C under `deno task` is two) are ignored: the stop is bounded.
  const stopLaunch = new AbortController();
  let machine: Machine | undefined;
  let stoppedBy: StopSignal | undefined;
  let closing: Promise<void> | undefined;
  const close = () =>
    closing ??= machine
      ? machine.shutdown({ powerdown: false }).then(() => {}, async () => {
        await machine!.kill().catch(() => {});
      })
      : Promise.resolve();
  const handlers = {
    stop(signal: StopSignal) {
      if (stoppedBy) return;
      stoppedBy = signal;
      stopLaunch.abort();
      if (machine) close().finally(() => Deno.exit(SIGNAL_EXIT_CODE[signal]));
    },
  };
  // Every stop signal during the launch (the command's own handling starts after it).
  let signals = onStopSignals(handlers);
  try {
    machine = await launch({
      args,
      guest: values.guest === "tiny" ? "tiny" : undefined,
      memory: values.memory,
      qmp: options,
      log: verbose ? (m) => console.error(`qmp: ${m}`) : undefined,
      signal: stopLaunch.signal,
    });
  } catch (e) {
    signals.dispose();
    if (stoppedBy) Deno.exit(SIGNAL_EXIT_CODE[stoppedBy]);
    throw e;
  }
  if (stoppedBy) {
    await close();
    Deno.exit(SIGNAL_EXIT_CODE[stoppedBy]);
  }
  if (targetOptions.stopSignals) {
    signals.dispose();
    signals = onStopSignals(handlers, { signals: targetOptions.stopSignals });
  }
  return {
    client: machine.qmp,
    // QEMU dialed the launcher's own socket (gone now); this one is free for a second client.
    address: `unix:${machine.socketPath}`,
    machine,
    close: () => {
      signals.dispose();
      return close();
    },
  };
}
