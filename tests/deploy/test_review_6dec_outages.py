"""Review of the 6 December changes: outages that the misconfiguration rule took for good.

PostgreSQL tells its client only "<method> authentication failed for user …" whatever went wrong
in the authentication, and for LDAP, RADIUS, PAM, GSSAPI/SSPI and Ident that includes the
authentication *service* being down or unreachable. Such a refusal is an outage of a dependency,
to be waited for like the database itself, not a misconfiguration that stops the KCL worker
(exit 6). Real PostgreSQL: a private cluster whose pg_hba.conf sends one role to an LDAP server
at a closed port."""

from __future__ import annotations

import logging
import uuid

import psycopg2
import pytest

from squall.deploy.kcl import RecordProcessor
from squall.errors import SinkError, TransientError
from squall.topology import sql
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from tests.acceptance.services import PrivatePostgres, free_port
from tests.deploy.test_misconfigured_database import Waited, no_wait, topology
from tests.factories import KclCheckpointer, kcl_initialize


@pytest.fixture(scope="module")
def ldap_pg():
    """A private cluster where role ``ldapuser`` authenticates against an LDAP server that is
    down (nothing listens on its port)."""
    pg = PrivatePostgres()
    pg.init()
    hba = pg.dir / "data" / "pg_hba.conf"
    hba.write_text(
        f"host all ldapuser 127.0.0.1/32 ldap ldapserver=127.0.0.1 ldapport={free_port()} "
        'ldapprefix="cn=" ldapsuffix=",dc=example"\n' + hba.read_text()
    )
    pg.start()
    try:
        admin = psycopg2.connect(pg.url)
        admin.autocommit = True
        admin.cursor().execute("CREATE ROLE ldapuser LOGIN")
        admin.close()
        yield f"postgresql://ldapuser:pw-ldap@127.0.0.1:{pg.port}/postgres"
    finally:
        pg.remove()


def test_an_authentication_service_that_is_down_is_an_outage_not_a_misconfiguration(ldap_pg):
    with pytest.raises(psycopg2.OperationalError) as err:
        psycopg2.connect(ldap_pg, connect_timeout=10)
    assert "LDAP authentication failed" in str(err.value)
    # before: refused for good, a SinkError (the KCL worker exited with code 6)
    assert not sql.refused_for_good(err.value) and sql.is_transient(err.value)
    assert isinstance(sql.as_squall_error(err.value, "where"), TransientError)


def test_kcl_waits_for_an_authentication_service_that_is_down(ldap_pg, caplog):
    slept: list[float] = []
    engine = Engine.for_topology(load_text(topology(ldap_pg)), hold=True)
    processor = RecordProcessor(engine, stream="s", sleep=no_wait(slept))
    cp = KclCheckpointer()
    with caplog.at_level(logging.ERROR, logger="squall.kcl"), pytest.raises(Waited):
        kcl_initialize().dispatch(cp, processor)  # before: SystemExit(6)
    assert slept == [1.0] and cp.calls == []
    assert any("LDAP authentication failed" in r.getMessage() for r in caplog.records)


def test_a_failed_password_is_still_a_misconfiguration(ldap_pg):
    url = ldap_pg.replace("ldapuser", f"squall_hR_nobody_{uuid.uuid4().hex[:6]}", 1)
    with pytest.raises(psycopg2.OperationalError) as err:
        psycopg2.connect(url, connect_timeout=10)
    # trust for everyone else on this cluster: an unknown role is what it refuses
    assert sql.refused_for_good(err.value)
    assert isinstance(sql.as_squall_error(err.value, "where"), SinkError)


def test_kcl_waits_for_a_database_that_is_read_only_during_a_failover(pg_url: str, caplog):
    """A failover: for a while the writer's address still leads to a server that is read-only
    (the old primary now a standby, a DNS name not yet moved). Every write is refused with
    SQLSTATE 25006 (read_only_sql_transaction) until it passes: an outage, not a SinkError that
    stops the KCL worker (exit 6)."""
    from tests.deploy.test_misconfigured_database import with_parts
    from tests.factories import kcl_process_records

    name = f"squall_hR_ro_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        text = topology(with_parts(pg_url, database=name))
        first = Engine.for_topology(load_text(text))
        first.open()  # the table is created while the database is writable
        first.close()
        admin.cursor().execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        slept: list[float] = []
        processor = RecordProcessor(
            Engine.for_topology(load_text(text)), stream="s", sleep=no_wait(slept)
        )
        cp = KclCheckpointer()
        kcl_initialize().dispatch(cp, processor)
        with caplog.at_level(logging.ERROR, logger="squall.kcl"), pytest.raises(Waited):
            kcl_process_records([{"n": 1}], start=100).dispatch(cp, processor)  # before: exit 6
        assert slept == [1.0] and cp.calls == []
        assert any("read-only transaction" in r.getMessage() for r in caplog.records)
        processor._close()
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
