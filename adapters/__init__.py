"""Adapters: one package per outside system, each registering its actions with the engine."""
