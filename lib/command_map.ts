/**
 * Typing a client by its server's command map: `QmpClient<C>` takes a map of
 * command names to `{ args; return }` (`QmpCommands` for QEMU's system
 * emulator, the default; `StorageDaemonCommands` for `qemu-storage-daemon`),
 * and these helpers read a command's argument and return types out of it.
 *
 * @module
 */
import type { ExecuteOptions } from "./client.ts";

/** Arguments of command `K` in command map `C`. */
export type ArgsIn<C, K extends keyof C> = C[K] extends { args: infer A } ? A : never;

/** Return value of command `K` in command map `C`. */
export type ReturnIn<C, K extends keyof C> = C[K] extends { return: infer R } ? R : never;

/**
 * The rest parameters of `execute` for command `K` of map `C`: arguments are
 * optional when the command has no required member, then per-call options.
 */
export type ExecuteRestIn<C, K extends keyof C> = Record<never, never> extends ArgsIn<C, K>
  ? [args?: ArgsIn<C, K>, options?: ExecuteOptions]
  : [args: ArgsIn<C, K>, options?: ExecuteOptions];
