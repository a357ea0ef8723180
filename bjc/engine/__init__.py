"""The engine: executions from trigger to pruning.

trigger (`controller`) -> nodes -> `dispatcher` (pods) -> pod watch -> `jobs` ->
execution, store and metrics; `history` keeps the executions of the report
directory in memory, `callbacktarget` answers the callback API from it,
`schedule` and `configwatch` are the triggers besides the API. The engine never
imports the web layer (checked by tests/unit/test_architecture.py).
"""
