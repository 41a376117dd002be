"""Package handlers: a handler folder with its own Package.swift, built with `swift build`."""

import json
import shutil

import httpx

from conftest import QUICKSTART, Gateway, child_env, free_port, wait_for
from test_devloop import run_apus

NOTES = QUICKSTART.parent / "notes"


def test_python_writes_sqlite_and_the_native_package_handler_reads_it(tmp_path, handler_cache, processes):
    app = tmp_path / "notes"
    shutil.copytree(NOTES, app, ignore=shutil.ignore_patterns(".apus-cache", "__pycache__", ".build"))
    sock = str(tmp_path / "notes.sock")
    port = free_port()
    config = app / "gateway.conf"
    config.write_text(
        f'[server]\nlisten = ["127.0.0.1:{port}"]\n\n[backend]\naddress = "unix:{sock}"\n'
        f'command = ["uvicorn", "app:app", "--uds", "{sock}"]\n\n'
        f'[handlers]\nsources = "handlers"\ncache = "{handler_cache}"\n\n'
        '[[route]]\nmatch = "GET /notes/{id}"\nhandler = "notes"\n')
    env = child_env() | {"NOTES_DB": str(tmp_path / "notes.db")}
    gateway = Gateway(config, port, tmp_path / "notes.log", env=env)
    processes.append(gateway)
    gateway.start()
    wait_for(lambda: httpx.post(f"{gateway.url}/notes", json={"text": "warm up"}).status_code == 201, 60, "backend")
    created = httpx.post(f"{gateway.url}/notes", json={"text": "héllo from Python \"quoted\""})
    assert created.status_code == 201
    note_id = created.json()["id"]
    native = httpx.get(f"{gateway.url}/notes/{note_id}")
    python = httpx.get(f"{gateway.url}/py/notes/{note_id}")
    assert native.status_code == 200 and "server" not in native.headers  # never reached uvicorn
    assert native.json()["text"] == 'héllo from Python "quoted"'
    assert native.content == python.content
    assert httpx.get(f"{gateway.url}/notes/999999").status_code == 404
    assert httpx.get(f"{gateway.url}/notes/abc").status_code == 400
    assert "notes [blocking" in run_apus("check", "--config", str(config), env=env).stdout


def test_new_handler_package_scaffold_builds(tmp_path, handler_cache):
    config = tmp_path / "gateway.conf"
    (tmp_path / "handlers").mkdir()
    config.write_text(f'[handlers]\nsources = "handlers"\ncache = "{handler_cache}"\noptimize = false\n')
    made = run_apus("new", "handler", "pkgdemo", "--package", "--config", str(config), "--add-route")
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "handlers" / "pkgdemo" / "Package.swift").exists()
    checked = run_apus("check", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "pkgdemo [inline, compiled in" in checked.stdout
