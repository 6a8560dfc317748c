"""Exports of the ledger for compliance: NDJSON and CSV, streamed in constant memory."""
