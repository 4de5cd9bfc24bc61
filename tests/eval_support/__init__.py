"""Test support for provenir.eval: loopback vendor servers and worker scripts."""
