"""The hardening report: `make harden` (see README, Hardening)."""
