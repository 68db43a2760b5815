/**
 * qmpkit: automate QEMU virtual machines over the QEMU Monitor Protocol (QMP).
 *
 * Zero dependencies: import it from a URL in an ad-hoc script, no config needed.
 * The generated QAPI types of every command, event and argument (`StatusInfo`,
 * `BlockdevOptions`, ...) have their own entry: `./qapi.ts`
 * (`@qmpkit/qmpkit/qapi`).
 *
 * @example Connect, run commands, wait for events
 * ```ts ignore
 * import { connect } from "./mod.ts";
 *
 * await using qmp = await connect("unix:/run/vm1/qmp.sock"); // or "tcp:127.0.0.1:4444", "tls://..."
 * console.log(qmp.greeting.version.qemu);
 * const { status } = await qmp.execute("query-status");
 * const stopped = qmp.waitEvent("STOP", { timeout: "5s" }); // arm before acting
 * await qmp.execute("stop");
 * await stopped;
 * for await (const ev of qmp.events({ names: ["RESET", "SHUTDOWN"] })) {
 *   console.log(ev.event, ev.data.reason);
 * }
 * ```
 *
 * Integers beyond ±(2^53-1) (QEMU's uint64/int64 sizes, offsets, counters)
 * arrive as exact `bigint`s, everything else as `number`; arguments accept
 * both. {@link stringifyJson} prints such values exactly.
 *
 * @example Reach inside the guest through its agent (qemu-ga)
 * ```ts ignore
 * import { connectAgent } from "./mod.ts";
 *
 * await using agent = await connectAgent("unix:/run/vm1/qga.sock");
 * const { exitCode, stdout } = await agent.exec("/bin/uname", ["-r"]);
 * await agent.writeFile("/tmp/hello", "hi\n");
 * ```
 *
 * @example Launch a VM of your own
 * ```ts ignore
 * import { launch } from "./mod.ts";
 *
 * await using vm = await launch({ guest: "tiny", memory: 256 });
 * await vm.console.waitFor("QMPKIT-GUEST-READY", { timeout: "60s" });
 * await vm.shutdown(); // system_powerdown, then quit, SIGTERM, SIGKILL as needed
 * ```
 *
 * @module
 */
export {
  type ClientOptions,
  type ClientState,
  connect,
  type ConnectOptions,
  type ExecuteOptions,
  type ExecuteRest,
  MAX_INBAND_IN_FLIGHT,
  QmpClient,
  type ReconnectPolicy,
  type TranscriptEntry,
  type TypedEvent,
  type WaitEventOptions,
} from "./lib/client.ts";
export {
  AbortError,
  AddressError,
  ConnectionClosedError,
  ConnectionError,
  EventOverflowError,
  FdPassingError,
  LaunchError,
  MonitorBusyError,
  NegotiationError,
  ProtocolError,
  QmpCommandError,
  QmpError,
  type QmpErrorOptions,
  ServerParseError,
  SshError,
  type SshFailure,
  TimeoutError,
  TlsError,
  type TlsFailure,
} from "./lib/errors.ts";
export {
  type DataPattern,
  EventListener,
  type EventWhere,
  type ListenOptions,
  matchesPattern,
  type NextEventOptions,
  type OverflowPolicy,
} from "./lib/events.ts";
export {
  type Address,
  formatAddress,
  type LibvirtAddress,
  parseAddress,
  type SshAddress,
  type TcpAddress,
  type TlsAddress,
  type UnixAddress,
} from "./lib/address.ts";
export { type AcceptOptions, listen, QmpServer, type ServerOptions } from "./lib/server.ts";
export {
  type FdSource,
  FileDescriptor,
  MAX_FDS_PER_COMMAND,
  openFd,
  type OpenFdOptions,
} from "./lib/fd_passing.ts";
export { LibvirtError } from "./lib/libvirt_ffi.ts";
export {
  LibvirtDomain,
  type LibvirtVmOptions,
  startLibvirtDomain,
  type StartLibvirtDomainOptions,
} from "./lib/libvirt_domain.ts";
export { type Duration, formatDuration, parseDuration } from "./lib/duration.ts";
export { DEFAULT_MAX_MESSAGE_SIZE, type FramerOptions, JsonObjectFramer } from "./lib/framing.ts";
export { parseJson, stringifyJson } from "./lib/json.ts";
export type { Greeting, QemuVersionTriple, QmpEvent, QmpTimestamp } from "./lib/protocol.ts";
export type { Transport } from "./lib/transport.ts";
export type { TlsOptions } from "./lib/tls_transport.ts";
export type { SshOptions } from "./lib/ssh_transport.ts";
export {
  forgetSecrets,
  redactCommandLine,
  redactDeep,
  REDACTED,
  redactMessage,
  redactReply,
  redactText,
} from "./lib/redact.ts";
export { QmpSchema, QmpValidationError, type SchemaEntry } from "./lib/qapi/schema.ts";
export {
  launch,
  type LaunchOptions,
  type LaunchTlsOptions,
  Machine,
  type ShutdownOptions,
  type ShutdownStep,
} from "./lib/machine.ts";
export {
  type Accel,
  type AccelChoice,
  PROBE_LOOP_MS,
  PROBE_START_MS,
  resolveAccel,
  type ResolveAccelOptions,
} from "./lib/accel.ts";
export type { OrphanGuard } from "./lib/orphan_guard.ts";
export { type ArgsIn, type ExecuteRestIn, type ReturnIn } from "./lib/command_map.ts";
export {
  launchStorageDaemon,
  StorageDaemon,
  type StorageDaemonOptions,
  type StorageDaemonShutdownOptions,
} from "./lib/storage_daemon.ts";
export type {
  StorageDaemonCommandName,
  StorageDaemonCommands,
  StorageDaemonEventName,
  StorageDaemonEvents,
} from "./lib/qapi/storage_daemon_types.ts";
export {
  QOM_TREE_CONCURRENCY,
  type QomClient,
  qomGet,
  qomList,
  type QomNode,
  type QomProperty,
  type QomPropertyValue,
  qomSet,
  qomTree,
  type QomTreeOptions,
} from "./lib/qom.ts";
export {
  CONSOLE_BUFFER_LIMIT,
  type ConsoleMatch,
  type ConsoleWaitOptions,
  SerialConsole,
} from "./lib/console.ts";
export { findTinyGuest, guestCacheDir, GuestNotBuiltError, type TinyGuest } from "./lib/guest.ts";
export {
  AGENT_FILE_CHUNK,
  type AgentCallOptions,
  AgentClient,
  type AgentConnectOptions,
  type AgentExecOptions,
  type AgentExecResult,
  type AgentExecuteRest,
  type AgentFreeze,
  type AgentFreezeOptions,
  type AgentReadFileOptions,
  type AgentShutdownOptions,
  type AgentWaitReadyOptions,
  type AgentWriteFileOptions,
  connectAgent,
  DEFAULT_AGENT_COMMAND_TIMEOUT,
  DEFAULT_AGENT_MAX_MESSAGE_SIZE,
  DEFAULT_EXEC_MAX_OUTPUT,
  DEFAULT_READ_FILE_MAX_SIZE,
  type ShutdownEventSource,
} from "./lib/agent/client.ts";
export {
  AGENT_SILENT_HINT,
  AgentCommandError,
  AgentError,
  AgentExecTimeoutError,
  AgentPortClosedError,
} from "./lib/agent/errors.ts";
// The generated QAPI types (QmpCommands, QmpEvents, StatusInfo, ... 710 in all) are exported by
// ./qapi.ts (`@qmpkit/qmpkit/qapi`), to keep this entry's documentation to the hand-written API;
// these few are the ones its signatures are written in.
export type {
  CommandArgs,
  CommandName,
  CommandReturn,
  EventData,
  EventName,
} from "./lib/qapi/types.ts";
// The guest agent's generated types are exported by ./qapi.ts too (`@qmpkit/qmpkit/qapi`);
// these are the ones AgentClient's signatures are written in.
export type {
  AgentCommandArgs,
  AgentCommandName,
  AgentCommandReturn,
  GuestAgentInfo,
  GuestNetworkInterface,
  GuestOSInfo,
} from "./lib/qapi/agent_types.ts";
export {
  type EventuallyOptions,
  type ExpectedCommandError,
  type ExpectedErrorType,
  type ExpectEventOptions,
  isPlaybook,
  type Playbook,
  playbook,
  type PlaybookContext,
  type PlaybookFactory,
  type PlaybookFn,
  type PlaybookLaunchOptions,
  type PlaybookLibvirtVm,
  type PlaybookMeta,
  type PlaybookStorageDaemonOptions,
  type PlaybookVmOptions,
  type QmpErrorClass,
  type StepOptions,
  type StorageDaemonPlaybookFn,
  type StorageDaemonPlaybookMeta,
} from "./lib/runner/playbook.ts";
export {
  type Comparable,
  type ContainItem,
  type DeepPartial,
  expect,
  type Expectation,
  type LengthOperand,
  type StringPattern,
} from "./lib/runner/expect.ts";
export {
  ExpectationError,
  InterruptedError,
  PlaybookLoadError,
  PlaybookSkip,
  PlaybookTimeoutError,
  PlaybookUsageError,
  ReportMergeError,
  ReportOutputError,
  StepFailedError,
  StepTimeoutError,
} from "./lib/runner/errors.ts";
export { runPlaybook, type RunPlaybookOptions } from "./lib/runner/engine.ts";
export { parseFilter, type StepFilter } from "./lib/runner/filter.ts";
export {
  runPlaybooks,
  type RunPlaybooksOptions,
  type RunUnit,
  type ScheduleOutcome,
} from "./lib/runner/scheduler.ts";
export { assignShards, parseShard } from "./lib/runner/shard.ts";
export {
  combineReporters,
  createReporter,
  createReporters,
  type Reporter,
  type ReporterName,
  type ReporterOptions,
  type ReporterOutput,
} from "./lib/runner/reporters.ts";
export { HTML_REPORT_FILE, htmlReport, writeHtmlReport } from "./lib/runner/reporter_html.ts";
export { replay } from "./lib/runner/replay.ts";
export { parseTags, type TagFilter } from "./lib/runner/tags.ts";
export {
  countResults,
  type Failure,
  type KeptVm,
  type LogEntry,
  type PlaybookInfo,
  type PlaybookResult,
  type PlaybookStatus,
  type RunCounts,
  type RunObserver,
  type RunSummary,
  type ShardSpec,
  type StepResult,
  type TranscriptRecord,
} from "./lib/runner/results.ts";
export {
  BLOB_FORMAT,
  BLOB_VERSION,
  type BlobFile,
  type BlobReport,
  mergeBlobs,
  readBlobs,
  summaryFromBlob,
  toBlob,
} from "./lib/runner/blob.ts";
export { RUNNER_VERSION } from "./lib/runner/version.ts";
export { type ListedStep, listPlaybook, type PlaybookListing } from "./lib/runner/listing.ts";
