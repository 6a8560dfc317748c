"""HTTP routes for checkpoints: take one (admin), list, read and verify them (staff)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath, QueryParameter
from litestar.status_codes import HTTP_201_CREATED

from agent_ledger.auth import ADMIN, STAFF
from agent_ledger.checkpoints import service
from agent_ledger.checkpoints.schemas import Checkpoint, CheckpointPage, CheckpointReport
from agent_ledger.deadline import DEADLINE_OPT, statement_timeout
from agent_ledger.deps import Audit, Pool
from agent_ledger.pagination import Cursor, Limit
from agent_ledger.patterns import END

__all__ = ["CheckpointController"]

ExpectedDigest = Annotated[
    str | None,
    QueryParameter(
        pattern="^[0-9a-f]{64}" + END,
        description="The digest from your own copy; the check fails unless the stored "
        "checkpoint still hashes to it.",
    ),
]


class CheckpointController(Controller):
    path = "/v1/ledger/checkpoints"
    tags = ["audit"]

    @post(operation_id="createCheckpoint", opt={"roles": ADMIN}, status_code=HTTP_201_CREATED)
    async def create_checkpoint(self, pool: Pool, audit: Audit) -> Checkpoint:
        """Record every chain head now and answer the checkpoint to keep a copy of."""
        async with pool.acquire() as conn:
            checkpoint = await service.take_checkpoint(conn, source="api", ctx=audit)
        assert checkpoint is not None  # only_if_changed is off: always taken
        return checkpoint

    @get(operation_id="listCheckpoints", opt={"roles": STAFF})
    async def list_checkpoints(
        self, pool: Pool, limit: Limit = 100, cursor: Cursor = None
    ) -> CheckpointPage:
        """Checkpoints, oldest first, without their heads."""
        return await service.list_checkpoints(pool, limit, cursor)

    @get("/{checkpoint_id:str}", operation_id="getCheckpoint", opt={"roles": STAFF})
    async def get_checkpoint(self, checkpoint_id: FromPath[str], pool: Pool) -> Checkpoint:
        return await service.get_checkpoint(pool, checkpoint_id)

    # Walks every chain up to its recorded head: LEDGER_VERIFY_TIMEOUT_SECONDS, as a verify.
    @get(
        "/{checkpoint_id:str}/verify",
        operation_id="verifyCheckpoint",
        opt={"roles": STAFF, DEADLINE_OPT: "verify_timeout_seconds"},
    )
    async def verify_checkpoint(
        self,
        request: Request[Any, Any, Any],
        checkpoint_id: FromPath[str],
        pool: Pool,
        digest: ExpectedDigest = None,
    ) -> CheckpointReport:
        """Does every chain still reach, at the recorded seq, the recorded head hash?"""
        async with pool.acquire() as conn:
            checkpoint = await service.get_checkpoint(conn, checkpoint_id)
            return await service.verify_heads(
                conn,
                checkpoint.heads,
                digest or checkpoint.digest,
                audit=checkpoint.audit,
                checkpoint_format=checkpoint.format,
                checkpoint_id=checkpoint.id,
                statement_seconds=statement_timeout(request),
            )
