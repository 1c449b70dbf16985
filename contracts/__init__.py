"""Arrears contracts: the event envelope, the event data models and the topic catalogue.

The pydantic models here are the single source of truth; `contracts/schemas/` and
`contracts/asyncapi.yaml` are generated from them by `python -m contracts.generate`.
"""
