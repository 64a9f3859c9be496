"""Validates a FHIR R4 Bundle of AuditEvents with an independent implementation
(fhir.resources, R4 models). Usage: validate_fhir.py BUNDLE.json; exit 1 with the
validation errors when it is not valid R4."""
import json
import sys

from fhir.resources.auditevent import AuditEvent
from fhir.resources.bundle import Bundle
from pydantic import ValidationError


def main(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    try:
        bundle = Bundle.parse_obj(data)
        for entry in bundle.entry or []:
            AuditEvent.parse_obj(entry.resource.dict())
    except ValidationError as e:
        print(f"{path}: not a valid FHIR R4 Bundle of AuditEvents:\n{e}", file=sys.stderr)
        return 1
    print(f"valid: {len(bundle.entry or [])} AuditEvent resources")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
