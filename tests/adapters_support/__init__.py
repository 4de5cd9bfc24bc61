"""Test helpers for provenir.adapters: seeded LoRA adapters on the tiny model, a loopback hub."""
