"""Test helpers: local HTTP receivers and test doubles for services that cannot run on this machine."""
