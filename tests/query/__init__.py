"""Tests of the query language (phototag.query)."""
