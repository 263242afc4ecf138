"""``run_demo_execution``."""
