/**
 * Enrollment: an administrator authorises, the clinician sets a PIN, then scans a TOTP
 * QR code and proves it with one code. Every step is decided by wardlockd; the ticket
 * lives on this window's own connection and dies with it.
 */
import { call, CommandError, type EnrollOutcome } from "./ipc";
import { formatCountdown } from "./countdown";
import { refuseForeignInput } from "./no-paste";

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing #${id}`);
  return el as T;
};
const value = (id: string) => $<HTMLInputElement>(id).value;
const orNull = (v: string) => (v.trim() === "" ? null : v.trim());

let ticket = "";
let enrolledUser = "";
let pinDone = false;
const forms = ["authorize", "set-pin", "totp", "done"] as const;
type Step = (typeof forms)[number];
const stepIds: Record<Step, string> = { authorize: "s-authorize", "set-pin": "s-pin", totp: "s-totp", done: "s-done" };

function show(step: Step): void {
  for (const f of forms) {
    $(f).hidden = f !== step;
    const marker = $(stepIds[f]);
    if (f === step) marker.setAttribute("aria-current", "step");
    else marker.removeAttribute("aria-current");
  }
  document.title = `Wardlock — enroll: ${step}`;
  const first = $(step).querySelector<HTMLElement>("input, button");
  first?.focus();
}

function say(text: string): void {
  $("message").textContent = text;
}

async function run(command: string, args: Record<string, unknown>): Promise<EnrollOutcome | null> {
  try {
    return await call<EnrollOutcome>(command, args);
  } catch (e) {
    say(e instanceof CommandError ? e.message : "The guard did not answer.");
    return null;
  }
}

function notAuthorized(o: { attempts_left: number; retry_after_secs: number | null }): string {
  if (o.retry_after_secs) return `Administrator not accepted. Try again in ${formatCountdown(o.retry_after_secs)}.`;
  return `Administrator not accepted (user ID, PIN or role). ${o.attempts_left} attempts left.`;
}

$("authorize").addEventListener("submit", async (event) => {
  event.preventDefault();
  const outcome = await run("enroll_authorize", {
    input: {
      adminUser: value("admin-user"),
      adminPin: orNull(value("admin-pin")),
      adminTotp: orNull(value("admin-totp")),
      user: value("user"),
      displayName: orNull(value("display-name")),
    },
  });
  $<HTMLInputElement>("admin-pin").value = "";
  $<HTMLInputElement>("admin-totp").value = "";
  if (!outcome) return;
  if (outcome.result === "authorized") {
    ticket = outcome.ticket;
    enrolledUser = value("user").trim();
    say(`Authorised for ${formatCountdown(outcome.expires_in_secs)} minutes.`);
    show("set-pin");
  } else if (outcome.result === "not_authorized") {
    say(notAuthorized(outcome));
  } else if (outcome.result === "refused") {
    say(outcome.message);
  }
});

$("set-pin").addEventListener("submit", async (event) => {
  event.preventDefault();
  const pin = value("pin");
  const again = value("pin2");
  $<HTMLInputElement>("pin").value = "";
  $<HTMLInputElement>("pin2").value = "";
  if (pin !== again) {
    say("The two PINs differ. Type the new PIN twice.");
    $("pin").focus();
    return;
  }
  const outcome = await run("enroll_set_pin", { ticket, pin });
  if (!outcome) return;
  if (outcome.result === "pin_set") {
    pinDone = true;
    say("PIN set.");
    await startTotp();
  } else if (outcome.result === "refused") {
    say(outcome.message);
    $("pin").focus();
  }
});

$("skip-pin").addEventListener("click", () => void startTotp());

async function startTotp(): Promise<void> {
  const outcome = await run("enroll_start_totp", { ticket });
  if (outcome?.result === "totp_started") {
    // The SVG comes from our own QR encoder in Rust, not from the page's inputs.
    $("qr").innerHTML = outcome.qr_svg;
    $("uri").textContent = outcome.secret_uri;
    show("totp");
  } else if (outcome?.result === "refused") {
    say(outcome.message);
  }
}

$("totp").addEventListener("submit", async (event) => {
  event.preventDefault();
  const outcome = await run("enroll_confirm_totp", { ticket, code: value("code").trim() });
  $<HTMLInputElement>("code").value = "";
  if (!outcome) return;
  if (outcome.result === "totp_confirmed") {
    finish(true);
  } else if (outcome.result === "refused") {
    say(outcome.message);
  }
});

$("skip-totp").addEventListener("click", () => {
  if (!pinDone) {
    say("Set a PIN or an authenticator: the clinician needs one to unlock.");
    return;
  }
  finish(false);
});

function finish(totp: boolean): void {
  $("qr").innerHTML = "";
  $("uri").textContent = "";
  const what = [pinDone ? "a PIN" : null, totp ? "an authenticator app" : null].filter(Boolean).join(" and ");
  $("done-text").textContent = `${enrolledUser} can now unlock this workstation with ${what}.`;
  say("");
  show("done");
}

$("close").addEventListener("click", () => void call("enroll_close").catch(() => window.close()));
refuseForeignInput(document);
show("authorize");
