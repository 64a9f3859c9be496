import { defineConfig } from "@playwright/test";

// Run by the collector's test `browser::the_console_in_a_real_browser`, which starts the
// collector and a workstation and passes them in WARDLOCK_* variables. Debian's chromium,
// never a downloaded browser.
export default defineConfig({
  testDir: "e2e",
  timeout: 180_000,
  expect: { timeout: 20_000 },
  workers: 1,
  retries: 0,
  outputDir: "test-results",
  use: {
    baseURL: process.env.WARDLOCK_URL,
    // The collector's self-signed development certificate.
    ignoreHTTPSErrors: true,
    viewport: { width: 1280, height: 800 },
    timezoneId: "America/New_York",
    launchOptions: {
      executablePath: process.env.WARDLOCK_CHROMIUM ?? "/usr/bin/chromium",
      args: process.getuid?.() === 0 ? ["--no-sandbox"] : [],
    },
    acceptDownloads: true,
  },
});
