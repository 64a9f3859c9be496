// Audit kinds as the collector's OpenAPI document lists them (not a copy kept by hand).
import { components } from "../../docs/openapi.json";

export const AUDIT_KINDS: readonly string[] = components.schemas.AuditKind.enum;

/** What went wrong at a workstation's guard: the escalations report. */
export const ESCALATION_KINDS = [
  "guard_lost",
  "guard_impostor",
  "escalation_requested",
  "escalation_confirmed",
  "escalation_unconfirmed",
  "session_terminated",
  "session_terminate_failed",
].filter((k) => AUDIT_KINDS.includes(k));
