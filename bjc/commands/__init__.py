"""The `bjc` commands (`bjc.commands.cli` dispatches to them) and their process set-up.

Each command is imported only when chosen, so `bjc report` in a job pod loads
nothing but the standard library (`bjc.client`).
"""
