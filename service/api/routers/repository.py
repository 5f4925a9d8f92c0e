"""Model repository administration (Triton's model_repository extension), token-protected.

``POST /v2/repository/models/{name}/load`` reloads one model, ``POST /v1/admin/reload`` all
of them (the same as SIGHUP). A reload that fails answers 409 with the reason and leaves the
previously loaded versions serving. Under ``--workers N`` the answer is this worker's reload;
the supervisor then has every worker reload (service/api/workers.py), which
``specula_model_info``'s ``pid`` label shows worker by worker.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Response

from .. import examples
from ..deps import AdminDep, ServerDep
from ..errors import ApiError
from ..reload_signal import notify_supervisor
from ..schemas import RepositoryEntry, error_responses, ok

router = APIRouter(tags=["repository"])
# the index lists every model and version on disk: behind the API key when keys are set, as
# model metadata is (the load/reload routes take the admin token instead)
index_router = APIRouter(tags=["repository"])


def report_response(report: dict[str, dict]) -> Response:
    failed = any(r["status"] != "ok" for r in report.values())
    body: dict = {"models": report}
    if failed:
        bad = next(r for r in report.values() if r["status"] != "ok")
        body.update(error=bad["error"], code=bad["code"])
    return Response(orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS),
                    status_code=409 if failed else 200, media_type="application/json")


@index_router.post("/v2/repository/index", operation_id="repository_index",
                   summary="List the model repository",
                   response_model=list[RepositoryEntry],
                   responses={**ok(examples.REPOSITORY_INDEX), **error_responses(401, 503)})
async def repository_index(server: ServerDep) -> list[dict]:
    """Every version on disk of every model of a kind this server serves, and whether it is
    served."""
    out = []
    for name in server.servable():
        served = server.versions(name)
        for v in server.repository.versions(name):
            state = "READY" if v in served else "UNAVAILABLE"
            out.append({"name": name, "version": str(v), "state": state,
                        "reason": "" if v in served else "not loaded"})
    return out


@router.post("/v2/repository/models/{name}/load", operation_id="repository_model_load",
             summary="Reload one model (admin token)",
             responses={**ok(examples.REPOSITORY_LOAD), **error_responses(
                 401, 403, 404, 409, 503, examples={409: examples.RELOAD_409})})
async def load_model(name: str, server: ServerDep, _: AdminDep) -> Response:
    """Load the versions of one model from the repository again (admin token). A reload that
    fails answers 409 with the reason; the versions loaded before keep serving."""
    # the name becomes a path under the repository root: only a directory listed there (or a
    # model being served) may be named, never '..' or anything else a client makes up
    if name not in server.repository.names() and name not in server.names():
        raise ApiError(404, "model_not_found", f"no model {name!r} in the repository")
    report = await server.reload(only=name)
    notify_supervisor()  # the other workers reload everything (a no-op for what is unchanged)
    return report_response(report)


@router.post("/v1/admin/reload", operation_id="repository_reload",
             summary="Reload every model (admin token)",
             responses={**ok(examples.REPOSITORY_RELOAD), **error_responses(
                 401, 403, 409, 503, examples={409: examples.RELOAD_409})})
async def reload_all(server: ServerDep, _: AdminDep) -> Response:
    """Reload the whole repository, as SIGHUP does (admin token); under ``--workers`` every
    worker reloads. A failed reload answers 409; the versions loaded before keep serving."""
    report = await server.reload()
    notify_supervisor()
    return report_response(report)
