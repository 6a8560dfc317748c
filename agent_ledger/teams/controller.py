"""HTTP routes for teams."""

from __future__ import annotations

from litestar import Controller, get, patch, post
from litestar.params import FromPath, JSONBody

from agent_ledger.auth import ADMIN, STAFF
from agent_ledger.deps import Audit, Pool
from agent_ledger.pagination import Cursor, Limit
from agent_ledger.teams import service
from agent_ledger.teams.schemas import Team, TeamCreate, TeamPage, TeamUpdate

__all__ = ["TeamController"]

NAME_TAKEN = {
    409: "`conflict`: another team has this name (ignoring case); `existing_id` names it."
}


class TeamController(Controller):
    path = "/v1/teams"
    tags = ["teams"]

    @post(operation_id="createTeam", opt={"roles": ADMIN, "problems": NAME_TAKEN})
    async def create_team(self, data: JSONBody[TeamCreate], pool: Pool, audit: Audit) -> Team:
        return await service.create_team(pool, audit, data.name)

    @get(operation_id="listTeams", opt={"roles": STAFF})
    async def list_teams(self, pool: Pool, limit: Limit = 100, cursor: Cursor = None) -> TeamPage:
        return await service.list_teams(pool, limit, cursor)

    @get("/{team_id:str}", operation_id="getTeam", opt={"roles": STAFF})
    async def get_team(self, team_id: FromPath[str], pool: Pool) -> Team:
        return await service.get_team(pool, team_id)

    @patch(
        "/{team_id:str}", operation_id="updateTeam", opt={"roles": ADMIN, "problems": NAME_TAKEN}
    )
    async def update_team(
        self, team_id: FromPath[str], data: JSONBody[TeamUpdate], pool: Pool, audit: Audit
    ) -> Team:
        return await service.rename_team(pool, audit, team_id, data.name)
