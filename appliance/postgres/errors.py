"""Errors of the PostgreSQL adapter; each message says what to do about it."""

from __future__ import annotations


class PgError(Exception):
    """An operation on PostgreSQL failed or was refused; retrying may help unless the message says not."""


class DataDirNotEmpty(PgError):
    """initdb or a clone was asked to write into a directory that already holds something."""
