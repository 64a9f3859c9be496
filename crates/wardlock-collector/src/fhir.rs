//! Audit entries as FHIR R4 `AuditEvent` resources in a `Bundle`, following the IHE
//! BALP patterns: DICOM codes where one fits (110114 User Authentication with 110122
//! Login / 110123 Logout; 110113 Security Alert with 110127 Emergency Override Started),
//! and Wardlock's own code system for the rest (documented in docs/api.md).

use serde_json::{json, Value};
use wardlock_core::audit::{AuditEntry, AuditKind};

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
/// Wardlock's code system: one code per audit kind (`docs/audit-events.md`).
pub const WARDLOCK_CODES: &str = "https://wardlock.example/fhir/CodeSystem/audit-kind";
const SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({ "system": system, "code": code, "display": display })
}

/// (type, subtype, action, outcome) for a kind. Outcome: 0 success, 4 minor failure,
/// 8 serious failure (FHIR R4 `AuditEventOutcome`).
fn classify(kind: AuditKind) -> (Value, Option<Value>, &'static str, &'static str) {
    let auth = coding(DCM, "110114", "User Authentication");
    let alert = coding(DCM, "110113", "Security Alert");
    let local = |display: &str| coding(WARDLOCK_CODES, kind.as_str(), display);
    match kind {
        AuditKind::UnlockSucceeded => (auth, Some(coding(DCM, "110122", "Login")), "E", "0"),
        AuditKind::UnlockFailed => (auth, Some(coding(DCM, "110122", "Login")), "E", "4"),
        AuditKind::Locked => (auth, Some(coding(DCM, "110123", "Logout")), "E", "0"),
        AuditKind::AdminApproved => (auth, Some(local("Administrator approval")), "E", "0"),
        AuditKind::EmergencyAccess => {
            (alert, Some(coding(DCM, "110127", "Emergency Override Started")), "E", "0")
        }
        AuditKind::UserLockedOut | AuditKind::WorkstationLockedOut | AuditKind::EmergencyAccessClosed => {
            (alert, Some(local("Lockout")), "E", "4")
        }
        AuditKind::TamperDetected
        | AuditKind::SyncGap
        | AuditKind::GuardLost
        | AuditKind::GuardImpostor
        | AuditKind::EscalationUnconfirmed
        | AuditKind::SessionTerminateFailed
        | AuditKind::ServiceUncleanStop => (alert, Some(local("Integrity or availability alert")), "E", "8"),
        AuditKind::LockFailed => (alert, Some(local("Lock failure")), "E", "8"),
        AuditKind::EscalationRequested | AuditKind::EscalationConfirmed => {
            (alert, Some(local("Unguarded session escalation")), "E", "4")
        }
        // HIPAA's automatic logoff, done by the service: a logout, and an alert.
        AuditKind::SessionTerminated => (alert, Some(coding(DCM, "110123", "Logout")), "E", "4"),
        AuditKind::UserAdded => {
            (coding(DCM, "110137", "User Security Attributes Changed"), Some(local("User added")), "C", "0")
        }
        AuditKind::UserChanged | AuditKind::UserDisabled => {
            (coding(DCM, "110137", "User Security Attributes Changed"), Some(local("User changed")), "U", "0")
        }
        AuditKind::PolicyApplied | AuditKind::PolicyRefused => (
            coding(DCM, "110136", "Security Roles Changed"),
            Some(local("Policy")),
            "U",
            if kind == AuditKind::PolicyRefused { "4" } else { "0" },
        ),
        _ => (coding(WARDLOCK_CODES, kind.as_str(), "Wardlock event"), None, "E", "0"),
    }
}

pub fn audit_event(entry: &AuditEntry) -> Value {
    let (event_type, subtype, action, outcome) = classify(entry.kind);
    let mut agents = Vec::new();
    if let Some(user) = &entry.user {
        agents.push(json!({
            "type": { "coding": [coding("http://terminology.hl7.org/CodeSystem/v3-RoleClass", "PROV", "healthcare provider")] },
            "who": { "identifier": { "value": user } },
            "altId": entry.os_account.clone(),
            "requestor": true,
            "network": { "address": entry.workstation, "type": "1" }
        }));
    }
    agents.push(json!({
        "type": { "coding": [coding("http://dicom.nema.org/resources/ontology/DCM", "110150", "Application")] },
        "who": { "display": format!("wardlockd on {}", entry.workstation) },
        "requestor": false
    }));
    let mut details: Vec<Value> =
        entry.details.iter().map(|(k, v)| json!({ "type": k, "valueString": v })).collect();
    details.push(json!({ "type": "kind", "valueString": entry.kind.as_str() }));
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": format!("{}-{}", sanitize_id(&entry.workstation), entry.seq),
        "type": event_type,
        "action": action,
        "recorded": entry.time.to_rfc3339(),
        "outcome": outcome,
        "agent": agents,
        "source": {
            "site": entry.workstation,
            "observer": { "display": format!("wardlockd on {}", entry.workstation) },
            "type": [coding(SOURCE_TYPE, "1", "User Device")]
        },
        "entity": [{
            "what": { "identifier": { "system": "urn:wardlock:audit", "value": format!("{}/{}", entry.workstation, entry.seq) } },
            "description": format!("audit entry {} of workstation {}, hash {}", entry.seq, entry.workstation, hex::encode(entry.hash)),
            "detail": details
        }]
    });
    if let Some(subtype) = subtype {
        event["subtype"] = json!([subtype]);
    }
    if entry.kind == AuditKind::EmergencyAccess {
        event["purposeOfEvent"] = json!([{ "coding": [coding("http://terminology.hl7.org/CodeSystem/v3-ActReason", "ETREAT", "Emergency Treatment")] }]);
    }
    event
}

/// FHIR ids allow letters, digits, '-' and '.', at most 64 characters.
fn sanitize_id(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' })
        .take(40)
        .collect()
}

pub fn bundle(entries: &[&AuditEntry]) -> Value {
    json!({
        "resourceType": "Bundle",
        "type": "collection",
                "entry": entries
            .iter()
            .map(|e| {
                let resource = audit_event(e);
                json!({ "fullUrl": format!("urn:wardlock:audit:{}:{}", sanitize_id(&e.workstation), e.seq), "resource": resource })
            })
            .collect::<Vec<_>>()
    })
}
