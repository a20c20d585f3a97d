"""Table names: parsing ``[dbname.]table_name`` and Treasure Data's naming rules.

This module sits below both the configuration and the stores (it imports nothing of autoseg but
the errors), so either can validate a name without importing the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from autoseg.errors import UsageError

# A table name is `[dbname.]table_name`; both parts follow Treasure Data's rules (lower case
# letters, digits and underscores, 3-255 characters for TD; we accept 1+ and mixed case for
# local stores), so a name can never smuggle SQL into a statement.
_NAME_PART = r"[A-Za-z_][A-Za-z0-9_]{0,254}"
TABLE_NAME_RE = re.compile(rf"^(?:(?P<db>{_NAME_PART})\.)?(?P<table>{_NAME_PART})$")
# Treasure Data's own rule for database and table names.
TD_NAME_RE = re.compile(r"[a-z0-9_]{3,255}")


@dataclass(frozen=True)
class TableName:
    """A parsed ``[dbname.]table_name``."""

    database: str | None
    table: str

    def __str__(self) -> str:
        return f"{self.database}.{self.table}" if self.database else self.table


def parse_table_name(value: str, option: str, default_database: str | None = None) -> TableName:
    """Parse and validate ``[dbname.]table_name``.

    Parameters
    ----------
    value
        The name as given.
    option
        The option that gave it (``--output-table``), for the message.
    default_database
        Database used when ``value`` names none.

    Returns
    -------
    TableName
        The parsed name.

    Raises
    ------
    UsageError
        When the name has characters outside letters, digits and underscores.
    """
    match = TABLE_NAME_RE.match(value.strip())
    if not match:
        raise UsageError(
            f"{option}={value!r} is not a valid table name: use `dbname.table_name` with letters,"
            " digits and underscores only"
        )
    return TableName(match.group("db") or default_database, match.group("table"))


def validate_td_table_name(name: TableName, option: str) -> None:
    """Check ``name`` against Treasure Data's naming rules before any call is made.

    Parameters
    ----------
    name
        The parsed ``dbname.table_name``.
    option
        The option that named it (``--input-table``, ``--output-table``...), for the message.

    Raises
    ------
    UsageError
        When the database is missing or a part is not 3-255 lower-case letters, digits or ``_``.
    """
    if not name.database:
        raise UsageError(
            f"{option}={str(name)!r}: Treasure Data tables need a database: use "
            "`dbname.table_name`"
        )
    for kind, part in (("database", name.database), ("table", name.table)):
        if not TD_NAME_RE.fullmatch(part):
            raise UsageError(
                f"{option}={str(name)!r}: {kind} name {part!r} is not valid on Treasure Data: "
                "use 3-255 lower-case letters, digits and underscores"
            )
