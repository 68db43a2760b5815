// Empty script: Deno start-up alone, for bench/cli_startup.ts.
