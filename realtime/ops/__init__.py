"""Operations: health and readiness probes and the panel's actions (``probes``), the panel's
reads (``stats``), Prometheus metrics (``metrics``), structured logs (``logs``), process tuning
(``runtime``) and the database-ceiling middleware (``middleware``).
"""
