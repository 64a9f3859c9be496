// Hash routes (`#/events?user=kim`): the collector serves one page, whatever the route.
import { useEffect, useState } from "preact/hooks";

export type Route = "fleet" | "events" | "reports" | "charts" | "users" | "policies";
const ROUTES: readonly Route[] = ["fleet", "events", "reports", "charts", "users", "policies"];

export interface Current {
  page: Route;
  params: URLSearchParams;
}

export function parse(hash: string): Current {
  const [path = "", query = ""] = hash.replace(/^#\/?/, "").split("?", 2);
  const page = ROUTES.find((r) => r === path) ?? "fleet";
  return { page, params: new URLSearchParams(query) };
}

/** The hash of a route with its parameters (empty ones left out). */
export function href(page: Route, params: Record<string, string | undefined> = {}): string {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v) query.set(k, v);
  }
  const text = query.toString();
  return `#/${page}${text ? `?${text}` : ""}`;
}

export function route(page: Route, params: Record<string, string | undefined> = {}): void {
  location.hash = href(page, params);
}

export function useRoute(): Current {
  const [current, setCurrent] = useState(() => parse(location.hash));
  useEffect(() => {
    const changed = () => setCurrent(parse(location.hash));
    window.addEventListener("hashchange", changed);
    return () => window.removeEventListener("hashchange", changed);
  }, []);
  return current;
}
