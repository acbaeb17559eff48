"""A throw-away PostgreSQL cluster for the tests: initdb + pg_ctl on a Unix socket in a temp dir.

As root the cluster runs as the `postgres` user (initdb refuses root). One cluster per pytest
process, so two xdist workers never share one. Where PostgreSQL is not installed (tools/dev
installs it when root) the tests that need it are skipped with the reason.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path


def pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class PgCluster:
    def __init__(self):
        self.bindir = pg_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)")
        self.dir = Path(tempfile.mkdtemp(prefix="relaynet-pg-"))
        self.data, self.sock = self.dir / "data", self.dir / "sock"
        self.sock.mkdir()
        self.user = None
        if os.getuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root but there is no postgres user to run the cluster") from None
            self.user = "postgres"
            os.chmod(self.dir, 0o755)
            for p in (self.dir, self.sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self._names = itertools.count(1)

    def _run(self, *cmd: str) -> None:
        argv = list(cmd)
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {r.stdout}{r.stderr}")

    def start(self) -> "PgCluster":
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--no-sync", "-N")
        opts = (f"-k {self.sock} -c listen_addresses='' -c fsync=off -c synchronous_commit=on "
                f"-c max_connections=200 -c shared_buffers=16MB")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "pg.log"),
                  "-o", opts, "-w", "-t", "60", "start")
        return self

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.sock} user=postgres dbname={dbname}"

    def new_database(self) -> str:
        """A fresh, empty database; its DSN."""
        import psycopg
        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        except RuntimeError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
