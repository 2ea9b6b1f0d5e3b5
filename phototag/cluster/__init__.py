"""Tagging on a Ray cluster (scan --ray / retag --ray): issue 14."""
