/**
 * What the lock screen asks for and what it says back: pure functions, so every
 * rule is tested without a window.
 */
import { formatCountdown } from "./countdown";
import type { GuardPolicy, UnlockMethod, UnlockOutcome } from "./ipc";

/** How the clinician proves who they are in this attempt. */
export type Factor = "pin" | "totp";

export interface Plan {
  /** Factors asked for, in order (PIN first when both are needed). */
  factors: Factor[];
  /** Another way this policy allows (the "use authenticator code instead" button). */
  alternative: Plan | null;
}

/**
 * From the policy's methods, the default plan. `pin_totp` alone means both factors;
 * `pin` or `totp` alone is one factor; with several, PIN comes first and TOTP is the
 * alternative.
 */
export function planFor(methods: readonly UnlockMethod[]): Plan {
  const single = (f: Factor): Plan => ({ factors: [f], alternative: null });
  const plans: Plan[] = [];
  if (methods.includes("pin")) plans.push(single("pin"));
  if (methods.includes("totp")) plans.push(single("totp"));
  if (methods.includes("pin_totp")) plans.push({ factors: ["pin", "totp"], alternative: null });
  const [first, second] = plans;
  if (!first) {
    // An empty method list is refused by policy validation; be safe anyway.
    return { factors: ["pin", "totp"], alternative: null };
  }
  return { factors: first.factors, alternative: second ?? null };
}

/** The message after an attempt; never says which factor was wrong. */
export function outcomeMessage(outcome: UnlockOutcome): string {
  if (outcome.result === "granted") {
    return `Welcome, ${outcome.display_name}.`;
  }
  if (outcome.emergency_closed === true) {
    const wait = outcome.retry_after_secs ?? 0;
    return (
      "Emergency access is closed on this workstation: too many failed attempts during its lockout. " +
      (wait > 0 ? `It opens again in ${formatCountdown(wait)}. ` : "") +
      "Use another workstation, or ask IT."
    );
  }
  if (outcome.retry_after_secs !== null && outcome.retry_after_secs > 0) {
    return `Not accepted. Too many attempts: try again in ${formatCountdown(outcome.retry_after_secs)}.`;
  }
  const left = outcome.attempts_left;
  const attempts = left === 1 ? "1 attempt left" : `${left} attempts left`;
  return `User ID or code not accepted. ${attempts} before a lockout.`;
}

/** The page title, which the window title follows (screen readers and tests read it). */
export function titleFor(
  state: "starting" | "locked" | "busy" | "refused" | "backoff" | "unavailable" | "unlocked" | "signed out" | "hold refused",
  detail = "",
): string {
  const text: Record<typeof state, string> = {
    starting: "starting",
    locked: "locked",
    busy: "checking",
    refused: "refused",
    backoff: "try again later",
    unavailable: "unlock unavailable",
    unlocked: "unlocked",
    "signed out": "signed out",
    "hold refused": "hold refused",
  };
  return `Wardlock — ${text[state]}${detail ? `: ${detail}` : ""}`;
}

/** The lock screen's heading: whose session it is, so a colleague knows that unlocking
 * takes it over. */
export function lockHeading(owner: string | null): string {
  return owner ? `Locked — session of ${owner}` : "This workstation is locked";
}

/** The lock screen's "Keep open" button, for the policy's hold length. */
export function holdLabel(holdSecs: number): string {
  return `Keep open ${Math.ceil(holdSecs / 60)} min`;
}

/** After a sign-out: the lock stays for the next clinician. */
export function signedOutMessage(displayName: string): string {
  return `Signed out, ${displayName}. Your applications are closing; the workstation stays locked for the next clinician.`;
}

/** Checks before sending: a reason long enough for emergency access, digits present. */
export function inputProblem(
  policy: Pick<GuardPolicy, "emergency_min_reason_chars" | "emergency_requires_pin">,
  input: { user: string; pin: string; totp: string; reason: string | null },
  factors: readonly Factor[],
): string | null {
  if (input.user.trim() === "") return "Enter your user ID.";
  if (input.reason !== null) {
    const min = policy.emergency_min_reason_chars;
    if (input.reason.trim().length < min) return `Give a reason of at least ${min} characters.`;
    if (policy.emergency_requires_pin && input.pin === "") return "Emergency access still needs your PIN.";
    return null;
  }
  if (factors.includes("pin") && input.pin === "") return "Enter your PIN.";
  if (factors.includes("totp") && input.totp.trim() === "") return "Enter the code from your authenticator app.";
  return null;
}

/** Where Tab goes inside the lock form: it cycles and never leaves the page. */
export function nextFocus(order: readonly string[], current: string | null, backwards: boolean): string | null {
  if (order.length === 0) return null;
  const i = current === null ? -1 : order.indexOf(current);
  if (i < 0) return order[0] ?? null;
  const next = (i + (backwards ? order.length - 1 : 1)) % order.length;
  return order[next] ?? null;
}
