/** Quitting the guard: only with an administrator's credentials, checked by wardlockd. */
import { call, CommandError, type QuitOutcome } from "./ipc";
import { formatCountdown } from "./countdown";
import { refuseForeignInput } from "./no-paste";

const input = (id: string) => document.getElementById(id) as HTMLInputElement;
document.title = "Wardlock — quit";
const message = document.getElementById("message") as HTMLParagraphElement;

document.getElementById("quit")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const orNull = (v: string) => (v.trim() === "" ? null : v.trim());
  try {
    const outcome = await call<QuitOutcome>("admin_quit", {
      input: { adminUser: input("admin-user").value, adminPin: orNull(input("admin-pin").value), adminTotp: orNull(input("admin-totp").value) },
    });
    if (outcome.result === "refused") {
      document.title = "Wardlock — quit refused";
      input("admin-user").select();
      input("admin-user").focus();
      message.textContent = outcome.retry_after_secs
        ? `Not accepted. Try again in ${formatCountdown(outcome.retry_after_secs)}.`
        : `Not accepted (user ID, PIN or role). ${outcome.attempts_left} attempts left.`;
    }
  } catch (e) {
    message.textContent = e instanceof CommandError ? e.message : "The guard did not answer.";
  } finally {
    input("admin-pin").value = "";
    input("admin-totp").value = "";
  }
});
document.getElementById("close")?.addEventListener("click", () => void call("admin_close"));
refuseForeignInput(document);
