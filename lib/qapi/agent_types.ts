// Placeholder: replaced by `deno task gen-qapi --agent` output.
/** Agent commands: args and return. */
export interface AgentCommands {
  /** guest-sync-delimited */
  "guest-sync-delimited": { args: { id: number }; return: number };
  /** guest-ping */
  "guest-ping": { args: Record<string, never>; return: Record<string, never> };
  /** guest-info */
  "guest-info": { args: Record<string, never>; return: GuestAgentInfo };
  /** guest-get-osinfo */
  "guest-get-osinfo": { args: Record<string, never>; return: GuestOSInfo };
  /** guest-network-get-interfaces */
  "guest-network-get-interfaces": {
    args: Record<string, never>;
    return: GuestNetworkInterface[];
  };
  /** guest-exec */
  "guest-exec": {
    args: {
      path: string;
      arg?: string[];
      env?: string[];
      "input-data"?: string;
      "capture-output"?: boolean;
    };
    return: { pid: number };
  };
  /** guest-exec-status */
  "guest-exec-status": { args: { pid: number }; return: GuestExecStatus };
  /** guest-file-open */
  "guest-file-open": { args: { path: string; mode?: string }; return: number };
  /** guest-file-close */
  "guest-file-close": { args: { handle: number }; return: Record<string, never> };
  /** guest-file-read */
  "guest-file-read": { args: { handle: number; count?: number }; return: GuestFileRead };
  /** guest-file-write */
  "guest-file-write": {
    args: { handle: number; "buf-b64": string; count?: number };
    return: GuestFileWrite;
  };
  /** guest-fsfreeze-freeze */
  "guest-fsfreeze-freeze": { args: Record<string, never>; return: number };
  /** guest-fsfreeze-freeze-list */
  "guest-fsfreeze-freeze-list": { args: { mountpoints?: string[] }; return: number };
  /** guest-fsfreeze-thaw */
  "guest-fsfreeze-thaw": { args: Record<string, never>; return: number };
  /** guest-shutdown */
  "guest-shutdown": { args: { mode?: string }; return: Record<string, never> };
}
/** Agent command names. */
export type AgentCommandName = keyof AgentCommands;
/** Arguments of an agent command. */
export type AgentCommandArgs<K extends AgentCommandName> = AgentCommands[K]["args"];
/** Return value of an agent command. */
export type AgentCommandReturn<K extends AgentCommandName> = AgentCommands[K]["return"];
/** guest-info */
export interface GuestAgentInfo {
  /** version */
  version: string;
  /** commands */
  supported_commands: { name: string; enabled: boolean; "success-response": boolean }[];
}
/** os info */
export interface GuestOSInfo {
  /** id */
  id?: string;
  /** name */
  name?: string;
  /** kernel */
  "kernel-release"?: string;
}
/** nic */
export interface GuestNetworkInterface {
  /** name */
  name: string;
}
/** exec status */
export interface GuestExecStatus {
  /** exited */
  exited: boolean;
  /** exit code */
  exitcode?: number;
  /** signal */
  signal?: number;
  /** out */
  "out-data"?: string;
  /** err */
  "err-data"?: string;
  /** out truncated */
  "out-truncated"?: boolean;
  /** err truncated */
  "err-truncated"?: boolean;
}
/** read */
export interface GuestFileRead {
  /** count */
  count: number;
  /** buf */
  "buf-b64": string;
  /** eof */
  eof: boolean;
}
/** write */
export interface GuestFileWrite {
  /** count */
  count: number;
  /** eof */
  eof: boolean;
}
/** shutdown mode */
export type GuestShutdownMode = "powerdown" | "halt" | "reboot";
