"""`/healthz` (the process answers), `/readyz` (database reachable, models loaded) and
`/metrics` (Prometheus text format). None of them needs a key and none reveals one."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

router = APIRouter()


@router.get("/healthz")
async def healthz():
    return {"status": "ok"}


def _database_ok(engine: sa.Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return True
    except Exception:  # noqa: BLE001 - any failure means not ready; never echo the URL
        return False


@router.get("/readyz")
async def readyz(request: Request):
    gw = request.app.state.gateway
    database = await gw.db(_database_ok, gw.accounts.engine)
    models = {name: bool(b.ready) for name, b in gw.backends.items()}
    limiter = await gw.limiter.ping()
    ready = database and limiter and all(models.values()) and bool(models)
    return JSONResponse({"ready": ready, "database": database, "rate_limiter": limiter,
                         "models": models}, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(request: Request):
    m = request.app.state.gateway.metrics
    body = await asyncio.to_thread(m.render)
    return Response(body, media_type=m.content_type)
