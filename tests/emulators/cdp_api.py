"""Loopback emulator of the Treasure Data CDP (Audience) API, for tests.

Same machinery as :mod:`td_api` (``127.0.0.1`` only, ``Authorization: TD1 <apikey>``
checked, :meth:`~td_api.EmulatorServer.fail_next` failure injection, request log).

Emulated endpoints:

* parent segments, JSON:API style (``/entities``): ``GET /entities/parent_segments``
  -> ``{"data": [resource, ...]}``; ``GET /entities/parent_segments/{id}`` ->
  ``{"data": resource}``.  ``resource.relationships.parentFolder.data.id`` is the
  segments' root folder.
* parent segments, REST style: ``GET /audiences`` (a list), ``POST /audiences``,
  ``GET /audiences/{id}``, ``PUT /audiences/{id}`` (full replacement of name,
  description, master, attributes, behaviors; an empty body answers the audience
  unchanged), ``POST /audiences/{id}/run``.
* folders: ``GET|POST /audiences/{id}/folders``, ``GET|DELETE
  /audiences/{id}/folders/{folderId}``, ``GET /audiences/{id}/folders/{folderId}/segments``;
  ``POST /entities/folders``, ``GET|PATCH|DELETE /entities/folders/{id}``,
  ``GET /entities/by-folder/{folderId}?depth=N&with_rule=true|false``.
* segments: ``POST /entities/segments``, ``GET|PATCH|DELETE /entities/segments/{id}``;
  legacy ``GET|POST /audiences/{id}/segments``, ``GET|PUT|DELETE
  /audiences/{id}/segments/{segmentId}``.

Taken from the public OpenAPI description of the CDP API (JSON:API resource shapes:
``parentSegment``, ``folder-segment`` and ``segment-batch`` types, ``attributes`` /
``relationships.parentFolder``, ``{"data": ..., "included": [users]}`` envelopes,
``SegmentFolderCreateRepresentation`` ``{name, description}``, audience attribute
fields) and from published client code that drives the real service (an empty-body
``PUT /audiences/{id}`` to read an audience, ``'not unique' in body["base"][0]`` for a
duplicate attribute, ``body["errors"]["name"][0] == "has already been taken"`` for a
duplicate segment name, folders listed as a plain JSON array).

Guessed: status codes of validation errors (400 here), the body of
``POST /audiences/{id}/run``, that segment names are unique per parent segment and
folder names per parent folder, the error texts, ``population`` always ``null``
(no segment counts are computed), and the attribute ``type`` filled in when a
``PUT`` omits it (``number`` for numeric TD columns when a TD emulator is linked,
else ``string``).  With ``td=`` given, ``PUT /audiences/{id}`` also checks that each
attribute's table, ``parentColumn`` and ``parentKey`` exist in that emulator and
that ``foreignKey`` is a column of the master table (when the master table exists
there), and segment rules may only name attributes or master-table columns.
"""

from __future__ import annotations

import copy
import datetime as _dt
import itertools
from dataclasses import dataclass, field
from typing import Any

from .td_api import ApiError, EmulatorServer, TDEmulator, _json_response, _Request, _Response

__all__ = ["CDPEmulator", "start_cdp_emulator"]

_JSONAPI = "application/vnd.treasuredata.v1+json"
_ATTR_TYPES = ("string", "number", "timestamp", "string_array", "number_array")
_ATTR_REQUIRED = (
    "name",
    "parentDatabaseName",
    "parentTableName",
    "parentColumn",
    "parentKey",
    "foreignKey",
)
_USER = {"id": "1", "td_user_id": "1", "name": "emulator"}
_USER_RESOURCE = {"id": "1", "type": "user", "attributes": {"tdUserId": "1", "name": "emulator"}}
_RULE_GROUPS = ("And", "Or", "Composite")


def _iso_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class _Folder:
    id: str
    audience_id: str
    name: str
    description: str | None
    parent_id: str | None
    created_at: str = field(default_factory=_iso_now)
    updated_at: str = field(default_factory=_iso_now)


@dataclass
class _Segment:
    id: str
    audience_id: str
    folder_id: str
    name: str
    description: str | None
    rule: Any
    kind: int = 0
    count_population: bool = False
    created_at: str = field(default_factory=_iso_now)
    updated_at: str = field(default_factory=_iso_now)


def _jsonapi_error(status: int, code: str, detail: str) -> ApiError:
    return ApiError(status, {"errors": [{"code": code, "status": str(status), "detail": detail}]})


def _field_error(name: str, message: str) -> ApiError:
    return ApiError(400, {"errors": {name: [message]}})


class CDPEmulator(EmulatorServer):
    """Stateful emulator of the CDP API (see module docstring).

    Parameters
    ----------
    apikey : str
        The only API key accepted.
    td : TDEmulator, optional
        A TD emulator whose tables back attribute and rule validation.
    """

    def __init__(self, apikey: str, td: TDEmulator | None = None) -> None:
        super().__init__(apikey)
        self.td = td
        self._ids = itertools.count(101)
        self._audiences: dict[str, dict[str, Any]] = {}
        self._folders: dict[str, _Folder] = {}
        self._segments: dict[str, _Segment] = {}
        self._runs: list[str] = []
        r = self._route
        r("GET", r"/entities/parent_segments", self._ps_list)
        r("GET", r"/entities/parent_segments/(?P<id>\d+)", self._ps_show)
        r("GET", r"/audiences", self._aud_list)
        r("POST", r"/audiences", self._aud_create)
        r("GET", r"/audiences/(?P<id>\d+)", self._aud_show)
        r("PUT", r"/audiences/(?P<id>\d+)", self._aud_update)
        r("POST", r"/audiences/(?P<id>\d+)/run", self._aud_run)
        r("GET", r"/audiences/(?P<id>\d+)/folders", self._folder_list_legacy)
        r("POST", r"/audiences/(?P<id>\d+)/folders", self._folder_create_legacy)
        r("GET", r"/audiences/(?P<id>\d+)/folders/(?P<fid>\d+)", self._folder_show_legacy)
        r("DELETE", r"/audiences/(?P<id>\d+)/folders/(?P<fid>\d+)", self._folder_delete_legacy)
        r(
            "GET",
            r"/audiences/(?P<id>\d+)/folders/(?P<fid>\d+)/segments",
            self._folder_segments_legacy,
        )
        r("GET", r"/audiences/(?P<id>\d+)/segments", self._seg_list_legacy)
        r("POST", r"/audiences/(?P<id>\d+)/segments", self._seg_create_legacy)
        r("GET", r"/audiences/(?P<id>\d+)/segments/(?P<sid>\d+)", self._seg_show_legacy)
        r("PUT", r"/audiences/(?P<id>\d+)/segments/(?P<sid>\d+)", self._seg_update_legacy)
        r("DELETE", r"/audiences/(?P<id>\d+)/segments/(?P<sid>\d+)", self._seg_delete_legacy)
        r("POST", r"/entities/folders", self._folder_create)
        r("GET", r"/entities/folders/(?P<fid>\d+)", self._folder_show)
        r("PATCH", r"/entities/folders/(?P<fid>\d+)", self._folder_patch)
        r("DELETE", r"/entities/folders/(?P<fid>\d+)", self._folder_delete)
        r("GET", r"/entities/by-folder/(?P<fid>\d+)", self._by_folder)
        r("POST", r"/entities/segments", self._seg_create)
        r("GET", r"/entities/segments/(?P<sid>\d+)", self._seg_show)
        r("PATCH", r"/entities/segments/(?P<sid>\d+)", self._seg_patch)
        r("DELETE", r"/entities/segments/(?P<sid>\d+)", self._seg_delete)

    # -- public helpers for tests -------------------------------------------

    def seed_parent_segment(
        self,
        name: str,
        *,
        master_database: str = "cdp_db",
        master_table: str = "customers",
        description: str = "",
        attributes: list[dict[str, Any]] | None = None,
    ) -> str:
        """Create a parent segment (audience) with its root folder.

        Parameters
        ----------
        name : str
            Parent segment name.
        master_database : str, default "cdp_db"
            Database of the master table.
        master_table : str, default "customers"
            Master table.
        description : str, default ""
            Description.
        attributes : list of dict, optional
            Initial ``attributes[]`` entries, stored as given (ids are added).

        Returns
        -------
        str
            The new parent segment id.
        """
        with self._lock:
            audience = self._new_audience(
                {
                    "name": name,
                    "description": description,
                    "master": {
                        "parentDatabaseName": master_database,
                        "parentTableName": master_table,
                    },
                }
            )
            for attr in attributes or []:
                audience["attributes"].append(
                    {"id": self._new_id(), "audienceId": audience["id"], "groupingName": None}
                    | copy.deepcopy(attr)
                )
            return str(audience["id"])

    def audience(self, audience_id: str) -> dict[str, Any]:
        """Return a deep copy of a parent segment in its REST (``/audiences``) shape.

        Parameters
        ----------
        audience_id : str
            Parent segment id.

        Returns
        -------
        dict
        """
        with self._lock:
            return copy.deepcopy(self._audience(str(audience_id)))

    def folders(self, audience_id: str) -> list[dict[str, Any]]:
        """Return the folders of a parent segment (REST shape plus ``parentFolderId``).

        Parameters
        ----------
        audience_id : str
            Parent segment id.

        Returns
        -------
        list of dict
        """
        with self._lock:
            return [
                self._folder_legacy(f) | {"parentFolderId": f.parent_id}
                for f in self._folders.values()
                if f.audience_id == str(audience_id)
            ]

    def segments(self, audience_id: str | None = None) -> list[dict[str, Any]]:
        """Return segments (REST shape, with ``rule``), optionally of one parent segment.

        Parameters
        ----------
        audience_id : str, optional
            Parent segment id to filter on.

        Returns
        -------
        list of dict
        """
        with self._lock:
            return [
                self._segment_legacy(s)
                for s in self._segments.values()
                if audience_id is None or s.audience_id == str(audience_id)
            ]

    @property
    def runs(self) -> list[str]:
        """Parent segment ids for which ``POST /audiences/{id}/run`` was called, in order."""
        with self._lock:
            return list(self._runs)

    # -- internals ---------------------------------------------------------------

    def _error_payload(self, status: int, message: str) -> Any:
        return {"error": message, "message": message, "status": status}

    def _new_id(self) -> str:
        return str(next(self._ids))

    def _new_audience(self, body: dict[str, Any]) -> dict[str, Any]:
        aid = self._new_id()
        root = _Folder(self._new_id(), aid, str(body.get("name", "")), None, None)
        self._folders[root.id] = root
        now = _iso_now()
        audience = {
            "id": aid,
            "name": body.get("name"),
            "description": body.get("description", ""),
            "scheduleType": body.get("scheduleType", "none"),
            "scheduleOption": body.get("scheduleOption"),
            "timezone": body.get("timezone", "UTC"),
            "matrixUpdatedAt": None,
            "workflowHiveOnly": False,
            "hiveEngineVersion": "0.13",
            "population": None,
            "rootFolderId": root.id,
            "master": copy.deepcopy(body.get("master") or {}),
            "attributes": [],
            "behaviors": copy.deepcopy(body.get("behaviors") or []),
            "createdAt": now,
            "updatedAt": now,
            "createdBy": dict(_USER),
            "updatedBy": dict(_USER),
        }
        self._audiences[aid] = audience
        return audience

    def _audience(self, aid: str) -> dict[str, Any]:
        audience = self._audiences.get(aid)
        if audience is None:
            raise ApiError(
                404, {"error": "Not Found", "message": f"Audience {aid} not found", "status": 404}
            )
        return audience

    def _folder(self, fid: str, *, jsonapi: bool = True) -> _Folder:
        folder = self._folders.get(fid)
        if folder is None:
            if jsonapi:
                raise _jsonapi_error(404, "record-not-found-error", f"Folder {fid} not found")
            raise ApiError(
                404, {"error": "Not Found", "message": f"Folder {fid} not found", "status": 404}
            )
        return folder

    def _segment(self, sid: str, *, jsonapi: bool = True) -> _Segment:
        seg = self._segments.get(sid)
        if seg is None:
            if jsonapi:
                raise _jsonapi_error(404, "record-not-found-error", f"Segment {sid} not found")
            raise ApiError(
                404, {"error": "Not Found", "message": f"Segment {sid} not found", "status": 404}
            )
        return seg

    @staticmethod
    def _body_dict(req: _Request) -> dict[str, Any]:
        body = req.json()
        if not isinstance(body, dict):
            raise ApiError(400, {"errors": {"base": ["request body must be a JSON object"]}})
        return body

    # TD-backed validation

    def _td_columns(self, database: str, table: str) -> dict[str, str] | None:
        if self.td is None or not self.td.has_table(database, table):
            return None
        return dict(self.td.table_schema(database, table)) | {"time": "long"}

    def _validate_attributes(self, audience: dict[str, Any], attrs: Any) -> list[dict[str, Any]]:
        if not isinstance(attrs, list):
            raise ApiError(400, {"base": ["attributes must be an array"]})
        seen: set[str] = set()
        master = audience.get("master") or {}
        master_cols = self._td_columns(
            str(master.get("parentDatabaseName", "")), str(master.get("parentTableName", ""))
        )
        out = []
        known_ids = {str(a.get("id")) for a in audience["attributes"]}
        for attr in attrs:
            if not isinstance(attr, dict):
                raise ApiError(400, {"base": ["each attribute must be an object"]})
            for key in _ATTR_REQUIRED:
                if not attr.get(key):
                    raise ApiError(400, {"base": [f"Attributes {key} can't be blank"]})
            name = str(attr["name"])
            if name in seen:
                raise ApiError(400, {"base": [f"Attribute name '{name}' is not unique"]})
            seen.add(name)
            db, table = str(attr["parentDatabaseName"]), str(attr["parentTableName"])
            td_type: str | None = None
            if self.td is not None:
                cols = self._td_columns(db, table)
                if cols is None:
                    raise ApiError(400, {"base": [f"Table {db}.{table} does not exist"]})
                for key in ("parentColumn", "parentKey"):
                    if attr[key] not in cols:
                        raise ApiError(
                            400, {"base": [f"Column {attr[key]} does not exist in {db}.{table}"]}
                        )
                if master_cols is not None and attr["foreignKey"] not in master_cols:
                    raise ApiError(
                        400,
                        {
                            "base": [
                                f"Column {attr['foreignKey']} does not exist in the master table"
                            ]
                        },
                    )
                td_type = cols[attr["parentColumn"]]
            atype = attr.get("type")
            if atype is None:
                atype = _attr_type(td_type)
            elif atype not in _ATTR_TYPES:
                raise ApiError(
                    400,
                    {"base": [f"Attribute type '{atype}' is not one of {', '.join(_ATTR_TYPES)}"]},
                )
            aid = (
                str(attr["id"])
                if attr.get("id") is not None and str(attr["id"]) in known_ids
                else self._new_id()
            )
            out.append(
                {"groupingName": None, "matrixColumnName": name, "usedBySegmentInsight": False}
                | copy.deepcopy(attr)
                | {"id": aid, "audienceId": audience["id"], "type": atype}
            )
        return out

    def _known_fields(self, audience: dict[str, Any]) -> set[str] | None:
        if self.td is None:
            return None
        master = audience.get("master") or {}
        cols = self._td_columns(
            str(master.get("parentDatabaseName", "")), str(master.get("parentTableName", ""))
        )
        names = {str(a["name"]) for a in audience["attributes"]}
        return names | set(cols or {})

    def _validate_rule(self, rule: Any, known: set[str] | None) -> None:
        if rule is None or rule == {}:
            return
        if not isinstance(rule, dict) or rule.get("type") not in _RULE_GROUPS:
            raise _field_error("rule", f"rule type must be one of {', '.join(_RULE_GROUPS)}")
        self._validate_conditions(rule, known)

    def _validate_conditions(self, group: dict[str, Any], known: set[str] | None) -> None:
        conditions = group.get("conditions")
        if not isinstance(conditions, list):
            raise _field_error("rule", f"{group.get('type')} needs a conditions array")
        for cond in conditions:
            if not isinstance(cond, dict):
                raise _field_error("rule", "each condition must be an object")
            ctype = cond.get("type")
            if ctype in _RULE_GROUPS:
                self._validate_conditions(cond, known)
            elif ctype == "Value":
                left, op = cond.get("leftValue"), cond.get("operator")
                if not isinstance(left, dict) or not isinstance(op, dict) or "type" not in op:
                    raise _field_error(
                        "rule", "a Value condition needs leftValue and operator.type"
                    )
                name = left.get("name")
                if known is not None and isinstance(name, str) and name not in known:
                    raise _field_error("rule", f"unknown attribute '{name}'")
            elif not isinstance(ctype, str):
                raise _field_error("rule", "each condition needs a type")

    # representations

    def _ps_resource(self, audience: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": audience["id"],
            "type": "parentSegment",
            "attributes": {
                "name": audience["name"],
                "description": audience.get("description") or "",
                "matrixUpdatedAt": audience.get("matrixUpdatedAt"),
                "population": audience.get("population"),
                "scheduleType": audience.get("scheduleType", "none"),
                "timezone": audience.get("timezone", "UTC"),
                "createdAt": audience["createdAt"],
                "updatedAt": audience["updatedAt"],
                "v4Id": int(audience["id"]),
                "allowActivationBehavior": False,
                "maxActivationBehaviorRow": 7,
                "customerGroup": None,
            },
            "relationships": {
                "parentFolder": {"data": {"id": audience["rootFolderId"], "type": "folder-segment"}}
            },
        }

    def _folder_legacy(self, f: _Folder) -> dict[str, Any]:
        return {
            "id": f.id,
            "audienceId": f.audience_id,
            "name": f.name,
            "description": f.description,
            "createdAt": f.created_at,
            "updatedAt": f.updated_at,
            "createdBy": dict(_USER),
            "updatedBy": dict(_USER),
        }

    def _folder_resource(self, f: _Folder) -> dict[str, Any]:
        children = [
            {"data": {"id": c.id, "type": "folder-segment"}}
            for c in self._folders.values()
            if c.parent_id == f.id
        ] + [
            {"data": {"id": s.id, "type": "segment-batch"}}
            for s in self._segments.values()
            if s.folder_id == f.id
        ]
        parent = {"id": f.parent_id, "type": "folder-segment"} if f.parent_id else None
        return {
            "id": f.id,
            "type": "folder-segment",
            "attributes": {
                "audienceId": f.audience_id,
                "name": f.name,
                "description": f.description,
                "createdAt": f.created_at,
                "updatedAt": f.updated_at,
                "permissions": {"view": True, "edit": True},
            },
            "relationships": {
                "children": {"data": children},
                "parentFolder": {"data": parent},
                "createdBy": {"data": {"id": "1", "type": "user"}},
                "updatedBy": {"data": {"id": "1", "type": "user"}},
            },
        }

    def _segment_resource(self, s: _Segment, *, with_rule: bool = True) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "audienceId": s.audience_id,
            "name": s.name,
            "description": s.description,
            "population": None,
            "numSyndications": 0,
            "createdAt": s.created_at,
            "updatedAt": s.updated_at,
            "countPopulation": s.count_population,
            "segmentInsightDashboardId": None,
            "isEmptyRule": not s.rule,
        }
        if with_rule:
            attributes["rule"] = copy.deepcopy(s.rule)
        return {
            "id": s.id,
            "type": "segment-batch",
            "attributes": attributes,
            "relationships": {
                "parentFolder": {"data": {"id": s.folder_id, "type": "folder-segment"}},
                "createdBy": {"data": {"id": "1", "type": "user"}},
                "updatedBy": {"data": {"id": "1", "type": "user"}},
            },
        }

    def _segment_legacy(self, s: _Segment) -> dict[str, Any]:
        return {
            "id": s.id,
            "audienceId": s.audience_id,
            "name": s.name,
            "description": s.description,
            "realtime": False,
            "isVisible": True,
            "kind": s.kind,
            "numSyndications": 0,
            "segmentFolderId": s.folder_id,
            "population": None,
            "countPopulation": s.count_population,
            "rule": copy.deepcopy(s.rule),
            "createdAt": s.created_at,
            "updatedAt": s.updated_at,
            "createdBy": dict(_USER),
            "updatedBy": dict(_USER),
            "referencedBy": [],
        }

    @staticmethod
    def _envelope(data: Any) -> _Response:
        return _json_response(
            {"data": data, "included": [dict(_USER_RESOURCE)]}, content_type=_JSONAPI
        )

    # parent segments

    def _ps_list(self, req: _Request) -> _Response:
        with self._lock:
            data = [self._ps_resource(a) for a in self._audiences.values()]
        return _json_response({"data": data}, content_type=_JSONAPI)

    def _ps_show(self, req: _Request) -> _Response:
        with self._lock:
            audience = self._audiences.get(req.params["id"])
            if audience is None:
                raise _jsonapi_error(404, "record-not-found-error", "Record not found")
            return _json_response({"data": self._ps_resource(audience)}, content_type=_JSONAPI)

    def _aud_list(self, req: _Request) -> _Response:
        with self._lock:
            return _json_response(copy.deepcopy(list(self._audiences.values())))

    def _aud_create(self, req: _Request) -> _Response:
        body = self._body_dict(req)
        if not body.get("name"):
            raise ApiError(400, {"name": ["can't be blank"]})
        master = body.get("master") or {}
        if not master.get("parentDatabaseName") or not master.get("parentTableName"):
            raise ApiError(400, {"master": ["parentDatabaseName and parentTableName are required"]})
        with self._lock:
            if any(a["name"] == body["name"] for a in self._audiences.values()):
                raise ApiError(400, {"name": ["has already been taken"]})
            audience = self._new_audience(body)
            audience["attributes"] = self._validate_attributes(
                audience, body.get("attributes") or []
            )
            return _json_response(copy.deepcopy(audience))

    def _aud_show(self, req: _Request) -> _Response:
        with self._lock:
            return _json_response(copy.deepcopy(self._audience(req.params["id"])))

    def _aud_update(self, req: _Request) -> _Response:
        body = req.json()
        with self._lock:
            audience = self._audience(req.params["id"])
            if body is None:
                return _json_response(copy.deepcopy(audience))
            if not isinstance(body, dict):
                raise ApiError(400, {"base": ["request body must be a JSON object"]})
            updated = copy.deepcopy(audience)
            for key in (
                "name",
                "description",
                "scheduleType",
                "scheduleOption",
                "timezone",
                "behaviors",
            ):
                if key in body:
                    updated[key] = copy.deepcopy(body[key])
            if "master" in body:
                master = body["master"] or {}
                if not master.get("parentDatabaseName") or not master.get("parentTableName"):
                    raise ApiError(
                        400, {"master": ["parentDatabaseName and parentTableName are required"]}
                    )
                updated["master"] = copy.deepcopy(master)
            if "attributes" in body:
                updated["attributes"] = self._validate_attributes(updated, body["attributes"])
            updated["updatedAt"] = _iso_now()
            audience.clear()
            audience.update(updated)
            return _json_response(copy.deepcopy(audience))

    def _aud_run(self, req: _Request) -> _Response:
        with self._lock:
            audience = self._audience(req.params["id"])
            self._runs.append(audience["id"])
            run_id = self._new_id()
        return _json_response({"workflowId": run_id, "sessionId": run_id, "attemptId": run_id})

    # folders

    def _check_folder_name(
        self, audience_id: str, parent_id: str | None, name: str, exclude: str | None = None
    ) -> None:
        for f in self._folders.values():
            if (
                f.audience_id == audience_id
                and f.parent_id == parent_id
                and f.name == name
                and f.id != exclude
            ):
                raise _field_error("name", "has already been taken")

    def _folder_list_legacy(self, req: _Request) -> _Response:
        with self._lock:
            aid = self._audience(req.params["id"])["id"]
            return _json_response(
                [self._folder_legacy(f) for f in self._folders.values() if f.audience_id == aid]
            )

    def _folder_create_legacy(self, req: _Request) -> _Response:
        body = self._body_dict(req)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise _field_error("name", "can't be blank")
        with self._lock:
            audience = self._audience(req.params["id"])
            root = audience["rootFolderId"]
            self._check_folder_name(audience["id"], root, name)
            folder = _Folder(
                self._new_id(), audience["id"], name, body.get("description", ""), root
            )
            self._folders[folder.id] = folder
            return _json_response(self._folder_legacy(folder))

    def _folder_show_legacy(self, req: _Request) -> _Response:
        with self._lock:
            folder = self._folder(req.params["fid"], jsonapi=False)
            if folder.audience_id != req.params["id"]:
                raise ApiError(
                    404, {"error": "Not Found", "message": "Folder not found", "status": 404}
                )
            return _json_response(self._folder_legacy(folder))

    def _delete_folder(self, folder: _Folder) -> None:
        if folder.parent_id is None:
            raise _jsonapi_error(400, "validation-error", "The root folder cannot be deleted")
        if any(f.parent_id == folder.id for f in self._folders.values()) or any(
            s.folder_id == folder.id for s in self._segments.values()
        ):
            raise _jsonapi_error(409, "conflict-error", "Deletion SegmentFolder has segments")
        del self._folders[folder.id]

    def _folder_delete_legacy(self, req: _Request) -> _Response:
        with self._lock:
            folder = self._folder(req.params["fid"], jsonapi=False)
            self._delete_folder(folder)
        return _json_response({})

    def _folder_segments_legacy(self, req: _Request) -> _Response:
        with self._lock:
            folder = self._folder(req.params["fid"], jsonapi=False)
            return _json_response(
                [
                    self._segment_legacy(s)
                    for s in self._segments.values()
                    if s.folder_id == folder.id
                ]
            )

    @staticmethod
    def _parent_folder_id(body: dict[str, Any]) -> str | None:
        rel = (body.get("relationships") or {}).get("parentFolder") or {}
        data = rel.get("data") if isinstance(rel, dict) else None
        if isinstance(data, dict) and data.get("id") is not None:
            return str(data["id"])
        return None

    def _folder_create(self, req: _Request) -> _Response:
        body = self._body_dict(req)
        attrs = body.get("attributes") or {}
        name = attrs.get("name")
        if not isinstance(name, str) or not name:
            raise _field_error("name", "can't be blank")
        parent_id = self._parent_folder_id(body)
        if parent_id is None:
            raise _field_error("parentFolder", "can't be blank")
        with self._lock:
            parent = self._folder(parent_id)
            self._check_folder_name(parent.audience_id, parent.id, name)
            folder = _Folder(
                self._new_id(), parent.audience_id, name, attrs.get("description"), parent.id
            )
            self._folders[folder.id] = folder
            return self._envelope(self._folder_resource(folder))

    def _folder_show(self, req: _Request) -> _Response:
        with self._lock:
            return self._envelope(self._folder_resource(self._folder(req.params["fid"])))

    def _folder_patch(self, req: _Request) -> _Response:
        body = self._body_dict(req)
        attrs = body.get("attributes") or {}
        with self._lock:
            folder = self._folder(req.params["fid"])
            parent_id = self._parent_folder_id(body) or folder.parent_id
            if parent_id != folder.parent_id:
                parent = self._folder(parent_id or "")
                if parent.audience_id != folder.audience_id:
                    raise _field_error("parentFolder", "must belong to the same parent segment")
            name = attrs.get("name", folder.name)
            self._check_folder_name(folder.audience_id, parent_id, name, exclude=folder.id)
            folder.name, folder.parent_id = name, parent_id
            if "description" in attrs:
                folder.description = attrs["description"]
            folder.updated_at = _iso_now()
            return self._envelope(self._folder_resource(folder))

    def _folder_delete(self, req: _Request) -> _Response:
        with self._lock:
            folder = self._folder(req.params["fid"])
            resource = self._folder_resource(folder)
            self._delete_folder(folder)
        return self._envelope(resource)

    def _by_folder(self, req: _Request) -> _Response:
        try:
            depth = int(req.query.get("depth", "1"))
        except ValueError as e:
            raise _jsonapi_error(400, "validation-error", "depth must be an integer") from e
        with_rule = req.query.get("with_rule", "true").lower() != "false"
        with self._lock:
            root = self._folder(req.params["fid"])
            data = [self._folder_resource(root)]
            level = [root.id]
            for _ in range(max(depth, 0)):
                next_level = []
                for fid in level:
                    for f in self._folders.values():
                        if f.parent_id == fid:
                            data.append(self._folder_resource(f))
                            next_level.append(f.id)
                    for s in self._segments.values():
                        if s.folder_id == fid:
                            data.append(self._segment_resource(s, with_rule=with_rule))
                level = next_level
        return _json_response(
            {"data": data, "included": [dict(_USER_RESOURCE)]}, content_type=_JSONAPI
        )

    # segments

    def _check_segment_name(self, audience_id: str, name: str, exclude: str | None = None) -> None:
        for s in self._segments.values():
            if s.audience_id == audience_id and s.name == name and s.id != exclude:
                raise _field_error("name", "has already been taken")

    def _create_segment(self, folder: _Folder, body: dict[str, Any], *, kind: int = 0) -> _Segment:
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise _field_error("name", "can't be blank")
        audience = self._audience(folder.audience_id)
        rule = body.get("rule")
        self._validate_rule(rule, self._known_fields(audience))
        self._check_segment_name(folder.audience_id, name)
        seg = _Segment(
            self._new_id(),
            folder.audience_id,
            folder.id,
            name,
            body.get("description"),
            copy.deepcopy(rule) if rule is not None else {},
            kind=kind,
            count_population=bool(body.get("countPopulation", False)),
        )
        self._segments[seg.id] = seg
        return seg

    def _seg_create(self, req: _Request) -> _Response:
        body = self._body_dict(req)
        stype = body.get("type", "segment-batch")
        if stype != "segment-batch":
            raise _field_error("type", f"'{stype}' is not supported by the emulator")
        folder_id = self._parent_folder_id(body)
        if folder_id is None:
            raise _field_error("parentFolder", "can't be blank")
        with self._lock:
            seg = self._create_segment(self._folder(folder_id), body.get("attributes") or {})
            return self._envelope(self._segment_resource(seg))

    def _seg_show(self, req: _Request) -> _Response:
        with self._lock:
            return self._envelope(self._segment_resource(self._segment(req.params["sid"])))

    def _update_segment(self, seg: _Segment, attrs: dict[str, Any], folder_id: str | None) -> None:
        audience = self._audience(seg.audience_id)
        if folder_id is not None and folder_id != seg.folder_id:
            folder = self._folder(folder_id)
            if folder.audience_id != seg.audience_id:
                raise _field_error("parentFolder", "must belong to the same parent segment")
        if "name" in attrs:
            if not isinstance(attrs["name"], str) or not attrs["name"]:
                raise _field_error("name", "can't be blank")
            self._check_segment_name(seg.audience_id, attrs["name"], exclude=seg.id)
        if "rule" in attrs:
            self._validate_rule(attrs["rule"], self._known_fields(audience))
        seg.name = attrs.get("name", seg.name)
        seg.description = attrs.get("description", seg.description)
        if "rule" in attrs:
            seg.rule = copy.deepcopy(attrs["rule"]) if attrs["rule"] is not None else {}
        if "countPopulation" in attrs:
            seg.count_population = bool(attrs["countPopulation"])
        if folder_id is not None:
            seg.folder_id = folder_id
        seg.updated_at = _iso_now()

    def _seg_patch(self, req: _Request) -> _Response:
        body = self._body_dict(req)
        with self._lock:
            seg = self._segment(req.params["sid"])
            self._update_segment(seg, body.get("attributes") or {}, self._parent_folder_id(body))
            return self._envelope(self._segment_resource(seg))

    def _seg_delete(self, req: _Request) -> _Response:
        with self._lock:
            seg = self._segment(req.params["sid"])
            del self._segments[seg.id]
            return self._envelope(self._segment_resource(seg))

    def _seg_list_legacy(self, req: _Request) -> _Response:
        with self._lock:
            aid = self._audience(req.params["id"])["id"]
            return _json_response(
                [self._segment_legacy(s) for s in self._segments.values() if s.audience_id == aid]
            )

    def _seg_create_legacy(self, req: _Request) -> _Response:
        body = self._body_dict(req)
        with self._lock:
            audience = self._audience(req.params["id"])
            folder_id = str(body.get("segmentFolderId") or audience["rootFolderId"])
            folder = self._folder(folder_id, jsonapi=False)
            if folder.audience_id != audience["id"]:
                raise _field_error("segmentFolderId", "must belong to the same parent segment")
            kind = body.get("kind", 0)
            if kind != 0:
                raise _field_error("kind", "only batch segments (kind 0) are emulated")
            seg = self._create_segment(folder, body)
            return _json_response(self._segment_legacy(seg))

    def _legacy_segment(self, req: _Request) -> _Segment:
        seg = self._segment(req.params["sid"], jsonapi=False)
        if seg.audience_id != req.params["id"]:
            raise ApiError(
                404, {"error": "Not Found", "message": "Segment not found", "status": 404}
            )
        return seg

    def _seg_show_legacy(self, req: _Request) -> _Response:
        with self._lock:
            return _json_response(self._segment_legacy(self._legacy_segment(req)))

    def _seg_update_legacy(self, req: _Request) -> _Response:
        body = self._body_dict(req)
        with self._lock:
            seg = self._legacy_segment(req)
            folder_id = body.get("segmentFolderId")
            self._update_segment(seg, body, str(folder_id) if folder_id is not None else None)
            return _json_response(self._segment_legacy(seg))

    def _seg_delete_legacy(self, req: _Request) -> _Response:
        with self._lock:
            seg = self._legacy_segment(req)
            del self._segments[seg.id]
            return _json_response(self._segment_legacy(seg))


def _attr_type(td_type: str | None) -> str:
    if td_type is None:
        return "string"
    t = td_type.lower()
    if t in ("long", "int", "double", "float"):
        return "number"
    if t.startswith("array<"):
        return "number_array" if t[6:-1] in ("long", "int", "double", "float") else "string_array"
    return "string"


def start_cdp_emulator(apikey: str = "test-apikey", *, td: TDEmulator | None = None) -> CDPEmulator:
    """Start a CDP API emulator on ``127.0.0.1`` and return it.

    Use it as a context manager or call ``.stop()``.  ``.endpoint`` has no
    trailing slash; CDP paths start with ``/``.

    Parameters
    ----------
    apikey : str, default "test-apikey"
        The only key accepted (``Authorization: TD1 <apikey>``).
    td : TDEmulator, optional
        Link to a TD emulator so attribute tables, columns and rule fields are
        checked against its tables.

    Returns
    -------
    CDPEmulator
        The running emulator.
    """
    emulator = CDPEmulator(apikey, td=td)
    emulator.start()
    return emulator
