import { afterEach, describe, expect, it } from "vitest";
import { clearMocks, mockIPC } from "@tauri-apps/api/mocks";
import { call, CommandError, unlock } from "./ipc";

// The IPC bridge is mocked at Tauri's own seam; the guard's Rust side is tested end to end.
(globalThis as { window?: unknown }).window ??= globalThis;

afterEach(() => clearMocks());

describe("ipc", () => {
  it("sends the unlock input under `input`, as the Rust command expects", async () => {
    let seen: unknown;
    mockIPC((cmd, args) => {
      seen = { cmd, args };
      return { result: "refused", attempts_left: 2, retry_after_secs: null };
    });
    const outcome = await unlock({ user: "n.nurse", pin: "111111", totp: null, emergencyReason: null });
    expect(outcome).toEqual({ result: "refused", attempts_left: 2, retry_after_secs: null });
    expect(seen).toEqual({
      cmd: "unlock",
      args: { input: { user: "n.nurse", pin: "111111", totp: null, emergencyReason: null } },
    });
  });

  it("turns a {code, message} rejection into a CommandError", async () => {
    mockIPC(() => {
      throw { code: "service_unavailable", message: "Unlock is unavailable" };
    });
    const error = await call("unlock").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CommandError);
    expect(error).toMatchObject({ code: "service_unavailable", message: "Unlock is unavailable" });
  });

  it("turns anything else into a readable CommandError", async () => {
    mockIPC(() => {
      throw "boom";
    });
    const error = await call("lock_screen_state").catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "ipc", message: "boom" });
  });
});
