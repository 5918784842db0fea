"""Read models of the slot ledger: status, pool stats, queue, audit, time travel."""
