/**
 * Reconnection: after the peer drops an open connection, dial again with
 * exponential back-off (`initialDelay` doubling up to `maxDelay`, `maxTries`
 * attempts), re-run the handshake on each fresh transport (a server that
 * accepts but never greets fails that attempt only), and give up by shutting
 * the session down with the original error. Closing the client stops it.
 *
 * @module
 */
import type { ConnectionClosedError } from "./errors.ts";
import { type Duration, parseDuration } from "./duration.ts";
import type { Greeting } from "./protocol.ts";
import type { Transport } from "./transport.ts";
import type { ReconnectPolicy } from "./client_options.ts";

/** What the reconnect loop needs from its session. */
export interface ReconnectHost {
  /** True once the session was closed (by the client): stop at once. */
  isClosed(): boolean;
  /** Opens a fresh transport. */
  dial(signal: AbortSignal): Promise<Transport>;
  /** Makes `transport` the session's, resets per-connection state and starts reading it. */
  attach(transport: Transport): void;
  /** Greeting and negotiation on the attached transport; `giveUp` runs on timeout. */
  handshake(
    options: { timeout: Duration; signal: AbortSignal },
    giveUp: () => void,
  ): Promise<Greeting>;
  /** The session is open again. */
  reopened(): void;
  /** Every attempt failed: shut down with this cause. */
  giveUp(cause: unknown): void;
}

/**
 * Runs the reconnect attempts. `stop` receives a function that ends the
 * loop (the current back-off or dial is aborted).
 */
export async function reconnectLoop(
  policy: ReconnectPolicy,
  error: ConnectionClosedError,
  host: ReconnectHost,
  stop: (fn: () => void) => void,
): Promise<void> {
  const maxTries = policy.maxTries ?? 10;
  const maxDelay = parseDuration(policy.maxDelay ?? "5s");
  let delay = parseDuration(policy.initialDelay ?? "100ms");
  const abort = new AbortController();
  stop(() => abort.abort());
  for (let attempt = 1; attempt <= maxTries; attempt++) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, delay);
      function done() {
        clearTimeout(timer);
        abort.signal.removeEventListener("abort", done);
        resolve();
      }
      abort.signal.addEventListener("abort", done);
    });
    delay = Math.min(delay * 2, maxDelay);
    if (host.isClosed()) return;
    let transport: Transport;
    try {
      transport = await host.dial(abort.signal);
    } catch {
      continue;
    }
    if (host.isClosed()) {
      transport.close();
      return;
    }
    host.attach(transport);
    try {
      // A server that accepts but never greets fails this attempt only.
      const greeting = await host.handshake({
        timeout: policy.handshakeTimeout ?? "10s",
        signal: abort.signal,
      }, () => {
        try {
          transport.close();
        } catch { /* closed */ }
      });
      if (host.isClosed()) return;
      host.reopened();
      policy.onReconnect?.({ attempt, greeting });
      return;
    } catch {
      if (host.isClosed()) return;
      try {
        transport.close();
      } catch { /* closed */ }
    }
  }
  host.giveUp(error.cause ?? error);
}
