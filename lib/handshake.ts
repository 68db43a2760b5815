/**
 * One QMP handshake in progress: the greeting wait (its timeout and abort),
 * then `qmp_capabilities` with what is left of the timeout. One object per
 * handshake that is its own greeting waiter, timeout target and abort target,
 * reporting to a {@link HandshakeOutcome}: no promise per step (a connect runs
 * this once per connection; see bench/README.md, memory per connection).
 * {@link QmpClient} drives it through {@link HandshakeHost}.
 *
 * @module
 */
import {
  AbortError,
  NegotiationError,
  QmpCommandError,
  type QmpError,
  TimeoutError,
} from "./errors.ts";
import type { Greeting } from "./protocol.ts";
import { type LaneTimeout, scheduleTimeout, type TimeoutTarget } from "./timer_lanes.ts";
import { type AbortTarget, unwatchAbort, watchAbort } from "./abort_fanout.ts";

/** What waits for the greeting. */
export interface GreetingWaiter {
  resolve(greeting: Greeting): void;
  reject(error: unknown): void;
}

/** Where a handshake reports (one object, so that a connect needs no closures for it). */
export interface HandshakeOutcome {
  /** The greeting did not come (timeout, abort): runs before {@link failed}. */
  gaveUp(): void;
  /** The handshake succeeded. */
  done(greeting: Greeting): void;
  /** The handshake failed (once; after {@link gaveUp} when the greeting did not come). */
  failed(error: unknown): void;
}

/** What a handshake needs from its session. */
export interface HandshakeHost {
  /** The address, for messages. */
  readonly address: string;
  /** The greeting, once it came. */
  greeting(): Greeting | undefined;
  /** The error to fail with when the session closed before the greeting. */
  closedBeforeGreeting(): QmpError | undefined;
  /** Calls `waiter` when the greeting comes or the session closes first. */
  waitGreeting(waiter: GreetingWaiter): void;
  /** False with `negotiate: false`. */
  negotiates(): boolean;
  /** True with `oob: true`. */
  wantsOob(): boolean;
  /** Why `qmp_capabilities` cannot be sent (already negotiated, oob not offered). */
  negotiationProblem(greeting: Greeting, oob: boolean): QmpError | undefined;
  /** Sends `qmp_capabilities`; its reply (or failure) goes to `resolve` / `reject`. */
  sendCapabilities(
    oob: boolean,
    timeout: number,
    signal: AbortSignal | undefined,
    resolve: (value: unknown) => void,
    reject: (error: unknown) => void,
  ): void;
  /** Negotiation succeeded. */
  negotiated(oob: boolean): void;
}

/**
 * One handshake: the greeting wait (its timeout and abort; `outcome.gaveUp()` when
 * the greeting does not come), then `qmp_capabilities` with what is left of the
 * timeout. Its own greeting waiter, timeout target and abort target.
 */
export class HandshakeRun implements TimeoutTarget, AbortTarget {
  readonly #c: HandshakeHost;
  readonly #ms: number;
  readonly #deadline: number;
  readonly #signal: AbortSignal | undefined;
  readonly #outcome: HandshakeOutcome;
  #timer: LaneTimeout | undefined;
  #waiting = false;
  #settled = false;

  /** Reports to `outcome` once. */
  constructor(
    client: HandshakeHost,
    ms: number,
    signal: AbortSignal | undefined,
    outcome: HandshakeOutcome,
  ) {
    this.#c = client;
    this.#ms = ms;
    this.#deadline = Date.now() + ms;
    this.#signal = signal;
    this.#outcome = outcome;
  }

  /** Starts it: negotiates at once if the greeting came already. */
  start(): void {
    const c = this.#c;
    const greeting = c.greeting();
    if (greeting !== undefined) return this.#negotiate(greeting);
    if (this.#signal?.aborted) return this.#gaveUp(this.#abortError());
    const closed = c.closedBeforeGreeting();
    if (closed !== undefined) return this.reject(closed);
    this.#waiting = true;
    this.#timer = scheduleTimeout(this.#ms, this);
    if (this.#signal) watchAbort(this.#signal, this);
    c.waitGreeting(this);
  }

  /** The greeting came (as the client's greeting waiter). */
  resolve(greeting: Greeting): void {
    if (this.#stopWaiting()) this.#negotiate(greeting);
  }

  /** The connection ended before the greeting (as the client's greeting waiter). */
  reject(error: unknown): void {
    if (this.#stopWaiting()) {
      this.#settled = true;
      this.#outcome.failed(error);
    }
  }

  /** Its timeout expired (see `timer_lanes.ts`). */
  timedOut(): void {
    this.#timer = undefined;
    if (!this.#stopWaiting()) return;
    this.#gaveUp(
      new TimeoutError(this.#what(), this.#ms, { hint: greetingHint() }),
    );
  }

  /** Its signal aborted (see `abort_fanout.ts`). */
  aborted(): void {
    if (this.#stopWaiting()) this.#gaveUp(this.#abortError());
  }

  #what(): string {
    return `Waiting for the QMP greeting from ${this.#c.address}`;
  }

  #abortError(): AbortError {
    return new AbortError(this.#what(), { cause: this.#signal!.reason });
  }

  /** Ends the greeting wait; false when the handshake was already settled. */
  #stopWaiting(): boolean {
    if (this.#settled) return false;
    if (this.#waiting) {
      this.#waiting = false;
      this.#timer?.cancel();
      this.#timer = undefined;
      if (this.#signal) unwatchAbort(this.#signal, this);
    }
    return true;
  }

  #gaveUp(error: Error): void {
    this.#settled = true;
    this.#outcome.gaveUp();
    this.#outcome.failed(error);
  }

  #negotiate(greeting: Greeting): void {
    const c = this.#c;
    if (!c.negotiates()) {
      this.#settled = true;
      this.#outcome.done(greeting);
      return;
    }
    const oob = c.wantsOob();
    const problem = c.negotiationProblem(greeting, oob);
    if (problem !== undefined) {
      this.#settled = true;
      this.#outcome.failed(problem);
      return;
    }
    const timeout = Math.max(1, this.#deadline - Date.now());
    c.sendCapabilities(
      oob,
      timeout,
      this.#signal,
      () => {
        this.#settled = true;
        c.negotiated(oob);
        this.#outcome.done(greeting);
      },
      (err) => {
        this.#settled = true;
        this.#outcome.failed(negotiationError(err));
      },
    );
  }
}

/** The hint of a greeting timeout. */
function greetingHint(): string {
  return "QEMU sends it at once unless the monitor is busy: another client is connected " +
    "(QMP serves one client at a time). Or this is not a QMP socket";
}

/** A refused `qmp_capabilities` is a {@link NegotiationError}; other errors are as they are. */
export function negotiationError(err: unknown): unknown {
  if (err instanceof QmpCommandError) {
    return new NegotiationError(`Capability negotiation failed: ${err.desc}`, { cause: err });
  }
  return err;
}

/** {@link negotiationError}, thrown (for a promise's rejection handler). */
export function negotiationFailed(err: unknown): never {
  throw negotiationError(err);
}
