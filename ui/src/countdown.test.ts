import { describe, expect, it } from "vitest";
import { formatCountdown } from "./countdown";

describe("formatCountdown", () => {
  it("shows minutes and zero-padded seconds", () => {
    expect(formatCountdown(161)).toBe("2:41");
    expect(formatCountdown(28)).toBe("0:28");
  });

  it("rounds up so a running wait never reads 0:00", () => {
    expect(formatCountdown(0.2)).toBe("0:01");
    expect(formatCountdown(59.01)).toBe("1:00");
  });

  it("shows hours for long lockouts", () => {
    expect(formatCountdown(3600 + 5 * 60 + 3)).toBe("1:05:03");
  });

  it("treats past and invalid values as done", () => {
    expect(formatCountdown(0)).toBe("0:00");
    expect(formatCountdown(-5)).toBe("0:00");
    expect(formatCountdown(Number.NaN)).toBe("0:00");
  });
});
