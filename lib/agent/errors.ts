/**
 * Typed errors of the guest agent (QGA) client. All extend {@link QmpError}.
 *
 * @module
 */
import { QmpCommandError, QmpError, type QmpErrorOptions, TimeoutError } from "../errors.ts";

/**
 * The hint attached to agent timeouts. When `qemu-ga` is not running (not started yet, crashed,
 * OOM-killed) the host side of its virtio-serial socket stays open and simply goes quiet, so
 * silence is the only symptom the client can see.
 */
export const AGENT_SILENT_HINT: string =
  "no answer from the guest agent: is qemu-ga started in the guest? " +
  "(when qemu-ga is not running or has died, its host-side socket stays open and goes quiet; " +
  "wait with agent.waitReady() after boot)";

/** A guest agent failure that is not a command error, a timeout or a connection error. */
export class AgentError extends QmpError {
  /** Creates an agent error. */
  constructor(message: string, options?: QmpErrorOptions) {
    super(message, options);
    this.name = "AgentError";
  }
}

/**
 * The guest agent answered `{"error": {"class", "desc"}}`, e.g. `GenericError` for a file that
 * does not exist or `CommandNotFound` for a command the agent lacks or blocks. It is a
 * {@link QmpCommandError}, so `e.class` and `e.desc` work as for QMP.
 */
export class AgentCommandError extends QmpCommandError {
  /** Creates an error from an agent error reply. */
  constructor(
    command: string,
    args: unknown,
    errorClass: string,
    desc: string,
    options?: QmpErrorOptions,
  ) {
    super(command, args, errorClass, desc, options);
    this.message = `guest agent: ${command} failed: ${desc} (${errorClass})`;
    this.name = "AgentCommandError";
  }
}

/**
 * A process started with `exec()` did not exit in time. The agent cannot kill it: it is left
 * running in the guest as `pid`.
 */
export class AgentExecTimeoutError extends TimeoutError {
  /** The guest process id, still running. */
  readonly pid: number;
  /** The program that was run. */
  readonly path: string;
  /** Creates the error. */
  constructor(path: string, pid: number, timeoutMs: number, options?: QmpErrorOptions) {
    super(`guest process ${path} (pid ${pid})`, timeoutMs, {
      ...options,
      hint: `warning: it is left running in the guest (the agent cannot kill it); ` +
        `stop it with exec("/bin/kill", ["${pid}"]) or raise the timeout`,
    });
    this.name = "AgentExecTimeoutError";
    this.pid = pid;
    this.path = path;
  }
}

/**
 * qemu-ga closed its port in the guest (it died, was OOM-killed or stopped; QEMU reported
 * `VSERPORT_CHANGE` with `open: false`): the call cannot be answered. Wait for the agent to come
 * back with `agent.waitReady()`; the stream is resynchronised before the next command.
 */
export class AgentPortClosedError extends AgentError {
  /** Why the port is known to be closed. */
  readonly reason: string;
  /** Creates the error; `what` names the call that failed. */
  constructor(what: string, reason: string, options?: QmpErrorOptions) {
    super(
      `${what} failed: ${reason}. Wait for the agent with agent.waitReady() before the next call`,
      options,
    );
    this.name = "AgentPortClosedError";
    this.reason = reason;
  }
}
