"""The job queue: claim, progress, finish, and requeueing the jobs of a dead worker."""

from __future__ import annotations

import json
from collections.abc import Callable

from device.errors import N_, JobNotFound
from device.records import Job
from device.said import Said, stored
from device.store._base import Rooms, job_of, now


class JobRooms(Rooms):
    def enqueue(self, kind: str, recording_id: int, params: dict | None = None) -> Job:
        with self.transaction():
            job_id = self.db["jobs"].insert(
                {"kind": kind, "recording_id": recording_id, "status": "queued",
                 "progress": 0.0, "attempts": 0, "params": json.dumps(params or {}),
                 "created": now()}
            ).last_pk
        return self.get_job(job_id)

    def get_job(self, job_id: int) -> Job:
        rows = list(self.db.query("SELECT * FROM jobs WHERE id = ?", [job_id]))
        if not rows:
            raise JobNotFound(N_("no job with id %(id)s"), id=job_id)
        return job_of(rows[0])

    def list_jobs(self, status: str | None = None, limit: int = 100) -> list[Job]:
        where, args = ("status = ?", [status]) if status else ("1", [])
        return [job_of(r) for r in self.db.query(
            f"SELECT * FROM jobs WHERE {where} ORDER BY id DESC LIMIT ?", [*args, limit])]

    def pending_transcriptions(self, owner_id: int) -> int:
        """Transcriptions queued or running for one user's recordings."""
        return self.db.execute(
            "SELECT count(*) FROM jobs j JOIN recordings r ON r.id = j.recording_id "
            "WHERE r.owner_id = ? AND j.kind = 'transcribe' "
            "AND j.status IN ('queued', 'running')", [owner_id]).fetchone()[0]

    def jobs_for(self, recording_id: int) -> list[Job]:
        return [job_of(r) for r in self.db.query(
            "SELECT * FROM jobs WHERE recording_id = ? ORDER BY id", [recording_id])]

    def claim(
        self, worker_pid: int, worker_started: float, job_id: int | None = None
    ) -> Job | None:
        """Mark the oldest queued job (or the given one) running for this worker."""
        with self.transaction():
            if job_id is None:
                row = self.db.execute(
                    "SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1"
                ).fetchone()
            else:
                row = self.db.execute(
                    "SELECT id FROM jobs WHERE status = 'queued' AND id = ?", [job_id]
                ).fetchone()
            if row is None:
                return None
            self.db.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, started = ?, "
                "worker_pid = ?, worker_started = ?, error = NULL WHERE id = ?",
                [now(), worker_pid, worker_started, row[0]],
            )
        return self.get_job(row[0])

    def set_progress(self, job_id: int, progress: float, stage: str | None = None) -> None:
        """The running job's progress (0-100), and what it is doing when ``stage`` says."""
        with self.transaction():
            self.db.execute(
                "UPDATE jobs SET progress = ?, stage = coalesce(?, stage) "
                "WHERE id = ? AND status = 'running'",
                [round(min(max(progress, 0.0), 100.0), 1), stored(stage), job_id],
            )

    def finish_job(self, job_id: int) -> None:
        with self.transaction():
            self.db.execute("UPDATE jobs SET status = 'done', progress = 100, finished = ? "
                            "WHERE id = ? AND status = 'running'", [now(), job_id])

    def release_job(self, job_id: int, why: str) -> None:
        """Put a running job back in the queue as it was (the attempt not counted): it
        could not start for a reason of the box's (locked), not of its own."""
        with self.transaction():
            self.db.execute(
                "UPDATE jobs SET status = 'queued', attempts = max(attempts - 1, 0), "
                "started = NULL, worker_pid = NULL, worker_started = NULL, progress = 0, "
                "stage = ? WHERE id = ? AND status = 'running'", [stored(why), job_id])
            job = self.get_job(job_id)
            if job.kind == "transcribe":
                self.db["recordings"].update(job.recording_id,
                                             {"status": "queued", "updated": now()})

    def fail_job(self, job_id: int, error: str) -> None:
        """Mark a job failed with a reason a user can read; a failed transcription also
        marks its recording failed (a failed summary leaves the transcript as it is)."""
        with self.transaction():
            job = self.get_job(job_id)
            self._finish(job_id, "failed", error)
            if job.kind == "transcribe":
                self.db["recordings"].update(job.recording_id, {
                    "status": "failed", "error": stored(error), "updated": now()})

    def _finish(self, job_id: int, status: str, error: str | None) -> None:
        self.db.execute(
            "UPDATE jobs SET status = ?, error = ?, finished = ?, "
            "progress = CASE WHEN ? = 'done' THEN 100 ELSE progress END WHERE id = ?",
            [status, stored(error), now(), status, job_id],
        )

    def requeue_interrupted(
        self, is_alive: Callable[[int | None, float | None], bool], max_attempts: int
    ) -> list[Job]:
        """Put running jobs whose worker died back in the queue, or fail them after
        ``max_attempts`` so a job that kills its worker cannot block the queue."""
        changed = []
        with self.transaction():
            for row in self.db["jobs"].rows_where("status = 'running'"):
                job = job_of(row)
                if is_alive(job.worker_pid, job.worker_started):
                    continue
                if job.attempts >= max_attempts:
                    self.fail_job(job.id, Said(N_(
                        "interrupted %(num)d times (the worker was killed or crashed each "
                        "time); giving up"), num=job.attempts))
                else:
                    self.db.execute(
                        "UPDATE jobs SET status = 'queued', worker_pid = NULL WHERE id = ?",
                        [job.id],
                    )
                    if job.kind == "transcribe":
                        self.db["recordings"].update(job.recording_id, {"status": "queued"})
                changed.append(self.get_job(job.id))
        return changed

    def cancel_job(self, job_id: int) -> bool:
        """Cancel a queued or running job (a running one stops at its next checkpoint)."""
        with self.transaction():
            return self.db.execute(
                "UPDATE jobs SET status = 'cancelled', finished = ? WHERE id = ? "
                "AND status IN ('queued', 'running')", [now(), job_id]).rowcount > 0
