/**
 * Typed wrappers around the guard's IPC commands. The Rust side decides which window
 * may call which command (Tauri capabilities); errors arrive as {code, message}.
 */
import { invoke } from "@tauri-apps/api/core";

export type UnlockMethod = "pin" | "totp" | "pin_totp";

export interface GuardPolicy {
  idle_timeout_secs: number;
  warning_secs: number;
  banner: string;
  methods: UnlockMethod[];
  emergency_enabled: boolean;
  emergency_requires_pin: boolean;
  /** Break-glass asks for an authenticator code too (MFA wards). */
  emergency_requires_totp: boolean;
  emergency_min_reason_chars: number;
  show_session_owner: boolean;
  phi_apps: { name: string }[];
  /** Where this workstation's group allows holds: how long one lasts. */
  hold_secs: number | null;
}

export type StateView =
  | { state: "active" }
  | { state: "warning"; seconds_left: number }
  | { state: "locked"; reason: string };

export interface Status {
  state: StateView;
  service_available: boolean;
  service_problem: string | null;
  idle_unavailable: string | null;
  policy: GuardPolicy | null;
  idle_timeout_secs: number | null;
  /** Whose session it is ("Nora N."), where policy shows it. */
  session_owner: string | null;
  phi_notice: string | null;
}

export interface LockScreenState {
  status: Status;
  recent_users: string[];
}

export type UnlockOutcome =
  | { result: "granted"; display_name: string }
  | {
      result: "refused";
      attempts_left: number;
      retry_after_secs: number | null;
      /** Break-glass is closed here until the workstation's lockout ends. */
      emergency_closed?: boolean;
    };

export type HoldOutcome =
  | { result: "granted"; display_name: string; hold_secs: number }
  | { result: "refused"; attempts_left: number; retry_after_secs: number | null }
  | { result: "not_allowed"; why: string };

export type EnrollOutcome =
  | { result: "authorized"; ticket: string; expires_in_secs: number }
  | { result: "not_authorized"; attempts_left: number; retry_after_secs: number | null }
  | { result: "pin_set" }
  | { result: "totp_started"; qr_svg: string; secret_uri: string }
  | { result: "totp_confirmed" }
  | { result: "refused"; message: string };

export type QuitOutcome =
  | { result: "quitting" }
  | { result: "refused"; attempts_left: number; retry_after_secs: number | null };

export class CommandError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Calls a command; anything thrown becomes a CommandError with a readable message. */
export async function call<T>(command: string, args?: Record<string, unknown>): Promise<T> {
  try {
    return await invoke<T>(command, args);
  } catch (e) {
    if (typeof e === "object" && e !== null && "code" in e && "message" in e) {
      const { code, message } = e as { code: unknown; message: unknown };
      throw new CommandError(String(code), String(message));
    }
    throw new CommandError("ipc", typeof e === "string" ? e : "The guard did not answer.");
  }
}

export interface UnlockInput {
  user: string;
  pin: string | null;
  totp: string | null;
  emergencyReason: string | null;
}

export const lockScreenState = () => call<LockScreenState>("lock_screen_state");
export const unlock = (input: UnlockInput) => call<UnlockOutcome>("unlock", { input });
/** Unlocks and keeps the session open for the policy's hold length, where allowed. */
export const hold = (input: UnlockInput) => call<HoldOutcome>("hold", { input });
/** Closes the clinician's PHI applications; the lock stays. Answered like an unlock. */
export const signOut = (input: UnlockInput) => call<UnlockOutcome>("sign_out", { input });

export interface AdminInput {
  adminUser: string;
  adminPin: string | null;
  adminTotp: string | null;
}
