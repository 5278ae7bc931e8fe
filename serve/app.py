"""The HTTP service: a FastAPI app on a Ray Serve deployment whose replicas each hold one compiled pipeline.

POST /v1/videos (multipart or JSON) → the video (mp4/gif) with its manifest in the `X-Svdtool-Manifest` header, or with
"async": a job id; GET /v1/jobs/{id} (progress in steps, manifest), GET /v1/jobs/{id}/video; GET /v1/health;
GET /v1/model; GET / the page to try it. Every refusal is JSON {"error": ...} with its status.
"""

import asyncio
import json
import time
import uuid
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve

from svdtool.batch.worker import worker_identity
from svdtool.errors import SvdtoolError

from .jobs import job_store
from .limits import FORMATS, ApiError, ServeLimits, decode_image, image_from_base64, parse_settings, token_matches

api = FastAPI(title="svdtool serve", docs_url=None, redoc_url=None)


@api.exception_handler(ApiError)
async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)


@api.exception_handler(SvdtoolError)
async def _svdtool_error(_request: Request, exc: SvdtoolError) -> JSONResponse:  # our one-line errors say what to do
    return JSONResponse({"error": str(exc)}, status_code=500)


@api.exception_handler(Exception)
async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:  # never a stack trace to the client
    return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)


@serve.deployment
@serve.ingress(api)
class VideoService:
    def __init__(self, model: str, limits: ServeLimits, token: str | None, threads: int | None) -> None:
        from svdtool import logs
        from svdtool.runtime.session import open_session, plan

        logs.configure(False, append=True)
        self.target = plan(model, "openvino")
        self.session = open_session(self.target, threads=threads)
        self.limits, self.token = limits, token
        self.lock = asyncio.Semaphore(1)  # one video at a time per replica; the pipeline holds all its threads
        self.waiting = 0
        self.jobs = job_store()
        self.running_jobs: set[asyncio.Task] = set()  # held, so that the event loop does not drop a job's task

    def _authorize(self, request: Request) -> None:
        if self.token and not token_matches(request.headers.get("authorization", ""), self.token):
            raise ApiError(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)", {"WWW-Authenticate": "Bearer"})

    @api.get("/v1/health")
    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "busy": self.lock.locked(), "waiting": self.waiting, "replica": worker_identity()}

    @api.get("/v1/model")
    async def model(self, request: Request) -> dict[str, Any]:
        from svdtool.outputs import read_manifest

        self._authorize(request)
        manifest = read_manifest(self.session.info["model"])
        return {"model": self.session.info, "defaults": self.target.defaults, "limits": self.limits.as_dict(),
                "manifest": {k: manifest.get(k) for k in ("stage", "source", "weights", "cpu_requirement", "quantization")},
                "validation": manifest.get("validation")}

    @api.get("/", response_class=HTMLResponse)
    async def page(self) -> str:
        return resources.files("svdtool.serve").joinpath("page.html").read_text()

    @api.post("/v1/videos")
    async def videos(self, request: Request) -> Response:
        self._authorize(request)
        fields, data = await self._read(request)
        settings, video_format = parse_settings(fields, self.target.defaults, self.limits)
        if "format" not in fields and "image/gif" in request.headers.get("accept", ""):
            video_format = "gif"
        image = decode_image(data, self.limits)
        if self.waiting >= self.limits.max_queue:
            raise ApiError(429, f"this replica has {self.waiting} requests waiting; try again shortly",
                           {"Retry-After": str(max(1, round(self.waiting * self._seconds_per_video())))})
        if str(fields.get("async", "")).lower() in ("1", "true", "yes"):
            job_id = uuid.uuid4().hex
            await self.jobs.create.remote(job_id, settings.num_inference_steps)
            task = asyncio.get_running_loop().create_task(self._job(job_id, image, settings, video_format))
            self.running_jobs.add(task)
            task.add_done_callback(self.running_jobs.discard)
            return JSONResponse({"job_id": job_id, "status": f"/v1/jobs/{job_id}"}, status_code=202)
        video, manifest = await self._generate(image, settings, video_format, None)
        return Response(video, media_type=FORMATS[video_format], headers={"X-Svdtool-Manifest": json.dumps(manifest)})

    @api.get("/v1/jobs/{job_id}")
    async def job(self, job_id: str, request: Request) -> dict[str, Any]:
        self._authorize(request)
        state = await self.jobs.get.remote(job_id)
        if state is None:
            raise ApiError(404, f"no job {job_id} (finished jobs are kept for a while, then forgotten)")
        return {**state, **({"video": f"/v1/jobs/{job_id}/video"} if state["status"] == "done" else {})}

    @api.get("/v1/jobs/{job_id}/video")
    async def job_video(self, job_id: str, request: Request) -> Response:
        self._authorize(request)
        state, video = await self.jobs.get.remote(job_id), await self.jobs.video.remote(job_id)
        if state is None or video is None:
            raise ApiError(404, f"no finished video for job {job_id}")
        return Response(video, media_type=FORMATS[state["manifest"]["format"]])

    async def _read(self, request: Request) -> tuple[dict[str, Any], bytes]:
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("image")
            data = await upload.read() if hasattr(upload, "read") else b""
            return {k: v for k, v in form.items() if k != "image"}, data
        if kind.startswith("application/json"):
            try:
                body = await request.json()
            except ValueError as exc:
                raise ApiError(400, "the body is not valid JSON") from exc
            if not isinstance(body, dict):
                raise ApiError(400, "the JSON body must be an object")
            return {k: v for k, v in body.items() if k != "image"}, image_from_base64(str(body.get("image", "")))
        raise ApiError(415, "send multipart/form-data (field 'image') or application/json (base64 field 'image')")

    async def _job(self, job_id: str, image: Any, settings: Any, video_format: str) -> None:
        try:
            video, manifest = await self._generate(image, settings, video_format, job_id)
            await self.jobs.finish.remote(job_id, video, manifest)
        except ApiError as exc:
            await self.jobs.update.remote(job_id, status="failed", error=exc.message)
        except SvdtoolError as exc:
            await self.jobs.update.remote(job_id, status="failed", error=str(exc))
        except Exception as exc:  # noqa: BLE001 - the job records it; the replica goes on
            await self.jobs.update.remote(job_id, status="failed", error=f"{type(exc).__name__}")

    async def _generate(self, image: Any, settings: Any, video_format: str, job_id: str | None) -> tuple[bytes, dict]:
        from svdtool.batch.worker import render

        loop = asyncio.get_running_loop()

        def on_step(step: int) -> None:
            if job_id:
                self.jobs.update.remote(job_id, status="running", step=step)

        self.waiting += 1
        try:
            await asyncio.wait_for(self.lock.acquire(), timeout=self.limits.timeout_s)
        except asyncio.TimeoutError as exc:
            raise ApiError(504, f"no replica was free within {self.limits.timeout_s:g} s; try again later") from exc
        finally:
            self.waiting -= 1
        try:
            start = time.perf_counter()
            video, facts = await loop.run_in_executor(None, render, self.session.pipeline, image, settings, video_format, on_step)
            self._last_seconds = time.perf_counter() - start
        finally:
            self.lock.release()
        manifest = {"stage": "serve", "settings": settings.as_dict(), "format": video_format,
                    "frames": facts["frames_shape"], "frames_sha256": facts["frames_sha256"], "timings_seconds": facts["timings"],
                    "runtime": {**{k: self.session.info[k] for k in ("model", "precision", "threads", "cpu")},
                                "replica": worker_identity()}}
        return video, manifest

    def _seconds_per_video(self) -> float:
        return getattr(self, "_last_seconds", 10.0)
