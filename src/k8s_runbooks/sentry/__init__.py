"""Sentry: issue look-ups through the Web API (api) and failure reporting through sentry-sdk (reporting)."""
