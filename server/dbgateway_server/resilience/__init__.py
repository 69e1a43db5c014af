"""Resilience policies of the gateway core: retries (:mod:`.retry`) and the
per-database circuit breaker (:mod:`.breaker`). Each policy lives in exactly one
module; the core applies them in one place (``Database.run``)."""
