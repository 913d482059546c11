"""Create (or refresh) the ``apps`` table the apps topology looks app metadata up from.

    python examples/pistats/apps.py            # into out/pistats.db next to this file
    WAREHOUSE_URL=postgresql://… python examples/pistats/apps.py

Idempotent: the rows below replace those with the same app_id. ``app-shop`` is left out on
purpose: its events show what ``on_missing: keep`` does (they are stored without app metadata).
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
APPS = [
    {"app_id": "app-news", "name": "Daily News", "owner": "newsroom", "tier": "enterprise"},
    {"app_id": "app-weather", "name": "Weather Now", "owner": "forecasts", "tier": "free"},
]


def engine_url() -> str:
    url = os.environ.get("WAREHOUSE_URL")
    if url:
        return url.replace("postgresql://", "postgresql+psycopg2://", 1)
    (HERE / "out").mkdir(exist_ok=True)
    return f"sqlite:///{HERE / 'out' / 'pistats.db'}"


def main() -> None:
    engine = sa.create_engine(engine_url())
    apps = sa.Table(
        "apps",
        sa.MetaData(),
        sa.Column("app_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text),
        sa.Column("owner", sa.Text),
        sa.Column("tier", sa.Text),
    )
    apps.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(apps.delete().where(apps.c.app_id.in_([a["app_id"] for a in APPS])))
        conn.execute(apps.insert(), APPS)
    engine.dispose()
    print(f"apps: {len(APPS)} rows")


if __name__ == "__main__":
    main()
