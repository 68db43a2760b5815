/**
 * The QMP client, public entry: {@link QmpClient} (the session, in
 * `qmp_client.ts`), {@link connect} (`connect.ts`) and the option types
 * (`client_options.ts`). Import from here; the files behind it may move.
 *
 * @module
 */
export { MAX_INBAND_IN_FLIGHT, QmpClient } from "./qmp_client.ts";
export { connect } from "./connect.ts";
export type {
  ClientOptions,
  ClientState,
  ConnectOptions,
  ExecuteOptions,
  ExecuteRest,
  ReconnectPolicy,
  TranscriptEntry,
  TypedEvent,
  WaitEventOptions,
} from "./client_options.ts";
