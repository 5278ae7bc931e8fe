"""The HTTP service: a FastAPI app on a Ray Serve deployment whose replicas each hold one compiled pipeline.

POST /v1/videos (multipart or JSON) → the video (mp4/gif) with its manifest in the `X-Svdtool-Manifest` header, or with
"async": a job id; GET /v1/jobs/{id} (progress in steps, manifest), GET /v1/jobs/{id}/video; GET /v1/health;
GET /v1/model; GET / the page to try it. Every refusal is JSON {"error": ...} with its status.
"""

import asyncio
import json
import threading
import time
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve

from svdtool.batch.worker import worker_identity
from svdtool.errors import SvdtoolError

from .jobs import job_store
from .limits import (FORMATS, ApiError, ServeLimits, decode_image, image_from_base64, negotiate_format, parse_settings,
                     token_matches)


def _public_source(source: dict[str, Any]) -> dict[str, Any]:
    """A manifest's source without server paths: a local folder or UNet file by its name."""
    public = {**source}
    if public.get("kind") == "folder":
        public["ref"] = Path(str(public["ref"])).name
    if isinstance(public.get("unet"), dict) and Path(str(public["unet"].get("ref", ""))).is_absolute():
        public["unet"] = {**public["unet"], "ref": Path(public["unet"]["ref"]).name}
    return public


class RenderCancelled(Exception):
    """Raised at a denoising step of a render whose client went away: diffusers' loop stops there."""

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
        # With --sizes the shapes are few: keep each compiled one (a switch back loads, 3.8 -> 1.5 s for svd-mini INT8)
        self.session = open_session(self.target, threads=threads, cache_compiled=bool(limits.sizes))
        self.limits, self.token = limits, token
        self.lock = asyncio.Semaphore(1)  # one video at a time per replica; the pipeline holds all its threads
        self.waiting = 0
        self.jobs = job_store()
        self.running_jobs: set[asyncio.Task] = set()  # held, so that the event loop does not drop a job's task
        self.renders = self.most_renders = 0  # renders running on this replica's pipeline now, and the most ever at once
        self.cancelled = 0  # renders stopped because their client went away
        self.renders_lock = threading.Lock()

    def _authorized(self, request: Request) -> bool:
        return not self.token or token_matches(request.headers.get("authorization", ""), self.token)

    def _authorize(self, request: Request) -> None:
        if not self._authorized(request):
            raise ApiError(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)", {"WWW-Authenticate": "Bearer"})

    @api.get("/v1/health")
    async def health(self, request: Request) -> dict[str, Any]:
        """Open to load balancers; which host, process and Ray node answer is for token holders only."""
        state = {"status": "ok", "busy": self.lock.locked(), "waiting": self.waiting, "renders": self.renders,
                 "most_renders_at_once": self.most_renders, "cancelled_renders": self.cancelled}
        if not self._authorized(request):
            return state
        return {**state, "replica": worker_identity(), "jobs": await self.jobs.stats.remote()}

    @api.get("/v1/model")
    async def model(self, request: Request) -> dict[str, Any]:
        from svdtool.outputs import read_manifest

        self._authorize(request)
        manifest = read_manifest(self.session.info["model"])
        manifest = {**manifest, "source": _public_source(manifest.get("source", {}))}
        quantization = manifest.get("quantization")
        if quantization:  # where the calibration photos were on the server is nobody else's business
            calibration = {**quantization.get("calibration", {}), "source": Path(str(quantization.get("calibration", {}).get("source", ""))).name}
            manifest["quantization"] = {**quantization, "calibration": calibration}
        return {"model": self._public_info(), "defaults": self.target.defaults, "limits": self.limits.as_dict(),
                "manifest": {k: manifest.get(k) for k in ("stage", "source", "weights", "cpu_requirement", "quantization")},
                "validation": manifest.get("validation")}

    @api.get("/", response_class=HTMLResponse)
    async def page(self) -> str:
        return resources.files("svdtool.serve").joinpath("page.html").read_text()

    @api.post("/v1/videos")
    async def videos(self, request: Request) -> Response:
        self._authorize(request)
        if self.waiting >= self.limits.max_queue:  # before the body is read: a full replica costs a client nothing
            raise ApiError(429, f"this replica has {self.waiting} requests waiting; try again shortly",
                           {"Retry-After": str(max(1, round(self.waiting * self._seconds_per_video())))})
        # The slot is taken now, not when the render waits for the replica: a burst of async requests cannot all pass
        # the check above. A body that never arrives holds it for --body-timeout at most.
        self.waiting += 1
        try:
            fields, data = await self._read(request)
            settings, video_format = parse_settings(fields, self.target.defaults, self.limits)
            if "format" not in fields:
                video_format = negotiate_format(request.headers.get("accept", "")) or video_format
            image = await asyncio.to_thread(decode_image, data, self.limits)  # off the event loop: health answers
            await asyncio.to_thread(self._check_memory, settings)
            asynchronous = str(fields.get("async", "")).lower() in ("1", "true", "yes")
            if asynchronous:
                job_id = uuid.uuid4().hex
                await self.jobs.create.remote(job_id, settings.num_inference_steps)
        except BaseException:
            self.waiting -= 1
            raise
        if asynchronous:
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

    async def _read_body(self, request: Request) -> None:
        """The body, refused (413) as soon as it is known or seen to be larger than an allowed image needs, and (408)
        when it takes longer than `body_timeout_s` to arrive; kept on the request, where starlette's form() and json()
        read it from."""
        limit = self.limits.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"a body of {declared} bytes is over this service's limit of {limit}")

        async def read() -> bytes:
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"the body is over this service's limit of {limit} bytes")
                chunks.append(chunk)
            return b"".join(chunks)

        try:
            request._body = await asyncio.wait_for(read(), timeout=self.limits.body_timeout_s)
        except asyncio.TimeoutError as exc:
            raise ApiError(408, f"the body did not arrive within {self.limits.body_timeout_s:g} s") from exc

    async def _read(self, request: Request) -> tuple[dict[str, Any], bytes]:
        kind = request.headers.get("content-type", "")
        if kind.startswith(("multipart/form-data", "application/json")):
            await self._read_body(request)
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
        cancelled = threading.Event()

        def on_step(step: int) -> None:
            if cancelled.is_set():
                raise RenderCancelled()
            if job_id:
                self.jobs.update.remote(job_id, status="running", step=step)

        def counted_render() -> tuple[bytes, dict]:
            with self.renders_lock:
                self.renders += 1
                self.most_renders = max(self.most_renders, self.renders)
            try:
                return render(self.session.pipeline, image, settings, video_format, on_step)
            finally:
                with self.renders_lock:
                    self.renders -= 1

        try:  # the caller counted this request in `waiting`
            await asyncio.wait_for(self.lock.acquire(), timeout=self.limits.timeout_s)
        except asyncio.TimeoutError as exc:
            raise ApiError(504, f"no replica was free within {self.limits.timeout_s:g} s; try again later") from exc
        finally:
            self.waiting -= 1
        start = time.perf_counter()
        future = loop.run_in_executor(None, counted_render)
        try:
            video, facts = await asyncio.shield(future)
        except asyncio.CancelledError:
            # The client went away: the render stops at its next step, and the replica is free only once its thread
            # has ended (releasing now would start the next render on this pipeline beside the running one).
            cancelled.set()
            self.cancelled += 1
            future.add_done_callback(lambda done: (done.cancelled() or done.exception(), self.lock.release()))
            raise
        except BaseException:
            self.lock.release()
            raise
        self.lock.release()
        self._last_seconds = time.perf_counter() - start
        public = self._public_info()
        manifest = {"stage": "serve", "settings": settings.as_dict(), "format": video_format,
                    "frames": facts["frames_shape"], "frames_sha256": facts["frames_sha256"], "timings_seconds": facts["timings"],
                    "runtime": {**{k: public[k] for k in ("model", "precision", "threads", "cpu")},
                                "replica": worker_identity()}}
        return video, manifest

    def _check_memory(self, settings: Any) -> None:
        """507 for a request this replica's machine cannot hold now, 413 for one OpenVINO cannot index (footprint.py)."""
        from svdtool.runtime.footprint import check_working_memory

        try:
            check_working_memory(self.session.info["model"], settings, self.session.info["precision"])
        except SvdtoolError as exc:  # the tensor-size refusal names OpenVINO's 2**31 limit: no machine would do
            raise ApiError(413 if "2**31" in str(exc) else 507, str(exc)) from exc

    def _public_info(self) -> dict[str, Any]:
        """The session's facts, with the IR folder's name in place of its absolute path on the server."""
        info = self.session.info
        return {**info, "model": Path(info["model"]).name, "source": _public_source(info.get("source", {}))}

    def _seconds_per_video(self) -> float:
        return getattr(self, "_last_seconds", 10.0)
