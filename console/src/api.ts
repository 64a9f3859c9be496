// The collector's own API, typed from its OpenAPI document (src/generated/api.ts, made
// by `npm run types` from docs/openapi.json): the console is one more client of it.
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./generated/api";

export type Schemas = components["schemas"];
export type Session = Schemas["ConsoleSession"];
export type FleetWorkstation = Schemas["FleetWorkstation"];
export type EventOut = Schemas["EventOut"];
export type EmergencyOut = Schemas["EmergencyOut"];

let csrf: string | undefined;
let onSignedOut: () => void = () => {};

/** Every change carries the session's CSRF token; a 401 means the session is over. */
const session: Middleware = {
  onRequest({ request }) {
    if (request.method !== "GET" && request.method !== "HEAD" && csrf) {
      request.headers.set("X-CSRF-Token", csrf);
    }
    return request;
  },
  onResponse({ response, request }) {
    if (response.status === 401 && !request.url.endsWith("/api/v1/console/session")) {
      onSignedOut();
    }
    return response;
  },
};

export const api = createClient<paths>({ baseUrl: "", credentials: "same-origin" });
api.use(session);

export function useSession(s: Session | undefined, signedOut: () => void): void {
  csrf = s?.csrf_token;
  onSignedOut = signedOut;
}

/** The error text of a failed answer, as the collector words it. */
export function errorText(error: unknown, fallback: string): string {
  if (error && typeof error === "object" && "error" in error && typeof error.error === "string") {
    return error.error;
  }
  return fallback;
}

/** The `X-Next-After` cursor of a paged list answer. */
export function nextCursor(response: Response): string | undefined {
  return response.headers.get("x-next-after") ?? undefined;
}
