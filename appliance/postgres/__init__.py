"""PostgreSQL control: initdb, basebackup, start/stop, promote, demote, rewind, status, conf files."""
