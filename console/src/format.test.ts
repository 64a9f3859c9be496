import { describe, expect, it } from "vitest";
import { ago, formatDay, formatTime, hourIn, kindWords, localInputToRfc3339 } from "./format";

describe("times", () => {
  it("shows a time in the collector's zone, not the browser's", () => {
    const ms = Date.UTC(2026, 11, 5, 3, 10, 0);
    const now = Date.UTC(2026, 11, 6);
    expect(formatTime(ms, "UTC", now)).toBe("05 Dec, 03:10:00");
    expect(formatTime(ms, "Europe/Berlin", now)).toContain("04:10:00");
    // Another year's time says its year.
    expect(formatTime(ms, "UTC", Date.UTC(2027, 0, 2))).toContain("2026");
    expect(formatDay(ms, "UTC", now)).toBe("05 Dec");
    expect(formatTime(null, "UTC")).toBe("—");
  });

  it("reads a local input in the collector's zone", () => {
    expect(localInputToRfc3339("2026-12-05T04:10", "Europe/Berlin")).toBe("2026-12-05T03:10:00.000Z");
    expect(localInputToRfc3339("2026-07-05T04:10", "Europe/Berlin")).toBe("2026-07-05T02:10:00.000Z");
    expect(localInputToRfc3339("", "UTC")).toBeUndefined();
  });

  it("says how long ago, and the hour of day in the zone", () => {
    const now = Date.UTC(2026, 11, 5, 12, 0, 0);
    expect(ago(now - 30_000, now)).toBe("30 s ago");
    expect(ago(now - 5 * 60_000, now)).toBe("5 min ago");
    expect(ago(null, now)).toBe("never");
    expect(hourIn(Date.UTC(2026, 11, 5, 23, 30), "Europe/Berlin")).toBe(0);
    expect(kindWords("unlock_failed")).toBe("unlock failed");
  });
});
