"""Tenants, keys, plans, money, the ledger, the group-commit writer, billing and the audit
log: everything the gateway charges against, and nothing of HTTP (no module here imports
`persea.serve`). `Accounts` (accounts/service.py) is what the gateway and the admin commands
call; its value types and errors are re-exported here."""

from persea.accounts.service import (Accounts, AccountsError, BudgetExhausted, Caller,
                                     InvalidKey, ModelNotAllowed, PlanTerms, Price, Reservation,
                                     UsageRecord)

__all__ = ["Accounts", "AccountsError", "BudgetExhausted", "Caller", "InvalidKey",
           "ModelNotAllowed", "PlanTerms", "Price", "Reservation", "UsageRecord"]
