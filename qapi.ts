/**
 * The generated QAPI types of QEMU 7.2 (`@qmpkit/qmpkit/qapi`): every
 * command's arguments and return type, every event's data, and the 690 named
 * types they use, with QEMU's own names (`StatusInfo`, `BlockdevOptions`,
 * `DeviceDeletedData`, ...). Generated from QEMU's schema by
 * `deno task gen-qapi`; see `lib/qapi/types.ts`.
 *
 * The guest agent's generated types (`AgentCommands`, `GuestExecStatus`,
 * `GuestOSInfo`, ...: every QGA command's arguments and return, from QGA's
 * own schema by `deno task gen-qapi --agent`; see `lib/qapi/agent_types.ts`)
 * are here too, with the lists `AGENT_COMMAND_ARGUMENTS` and
 * `AGENT_NO_REPLY_COMMANDS`.
 *
 * So are the storage daemon's (`StorageDaemonCommands`, ...: `deno task
 * gen-qapi --storage-daemon`; see `lib/qapi/storage_daemon_types.ts`).
 *
 * The main entry (`mod.ts`) exports only the few of them its API is written
 * in (`CommandName`, `CommandArgs`, `CommandReturn`, `EventName`,
 * `AgentCommandName`, ...); import the rest from here.
 *
 * @example
 * ```ts ignore
 * import { connect } from "@qmpkit/qmpkit";
 * import type { StatusInfo } from "@qmpkit/qmpkit/qapi";
 *
 * await using qmp = await connect("unix:/run/vm1/qmp.sock");
 * const status: StatusInfo = await qmp.execute("query-status");
 * ```
 *
 * @module
 */
export type * from "./lib/qapi/types.ts";
export * from "./lib/qapi/agent_types.ts";
export type * from "./lib/qapi/storage_daemon_types.ts";
