/**
 * The tiny guest with its agent, for tests that boot it: found or not, and why not.
 *
 * @module
 */
import { findTinyGuest, type TinyGuest } from "../../lib/guest.ts";

/**
 * Looks for the tiny guest built with qemu-ga. `skip` is `""` when it is there,
 * else why the boot test is ignored, which is also warned about once, naming `testFile`.
 */
export async function findAgentGuest(
  testFile: string,
): Promise<{ guest: TinyGuest | undefined; skip: string }> {
  const guest = await findTinyGuest().catch(() => undefined);
  const skip = !guest
    ? "the tiny guest is not built (deno task guest)"
    : !guest.agent
    ? "the tiny guest has no agent (install qemu-guest-agent, then deno task guest)"
    : "";
  if (skip) console.warn(`${testFile}: ignoring the boot test: ${skip}`);
  return { guest, skip };
}
