"""slotledger: an event-sourced ledger for pools of pre-provisioned Coolify slots."""
