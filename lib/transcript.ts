/**
 * Transcript recording: hands each message sent or received to the
 * `transcript` hook, redacted (secrets in commands, and in replies given
 * their request) unless `redact: false`. A message that cannot be redacted is
 * withheld, and a hook that throws is reported: neither ends the connection.
 *
 * @module
 */
import { QmpError } from "./errors.ts";
import { REDACTED, redactMessage, redactReply } from "./redact.ts";
import type { TranscriptEntry } from "./client_options.ts";

/** Records one message; `request` (command and arguments) gives a reply its context. */
export function recordTranscript(
  hook: (entry: TranscriptEntry) => void,
  redact: boolean,
  warn: (err: QmpError) => void,
  direction: "send" | "recv",
  message: Record<string, unknown>,
  request?: { command: string; args: unknown },
): void {
  let redacted: Record<string, unknown>;
  try {
    redacted = !redact
      ? message
      : request
      ? redactReply(message, request.command, request.args)
      : redactMessage(message);
  } catch (cause) {
    // Never let a message that cannot be redacted end the connection, nor reach the hook.
    warn(new QmpError("A message could not be redacted; transcript entry withheld", { cause }));
    redacted = { [REDACTED]: "message withheld: it could not be redacted" };
  }
  try {
    hook({ time: new Date(), direction, message: redacted });
  } catch (cause) {
    // A faulty hook must not corrupt routing state; report it and go on.
    warn(new QmpError("The transcript hook threw an error; entry skipped", { cause }));
  }
}
