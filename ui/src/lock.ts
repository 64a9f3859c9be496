/**
 * The lock screen. It shows no PHI and holds the typed PIN only until it is sent.
 * Focus never leaves the form: under the input grab, a focus that wanders off the page
 * would swallow the next keys.
 */
import { listen } from "@tauri-apps/api/event";
import { formatCountdown } from "./countdown";
import { CommandError, hold, lockScreenState, signOut, unlock, type GuardPolicy, type Status, type UnlockOutcome } from "./ipc";
import {
  holdLabel,
  inputProblem,
  lockHeading,
  nextFocus,
  outcomeMessage,
  planFor,
  signedOutMessage,
  titleFor,
  type Factor,
  type Plan,
} from "./unlock-flow";
import { refuseForeignInput } from "./no-paste";

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing #${id}`);
  return el as T;
};

const form = $<HTMLFormElement>("unlock-form");
const userInput = $<HTMLInputElement>("user");
const pinInput = $<HTMLInputElement>("pin");
const totpInput = $<HTMLInputElement>("totp");
const reasonInput = $<HTMLTextAreaElement>("reason");
const message = $<HTMLParagraphElement>("message");
const submit = $<HTMLButtonElement>("submit");
const switchMethod = $<HTMLButtonElement>("switch-method");
const emergencyButton = $<HTMLButtonElement>("emergency");
const cancel = $<HTMLButtonElement>("cancel");
const signOutButton = $<HTMLButtonElement>("sign-out");
const holdButton = $<HTMLButtonElement>("hold");
const owner = $<HTMLParagraphElement>("owner");
const phiNotice = $<HTMLParagraphElement>("phi-notice");
const pinStep = $<HTMLDivElement>("pin-step");
const totpStep = $<HTMLDivElement>("totp-step");
const emergencyStep = $<HTMLDivElement>("emergency-step");
const service = $<HTMLParagraphElement>("service");

let policy: GuardPolicy | null = null;
let plan: Plan = { factors: ["pin"], alternative: null };
let usingAlternative = false;
let step = 0;
let emergency = false;
let busy = false;
let retryUntil = 0;
let serviceUp = false;
let sessionOwner: string | null = null;

/** "locked", and whose session it is: screen readers (and the tests) read the title. */
function lockedTitle(): string {
  return titleFor("locked", sessionOwner ? `session of ${sessionOwner}` : "");
}

function factors(): Factor[] {
  return usingAlternative && plan.alternative ? plan.alternative.factors : plan.factors;
}

/** Break-glass: the PIN, and the authenticator code where policy keeps MFA in an emergency. */
function emergencyFactors(): Factor[] {
  return policy?.emergency_requires_totp === true ? ["pin", "totp"] : ["pin"];
}

function currentFactor(): Factor | undefined {
  return factors()[step];
}

function render(): void {
  const f = factors();
  const factor = currentFactor();
  pinStep.hidden = !(emergency ? policy?.emergency_requires_pin !== false : factor === "pin");
  totpStep.hidden = emergency ? !emergencyFactors().includes("totp") : factor !== "totp";
  emergencyStep.hidden = !emergency;
  switchMethod.hidden = emergency || plan.alternative === null || step > 0;
  switchMethod.textContent = usingAlternative ? "Use my PIN" : "Use authenticator code";
  emergencyButton.hidden = emergency || !policy?.emergency_enabled;
  cancel.hidden = !emergency && step === 0;
  const last = emergency || step >= f.length - 1;
  // Only where there are PHI applications to close, and with every factor in hand.
  signOutButton.hidden = emergency || !last || (policy?.phi_apps.length ?? 0) === 0;
  signOutButton.disabled = busy || Date.now() < retryUntil || !serviceUp;
  const holdSecs = policy?.hold_secs ?? null;
  holdButton.hidden = emergency || !last || holdSecs === null;
  holdButton.textContent = holdSecs === null ? "Keep open" : holdLabel(holdSecs);
  holdButton.disabled = signOutButton.disabled;
  submit.textContent = emergency ? "Unlock for an emergency" : last ? "Unlock" : "Next";
  const waiting = Date.now() < retryUntil;
  submit.disabled = busy || waiting || !serviceUp;
  ensureFocus();
}

/** A focused control that is disabled or hidden drops the focus to the page's body, and
 * WebKit sends no blur for it: the next keys would go nowhere. Put it back. */
function ensureFocus(): void {
  if (!focusable(document.activeElement)) restoreFocus();
}

function focusable(el: Element | null): el is HTMLElement {
  return (
    el instanceof HTMLElement &&
    el !== document.body &&
    !(el instanceof HTMLButtonElement && el.disabled) &&
    el.closest("[hidden]") === null
  );
}

/** Where the clinician was typing, or else the first empty field. */
let lastFocused: HTMLElement | null = null;
function restoreFocus(): void {
  if (focusable(lastFocused)) lastFocused.focus();
  else focusFirstEmpty();
}

function say(text: string, title: string): void {
  message.textContent = text;
  document.title = title;
}

function focusFirstEmpty(): void {
  const candidates = [userInput, pinStep.hidden ? null : pinInput, totpStep.hidden ? null : totpInput, emergencyStep.hidden ? null : reasonInput];
  const target = candidates.find((el) => el && el.value === "") ?? candidates.filter(Boolean).pop();
  target?.focus();
}

function clearSecrets(): void {
  pinInput.value = "";
  totpInput.value = "";
}

function reset(): void {
  step = 0;
  emergency = false;
  reasonInput.value = "";
  clearSecrets();
  render();
}

type Purpose = "unlock" | "sign_out" | "hold";

async function attempt(purpose: Purpose = "unlock"): Promise<void> {
  if (busy || !policy) return;
  const reason = emergency ? reasonInput.value.trim() : null;
  const problem = inputProblem(policy, { user: userInput.value, pin: pinInput.value, totp: totpInput.value, reason }, emergency ? emergencyFactors().filter((f) => f === "totp") : factors());
  // Moving to the next step only needs the current factor.
  if (!emergency && step < factors().length - 1) {
    if (currentFactor() === "pin" && pinInput.value === "") {
      say("Enter your PIN.", lockedTitle());
      return focusFirstEmpty();
    }
    if (userInput.value.trim() === "") {
      say("Enter your user ID.", lockedTitle());
      return focusFirstEmpty();
    }
    step += 1;
    render();
    return focusFirstEmpty();
  }
  if (problem) {
    say(problem, lockedTitle());
    return focusFirstEmpty();
  }
  const f = emergency ? emergencyFactors() : factors();
  busy = true;
  render();
  say("Checking…", titleFor("busy"));
  try {
    const input = {
      user: userInput.value.trim(),
      pin: f.includes("pin") && pinInput.value !== "" ? pinInput.value : null,
      totp: f.includes("totp") ? totpInput.value.trim() : null,
      emergencyReason: reason,
    };
    let outcome: UnlockOutcome;
    if (purpose === "hold") {
      const held = await hold({ ...input, emergencyReason: null });
      if (held.result === "not_allowed") {
        clearSecrets();
        say(`No hold now: ${held.why}.`, titleFor("hold refused"));
        return;
      }
      outcome = held.result === "granted" ? { result: "granted", display_name: held.display_name } : held;
    } else {
      outcome = purpose === "sign_out" ? await signOut({ ...input, emergencyReason: null }) : await unlock(input);
    }
    clearSecrets();
    if (outcome.result === "granted" && purpose === "sign_out") {
      userInput.value = "";
      reset();
      say(signedOutMessage(outcome.display_name), titleFor("signed out"));
      return;
    }
    if (outcome.result === "granted") {
      say(outcomeMessage(outcome), titleFor("unlocked"));
      return;
    }
    step = 0;
    if (outcome.retry_after_secs !== null && outcome.retry_after_secs > 0) {
      startBackoff(outcome.retry_after_secs);
    } else {
      say(outcomeMessage(outcome), titleFor("refused", `${outcome.attempts_left} attempts left`));
    }
  } catch (e) {
    clearSecrets();
    const text = e instanceof CommandError ? e.message : "Unlock failed. Try again.";
    say(text, titleFor(e instanceof CommandError && e.code === "service_unavailable" ? "unavailable" : "refused"));
  } finally {
    busy = false;
    render();
    focusFirstEmpty();
  }
}

let backoffTimer: number | undefined;
function startBackoff(seconds: number): void {
  retryUntil = Date.now() + seconds * 1000;
  window.clearInterval(backoffTimer);
  const tick = () => {
    const left = (retryUntil - Date.now()) / 1000;
    if (left <= 0) {
      window.clearInterval(backoffTimer);
      say("You can try again now.", lockedTitle());
      render();
      return;
    }
    say(`Not accepted. Too many attempts: try again in ${formatCountdown(left)}.`, titleFor("backoff", formatCountdown(left)));
  };
  tick();
  backoffTimer = window.setInterval(tick, 1000);
  render();
}

function applyStatus(status: Status): void {
  if (status.policy) {
    const first = policy === null;
    policy = status.policy;
    plan = planFor(policy.methods);
    $("banner").textContent = policy.banner;
    if (first) reset();
  }
  const ownerChanged = sessionOwner !== status.session_owner;
  const wasLocked = document.title === lockedTitle();
  sessionOwner = status.session_owner;
  if (ownerChanged && wasLocked) document.title = lockedTitle();
  $("title").textContent = lockHeading(status.session_owner);
  owner.hidden = status.session_owner === null;
  owner.textContent = "A colleague who unlocks takes this session over.";
  phiNotice.hidden = status.phi_notice === null;
  phiNotice.textContent = status.phi_notice ?? "";
  serviceUp = status.service_available;
  service.hidden = serviceUp;
  service.textContent = serviceUp
    ? ""
    : "Unlock unavailable: the Wardlock service is not answering. The screen stays locked. Call IT if this lasts.";
  if (!serviceUp) document.title = titleFor("unavailable");
  else if (document.title === titleFor("unavailable") || document.title === titleFor("starting")) document.title = lockedTitle();
  render();
}

function buildPinPad(): void {
  const pad = $("pinpad");
  const keys = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "⌫", "0", "OK"];
  for (const key of keys) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = key;
    button.tabIndex = -1; // the pad is for touch; keyboard users type into the field
    button.setAttribute("aria-label", key === "⌫" ? "Delete last digit" : key === "OK" ? "Unlock" : `Digit ${key}`);
    button.addEventListener("click", () => {
      if (key === "⌫") pinInput.value = pinInput.value.slice(0, -1);
      else if (key === "OK") void attempt();
      else pinInput.value += key;
      pinInput.focus();
    });
    pad.append(button);
  }
}

function focusOrder(): string[] {
  return [userInput, pinInput, totpInput, reasonInput, submit, holdButton, signOutButton, switchMethod, emergencyButton, cancel]
    .filter((el) => !el.hidden && !el.closest("[hidden]") && !(el as HTMLButtonElement).disabled)
    .map((el) => el.id);
}

function keepFocus(): void {
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      // Start over: a clinician who walked up to a half-filled form.
      event.preventDefault();
      userInput.value = "";
      reset();
      say("", serviceUp ? lockedTitle() : titleFor("unavailable"));
      userInput.focus();
      return;
    }
    if (event.key !== "Tab") {
      // A key with nowhere to go: give it the field it was meant for.
      ensureFocus();
      return;
    }
    event.preventDefault();
    const id = nextFocus(focusOrder(), document.activeElement?.id ?? null, event.shiftKey);
    if (id) document.getElementById(id)?.focus();
  });
  document.addEventListener("focusin", (event) => {
    if (event.target instanceof HTMLElement) lastFocused = event.target;
  });
  // Something took focus away (a click on the background, the window itself): take it back.
  document.addEventListener("focusout", (event) => {
    if (event.relatedTarget === null) window.setTimeout(ensureFocus, 0);
  });
  window.addEventListener("focus", () => window.setTimeout(ensureFocus, 0));
}

function startClock(): void {
  const clock = $("clock");
  const show = () => {
    clock.textContent = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  };
  show();
  // The page lives only while locked, so this ticks only then.
  window.setInterval(show, 10_000);
}

async function main(): Promise<void> {
  refuseForeignInput(document);
  buildPinPad();
  keepFocus();
  startClock();
  // The reason is one sentence: Enter sends it, as in every other field.
  reasonInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      void attempt();
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void attempt();
  });
  signOutButton.addEventListener("click", () => void attempt("sign_out"));
  holdButton.addEventListener("click", () => void attempt("hold"));
  switchMethod.addEventListener("click", () => {
    usingAlternative = !usingAlternative;
    step = 0;
    clearSecrets();
    render();
    focusFirstEmpty();
  });
  emergencyButton.addEventListener("click", () => {
    emergency = true;
    render();
    say(`Emergency access: give a reason (at least ${policy?.emergency_min_reason_chars ?? 10} characters).`, lockedTitle());
    focusFirstEmpty();
  });
  cancel.addEventListener("click", () => {
    reset();
    say("", lockedTitle());
    focusFirstEmpty();
  });
  await listen<Status>("status", (event) => applyStatus(event.payload));
  const state = await lockScreenState();
  const list = $("recent-users");
  for (const user of state.recent_users) {
    const option = document.createElement("option");
    option.value = user;
    list.append(option);
  }
  if (state.recent_users[0]) userInput.placeholder = `e.g. ${state.recent_users[0]}`;
  applyStatus(state.status);
  focusFirstEmpty();
  // Only now does the title say "locked": the form is ready for typing.
  if (serviceUp) document.title = lockedTitle();
}

main().catch((e: unknown) => {
  message.textContent = "The lock screen could not start. The screen stays locked; call IT.";
  console.error(e);
});
