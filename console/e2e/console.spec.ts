// The console as a privacy officer and IT use it, in Debian's chromium. The scene (a
// collector, a workstation, a failed unlock, a break-glass access, a rogue workstation
// whose texts carry markup) is set by the collector's test `browser.rs`.
import AxeBuilder from "@axe-core/playwright";
import { expect, type Page, test } from "@playwright/test";
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const env = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through the collector's test browser.rs`);
  return value;
};
const shots = () => env("WARDLOCK_SCREENSHOTS");

/** The authenticator's code now, or `steps` steps ahead (each sign-in needs a fresh one). */
function code(secret: string, steps = 0): string {
  return execFileSync("oathtool", ["--totp", "-b", secret, "-N", `now + ${steps * 30} seconds`])
    .toString()
    .trim();
}

/** Watches for what the injection probe must never cause: a script run, a dialog, a CSP violation. */
async function watch(page: Page): Promise<{ violations: string[]; dialogs: string[] }> {
  const seen = { violations: [] as string[], dialogs: [] as string[] };
  await page.addInitScript(() => {
    (window as unknown as { __csp: string[] }).__csp = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      (window as unknown as { __csp: string[] }).__csp.push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  page.on("console", (m) => {
    if (m.text().includes("Content Security Policy")) seen.violations.push(m.text());
  });
  page.on("dialog", (d) => {
    if (d.type() === "confirm") {
      void d.accept();
    } else {
      seen.dialogs.push(d.message());
      void d.dismiss();
    }
  });
  return seen;
}

async function noScriptRan(page: Page) {
  const state = await page.evaluate(() => ({
    pwned: (window as unknown as { __pwned?: string }).__pwned,
    csp: (window as unknown as { __csp?: string[] }).__csp ?? [],
  }));
  expect(state.pwned, "a script from a workstation's text ran").toBeUndefined();
  expect(state.csp, "a Content-Security-Policy violation").toEqual([]);
}

async function signIn(page: Page, name: string, password: string, secret: string, steps = 0) {
  await page.goto("/console/");
  await page.getByLabel("Name").fill(name);
  await page.getByLabel("Password").fill(password);
  await page.getByLabel("Code from your authenticator app").fill(code(secret, steps));
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("button", { name: "Sign out" })).toBeVisible();
}

async function axe(page: Page, where: string) {
  const results = await new AxeBuilder({ page }).analyze();
  const serious = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  expect(
    serious.map((v) => `${where}: ${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join("; ")}`),
  ).toEqual([]);
}

test.describe.configure({ mode: "serial" });

test("the sign-in form is what password managers and screen readers expect", async ({ page }) => {
  const seen = await watch(page);
  await page.goto("/console/");
  await expect(page.getByLabel("Name")).toHaveAttribute("autocomplete", "username");
  await expect(page.getByLabel("Password")).toHaveAttribute("autocomplete", "current-password");
  await expect(page.getByLabel("Code from your authenticator app")).toHaveAttribute("autocomplete", "one-time-code");
  await axe(page, "sign-in");
  // A wrong attempt is refused with a message, not a page error (a name no account has:
  // an account's own wrong attempt would hold it back for a second).
  await page.getByLabel("Name").fill("night.visitor");
  await page.getByLabel("Password").fill(env("WARDLOCK_AUDITOR_PASSWORD"));
  await page.getByLabel("Code from your authenticator app").fill("000000");
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("alert")).toContainText("wrong name, password or code");
  await page.screenshot({ path: join(shots(), "sign-in.png") });
  expect(seen.violations).toEqual([]);
});

test("a privacy officer finds the failed unlock, exports it, and reviews the break-glass access", async ({ page }) => {
  const seen = await watch(page);
  await signIn(page, env("WARDLOCK_AUDITOR"), env("WARDLOCK_AUDITOR_PASSWORD"), env("WARDLOCK_AUDITOR_TOTP"));
  const ws = env("WARDLOCK_WORKSTATION");

  // Fleet: the workstation, live.
  await expect(page.getByRole("heading", { name: "Fleet" })).toBeVisible();
  const row = page.getByRole("row", { name: new RegExp(ws) });
  await expect(row).toBeVisible();
  await noScriptRan(page);
  await axe(page, "fleet");
  await page.screenshot({ path: join(shots(), "fleet.png"), fullPage: true });

  // Events: who failed at bed 12.
  await row.getByRole("link").first().click();
  await expect(page.getByRole("textbox", { name: "Workstation" })).toHaveValue(ws);
  await page.getByRole("combobox", { name: "Outcome" }).selectOption("failure");
  await page.getByRole("button", { name: "Show" }).click();
  const failed = page.getByRole("row", { name: /unlock failed/ });
  await expect(failed.first()).toContainText("n.nurse");
  // Times are in the collector's zone (Europe/Berlin), not the browser's (New York); UTC on hover.
  await expect(failed.first().locator("time")).toHaveAttribute("title", /Z \(UTC\)$/);
  await axe(page, "events");
  await page.screenshot({ path: join(shots(), "events.png"), fullPage: true });

  // Exports of exactly what the filters show.
  const csv = page.waitForEvent("download");
  await page.getByRole("button", { name: "Export CSV" }).click();
  const csvText = readFileSync(await (await csv).path()).toString();
  const lines = csvText.trim().split("\n");
  expect(lines[0]).toContain("workstation");
  // Exactly the rows the filters show: this workstation's failures, the failed unlock among them.
  const shown = await page.locator("main table tbody tr").count();
  expect(lines.length).toBe(1 + shown);
  expect(lines.slice(1).every((l) => l.includes(ws))).toBe(true);
  expect(lines.some((l) => l.includes("unlock_failed") && l.includes("n.nurse"))).toBe(true);
  expect(lines.some((l) => l.includes("unlock_succeeded"))).toBe(false);
  const fhir = page.waitForEvent("download");
  await page.getByRole("button", { name: "Export FHIR" }).click();
  const bundlePath = test.info().outputPath("events.fhir.json");
  writeFileSync(bundlePath, readFileSync(await (await fhir).path()));
  const validated = spawnSync(env("WARDLOCK_PYTHON"), [env("WARDLOCK_FHIR_VALIDATOR"), bundlePath]);
  expect(validated.status, validated.stderr.toString()).toBe(0);
  const bundle = JSON.parse(readFileSync(bundlePath).toString()) as { entry: unknown[] };
  expect(bundle.entry.length).toBe(shown);

  // The live tail: a wrong PIN typed at the workstation now appears at the top as it arrives.
  await page.getByRole("button", { name: "Live tail" }).click();
  await expect(page.getByRole("status").filter({ hasText: "Live:" })).toBeVisible();
  const typed = spawnSync(
    env("WARDLOCKCTL"),
    ["agent", "--socket", env("WARDLOCK_AGENT_SOCKET"), "unlock", "k.kim", "--pin-stdin"],
    { input: "000000\n" },
  );
  expect(typed.status, "a wrong PIN is refused").not.toBe(0);
  await expect(page.locator("main table tbody tr").first()).toContainText("k.kim", { timeout: 60_000 });
  await page.getByRole("button", { name: "Stop live tail" }).click();

  // Reports: mark the break-glass access reviewed, with a note.
  await page.getByRole("link", { name: "Reports" }).click();
  const access = page.getByRole("row", { name: /Code blue bed 12/ });
  await expect(access).toBeVisible();
  await access.getByRole("button", { name: /Review the emergency access/ }).click();
  await access.getByLabel("Review note").fill("Called the charge nurse: code blue confirmed.");
  await access.getByRole("button", { name: "Mark reviewed" }).click();
  await expect(page.getByRole("row", { name: /Code blue bed 12/ })).toContainText(
    "Reviewed by privacy.officer (console)",
  );
  await noScriptRan(page);
  await axe(page, "reports");
  await page.screenshot({ path: join(shots(), "reports.png"), fullPage: true });

  // Charts and policies, read as an auditor.
  await page.getByRole("link", { name: "Charts" }).click();
  await expect(page.getByRole("heading", { name: /Locks and unlocks per hour/ })).toBeVisible();
  // A week of the wards' history: the three wards in the heat map, the late locks counted.
  await expect(page.getByRole("img", { name: /Heat map of locks and unlocks per hour for 3 groups/ })).toBeVisible();
  await expect(page.getByRole("img", { name: /locks 0–5 s/ })).toBeVisible();
  await expect(page.getByRole("table", { name: "Unattended minutes per workstation and day" })).toContainText(
    "icu-bed01",
  );
  await axe(page, "charts");
  await page.screenshot({ path: join(shots(), "charts.png"), fullPage: true });
  await page.getByRole("link", { name: "Policies", exact: true }).click();
  await expect(page.getByRole("heading", { name: "Policies", level: 1 })).toBeVisible();
  // The ICU's policy in force, what changed from the one before, its timeouts per PHI tier.
  const icu = page.getByRole("region", { name: "Group icu" });
  await expect(icu.getByRole("heading", { name: "Changes from serial 1" })).toBeVisible();
  await expect(icu.getByLabel("Changes from the previous policy")).toContainText('- idle_timeout = "5m"');
  await expect(icu.getByLabel("Changes from the previous policy")).toContainText('+ idle_timeout = "3m"');
  await expect(icu.getByRole("row", { name: /PHI tier charts/ })).toContainText("90 s");
  await axe(page, "policies");
  // An auditor sees no admin action.
  await page.getByRole("link", { name: "Users" }).click();
  await expect(page.getByText("You are signed in as an auditor")).toBeVisible();
  await expect(page.getByRole("button", { name: /Disable/ })).toHaveCount(0);
  await noScriptRan(page);
  expect(seen.violations).toEqual([]);
  expect(seen.dialogs).toEqual([]);

  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page.getByLabel("Name")).toBeVisible();
});

test("with the keyboard alone, an admin signs in; every page shows markup from workstations and people as text", async ({
  page,
}) => {
  const seen = await watch(page);
  // Signed in and moved about with the keyboard alone.
  await page.goto("/console/");
  await expect(page.getByLabel("Name")).toBeFocused();
  await page.keyboard.type(env("WARDLOCK_ADMIN"));
  await page.keyboard.press("Tab");
  await page.keyboard.type(env("WARDLOCK_ADMIN_PASSWORD"));
  await page.keyboard.press("Tab");
  await page.keyboard.type(code(env("WARDLOCK_ADMIN_TOTP")));
  await page.keyboard.press("Enter");
  await expect(page.getByRole("button", { name: "Sign out" })).toBeVisible();
  await page.keyboard.press("Tab");
  await expect(page.getByRole("link", { name: "Skip to content" })).toBeFocused();
  for (let i = 0; i < 3; i++) await page.keyboard.press("Tab");
  await expect(page.getByRole("link", { name: "Reports" })).toBeFocused();
  await page.keyboard.press("Enter");
  await expect(page.getByRole("heading", { name: "Reports", level: 1 })).toBeVisible();
  const probes: [string, string][] = [
    ["#/fleet", "bed 7 <img src=x"],
    ["#/events?workstation=ward4-rogue", "<script>window.__pwned='script'</script>"],
    ["#/events?workstation=ward4-rogue", "javascript:window.__pwned='link'"],
    ["#/reports", "<script>window.__pwned='script'</script>"],
    ["#/users", "Nora <img src=x"],
    ["#/users", "Kim <script>"],
  ];
  // Every page, those that show none of it too, runs no script and breaks no policy.
  for (const where of ["#/fleet", "#/events", "#/reports", "#/charts", "#/users", "#/policies"]) {
    await page.goto(`/console/${where}`);
    await expect(page.getByRole("heading", { level: 1 })).toBeVisible();
    await noScriptRan(page);
  }
  for (const [where, text] of probes) {
    await page.goto(`/console/${where}`);
    await expect(page.getByText(text, { exact: false }).first(), `${where} shows ${text} as text`).toBeVisible();
    await expect(page.locator("main img[src='x']")).toHaveCount(0);
    await expect(page.locator("main a[href^='javascript:']")).toHaveCount(0);
    await noScriptRan(page);
  }
  expect(seen.violations).toEqual([]);
  expect(seen.dialogs).toEqual([]);
});

test("IT disables a user and the workstation refuses them; a stopped agent goes silent", async ({ page }) => {
  const seen = await watch(page);
  await signIn(page, env("WARDLOCK_ADMIN"), env("WARDLOCK_ADMIN_PASSWORD"), env("WARDLOCK_ADMIN_TOTP"), 1);
  await page.getByRole("link", { name: "Users" }).click();
  await expect(page.getByText("a disabled user is refused", { exact: false }).first()).toBeVisible();
  await axe(page, "users");
  await page.screenshot({ path: join(shots(), "users.png"), fullPage: true });
  await page.getByRole("button", { name: "Disable n.nurse" }).click();
  await expect(page.getByRole("status")).toContainText("n.nurse disabled");

  // The workstation takes it at its next sync: its audit says so, and the unlock is refused.
  const ws = env("WARDLOCK_WORKSTATION");
  await expect
    .poll(
      async () => {
        const r = await page.request.get(`/api/v1/events?workstation=${ws}&kind=user_disabled`);
        return ((await r.json()) as { events: unknown[] }).events.length;
      },
      { timeout: 60_000 },
    )
    .toBeGreaterThan(0);
  const unlock = spawnSync(
    env("WARDLOCKCTL"),
    ["agent", "--socket", env("WARDLOCK_AGENT_SOCKET"), "unlock", "n.nurse", "--pin-stdin"],
    {
      input: `${env("WARDLOCK_NURSE_PIN")}\n`,
    },
  );
  expect(unlock.status, "the right PIN of a disabled user is refused").not.toBe(0);

  // Policies: an admin drafts a change, checked as they type.
  await page.getByRole("link", { name: "Policies", exact: true }).click();
  await expect(page.getByRole("heading", { name: "A policy for another group" })).toBeVisible();
  await page.getByRole("textbox", { name: "Group", exact: true }).fill("ward4");
  const draft = page.getByLabel("Draft a change for ward4");
  await draft.fill('[lock]\nidle_timeout = "30h"\n');
  await expect(page.getByText("lock.idle_timeout")).toBeVisible();
  await draft.fill('[lock]\nidle_timeout = "2m"\nwarning = "20s"\n');
  await expect(page.getByText("Valid: a workstation would take it.")).toBeVisible();
  await page.getByRole("button", { name: "Keep this draft" }).click();
  await expect(page.getByText(/Draft \d+ kept/)).toBeVisible();
  await axe(page, "policies (admin)");
  await page.screenshot({ path: join(shots(), "policies.png"), fullPage: true });

  // The agent stops: its workstation goes silent on the fleet page.
  process.kill(Number(env("WARDLOCK_AGENT_PID")), "SIGTERM");
  await page.getByRole("link", { name: "Fleet" }).click();
  await expect
    .poll(
      async () => {
        await page.reload();
        return page.getByRole("row", { name: new RegExp(ws) }).textContent();
      },
      { timeout: 60_000, intervals: [2_000] },
    )
    .toContain("Silent");
  // A tablet reads it too.
  await page.setViewportSize({ width: 820, height: 1180 });
  await axe(page, "fleet (tablet)");
  await page.screenshot({ path: join(shots(), "fleet-tablet.png"), fullPage: true });
  expect(seen.violations).toEqual([]);
});
