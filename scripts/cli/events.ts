/**
 * `qmp events ADDRESS`: streams QMP events as JSON lines.
 *
 * @module
 */
import { AbortError, type QmpEvent } from "../../mod.ts";
import {
  COMMON_HELP,
  durationOption,
  EXIT_FAILURE,
  EXIT_OK,
  formatError,
  parseCommandLine,
  takeAddress,
  toJson,
  UsageError,
  withTarget,
  writeErr,
  writeOut,
} from "./common.ts";

/** `qmp events --help`. */
export const EVENTS_HELP =
  `Usage: qmp events ADDRESS [--name EVENT ...] [--count N] [--timeout D] [options]

Prints QMP events as they arrive, one JSON object per line (for jq):
  {"event":"STOP","timestamp":{"seconds":1700000000,"microseconds":123456}}
  {"event":"RESET","data":{"guest":false,"reason":"host-qmp-system-reset"},"timestamp":{...}}
"data" is left out for events without a payload. Only events that arrive after
the connection is negotiated are seen (QEMU does not queue earlier ones), and
a QMP monitor serves one client at a time: use a second -qmp monitor to run
commands meanwhile.

Options:
  -n, --name EVENT          only these events (repeatable; checked against the live schema)
  -c, --count N             stop after N events
  -t, --timeout D           stop after D (e.g. 30s, 2m)
  --pretty                  indent each event (not one line per event)

${COMMON_HELP}

Exit status:
  0  --count reached; Ctrl-C; --timeout expired when no --count was given
  1  --timeout expired before --count events arrived; QEMU closed the
     connection (exited, or quit) before --count was reached; connection failed
  2  usage error (bad option, bad address, unknown --name)

Examples:
  qmp events /tmp/vm.sock --name SHUTDOWN --count 1 --timeout 60s
  qmp events /tmp/vm.sock | jq -c 'select(.event == "DEVICE_DELETED") | .data'`;

/** Runs `qmp events` with `argv` (after the subcommand name); returns the exit code. */
export async function eventsCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandLine(argv, {
    name: { type: "string", short: "n", multiple: true },
    count: { type: "string", short: "c" },
    timeout: { type: "string", short: "t" },
    pretty: { type: "boolean" },
  });
  if (values.help) {
    writeOut(EVENTS_HELP + "\n");
    return EXIT_OK;
  }
  const address = takeAddress(values, positionals);
  if (positionals.length > 0) throw new UsageError(`Unexpected argument "${positionals[0]}"`);
  const names = (values.name as string[] | undefined) ?? [];
  let count: number | undefined;
  if (values.count !== undefined) {
    count = Number(values.count);
    if (!Number.isInteger(count) || count < 1) {
      throw new UsageError(`--count must be a positive integer, got "${values.count}"`);
    }
  }
  const timeoutMs = values.timeout === undefined
    ? undefined
    : durationOption("timeout", values.timeout as string);
  const pretty = Boolean(values.pretty);
  const verbose = Boolean(values.verbose);

  // Ctrl-C is this command's normal end (handled below); SIGTERM still stops a --launch VM.
  return await withTarget(address, values, {}, async ({ client, address }) => {
    const stop = new AbortController();
    const listener = client.events({ names, signal: stop.signal, bufferSize: 100_000 });
    // Set from callbacks too, so kept in an object (no narrowing surprises).
    const end = { why: "closed" as "count" | "interrupt" | "timeout" | "closed" };
    const onInterrupt = () => {
      end.why = "interrupt";
      stop.abort();
    };
    Deno.addSignalListener("SIGINT", onInterrupt);
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => {
      end.why = "timeout";
      stop.abort();
    }, timeoutMs);
    let seen = 0;
    try {
      await checkNames(client, names);
      if (verbose) {
        writeErr(
          `qmp events: listening on ${address}` +
            (names.length ? ` for ${names.join(", ")}` : "") + " (Ctrl-C to stop)\n",
        );
      }
      for await (const ev of listener) {
        if (!writeEvent(ev, pretty)) {
          end.why = "interrupt"; // the reader went away (e.g. | head): a normal end
          break;
        }
        seen++;
        if (count !== undefined && seen >= count) {
          end.why = "count";
          break;
        }
      }
    } catch (err) {
      if (err instanceof UsageError) throw err;
      if (!(err instanceof AbortError)) {
        writeErr(formatError("qmp events", err, verbose) + "\n");
        return EXIT_FAILURE;
      }
    } finally {
      clearTimeout(timer);
      Deno.removeSignalListener("SIGINT", onInterrupt);
      listener.close();
    }
    switch (end.why) {
      case "count":
      case "interrupt":
        return EXIT_OK;
      case "timeout":
        if (count === undefined) return EXIT_OK;
        writeErr(`qmp events: error: timed out after ${seen} of ${count} events\n`);
        return EXIT_FAILURE;
      case "closed": {
        const reason = client.closeError?.message ?? "the connection closed";
        writeErr(
          `qmp events: error: ${reason}` +
            (count !== undefined ? ` (after ${seen} of ${count} events)` : "") + "\n",
        );
        return EXIT_FAILURE;
      }
    }
  }, { stopSignals: ["SIGTERM"] });
}

/** The event as QEMU sent it: `{event, data?, timestamp}`. */
export function eventToJson(ev: QmpEvent): Record<string, unknown> {
  return ev.data === undefined
    ? { event: ev.event, timestamp: ev.timestamp }
    : { event: ev.event, data: ev.data, timestamp: ev.timestamp };
}

function writeEvent(ev: QmpEvent, pretty: boolean): boolean {
  try {
    writeOut(toJson(eventToJson(ev), pretty) + "\n");
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.BrokenPipe) return false;
    throw e;
  }
}

/** Rejects --name values the live schema does not know (when the schema can be read). */
async function checkNames(
  client: { executeRaw(c: string): Promise<unknown> },
  names: string[],
): Promise<void> {
  if (names.length === 0) return;
  let schema: unknown;
  try {
    schema = await client.executeRaw("query-qmp-schema");
  } catch {
    return; // no introspection: accept any name
  }
  if (!Array.isArray(schema)) return;
  const known = new Set(
    schema.filter((e) => e?.["meta-type"] === "event").map((e) => String(e.name)),
  );
  const unknown = names.filter((n) => !known.has(n));
  if (unknown.length > 0) {
    const near = [...known].filter((k) =>
      unknown.some((u) => k.includes(u.toUpperCase()) || u.toUpperCase().includes(k))
    );
    throw new UsageError(
      `Unknown event ${unknown.map((u) => JSON.stringify(u)).join(", ")}` +
        (near.length ? ` (did you mean ${near.slice(0, 5).join(", ")}?)` : "") +
        `; this QEMU has ${known.size} events ("help events" in qmp shell lists them)`,
    );
  }
}
