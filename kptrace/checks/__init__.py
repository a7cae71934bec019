"""Checks: plain functions from data planes (and the kernel's observations) to findings."""
