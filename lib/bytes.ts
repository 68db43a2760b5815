/**
 * Byte-array helpers shared by the transports, the framer, the agent client
 * and the CLI.
 *
 * @module
 */

/**
 * The chunks joined into one array; a single chunk is returned as it is.
 * `size`, when the caller already knows it, is their total length.
 */
export function concatBytes(chunks: readonly Uint8Array[], size?: number): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  let total = size;
  if (total === undefined) {
    total = 0;
    for (const c of chunks) total += c.length;
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}
