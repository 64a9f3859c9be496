import { describe, expect, it } from "vitest";
import { heatMap } from "./Charts";

describe("the heat map", () => {
  it("folds clock hours into hours of the day in the collector's zone, per group", () => {
    const rows = [
      { group: "icu", hour: "2026-12-04T23:00:00Z", locks: 2, unlocks: 1 },
      { group: "icu", hour: "2026-12-05T23:00:00Z", locks: 1, unlocks: 0 },
      { group: "ward4", hour: "2026-12-05T08:00:00Z", locks: 0, unlocks: 4 },
    ];
    const map = heatMap(rows, "Europe/Berlin");
    expect(map.groups).toEqual(["icu", "ward4"]);
    // 23:00 UTC is midnight in Berlin in winter: both days land in hour 0.
    const icu = map.data.find((d) => d.y === "icu");
    expect(icu).toMatchObject({ x: "0", locks: 3, unlocks: 1, v: 4 });
    expect(map.data.find((d) => d.y === "ward4")).toMatchObject({ x: "9", v: 4 });
    expect(map.max).toBe(4);
  });
});
