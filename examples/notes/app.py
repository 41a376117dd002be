"""The package-handler example's Python service: it owns the notes database.

Python writes notes (POST /notes) with the stdlib sqlite3 module; reading one
(GET /notes/{id}) is served natively by handlers/notes, a Swift package handler
that links SQLite and runs as a blocking handler on Apus's thread pool, so the
blocking adapter never runs in Python. /py/notes/{id} is the same read in
Python, byte-identical, for comparison.
"""

import json
import os
import sqlite3

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

DATABASE = os.environ.get("NOTES_DB", "/tmp/apus-notes.db")


def connect() -> sqlite3.Connection:
    connection = sqlite3.connect(DATABASE)
    connection.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL, created TEXT NOT NULL)")
    return connection


async def create(request: Request) -> Response:
    payload = await request.json()
    text = payload.get("text")
    if not isinstance(text, str) or not text:
        return JSONResponse({"error": "text is required"}, status_code=422)
    with connect() as connection:
        cursor = connection.execute("INSERT INTO notes (text, created) VALUES (?, datetime('now'))", (text,))
        return JSONResponse({"id": cursor.lastrowid}, status_code=201)


async def read(request: Request) -> Response:
    try:
        note_id = int(request.path_params["id"])
    except ValueError:
        return JSONResponse({"error": "id must be an integer"}, status_code=400)
    with connect() as connection:
        row = connection.execute("SELECT id, text, created FROM notes WHERE id = ?", (note_id,)).fetchone()
    if row is None:
        return JSONResponse({"error": f"no note {note_id}"}, status_code=404)
    body = json.dumps({"id": row[0], "text": row[1], "created": row[2]}, separators=(",", ":"), ensure_ascii=False)
    return Response(body, media_type="application/json")


app = Starlette(routes=[
    Route("/notes", create, methods=["POST"]),
    Route("/py/notes/{id}", read),
])
