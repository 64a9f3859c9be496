import { describe, expect, it } from "vitest";
import { href, parse } from "./route";

describe("routes", () => {
  it("parses a page and its parameters, and falls back to the fleet", () => {
    const r = parse("#/events?user=kim&kind=unlock_failed");
    expect(r.page).toBe("events");
    expect(r.params.get("user")).toBe("kim");
    expect(parse("#/nowhere").page).toBe("fleet");
    expect(parse("").page).toBe("fleet");
  });

  it("encodes what a workstation named, so it cannot leave the hash", () => {
    const h = href("events", { workstation: "ws-1&user=admin#x", user: "" });
    expect(h).toBe("#/events?workstation=ws-1%26user%3Dadmin%23x");
    expect(parse(h).params.get("workstation")).toBe("ws-1&user=admin#x");
    expect(href("events", { workstation: "javascript:alert(1)" }).startsWith("#/events?")).toBe(true);
  });
});
