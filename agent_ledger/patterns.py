"""What values look like on the wire, as JSON Schema patterns: one place for the validation of
requests and the OpenAPI document that describes them.

Money is ASCII digits with an optional fraction of at most 9 digits: no exponent, no sign except
where money may flow back (adjustments), no float anywhere. Ids are opaque, but each kind carries
its prefix; cursors are URL-safe base64.
"""

from __future__ import annotations

__all__ = [
    "AMOUNT_PATTERN",
    "CURRENCY_PATTERN",
    "CURSOR_PATTERN",
    "END",
    "ID_OF",
    "ID_PREFIXES",
    "MONEY_OUT_PATTERN",
    "RUN_ID_PATTERN",
    "SIGNED_AMOUNT_PATTERN",
    "id_pattern",
]

# Every pattern ends with END: "$" alone lets Python's re (which msgspec validates with) accept
# one trailing newline ("USD\n"), which the database then refuses with a constraint error;
# "(?!\n)" refuses it, and tells a JSON Schema (ECMA-262) reader nothing new, since there "$"
# is already the end of the text.
END = r"$(?!\n)"

AMOUNT_PATTERN = r"^[0-9]{1,16}(\.[0-9]{1,9})?" + END
SIGNED_AMOUNT_PATTERN = r"^-?[0-9]{1,16}(\.[0-9]{1,9})?" + END
# What the service answers: any whole part (sums can grow), still at most 9 fractional digits.
MONEY_OUT_PATTERN = r"^-?[0-9]+(\.[0-9]{1,9})?" + END
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+" + END
CURRENCY_PATTERN = r"^[A-Z]{3}" + END
# A run (issue 17): named by the client, 1 to 255 printable ASCII characters.
RUN_ID_PATTERN = r"^[\x20-\x7e]{1,255}" + END

# The prefix of each kind of id, by the name of the parameter or field that carries one...
ID_PREFIXES = {
    "agent_id": "agt",
    "team_id": "team",
    "key_id": "key",
    "actor_key_id": "key",
    "rotated_from": "key",
    "hold_id": "hold",
    "entry_id": "ent",
    "checkpoint_id": "chk",
    "webhook_id": "whk",
    "delivery_id": "whd",
    "event_id": "evt",
}
# ...and of the ``id`` of each answer that is one of those things.
ID_OF = {
    "Agent": "agt",
    "Team": "team",
    "KeyInfo": "key",
    "KeyCreated": "key",
    "Hold": "hold",
    "HoldCreated": "hold",
    "HoldResolved": "hold",
    "LedgerEntry": "ent",
    "SpendResult": "ent",
    "AuditEvent": "evt",
    "Checkpoint": "chk",
    "CheckpointSummary": "chk",
    "Webhook": "whk",
    "WebhookCreated": "whk",
    "Delivery": "whd",
}


def id_pattern(prefix: str) -> str:
    return f"^{prefix}_[0-9A-Za-z]{{1,60}}" + END
