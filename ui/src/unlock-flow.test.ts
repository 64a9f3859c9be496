import { describe, expect, it } from "vitest";
import { holdLabel, inputProblem, lockHeading, nextFocus, outcomeMessage, planFor, signedOutMessage, titleFor } from "./unlock-flow";

const policy = { emergency_min_reason_chars: 10, emergency_requires_pin: true };

describe("planFor", () => {
  it("asks for the PIN first and offers the authenticator as the alternative", () => {
    expect(planFor(["pin", "totp", "pin_totp"])).toEqual({
      factors: ["pin"],
      alternative: { factors: ["totp"], alternative: null },
    });
  });

  it("asks for both factors, PIN first, when policy requires MFA", () => {
    expect(planFor(["pin_totp"])).toEqual({ factors: ["pin", "totp"], alternative: null });
  });

  it("asks for the code alone when that is all policy allows", () => {
    expect(planFor(["totp"])).toEqual({ factors: ["totp"], alternative: null });
  });

  it("falls back to both factors for an empty method list", () => {
    expect(planFor([]).factors).toEqual(["pin", "totp"]);
  });
});

describe("outcomeMessage when break-glass is closed", () => {
  it("says emergency access is closed here, until when, and what to do instead", () => {
    const text = outcomeMessage({ result: "refused", attempts_left: 0, retry_after_secs: 240, emergency_closed: true });
    expect(text).toContain("Emergency access is closed on this workstation");
    expect(text).toContain("4:00");
    expect(text).toContain("another workstation");
    expect(text).not.toMatch(/PIN|code was/);
  });
});

describe("outcomeMessage", () => {
  it("never says which factor was wrong", () => {
    const text = outcomeMessage({ result: "refused", attempts_left: 2, retry_after_secs: null });
    expect(text).toBe("User ID or code not accepted. 2 attempts left before a lockout.");
    expect(text).not.toMatch(/PIN is wrong|unknown user/i);
  });

  it("uses the singular for the last attempt", () => {
    expect(outcomeMessage({ result: "refused", attempts_left: 1, retry_after_secs: null })).toContain("1 attempt left");
  });

  it("shows the back-off as a countdown", () => {
    expect(outcomeMessage({ result: "refused", attempts_left: 0, retry_after_secs: 28 })).toBe(
      "Not accepted. Too many attempts: try again in 0:28.",
    );
  });

  it("greets by display name", () => {
    expect(outcomeMessage({ result: "granted", display_name: "Nora Nurse" })).toBe("Welcome, Nora Nurse.");
  });
});

describe("inputProblem", () => {
  const empty = { user: "n.nurse", pin: "", totp: "", reason: null };

  it("wants a user ID first", () => {
    expect(inputProblem(policy, { ...empty, user: "  " }, ["pin"])).toBe("Enter your user ID.");
  });

  it("wants each factor the plan asks for", () => {
    expect(inputProblem(policy, empty, ["pin"])).toBe("Enter your PIN.");
    expect(inputProblem(policy, { ...empty, pin: "1" }, ["pin", "totp"])).toBe(
      "Enter the code from your authenticator app.",
    );
    expect(inputProblem(policy, { ...empty, pin: "1", totp: "123456" }, ["pin", "totp"])).toBeNull();
  });

  it("wants a real reason and the PIN for emergency access", () => {
    expect(inputProblem(policy, { ...empty, reason: "code blue" }, [])).toBe(
      "Give a reason of at least 10 characters.",
    );
    expect(inputProblem(policy, { ...empty, reason: "code blue bed 4" }, [])).toBe(
      "Emergency access still needs your PIN.",
    );
    expect(inputProblem(policy, { ...empty, pin: "730284", reason: "code blue bed 4" }, [])).toBeNull();
    expect(inputProblem({ ...policy, emergency_requires_pin: false }, { ...empty, reason: "code blue bed 4" }, [])).toBeNull();
  });
});

describe("nextFocus", () => {
  const order = ["user", "pin", "submit"];

  it("cycles forwards and backwards without leaving the form", () => {
    expect(nextFocus(order, "user", false)).toBe("pin");
    expect(nextFocus(order, "submit", false)).toBe("user");
    expect(nextFocus(order, "user", true)).toBe("submit");
  });

  it("starts at the first control when focus is nowhere", () => {
    expect(nextFocus(order, null, false)).toBe("user");
    expect(nextFocus(order, "body", false)).toBe("user");
    expect(nextFocus([], "user", false)).toBeNull();
  });
});

describe("titleFor", () => {
  it("names the state the tests and screen readers read", () => {
    expect(titleFor("locked")).toBe("Wardlock — locked");
    expect(titleFor("refused", "2 attempts left")).toBe("Wardlock — refused: 2 attempts left");
    expect(titleFor("unavailable")).toBe("Wardlock — unlock unavailable");
  });
});

describe("whose session", () => {
  it("names the shortened owner when there is one, and no one otherwise", () => {
    expect(lockHeading("Nora N.")).toBe("Locked — session of Nora N.");
    expect(lockHeading(null)).toBe("This workstation is locked");
  });
  it("says after a sign-out that the lock stays", () => {
    expect(signedOutMessage("Nora Nurse")).toContain("stays locked");
    expect(titleFor("signed out")).toBe("Wardlock — signed out");
  });
});

describe("holdLabel", () => {
  it("offers the policy's hold length in whole minutes", () => {
    expect(holdLabel(300)).toBe("Keep open 5 min");
    expect(holdLabel(90)).toBe("Keep open 2 min");
  });
});
