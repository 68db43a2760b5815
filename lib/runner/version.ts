/**
 * The runner's version, written into blob reports; `merge-reports` refuses to
 * merge blobs of different versions. Kept equal to `deno.json`'s version (tested).
 *
 * @module
 */

/** The qmpkit version that produces and reads blob reports. */
export const RUNNER_VERSION = "0.1.0";
