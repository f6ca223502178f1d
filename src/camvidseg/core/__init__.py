"""Shared rooms every concern uses: user errors, atomic files, the CLI parser, settings, progress,
device policy.
"""
