"""Proactive failure drills, Prefect-free: the experiment model, steady-state probes, fault env patches,
scorecards, trends and the Pushgateway push. Flows (flows/drills.py) orchestrate them."""
