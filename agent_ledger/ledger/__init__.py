"""The ledger: charges, holds, adjustments, and the hash chains that make it tamper-evident."""
