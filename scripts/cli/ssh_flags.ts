/**
 * The CLI's ssh flags (`--ssh-config FILE`, `--ssh-option KEY=VALUE`, repeatable)
 * as the library's `SshOptions`, for `ssh://` addresses.
 *
 * @module
 */
import type { SshOptions } from "../../lib/ssh_transport.ts";
import { UsageError } from "./parse_args.ts";

/** Help lines for the ssh flags (indented like the other option lists). */
export const SSH_HELP =
  `  --ssh-config FILE         for ssh:// addresses: ssh's config file (ssh -F FILE)
  --ssh-option KEY=VALUE    for ssh:// addresses: an ssh option (ssh -o KEY=VALUE), e.g.
                            StrictHostKeyChecking=accept-new or IdentityFile=~/.ssh/vm; repeatable`;

/**
 * Turns the flags into `SshOptions`, or `undefined` when none was given.
 * Throws {@link UsageError} for flags without an `ssh://` address, and for an
 * option that is not `KEY=VALUE` (or `KEY VALUE`).
 */
export function sshFlags(
  address: string | undefined,
  configFile: string | undefined,
  options: string[] | undefined,
): SshOptions | undefined {
  const given = configFile !== undefined || (options !== undefined && options.length > 0);
  if (!given) return undefined;
  const flag = configFile !== undefined ? "--ssh-config" : "--ssh-option";
  if (address === undefined || !/^ssh:\/\//i.test(address.trim())) {
    throw new UsageError(
      `${flag} applies to ssh:// addresses (e.g. ssh://user@host/run/vm1/qmp.sock), ` +
        `not to ${address === undefined ? "a launched VM" : address}`,
    );
  }
  if (configFile === "") throw new UsageError("--ssh-config needs a file name");
  const args: string[] = [];
  for (const o of options ?? []) {
    if (!/^[A-Za-z][A-Za-z0-9]*(=|\s+)\S/.test(o.trim())) {
      throw new UsageError(
        `--ssh-option takes KEY=VALUE (passed to ssh as -o KEY=VALUE), got ${JSON.stringify(o)}`,
      );
    }
    args.push("-o", o.trim());
  }
  return {
    ...(configFile !== undefined ? { configFile } : {}),
    ...(args.length > 0 ? { options: args } : {}),
  };
}
