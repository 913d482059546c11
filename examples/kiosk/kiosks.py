"""Create (or refresh) the ``kiosks`` registry the kiosk topology looks each order's kiosk up in.

    python examples/kiosk/kiosks.py            # into out/kiosks.db next to this file
    KIOSK_REGISTRY_URL=postgresql://… python examples/kiosk/kiosks.py

Idempotent: the rows below replace those with the same kiosk_id. ``k5`` is registered but
retired (``active`` false): its orders are rejected. ``k9`` is left out on purpose: its orders
show what ``on_missing: fail`` does (dead-lettered, reason ``key 'k9' not found``).
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
KIOSKS = [
    {"kiosk_id": "k1", "store_id": "s1", "site": "Lisbon airport, gate 12", "active": True},
    {"kiosk_id": "k2", "store_id": "s1", "site": "Lisbon airport, food court", "active": True},
    {"kiosk_id": "k3", "store_id": "s2", "site": "Porto station, hall", "active": True},
    {"kiosk_id": "k4", "store_id": "s2", "site": "Porto station, platform 3", "active": True},
    {"kiosk_id": "k5", "store_id": "s2", "site": "Porto station, old hall", "active": False},
]
TIMEZONE = "Europe/Lisbon"  # both stores' (a kiosk's own column: its store may be elsewhere)


def engine_url() -> str:
    url = os.environ.get("KIOSK_REGISTRY_URL")
    if url:
        # `postgres://` too (Heroku's, Render's DATABASE_URL): squall run reads it as PostgreSQL,
        # SQLAlchemy alone does not know it
        scheme, sep, rest = url.partition("://")
        if sep and scheme.lower() in ("postgres", "postgresql"):
            return f"postgresql+psycopg2://{rest}"
        return url
    (HERE / "out").mkdir(exist_ok=True)
    return f"sqlite:///{HERE / 'out' / 'kiosks.db'}"


def main() -> None:
    engine = sa.create_engine(engine_url())
    kiosks = sa.Table(
        os.environ.get("KIOSK_TABLE", "kiosks"),
        sa.MetaData(),
        sa.Column("kiosk_id", sa.Text, primary_key=True),
        sa.Column("store_id", sa.Text, nullable=False),
        sa.Column("site", sa.Text, nullable=False),
        sa.Column("timezone", sa.Text, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
    )
    kiosks.metadata.create_all(engine)
    rows = [{**k, "timezone": TIMEZONE} for k in KIOSKS]
    with engine.begin() as conn:
        conn.execute(kiosks.delete().where(kiosks.c.kiosk_id.in_([k["kiosk_id"] for k in rows])))
        conn.execute(kiosks.insert(), rows)
    engine.dispose()
    print(f"{kiosks.name}: {len(rows)} kiosks")


if __name__ == "__main__":
    main()
