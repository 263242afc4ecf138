"""Users and tokens for the load: created in bulk in the servers' database, tokens minted locally.

The orchestrator may run with other database settings than the servers (``manage.py`` reads
its own environment), so the users are created by a short child process that gets the
servers' ``DATABASE_URL`` (``python -m loadtest.provision``). Access tokens are minted in the
orchestrator with simplejwt and the same ``SECRET_KEY`` the servers receive.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
# A fixed unusable password hash ("!" prefix): the load users can never log in with a password.
UNUSABLE_PASSWORD = "!loadtest-unusable"


def ensure_database(database_url: str) -> None:
    """Create the PostgreSQL database of ``database_url`` when it does not exist (no-op for SQLite)."""
    parts = urlsplit(database_url)
    if not parts.scheme.startswith("postgres"):
        return
    import psycopg

    name = unquote(parts.path.lstrip("/"))
    conninfo = {
        "host": parts.hostname or "127.0.0.1", "port": parts.port or 5432,
        "user": unquote(parts.username or "postgres"), "dbname": "postgres",
    }
    if parts.password:
        conninfo["password"] = unquote(parts.password)
    with psycopg.connect(**conninfo, autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def provision_users(env: dict[str, str], count: int, prefix: str, migrate: bool, timeout: float = 300) -> list[int]:
    """Make sure ``count`` load users exist in the servers' database; returns their ids in order."""
    cmd = [sys.executable, "-m", "loadtest.provision", "--count", str(count), "--prefix", prefix]
    if migrate:
        cmd.append("--migrate")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"provisioning users failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def provision_teams(env: dict[str, str], user_ids: list[int], size: int, prefix: str,
                    timeout: float = 300) -> list[int]:
    """One team per ``size`` consecutive users (created when missing); returns each user's team id."""
    cmd = [sys.executable, "-m", "loadtest.provision", "--teams-of", str(size), "--prefix", prefix,
           "--count", str(len(user_ids))]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"provisioning teams failed:\n{done.stderr[-3000:]}")
    teams = json.loads(done.stdout.strip().splitlines()[-1])
    return teams


def mint_tokens(user_ids: list[int], lifetime_s: int) -> list[str]:
    """simplejwt access tokens for user ids (``AccessToken.for_user`` without loading the users)."""
    from rest_framework_simplejwt.settings import api_settings
    from rest_framework_simplejwt.tokens import AccessToken

    lifetime = timedelta(seconds=lifetime_s)
    tokens = []
    for user_id in user_ids:
        token = AccessToken()
        token.set_exp(lifetime=lifetime)
        token[api_settings.USER_ID_CLAIM] = str(user_id)
        tokens.append(str(token))
    return tokens


def _create_users(count: int, prefix: str) -> list[int]:
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    names = [f"{prefix}{i:06d}" for i in range(count)]
    ids: dict[str, int] = {}
    for start in range(0, count, 2000):
        chunk = names[start:start + 2000]
        ids.update(user_model.objects.filter(username__in=chunk).values_list("username", "pk"))
    missing = [user_model(username=n, password=UNUSABLE_PASSWORD, is_active=True) for n in names if n not in ids]
    if missing:
        user_model.objects.bulk_create(missing, batch_size=2000, ignore_conflicts=True)
        for start in range(0, count, 2000):
            chunk = names[start:start + 2000]
            ids.update(user_model.objects.filter(username__in=chunk).values_list("username", "pk"))
    return [ids[n] for n in names]


def _create_teams(user_ids: list[int], size: int, prefix: str) -> list[int]:
    from executions.models import Team, TeamMembership

    slugs = [f"{prefix}team-{start // size:05d}" for start in range(0, len(user_ids), size)]
    Team.objects.bulk_create([Team(name=slug, slug=slug) for slug in slugs], ignore_conflicts=True)
    team_ids = dict(Team.objects.filter(slug__in=slugs).values_list("slug", "pk"))
    per_user = [team_ids[slugs[i // size]] for i in range(len(user_ids))]
    TeamMembership.objects.bulk_create(
        [TeamMembership(team_id=t, user_id=u) for u, t in zip(user_ids, per_user, strict=True)],
        batch_size=2000, ignore_conflicts=True)
    return per_user


def main() -> None:
    """Child process entry point: migrate (optionally), create users, print their ids as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefix", default="loadtest-")
    parser.add_argument("--migrate", action="store_true")
    parser.add_argument("--teams-of", type=int, default=0, help="put the users in teams of this size instead")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "renum.settings")
    import django

    django.setup()
    if args.migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
    users = _create_users(args.count, args.prefix)
    print(json.dumps(_create_teams(users, args.teams_of, args.prefix) if args.teams_of else users))


if __name__ == "__main__":
    main()
